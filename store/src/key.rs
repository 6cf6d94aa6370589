//! Object keys: 256-bit BLAKE3 digests naming what an object decodes to (STORE.md §2).
//!
//! A tensor's key covers its dtype, shape and bytes; a blob's key covers its bytes. The two
//! are domain-separated, so a blob can never be taken for a tensor or the other way round.
//! A delta object is named by a key derived from the tensor's key and its base's key, so a
//! name fixes both what the object decodes to and what it depends on, whatever coding was
//! chosen: an object overwritten by another writer's coding decodes to the same bytes.
//! A collision would need two different inputs with the same BLAKE3-256 digest: no such
//! pair is known, and finding one by chance among `n` objects has probability about
//! `n² / 2²⁵⁷` (below 10⁻⁵⁰ for a trillion objects). On top of that every `get` hashes the
//! decoded bytes again and refuses them unless they give the key they were stored under.

use std::fmt;

use mcodec::Dtype;

/// Domain tag of tensor keys.
const TENSOR_DOMAIN: &[u8] = b"mcodec-store tensor v1\0";
/// Domain tag of blob keys.
const BLOB_DOMAIN: &[u8] = b"mcodec-store blob v1\0";
/// BLAKE3 `derive_key` context of delta object names.
const DELTA_CONTEXT: &str = "mcodec-store 2 delta object";
/// Inputs at least this large are hashed on every core.
const PARALLEL_HASH_BYTES: usize = 1 << 20;

/// A 256-bit content key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(pub [u8; 32]);

/// A string that is not 64 lowercase hex digits.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("object key {0:?} is not 64 lowercase hex digits")]
pub struct KeyParseError(pub String);

impl ObjectKey {
    /// The key of a tensor: its dtype name, rank, dimensions, byte length and bytes.
    pub fn tensor(dtype: &Dtype, shape: &[u64], bytes: &[u8]) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(&Self::tensor_prefix(dtype, shape, bytes.len() as u64));
        Self::finish(h, bytes)
    }

    /// What a tensor's key hashes before its bytes: the domain tag, its dtype name, rank,
    /// dimensions and byte length `len`. The key is the BLAKE3 digest of this followed by
    /// the bytes (which a reader may hash in pieces: `treehash`).
    pub(crate) fn tensor_prefix(dtype: &Dtype, shape: &[u64], len: u64) -> Vec<u8> {
        let name = dtype.name().as_bytes();
        let mut p = Vec::with_capacity(TENSOR_DOMAIN.len() + 24 + name.len() + 8 * shape.len());
        p.extend_from_slice(TENSOR_DOMAIN);
        p.extend_from_slice(&(name.len() as u64).to_le_bytes());
        p.extend_from_slice(name);
        p.extend_from_slice(&(shape.len() as u64).to_le_bytes());
        for d in shape {
            p.extend_from_slice(&d.to_le_bytes());
        }
        p.extend_from_slice(&len.to_le_bytes());
        p
    }

    /// The key of a blob (a non-tensor file or a safetensors header).
    pub fn blob(bytes: &[u8]) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(BLOB_DOMAIN);
        h.update(&(bytes.len() as u64).to_le_bytes());
        Self::finish(h, bytes)
    }

    /// The name of a delta object holding the tensor of key `tensor` coded against the
    /// plain object `base`: BLAKE3 in key-derivation mode (context
    /// `"mcodec-store 2 delta object"`) over both keys, so it never equals a tensor or blob
    /// key, and differs for every (tensor, base) pair.
    pub fn delta(tensor: &ObjectKey, base: &ObjectKey) -> Self {
        let mut material = [0u8; 64];
        material[..32].copy_from_slice(&tensor.0);
        material[32..].copy_from_slice(&base.0);
        Self(blake3::derive_key(DELTA_CONTEXT, &material))
    }

    fn finish(mut h: blake3::Hasher, bytes: &[u8]) -> Self {
        if bytes.len() >= PARALLEL_HASH_BYTES {
            h.update_rayon(bytes);
        } else {
            h.update(bytes);
        }
        Self(*h.finalize().as_bytes())
    }

    /// Lowercase hex, 64 digits.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(DIGITS[usize::from(b >> 4)] as char);
            s.push(DIGITS[usize::from(b & 15)] as char);
        }
        s
    }

    /// Parses 64 lowercase hex digits (uppercase is refused so each key has one spelling).
    pub fn from_hex(s: &str) -> Result<Self, KeyParseError> {
        let err = || KeyParseError(s.chars().take(80).collect());
        if s.len() != 64 {
            return Err(err());
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
            *o = (digit(pair[0]).ok_or_else(err)? << 4) | digit(pair[1]).ok_or_else(err)?;
        }
        Ok(Self(out))
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKey({})", &self.to_hex()[..16])
    }
}

impl serde::Serialize for ObjectKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for ObjectKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_domains_shapes_and_dtypes() {
        let bytes = [1u8, 2, 3, 4];
        let a = ObjectKey::tensor(&Dtype::BF16, &[2], &bytes);
        assert_ne!(a, ObjectKey::tensor(&Dtype::F16, &[2], &bytes));
        assert_ne!(a, ObjectKey::tensor(&Dtype::BF16, &[1, 2], &bytes));
        assert_ne!(a, ObjectKey::blob(&bytes));
        assert_eq!(a, ObjectKey::from_hex(&a.to_hex()).unwrap());
        assert!(ObjectKey::from_hex(&a.to_hex().to_uppercase()).is_err());
        assert!(ObjectKey::from_hex("00").is_err());
        let b = ObjectKey::tensor(&Dtype::BF16, &[2], &[5, 6, 7, 8]);
        let d = ObjectKey::delta(&a, &b);
        assert_eq!(d, ObjectKey::delta(&a, &b));
        assert_ne!(d, ObjectKey::delta(&b, &a));
        assert!(d != a && d != b);
        let mut h = blake3::Hasher::new_derive_key(DELTA_CONTEXT);
        h.update(&a.0);
        h.update(&b.0);
        assert_eq!(d.0, *h.finalize().as_bytes());
        let big = vec![7u8; 3 << 20];
        let serial = {
            let mut h = blake3::Hasher::new();
            h.update(BLOB_DOMAIN);
            h.update(&(big.len() as u64).to_le_bytes());
            h.update(&big);
            *h.finalize().as_bytes()
        };
        assert_eq!(ObjectKey::blob(&big).0, serial);
    }
}
