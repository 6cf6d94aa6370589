//! `fsck`: every manifest and every object checked (STORE.md §7).

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::error::{obj_err, ObjectKind, Result, StoreError};
use crate::key::ObjectKey;
use crate::object::{self, Header, TensorMeta};
use crate::report::FsckReport;
use crate::Store;

impl Store {
    /// Checks every manifest and every object: each object decodes to what its name says
    /// (a blob or plain tensor hashes to its name; a delta's tensor key and header base
    /// give its name), deltas point at plain objects of the same tensor shape, manifests
    /// agree with their objects and nothing they need is missing.
    pub fn fsck(&self) -> Result<FsckReport> {
        self.par(|| self.fsck_inner())
    }

    fn fsck_inner(&self) -> Result<FsckReport> {
        let mut report = FsckReport::default();
        let objects = self.backend.list_objects()?;
        let present: HashSet<ObjectKey> = objects.iter().map(|o| o.key).collect();
        let mut referenced: HashSet<ObjectKey> = HashSet::new();
        let mut expected: HashMap<ObjectKey, (Option<TensorMeta>, Option<ObjectKey>)> =
            HashMap::new();
        for name in self.backend.list_manifests()? {
            let m = match self.manifest(&name) {
                Ok(m) => m,
                Err(e) => {
                    report.problems.push(e.to_string());
                    continue;
                }
            };
            report.models += 1;
            for (k, _) in m.objects() {
                referenced.insert(k);
                if !present.contains(&k) {
                    report
                        .problems
                        .push(format!("model {name:?}: object {k} is missing"));
                }
            }
            for t in m.tensors().filter(|t| t.inline.is_some()) {
                report.objects += 1;
                let checked = object::alloc(t.len)
                    .map_err(obj_err(t.object))
                    .and_then(|mut out| self.get_tensor_into(t, &mut out));
                if let Err(e) = checked {
                    report
                        .problems
                        .push(format!("model {name:?}: inline tensor {:?}: {e}", t.name));
                }
            }
            for f in &m.files {
                if let Some(b) = f.blob {
                    expected.insert(b, (None, None));
                }
                if let Some(st) = &f.safetensors {
                    expected.insert(st.header, (None, None));
                    for t in st.tensors.iter().filter(|t| t.inline.is_none()) {
                        let meta = TensorMeta {
                            dtype: t.dtype(),
                            shape: t.shape.clone(),
                            raw_len: t.len,
                        };
                        expected.insert(t.object, (Some(meta), t.delta_base));
                    }
                }
            }
        }
        report.orphans = objects
            .iter()
            .filter(|o| !referenced.contains(&o.key))
            .count() as u64;
        let problems: Vec<String> = objects
            .par_iter()
            .filter_map(|o| {
                self.check_object(&o.key, expected.get(&o.key))
                    .err()
                    .map(|e| e.to_string())
            })
            .collect();
        report.objects += objects.len() as u64;
        report.problems.extend(problems);
        Ok(report)
    }

    /// Decodes the object named `key`, checks it against its name and against what a
    /// manifest says.
    fn check_object(
        &self,
        key: &ObjectKey,
        expect: Option<&(Option<TensorMeta>, Option<ObjectKey>)>,
    ) -> Result<()> {
        let obj = self.backend.get_object(key)?;
        let (header, payload) = object::split(&obj).map_err(obj_err(*key))?;
        match &header {
            Header::Blob { zstd, raw_len } => {
                if expect.is_some_and(|(m, _)| m.is_some()) {
                    return Err(StoreError::WrongKind {
                        key: *key,
                        expected: ObjectKind::Tensor,
                        found: ObjectKind::Blob,
                    });
                }
                let bytes = object::decode_blob(*zstd, *raw_len, payload).map_err(obj_err(*key))?;
                let computed = ObjectKey::blob(&bytes);
                if computed != *key {
                    return Err(StoreError::Checksum {
                        key: *key,
                        computed,
                    });
                }
            }
            Header::Plain { meta, .. } | Header::Delta { meta, .. } => {
                match expect {
                    Some((None, _)) => {
                        return Err(StoreError::WrongKind {
                            key: *key,
                            expected: ObjectKind::Blob,
                            found: ObjectKind::Tensor,
                        })
                    }
                    Some((Some(m), _)) if m != meta => {
                        return Err(StoreError::WrongTensor {
                            key: *key,
                            tensor: None,
                            expected: Box::new(m.clone()),
                            found: Box::new(meta.clone()),
                        })
                    }
                    Some((_, base)) if *base != header.delta_base() => {
                        return Err(StoreError::WrongBase {
                            key: *key,
                            expected: *base,
                            found: header.delta_base(),
                        })
                    }
                    _ => {}
                }
                let base = self.delta_base_bytes(key, &header, true)?;
                let mut out = object::alloc(meta.raw_len).map_err(obj_err(*key))?;
                self.decode_tensor(key, &header, payload, base.as_deref(), true, &mut out)?;
            }
        }
        Ok(())
    }
}
