//! Objects back to bytes, each verified against its name (STORE.md §2–§3).

use mcodec::delta;

use crate::backend::BackendError;
use crate::error::{obj_err, ObjectKind, Result, StoreError};
use crate::key::ObjectKey;
use crate::manifest::TensorEntry;
use crate::object::{self, Header, ObjectError, TensorMeta};
use crate::scratch::ScratchVec;
use crate::Store;

impl Store {
    /// An object's header.
    pub(crate) fn header(&self, key: &ObjectKey) -> Result<Header> {
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
        Ok(self
            .load_tensor_sized(key, expect, allow_delta, verify)?
            .0
            .into_vec())
    }

    /// [`Self::load_tensor`], also returning the stored object's size.
    pub(crate) fn load_tensor_sized(
        &self,
        key: &ObjectKey,
        expect: Option<&TensorMeta>,
        allow_delta: bool,
        verify: bool,
    ) -> Result<(ScratchVec, u64)> {
        let obj = self.backend.get_object_bytes(key)?;
        let (header, payload) = object::split(&obj).map_err(obj_err(*key))?;
        let meta = tensor_meta(key, &header)?;
        if let Some(e) = expect.filter(|e| *e != meta) {
            return Err(StoreError::WrongTensor {
                key: *key,
                tensor: None,
                expected: Box::new(e.clone()),
                found: Box::new(meta.clone()),
            });
        }
        let base = self.delta_base_bytes(key, &header, allow_delta)?;
        // Sized like `object::alloc` (refusing what cannot be allocated), from this
        // thread's kept buffers; the decode overwrites every byte.
        let mut out = usize::try_from(meta.raw_len)
            .ok()
            .and_then(ScratchVec::with_len)
            .ok_or(ObjectError::Alloc(meta.raw_len))
            .map_err(obj_err(*key))?;
        self.decode_tensor(key, &header, payload, base.as_deref(), verify, &mut out)?;
        Ok((out, obj.len() as u64))
    }

    /// The base's bytes of a delta object (`None` for a plain one), refused unless
    /// `allow_delta`. Read before anything is sized by the delta's claimed length: the
    /// base is a plain object of the same length, bounded by its own size.
    pub(crate) fn delta_base_bytes(
        &self,
        key: &ObjectKey,
        header: &Header,
        allow_delta: bool,
    ) -> Result<Option<Vec<u8>>> {
        let Header::Delta { meta, base, .. } = header else {
            return Ok(None);
        };
        if !allow_delta {
            return Err(StoreError::WrongKind {
                key: *key,
                expected: ObjectKind::Plain,
                found: ObjectKind::Delta,
            });
        }
        // Not verified on its own: a wrong base gives a wrong result, which the check of
        // the delta's name catches.
        Ok(Some(self.load_tensor(base, Some(meta), false, false)?))
    }

    /// Decodes the plain base named by a delta object's header `header` into `out`, where
    /// the delta then decodes in place; `false` (and `out` untouched) for a plain object.
    /// The base is checked like [`Self::delta_base_bytes`] does: its description must be
    /// the delta's, and it must be plain. Not verified on its own (the check of the
    /// delta's name catches a wrong base).
    fn delta_base_into(&self, header: &Header, out: &mut [u8]) -> Result<bool> {
        let Header::Delta { meta, base, .. } = header else {
            return Ok(false);
        };
        let obj = self.backend.get_object_bytes(base)?;
        let (base_header, payload) = object::split(&obj).map_err(obj_err(*base))?;
        let found = tensor_meta(base, &base_header)?;
        if found != meta {
            return Err(StoreError::WrongTensor {
                key: *base,
                tensor: None,
                expected: Box::new(meta.clone()),
                found: Box::new(found.clone()),
            });
        }
        if base_header.delta_base().is_some() {
            return Err(StoreError::WrongKind {
                key: *base,
                expected: ObjectKind::Plain,
                found: ObjectKind::Delta,
            });
        }
        self.decode_tensor(base, &base_header, payload, None, false, out)?;
        Ok(true)
    }

