//! `add`: read the input, key every tensor and file, reuse what the store has, code the
//! rest as a delta against the base or on its own, and write the manifest last (STORE.md §5).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use mcodec::delta::{self, DeltaMethod};
use mcodec::safetensors;
use mcodec::tensor::{self, EncodeOptions};
use rayon::prelude::*;

use crate::backend::{BackendError, PutOutcome};
use crate::base::DeltaMode;
use crate::error::{obj_err, Result, StoreError};
use crate::input::{self, InputTensor, LoadedFile};
use crate::key::ObjectKey;
use crate::manifest::{
    validate_name, BaseRef, FileEntry, InlineBytes, Manifest, SafetensorsEntry, TensorEntry,
    FORMAT, MAX_INLINE_BYTES, VERSION,
};
use crate::object::{self, Header, TensorMeta};
use crate::progress::{Progress, ProgressFn};
use crate::report::AddReport;
use crate::scratch::ScratchVec;
use crate::Store;

/// Options of [`Store::add`].
#[derive(Clone, Debug, Default)]
pub struct AddOptions {
    /// Base model; chosen automatically when `None`.
    pub base: Option<String>,
    /// Delta coder.
    pub delta: DeltaMode,
    /// Tensor codec settings of plain objects.
    pub encode: EncodeOptions,
}

/// Counters of an add, shared between worker threads.
#[derive(Default)]
struct Counters {
    dedup: AtomicU64,
    delta: AtomicU64,
    plain: AtomicU64,
    blobs: AtomicU64,
    new_bytes: AtomicU64,
    created: AtomicU64,
}

impl Counters {
    /// Counts a created object of `bytes` bytes (and, in test builds, honours the
    /// crash tests' pause).
    fn created(&self, bytes: usize) {
        self.new_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let _created = self.created.fetch_add(1, Ordering::SeqCst) + 1;
        #[cfg(feature = "test-hooks")]
        crate::test_hooks::pause_after_objects(_created);
    }
}

impl Store {
    /// Adds the model at `path` (a directory or a single file) as `name`.
    pub fn add(&self, path: &Path, name: &str, opts: &AddOptions) -> Result<AddReport> {
        self.add_with_progress(path, name, opts, &|_, _| {})
    }

    /// [`Self::add`], reporting the bytes of the model stored so far to `progress`.
    pub fn add_with_progress(
        &self,
        path: &Path,
        name: &str,
        opts: &AddOptions,
        progress: &ProgressFn<'_>,
    ) -> Result<AddReport> {
        // Under a lease, so that no gc deletes an object this add relies on.
        self.with_lease(|| self.par(|| self.add_inner(path, name, opts, progress)))
    }

