//! Objects back to bytes, each verified against its name (STORE.md §2–§3).

use mcodec::delta;

use crate::error::{obj_err, Result, StoreError};
use crate::key::ObjectKey;
use crate::manifest::TensorEntry;
use crate::object::{self, Header, ObjectError, TensorMeta};
use crate::Store;

impl Store {
    /// An object's header.
    pub fn header(&self, key: &ObjectKey) -> Result<Header> {
        let head = self
            .backend
            .get_object_range(key, 0..object::MAX_HEADER_LEN as u64)?;
        Ok(Header::parse(&head).map_err(obj_err(*key))?.0)
    }

    /// Decodes the tensor object named `key` (checking it is `expect` when given),
    /// verifying the bytes against the name when `verify`. A delta object is decoded
    /// against its base only when `allow_delta`; the base must be plain (chains are one
    /// level deep).
    pub(crate) fn load_tensor(
        &self,
        key: &ObjectKey,
        expect: Option<&TensorMeta>,
        allow_delta: bool,
        verify: bool,
    ) -> Result<Vec<u8>> {
        let obj = self.backend.get_object(key)?;
        let (header, n) = Header::parse(&obj).map_err(obj_err(*key))?;
        let meta = header.meta().ok_or_else(|| StoreError::Mismatch {
            key: *key,
            problem: "is a blob, not a tensor".into(),
        })?;
        if let Some(e) = expect.filter(|e| *e != meta) {
            return Err(StoreError::Mismatch {
                key: *key,
                problem: format!(
                    "holds {} {:?}, expected {} {:?}",
                    meta.dtype, meta.shape, e.dtype, e.shape
                ),
            });
        }
        let mut out = object::alloc(meta.raw_len).map_err(obj_err(*key))?;
        self.decode_tensor_object(key, &header, &obj[n..], allow_delta, verify, &mut out)?;
        Ok(out)
    }

    /// Decodes the payload of the tensor object named `key` into `out` and, when `verify`,
    /// checks the bytes against the name: a plain object's name is the tensor's key, a
    /// delta object's is [`ObjectKey::delta`] of the tensor's key and the header's base
    /// (which also checks that the header names the base the name was made with). Returns
    /// the tensor's key when verified.
    pub(crate) fn decode_tensor_object(
        &self,
        key: &ObjectKey,
        header: &Header,
        payload: &[u8],
        allow_delta: bool,
        verify: bool,
        out: &mut [u8],
    ) -> Result<Option<ObjectKey>> {
        match header {
            Header::Blob { .. } => {
                return Err(StoreError::Mismatch {
                    key: *key,
                    problem: "is a blob, not a tensor".into(),
                })
            }
            Header::Plain {
                codec,
                chunk_log2,
                stream_lens,
                ..
            } => object::decode_plain_into(*codec, *chunk_log2, stream_lens, payload, out)
                .map_err(obj_err(*key))?,
            Header::Delta { meta, base, .. } => {
                if !allow_delta {
                    return Err(StoreError::Mismatch {
                        key: *key,
                        problem: "is a delta where a plain object is required".into(),
                    });
                }
                // Not verified on its own: a wrong base gives a wrong result, which the
                // check of this object's name below catches.
                let base_bytes = self.load_tensor(base, Some(meta), false, false)?;
                delta::decode(&meta.dtype, &base_bytes, payload, out).map_err(|e| {
                    StoreError::Object {
                        key: *key,
                        source: ObjectError::Payload(e.to_string()),
                    }
                })?;
            }
        }
        if !verify {
            return Ok(None);
        }
        let meta = header.meta().expect("tensor header");
        let tensor = ObjectKey::tensor(&meta.dtype, &meta.shape, out);
        let name = header
            .delta_base()
            .map_or(tensor, |b| ObjectKey::delta(&tensor, &b));
        if name != *key {
            return Err(StoreError::Checksum { key: *key });
        }
        Ok(Some(tensor))
    }

    /// Decodes the tensor of manifest entry `t` into `out` and verifies it.
    pub(crate) fn get_tensor_into(&self, t: &TensorEntry, out: &mut [u8]) -> Result<()> {
        let obj = match &t.inline {
            Some(i) => i.0.clone(),
            None => self.backend.get_object(&t.object)?,
        };
        let (header, n) = Header::parse(&obj).map_err(obj_err(t.object))?;
        let want = TensorMeta {
            dtype: t.dtype(),
            shape: t.shape.clone(),
            raw_len: t.len,
        };
        if header.meta() != Some(&want) || header.delta_base() != t.delta_base {
            return Err(StoreError::Mismatch {
                key: t.object,
                problem: format!("does not hold tensor {:?} as the manifest says", t.name),
            });
        }
        let decoded = self.decode_tensor_object(&t.object, &header, &obj[n..], true, true, out)?;
        if decoded != Some(t.key) {
            return Err(StoreError::Checksum { key: t.object });
        }
        Ok(())
    }

    /// Decodes a blob and verifies it.
    pub(crate) fn get_blob(&self, key: &ObjectKey, len: u64) -> Result<Vec<u8>> {
        let obj = self.backend.get_object(key)?;
        let (header, n) = Header::parse(&obj).map_err(obj_err(*key))?;
        let Header::Blob { zstd, raw_len } = header else {
            return Err(StoreError::Mismatch {
                key: *key,
                problem: "is a tensor, not a blob".into(),
            });
        };
        if raw_len != len {
            return Err(StoreError::Mismatch {
                key: *key,
                problem: format!("holds {raw_len} bytes, the manifest says {len}"),
            });
        }
        let bytes = object::decode_blob(zstd, raw_len, &obj[n..]).map_err(obj_err(*key))?;
        if ObjectKey::blob(&bytes) != *key {
            return Err(StoreError::Checksum { key: *key });
        }
        Ok(bytes)
    }
}