    /// Decodes the payload of the tensor object named `key` into `out` (for a delta,
    /// against `base` from [`Self::delta_base_bytes`]) and, when `verify`, checks the
    /// bytes against the name: a plain object's name is the tensor's key, a delta
    /// object's is [`ObjectKey::delta`] of the tensor's key and the header's base (which
    /// also checks that the header names the base the name was made with). Returns the
    /// tensor's key when verified.
    pub(crate) fn decode_tensor(
        &self,
        key: &ObjectKey,
        header: &Header,
        payload: &[u8],
        base: Option<&[u8]>,
        verify: bool,
        out: &mut [u8],
    ) -> Result<Option<ObjectKey>> {
        let base = base.map_or(DeltaBase::Missing, DeltaBase::Bytes);
        self.decode_tensor_with(key, header, payload, base, verify, out)
    }

    /// [`Self::decode_tensor`] with the delta's base where `base` says.
    fn decode_tensor_with(
        &self,
        key: &ObjectKey,
        header: &Header,
        payload: &[u8],
        base: DeltaBase<'_>,
        verify: bool,
        out: &mut [u8],
    ) -> Result<Option<ObjectKey>> {
        let meta = tensor_meta(key, header)?;
        let delta_err = |e| StoreError::Object {
            key: *key,
            source: ObjectError::Delta(e),
        };
        match (header, base) {
            (
                Header::Plain {
                    meta: plain,
                    codec,
                    chunk_log2,
                    stream_lens,
                },
                _,
            ) => object::decode_plain_into(
                *codec,
                *chunk_log2,
                stream_lens,
                payload,
                plain.raw_len,
                out,
            )
            .map_err(obj_err(*key))?,
            (Header::Delta { .. }, DeltaBase::Bytes(base)) => {
                delta::decode(&meta.dtype, base, payload, out).map_err(delta_err)?
            }
            (Header::Delta { .. }, DeltaBase::InOut) => {
                delta::decode_in_place(&meta.dtype, out, payload).map_err(delta_err)?
            }
            _ => {
                return Err(StoreError::WrongKind {
                    key: *key,
                    expected: ObjectKind::Plain,
                    found: ObjectKind::Delta,
                })
            }
        }
        if !verify {
            return Ok(None);
        }
        let tensor = ObjectKey::tensor(&meta.dtype, &meta.shape, out);
        let name = header
            .delta_base()
            .map_or(tensor, |b| ObjectKey::delta(&tensor, &b));
        if name != *key {
            return Err(StoreError::Checksum {
                key: *key,
                computed: name,
            });
        }
        Ok(Some(tensor))
    }

    /// Refuses a stored (not inline) tensor whose manifest length claims more than its
    /// object may decode to: [`object::MAX_EXPANSION`] bytes per stored byte, a delta's
    /// base counted with it. Costs a size query per object, no read.
    pub(crate) fn check_claim(&self, t: &TensorEntry) -> Result<()> {
        let size = |k: &ObjectKey| -> Result<u64> {
            Ok(self
                .backend
                .object_size(k)?
                .ok_or(BackendError::NotFound(*k))?)
        };
        let mut stored = size(&t.object)?;
        if let Some(b) = &t.delta_base {
            stored = stored.saturating_add(size(b)?);
        }
        object::check_expansion(stored, t.len).map_err(obj_err(t.object))
    }

    /// Decodes the tensor of manifest entry `t` into `out` and verifies it.
    pub(crate) fn get_tensor_into(&self, t: &TensorEntry, out: &mut [u8]) -> Result<()> {
        self.with_entry_bytes(t, |obj| self.decode_entry_into(t, obj, out))
    }

    /// Runs `f` on the stored bytes of manifest entry `t`: inline in the manifest, or
    /// its object (read or mapped for the call).
    pub(crate) fn with_entry_bytes<R>(
        &self,
        t: &TensorEntry,
        f: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        match &t.inline {
            Some(i) => f(&i.0),
            None => f(&self.backend.get_object_bytes(&t.object)?),
        }
    }

    /// [`Self::get_tensor_into`] with the entry's object `obj` already read.
    pub(crate) fn decode_entry_into(
        &self,
        t: &TensorEntry,
        obj: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        let (header, payload) = object::split(obj).map_err(obj_err(t.object))?;
        check_entry(t, &header)?;
        // A delta's base is decoded straight into `out` and the delta applied there: no
        // tensor-sized buffer to zero, fault in and read back.
        let base = if self.delta_base_into(&header, out)? {
            DeltaBase::InOut
        } else {
            DeltaBase::Missing
        };
        let decoded = self.decode_tensor_with(&t.object, &header, payload, base, true, out)?;
        // The object verified against its own name; the manifest's key of the tensor must
        // be the one that name was made from.
        if let Some(computed) = decoded.filter(|k| *k != t.key) {
            return Err(StoreError::Checksum {
                key: t.object,
                computed,
            });
        }
        Ok(())
    }