    fn add_inner(
        &self,
        path: &Path,
        name: &str,
        opts: &AddOptions,
        progress: &ProgressFn<'_>,
    ) -> Result<AddReport> {
        validate_name(name)?;
        if self.backend.get_manifest(name)?.is_some() {
            return Err(StoreError::ModelExists(name.to_owned()));
        }
        self.check_case_collision(name)?;
        let (single_file, files) = input::collect(path)?;
        let loaded: Vec<LoadedFile> = files
            .into_iter()
            .map(|mut file| {
                let data = input::load_unpacking(&mut file)?;
                let header = file
                    .rel
                    .ends_with(".safetensors")
                    .then(|| parse_header(&data))
                    .flatten();
                Ok(LoadedFile { file, data, header })
            })
            .collect::<Result<_>>()?;
        input::check_unpacked_names(&loaded)?;
        let all_tensors: Vec<InputTensor<'_>> =
            loaded.iter().flat_map(LoadedFile::tensors).collect();

        let mut report = AddReport {
            name: name.to_owned(),
            files: loaded.len(),
            tensors: all_tensors.len(),
            logical_bytes: loaded.iter().map(|f| f.data.len() as u64).sum(),
            ..AddReport::default()
        };
        let base = match &opts.base {
            Some(b) => {
                if b == name {
                    return Err(StoreError::OwnBase(name.to_owned()));
                }
                Some((self.manifest(b)?, false))
            }
            None if opts.delta == DeltaMode::Off || all_tensors.is_empty() => None,
            None => {
                let (chosen, scores, skipped) = self.choose_base(&all_tensors, name, opts.delta)?;
                report.base_scores = scores;
                report.skipped_bases = skipped;
                chosen.map(|m| (m, true))
            }
        };
        report.base = base.as_ref().map(|(m, auto)| BaseRef {
            name: m.name.clone(),
            auto: *auto,
        });
        let base_roots: HashMap<(&str, String, &[u64]), ObjectKey> = base
            .as_ref()
            .map(|(m, _)| {
                // Inline objects are not in the backend: no deltas against them.
                m.tensors()
                    .filter(|t| t.inline.is_none())
                    .map(|t| ((t.name.as_str(), t.dtype.clone(), &t.shape[..]), t.root()))
                    .collect()
            })
            .unwrap_or_default();

        let counters = Counters::default();
        let progress = Progress::new(progress, report.logical_bytes);
        let mut entries = Vec::with_capacity(loaded.len());
        for f in &loaded {
            let entry = match &f.header {
                None => FileEntry {
                    path: f.file.rel.clone(),
                    size: f.data.len() as u64,
                    mode: f.file.mode,
                    blob: Some(self.put_blob(&f.data, &counters)?),
                    safetensors: None,
                },
                Some((h, prefix)) => {
                    let header = self.put_blob(prefix, &counters)?;
                    let tensors = f
                        .tensors()
                        .par_iter()
                        .map(|t| {
                            let root = if opts.delta == DeltaMode::Off {
                                None
                            } else {
                                base_roots
                                    .get(&(
                                        t.info.name.as_str(),
                                        t.info.dtype.name().to_owned(),
                                        &t.info.shape[..],
                                    ))
                                    .copied()
                            };
                            let entry = self.put_tensor(t, root, opts, &counters)?;
                            progress.advance(t.bytes.len() as u64);
                            Ok(entry)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    FileEntry {
                        path: f.file.rel.clone(),
                        size: f.data.len() as u64,
                        mode: f.file.mode,
                        blob: None,
                        safetensors: Some(SafetensorsEntry {
                            header,
                            header_len: h.prefix_len,
                            tensors,
                        }),
                    }
                }
            };
            if entry.safetensors.is_none() {
                progress.advance(f.data.len() as u64);
            }
            entries.push(entry);
        }
        let manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            name: name.to_owned(),
            base: report.base.clone(),
            single_file,
            files: entries,
        };
        manifest.validate()?;
        // Objects first, durable, and all still there; the manifest last.
        self.backend.sync_objects()?;
        let mut needed: Vec<ObjectKey> = manifest.objects().into_iter().map(|(k, _)| k).collect();
        needed.sort();
        needed.dedup();
        for k in needed {
            if self.backend.object_size(&k)?.is_none() {
                return Err(StoreError::Vanished(k));
            }
        }
        match self.backend.put_manifest(name, &manifest.to_json()) {
            Err(BackendError::ManifestExists(n)) => return Err(StoreError::ModelExists(n)),
            r => r?,
        }
        progress.finish();
        report.dedup = counters.dedup.into_inner();
        report.delta = counters.delta.into_inner();
        report.plain = counters.plain.into_inner();
        report.blobs = counters.blobs.into_inner();
        report.new_bytes = counters.new_bytes.into_inner();
        Ok(report)
    }

    /// Stores a blob unless present; returns its key.
    fn put_blob(&self, bytes: &[u8], c: &Counters) -> Result<ObjectKey> {
        // One copy, hashed and coded: a mapped input changing meanwhile cannot make the
        // object differ from its name.
        let bytes = &bytes.to_vec()[..];
        let key = ObjectKey::blob(bytes);
        if self.backend.object_size(&key)?.is_some() {
            self.backend.touch_object(&key)?;
            c.dedup.fetch_add(1, Ordering::Relaxed);
            return Ok(key);
        }
        let obj = object::encode_blob(bytes);
        if self.backend.put_object(&key, &obj)? == PutOutcome::Created {
            self.verify_written(&key, &obj, None, bytes)?;
            c.blobs.fetch_add(1, Ordering::Relaxed);
            c.created(obj.len());
        } else {
            self.backend.touch_object(&key)?;
            c.dedup.fetch_add(1, Ordering::Relaxed);
        }
        Ok(key)
    }

    /// Stores a tensor unless present, as the smaller of its plain coding (at its key) and
    /// its delta against the plain object `root` (at [`ObjectKey::delta`] of both);
    /// returns its manifest entry.
    ///
    /// A name fixes what its object decodes to and what it depends on, so an object found
    /// under either name is reused without reading it, and a put that finds (or, on a
    /// backend without create-only puts, replaces) another writer's coding is harmless.
    fn put_tensor(
        &self,
        t: &InputTensor<'_>,
        root: Option<ObjectKey>,
        opts: &AddOptions,
        c: &Counters,
    ) -> Result<TensorEntry> {
        let info = &t.info;
        // One copy of the input, hashed and coded: a mapped input changing meanwhile
        // cannot make the object differ from its key.
        // (A buffer of this thread's, kept from an earlier tensor: no fresh pages.)
        let mut bytes = ScratchVec::take();
        bytes.extend_from_slice(t.bytes);
        let key = ObjectKey::tensor(&info.dtype, &info.shape, &bytes);
        let len = bytes.len() as u64;
        let entry = |delta_base: Option<ObjectKey>, inline| TensorEntry {
            name: info.name.clone(),
            dtype: info.dtype.name().to_owned(),
            shape: info.shape.clone(),
            len,
            key,
            object: delta_base.map_or(key, |b| ObjectKey::delta(&key, &b)),
            delta_base,
            inline,
        };
        if self.backend.object_size(&key)?.is_some() {
            self.backend.touch_object(&key)?;
            c.dedup.fetch_add(1, Ordering::Relaxed);
            return Ok(entry(None, None));
        }
        // A base tensor identical to this one is plain at `key`, which is missing: code
        // this tensor on its own rather than against a base that is not there.
        let root = root.filter(|r| *r != key);
        if let Some(root) = root {
            let name = ObjectKey::delta(&key, &root);
            if self.backend.object_size(&name)?.is_some() {
                self.backend.touch_object(&name)?;
                self.backend.touch_object(&root)?;
                c.dedup.fetch_add(1, Ordering::Relaxed);
                return Ok(entry(Some(root), None));
            }
        }
        let meta = TensorMeta {
            dtype: info.dtype.clone(),
            shape: info.shape.clone(),
            raw_len: bytes.len() as u64,
        };
        // (root, delta, base bytes, size of the base's plain object)
        let mut delta: Option<(ObjectKey, Vec<u8>, ScratchVec, u64)> = None;
        if let Some(root) = root {
            // Verified: a delta against damaged base bytes would decode wrongly once the
            // base is repaired or rewritten by another writer.
            let (base, base_size) = self.load_tensor_sized(&root, Some(&meta), false, true)?;
            self.backend.touch_object(&root)?;
            let d = match opts.delta {
                DeltaMode::BitX => {
                    delta::encode_with(DeltaMethod::BitX, &info.dtype, &base, &bytes)
                }
                _ => delta::encode(&info.dtype, &base, &bytes),
            };
            if let Ok(d) = d {
                delta = Some((root, d, base, base_size));
            }
        }
        // The plain coding is computed only where it may win. The fine-tune's plain
        // object is about as large as its base's, so a delta under half of that is kept
        // without it, and the base's size stands in for it in the header (`stats`).
        let (obj, delta_base, base_bytes) = match delta {
            Some((root, d, base, base_size)) if (d.len() as u64 + 32) * 2 < base_size => (
                object::encode_delta(meta, root, base_size, &d),
                Some(root),
                Some(base),
            ),
            delta => {
                let plain = tensor::encode(&info.dtype, &bytes, &opts.encode);
                match delta.filter(|(_, d, _, _)| d.len() + 32 < plain.coded_len()) {
                    Some((root, d, base, _)) => (
                        object::encode_delta(meta, root, plain.coded_len() as u64, &d),
                        Some(root),
                        Some(base),
                    ),
                    None => (object::encode_plain(meta, &plain), None, None),
                }
            }
        };
        if delta_base.is_none() && obj.len() <= MAX_INLINE_BYTES {
            self.verify_decodes(&key, &obj, None, &bytes)?;
            c.plain.fetch_add(1, Ordering::Relaxed);
            c.new_bytes.fetch_add(obj.len() as u64, Ordering::Relaxed);
            return Ok(entry(None, Some(InlineBytes(obj))));
        }
        let e = entry(delta_base, None);
        if self.backend.put_object(&e.object, &obj)? == PutOutcome::Existed {
            // Another writer stored it meanwhile; whatever its coding, it decodes to this
            // tensor (against the same base, for a delta).
            self.backend.touch_object(&e.object)?;
            c.dedup.fetch_add(1, Ordering::Relaxed);
            return Ok(e);
        }
        self.verify_written(
            &e.object,
            &obj,
            base_bytes.as_deref().map(Vec::as_slice),
            &bytes,
        )?;
        let counter = if delta_base.is_some() {
            &c.delta
        } else {
            &c.plain
        };
        counter.fetch_add(1, Ordering::Relaxed);
        c.created(obj.len());
        Ok(e)
    }

    /// Checks that the object `name` just written as `written` decodes to `tensor`, the
    /// bytes its name was computed from (for a delta, against `base`; a blob is hashed
    /// instead) and, where the
    /// backend writes synchronously, reads it back and checks it is those bytes. A
    /// backend that uploads in the background (S3) is not read back here: the object is
    /// not there before `sync_objects`, and its upload carries a checksum the server
    /// verifies.
    fn verify_written(
        &self,
        name: &ObjectKey,
        written: &[u8],
        base: Option<&[u8]>,
        tensor: &[u8],
    ) -> Result<()> {
        if self.backend.puts_are_synchronous() {
            let back = self.backend.get_object_bytes(name)?;
            if *back != *written {
                return Err(StoreError::ReadBack {
                    key: *name,
                    written: written.len() as u64,
                    read: back.len() as u64,
                });
            }
        }
        self.verify_decodes(name, written, base, tensor)
    }

    /// Checks that the tensor object `obj` decodes to `tensor`, the bytes its name was
    /// computed from: one decode and a comparison, not a second hash of the output (the
    /// name is hashed only to report a mismatch). A blob's bytes are hashed.
    fn verify_decodes(
        &self,
        name: &ObjectKey,
        obj: &[u8],
        base: Option<&[u8]>,
        tensor: &[u8],
    ) -> Result<()> {
        let (header, payload) = object::split(obj).map_err(obj_err(*name))?;
        if let Header::Blob { zstd, raw_len } = header {
            let bytes = object::decode_blob(zstd, raw_len, payload).map_err(obj_err(*name))?;
            let computed = ObjectKey::blob(&bytes);
            if computed != *name {
                return Err(StoreError::Checksum {
                    key: *name,
                    computed,
                });
            }
            return Ok(());
        }
        // Piece by piece where the object decodes so (no tensor-sized buffer); else, or
        // when that finds a difference or an error, whole, which also says what is wrong.
        if crate::pieces::decodes_to(&header, payload, base, tensor) == Some(true) {
            return Ok(());
        }
        let mut out = object::alloc(header.raw_len()).map_err(obj_err(*name))?;
        self.decode_tensor(name, &header, payload, base, false, &mut out)?;
        if out != tensor {
            // Hashing the output names what it decoded to (an error either way).
            self.decode_tensor(name, &header, payload, base, true, &mut out)?;
            return Err(StoreError::VerifyMismatch { key: *name });
        }
        Ok(())
    }
}

/// Parses a safetensors header from one copy of its bytes, so that the header stored
/// is the one whose tensor offsets are used. `None` when the file is not safetensors
/// (it is then stored as a blob).
fn parse_header(data: &[u8]) -> Option<(safetensors::Header, Vec<u8>)> {
    let first = safetensors::parse(data, data.len() as u64).ok()?;
    let prefix = data.get(..first.prefix_len as usize)?.to_vec();
    let header = safetensors::parse(&prefix, data.len() as u64).ok()?;
    (header.prefix_len == first.prefix_len && header.tensors == first.tensors)
        .then_some((header, prefix))
}