    /// Decodes a blob and verifies it.
    pub(crate) fn get_blob(&self, key: &ObjectKey, len: u64) -> Result<Vec<u8>> {
        let obj = self.backend.get_object(key)?;
        let (zstd, payload) = blob_payload(key, &obj, len)?;
        let bytes = object::decode_blob(zstd, len, payload).map_err(obj_err(*key))?;
        check_blob(key, &bytes)?;
        Ok(bytes)
    }

    /// Runs `f` on the blob named `key` (`len` bytes long), decoded and verified: a
    /// stored blob straight from the object's bytes, a zstd one (up to
    /// [`crate::pieces::MAX_PIECE_BYTES`]) in this thread's piece buffer, whose pages the
    /// tensors before it have already touched, by this thread's zstd context (not a
    /// fresh `Vec` and context per blob: a 466 KB `tokenizer.json` is ~110 fresh pages,
    /// ~2.4 µs each in the benchmark's guest, on the serial end of a `get`).
    pub(crate) fn with_blob<R>(
        &self,
        key: &ObjectKey,
        len: u64,
        f: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        let obj = self.backend.get_object(key)?;
        let (zstd, payload) = blob_payload(key, &obj, len)?;
        let n = usize::try_from(len)
            .ok()
            .filter(|&n| zstd && n <= crate::pieces::MAX_PIECE_BYTES);
        let Some(n) = n else {
            let bytes = object::decode_blob(zstd, len, payload).map_err(obj_err(*key))?;
            check_blob(key, &bytes)?;
            return f(&bytes);
        };
        crate::pieces::with_piece_buffer(n, |out| {
            object::decode_zstd_blob_into(payload, out).map_err(obj_err(*key))?;
            check_blob(key, out)?;
            f(out)
        })
    }
}

/// The blob object `obj` named `key`, checked to be a blob of `len` bytes: whether its
/// payload is a zstd frame, and the payload.
fn blob_payload<'a>(key: &ObjectKey, obj: &'a [u8], len: u64) -> Result<(bool, &'a [u8])> {
    let (header, payload) = object::split(obj).map_err(obj_err(*key))?;
    let Header::Blob { zstd, raw_len } = header else {
        return Err(StoreError::WrongKind {
            key: *key,
            expected: ObjectKind::Blob,
            found: ObjectKind::Tensor,
        });
    };
    if raw_len != len {
        return Err(StoreError::BlobLength {
            key: *key,
            expected: len,
            found: raw_len,
        });
    }
    Ok((zstd, payload))
}

/// Checks decoded blob `bytes` against their name `key`.
fn check_blob(key: &ObjectKey, bytes: &[u8]) -> Result<()> {
    let computed = ObjectKey::blob(bytes);
    if computed != *key {
        return Err(StoreError::Checksum {
            key: *key,
            computed,
        });
    }
    Ok(())
}

/// Checks that the object of manifest entry `t`, whose header is `header`, is the tensor
/// the entry describes, against the base it names.
pub(crate) fn check_entry(t: &TensorEntry, header: &Header) -> Result<()> {
    let want = TensorMeta {
        dtype: t.dtype(),
        shape: t.shape.clone(),
        raw_len: t.len,
    };
    let found = tensor_meta(&t.object, header)?;
    if *found != want {
        return Err(StoreError::WrongTensor {
            key: t.object,
            tensor: Some(t.name.clone()),
            expected: Box::new(want),
            found: Box::new(found.clone()),
        });
    }
    if header.delta_base() != t.delta_base {
        return Err(StoreError::WrongBase {
            key: t.object,
            expected: t.delta_base,
            found: header.delta_base(),
        });
    }
    Ok(())
}

/// Where a delta object's base is when it is decoded.
#[derive(Clone, Copy)]
enum DeltaBase<'a> {
    /// Not given (a plain object has none; a delta fails).
    Missing,
    /// In its own slice.
    Bytes(&'a [u8]),
    /// Already in the output buffer, which the delta decodes in place.
    InOut,
}

/// The tensor description of a tensor object's header.
fn tensor_meta<'h>(key: &ObjectKey, header: &'h Header) -> Result<&'h TensorMeta> {
    header.meta().ok_or(StoreError::WrongKind {
        key: *key,
        expected: ObjectKind::Tensor,
        found: ObjectKind::Blob,
    })
}
