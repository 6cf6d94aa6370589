//! The object file format (STORE.md §3): a small header naming what the object decodes to
//! and how it is coded, followed by the payload.
//!
//! An object is self-describing, so `fsck` can decode and check any object on its own.
//! Everything read from the header is validated before it sizes an allocation, and no
//! object may decode to more than [`MAX_EXPANSION`] bytes per byte of itself (the
//! container's limit): the writer pads the few objects that compress better.

use mcodec::bytes::{ByteReader, Truncated};
pub use mcodec::container::MAX_EXPANSION;
use mcodec::delta::DeltaError;
use mcodec::safetensors::MAX_RANK;
use mcodec::tensor::{Codec, EncodedTensor, TensorDecoder, TensorError, ZstdError};
use mcodec::{Dtype, ShapeError};

use crate::key::ObjectKey;

/// First bytes of every object.
pub const MAGIC: [u8; 4] = *b"MCSO";
/// Object format version of unpadded objects.
pub const VERSION: u8 = 1;
/// Object format version of padded objects: the header ends with `padding u64`, and the
/// payload is followed by that many zero bytes (STORE.md §3).
pub const VERSION_PADDED: u8 = 2;
/// No object header is longer than this, so reading this many bytes gives the header.
pub const MAX_HEADER_LEN: usize = 1024;
/// Largest decoded size an object may claim (1 TiB): a bound on hostile headers.
pub const MAX_RAW_LEN: u64 = 1 << 40;
/// zstd level of small blobs (configs, tokenizers, safetensors headers: text-like).
const BLOB_ZSTD_LEVEL: i32 = 9;
/// zstd level of blobs over [`LARGE_BLOB_BYTES`] (other weight formats): level 9 would
/// run at tens of MB/s.
const LARGE_BLOB_ZSTD_LEVEL: i32 = 3;
/// Size from which a blob is a large one.
const LARGE_BLOB_BYTES: usize = 16 << 20;

const KIND_BLOB: u8 = 0;
const KIND_PLAIN: u8 = 1;
const KIND_DELTA: u8 = 2;

/// Errors of the object layer.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObjectError {
    /// The object ends inside its header.
    #[error("object header truncated: needs {needed} bytes, object has {len}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        len: usize,
    },
    /// Not an object, or an unsupported version.
    #[error("not a store object (magic {magic:02x?}, version {version})")]
    NotObject {
        /// The first four bytes.
        magic: Vec<u8>,
        /// The version byte.
        version: u8,
    },
    /// A blob's coding byte is neither stored (0) nor zstd (1).
    #[error("bad object header: blob coding {found}")]
    BlobCoding {
        /// The byte found.
        found: u8,
    },
    /// The object kind byte is unknown.
    #[error("bad object header: unknown object kind {found}")]
    Kind {
        /// The byte found.
        found: u8,
    },
    /// A tensor object names a codec this build does not know.
    #[error("bad object header: unknown tensor codec {found}")]
    Codec {
        /// The codec byte.
        found: u8,
    },
    /// A tensor object lists another number of streams than its codec has.
    #[error("bad object header: codec {codec} has {expected} streams, header lists {found}")]
    StreamCount {
        /// Codec name.
        codec: &'static str,
        /// Streams listed.
        found: usize,
        /// Streams the codec has.
        expected: usize,
    },
    /// The decoded length exceeds what any object may have.
    #[error("bad object header: decoded length {found} exceeds {max}")]
    RawLen {
        /// The length claimed.
        found: u64,
        /// The most allowed.
        max: u64,
    },
    /// The dtype name is not UTF-8.
    #[error("bad object header: dtype name is not UTF-8")]
    DtypeNotUtf8,
    /// The rank exceeds the limit.
    #[error("bad object header: rank {rank} exceeds {max}")]
    Rank {
        /// The rank.
        rank: usize,
        /// The largest allowed.
        max: usize,
    },
    /// Shape and dtype do not make the decoded length.
    #[error("bad object header: {0}")]
    Shape(#[from] ShapeError),
    /// A stored blob's length is not the decoded length.
    #[error(
        "object payload does not decode: stored blob is {found} bytes, header says {expected}"
    )]
    BlobSize {
        /// Bytes stored.
        found: u64,
        /// Bytes the header gives.
        expected: u64,
    },
    /// A blob's zstd frame does not decode to its length.
    #[error("object payload does not decode: zstd: {0}")]
    Zstd(ZstdError),
    /// A stream runs past the object's end.
    #[error(
        "object payload does not decode: stream {stream} of {len} bytes, {left} left in the object"
    )]
    StreamLen {
        /// The stream.
        stream: usize,
        /// Its length in the header.
        len: u64,
        /// Bytes left in the object.
        left: usize,
    },
    /// The buffer to decode into is not the object's decoded length.
    #[error("object decodes to {expected} bytes, the buffer holds {found}")]
    OutputLen {
        /// The buffer's length.
        found: u64,
        /// The header's decoded length.
        expected: u64,
    },
    /// Bytes follow the last stream.
    #[error("object payload does not decode: {count} bytes after the last stream")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// A tensor's streams do not decode.
    #[error("object payload does not decode: {0}")]
    Tensor(#[from] TensorError),
    /// A delta does not decode against its base.
    #[error("object payload does not decode: {0}")]
    Delta(#[from] DeltaError),
    /// Memory for the decoded bytes could not be reserved.
    #[error("cannot allocate {0} bytes for a decoded object")]
    Alloc(u64),
    /// The object (or a manifest entry for it) claims more decoded bytes than the stored
    /// bytes allow.
    #[error("decoded length {requested} exceeds the limit of {allowed} for {object_len} stored bytes ({MAX_EXPANSION} per byte)")]
    Limit {
        /// Bytes stored: the object's length (with its base's, for a delta).
        object_len: u64,
        /// The decoded length it claims.
        requested: u64,
        /// The most it may claim.
        allowed: u64,
    },
    /// The padding of a padded object is longer than the object or not zeros.
    #[error("bad padding: {padding} bytes claimed, {available} bytes after the header")]
    Padding {
        /// Padding the header claims.
        padding: u64,
        /// Bytes after the header.
        available: u64,
    },
}

/// What a tensor object decodes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMeta {
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<u64>,
    /// Decoded length in bytes.
    pub raw_len: u64,
}

/// An object's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Header {
    /// Bytes of a file or of a safetensors header, stored or as one zstd frame.
    Blob {
        /// Payload is a zstd frame (else the bytes themselves).
        zstd: bool,
        /// Decoded length.
        raw_len: u64,
    },
    /// A tensor coded on its own with the tensor codec.
    Plain {
        /// What it decodes to.
        meta: TensorMeta,
        /// Tensor codec.
        codec: Codec,
        /// Chunk length exponent.
        chunk_log2: u8,
        /// Length of each stream; the payload is the streams back to back.
        stream_lens: Vec<u64>,
    },
    /// A tensor coded as a delta against a plain tensor object.
    Delta {
        /// What it decodes to.
        meta: TensorMeta,
        /// The base object (always a [`Header::Plain`] object of the same dtype and shape).
        base: ObjectKey,
        /// Size the plain coding of this tensor had when it was stored (for statistics).
        plain_len: u64,
    },
}

impl Header {
    /// The decoded length.
    pub fn raw_len(&self) -> u64 {
        match self {
            Self::Blob { raw_len, .. } => *raw_len,
            Self::Plain { meta, .. } | Self::Delta { meta, .. } => meta.raw_len,
        }
    }

    /// The tensor description, for tensor objects.
    pub fn meta(&self) -> Option<&TensorMeta> {
        match self {
            Self::Blob { .. } => None,
            Self::Plain { meta, .. } | Self::Delta { meta, .. } => Some(meta),
        }
    }

    /// The delta base, for delta objects.
    pub fn delta_base(&self) -> Option<ObjectKey> {
        match self {
            Self::Delta { base, .. } => Some(*base),
            _ => None,
        }
    }

    /// Parses the header at the start of `bytes`; returns it and its length.
    pub fn parse(bytes: &[u8]) -> Result<(Self, usize), ObjectError> {
        Self::parse_padded(bytes).map(|(h, n, _)| (h, n))
    }

    /// [`Self::parse`], also returning the length of the padding after the payload.
    fn parse_padded(bytes: &[u8]) -> Result<(Self, usize, u64), ObjectError> {
        let mut r = Reader(ByteReader::new(bytes));
        let magic = r.take(4)?;
        let version = r.u8()?;
        if magic != MAGIC || !(version == VERSION || version == VERSION_PADDED) {
            return Err(ObjectError::NotObject {
                magic: magic.to_vec(),
                version,
            });
        }
        let header = match r.u8()? {
            KIND_BLOB => {
                let zstd = match r.u8()? {
                    0 => false,
                    1 => true,
                    found => return Err(ObjectError::BlobCoding { found }),
                };
                let raw_len = r.u64()?;
                check_raw_len(raw_len)?;
                Self::Blob { zstd, raw_len }
            }
            kind @ (KIND_PLAIN | KIND_DELTA) => {
                let meta = r.meta()?;
                if kind == KIND_PLAIN {
                    let codec_id = r.u8()?;
                    let codec =
                        Codec::from_id(codec_id).ok_or(ObjectError::Codec { found: codec_id })?;
                    let chunk_log2 = r.u8()?;
                    let n = usize::from(r.u8()?);
                    if n != codec.stream_count() {
                        return Err(ObjectError::StreamCount {
                            codec: codec.name(),
                            found: n,
                            expected: codec.stream_count(),
                        });
                    }
                    let stream_lens = (0..n).map(|_| r.u64()).collect::<Result<_, _>>()?;
                    Self::Plain {
                        meta,
                        codec,
                        chunk_log2,
                        stream_lens,
                    }
                } else {
                    let base = ObjectKey(r.take(32)?.try_into().expect("32 bytes"));
                    let plain_len = r.u64()?;
                    Self::Delta {
                        meta,
                        base,
                        plain_len,
                    }
                }
            }
            found => return Err(ObjectError::Kind { found }),
        };
        let padding = if version == VERSION_PADDED {
            r.u64()?
        } else {
            0
        };
        Ok((header, r.0.pos(), padding))
    }

    /// Writes the header, with the padding field when `padding` is given.
    fn write(&self, out: &mut Vec<u8>, padding: Option<u64>) {
        out.extend_from_slice(&MAGIC);
        out.push(if padding.is_some() {
            VERSION_PADDED
        } else {
            VERSION
        });
        let put_meta = |out: &mut Vec<u8>, m: &TensorMeta| {
            let name = m.dtype.name().as_bytes();
            out.push(name.len() as u8);
            out.extend_from_slice(name);
            out.push(m.shape.len() as u8);
            for d in &m.shape {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&m.raw_len.to_le_bytes());
        };
        match self {
            Self::Blob { zstd, raw_len } => {
                out.push(KIND_BLOB);
                out.push(u8::from(*zstd));
                out.extend_from_slice(&raw_len.to_le_bytes());
            }
            Self::Plain {
                meta,
                codec,
                chunk_log2,
                stream_lens,
            } => {
                out.push(KIND_PLAIN);
                put_meta(out, meta);
                out.push(codec.id());
                out.push(*chunk_log2);
                out.push(stream_lens.len() as u8);
                for l in stream_lens {
                    out.extend_from_slice(&l.to_le_bytes());
                }
            }
            Self::Delta {
                meta,
                base,
                plain_len,
            } => {
                out.push(KIND_DELTA);
                put_meta(out, meta);
                out.extend_from_slice(&base.0);
                out.extend_from_slice(&plain_len.to_le_bytes());
            }
        }
        if let Some(p) = padding {
            out.extend_from_slice(&p.to_le_bytes());
        }
    }
}

/// Splits a whole object into its header and payload, refusing one that claims more
/// decoded bytes than [`MAX_EXPANSION`] per byte of the object. A delta is not bounded
/// here: it decodes to exactly its base's length, and the base (a plain object) is
/// bounded when it is read, before anything is sized by the delta's claim.
pub fn split(obj: &[u8]) -> Result<(Header, &[u8]), ObjectError> {
    let (header, n, padding) = Header::parse_padded(obj)?;
    let rest = &obj[n..];
    let payload_len = usize::try_from(padding)
        .ok()
        .and_then(|p| rest.len().checked_sub(p))
        .ok_or(ObjectError::Padding {
            padding,
            available: rest.len() as u64,
        })?;
    let (payload, pad) = rest.split_at(payload_len);
    if pad.iter().any(|&b| b != 0) {
        return Err(ObjectError::Padding {
            padding,
            available: rest.len() as u64,
        });
    }
    if !matches!(header, Header::Delta { .. }) {
        check_expansion(obj.len() as u64, header.raw_len())?;
    }
    Ok((header, payload))
}

/// Refuses a claim of `requested` decoded bytes from `stored` bytes of objects beyond
/// [`MAX_EXPANSION`].
pub fn check_expansion(stored: u64, requested: u64) -> Result<(), ObjectError> {
    let allowed = stored.saturating_mul(MAX_EXPANSION);
    if requested > allowed {
        return Err(ObjectError::Limit {
            object_len: stored,
            requested,
            allowed,
        });
    }
    Ok(())
}

/// An object of `header` and `payload` (in pieces), padded with zeros when it would
/// otherwise decode to more than [`MAX_EXPANSION`] bytes per byte of itself.
fn assemble(header: &Header, payload: &[&[u8]]) -> Vec<u8> {
    let payload_len: usize = payload.iter().map(|p| p.len()).sum();
    let mut head = Vec::with_capacity(MAX_HEADER_LEN);
    header.write(&mut head, None);
    let min_len = header.raw_len().div_ceil(MAX_EXPANSION);
    let unpadded = (head.len() + payload_len) as u64;
    let padding = (!matches!(header, Header::Delta { .. }) && unpadded < min_len)
        .then(|| min_len.saturating_sub(unpadded + 8));
    if let Some(p) = padding {
        head.clear();
        header.write(&mut head, Some(p));
    }
    let total = head.len() + payload_len + padding.unwrap_or(0) as usize;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&head);
    for p in payload {
        out.extend_from_slice(p);
    }
    out.resize(total, 0);
    out
}

fn check_raw_len(raw_len: u64) -> Result<(), ObjectError> {
    if raw_len > MAX_RAW_LEN {
        return Err(ObjectError::RawLen {
            found: raw_len,
            max: MAX_RAW_LEN,
        });
    }
    Ok(())
}

/// The header's field reader: [`ByteReader`], with a read past the end reported as
/// [`ObjectError::Truncated`].
struct Reader<'a>(ByteReader<'a>);

fn truncated(t: Truncated) -> ObjectError {
    ObjectError::Truncated {
        needed: t.at.saturating_add(t.needed),
        len: t.len,
    }
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ObjectError> {
        self.0.take(n).map_err(truncated)
    }
    fn u8(&mut self) -> Result<u8, ObjectError> {
        self.0.u8().map_err(truncated)
    }
    fn u64(&mut self) -> Result<u64, ObjectError> {
        self.0.u64().map_err(truncated)
    }
    fn meta(&mut self) -> Result<TensorMeta, ObjectError> {
        let n = usize::from(self.u8()?);
        let dtype = std::str::from_utf8(self.take(n)?).map_err(|_| ObjectError::DtypeNotUtf8)?;
        let dtype = Dtype::parse(dtype);
        let rank = usize::from(self.u8()?);
        if rank > MAX_RANK {
            return Err(ObjectError::Rank {
                rank,
                max: MAX_RANK,
            });
        }
        let shape: Vec<u64> = (0..rank).map(|_| self.u64()).collect::<Result<_, _>>()?;
        let raw_len = self.u64()?;
        check_raw_len(raw_len)?;
        dtype.check_shape(&shape, raw_len)?;
        Ok(TensorMeta {
            dtype,
            shape,
            raw_len,
        })
    }
}

/// A zeroed buffer of `len` bytes, or a typed error if it cannot be had.
pub fn alloc(len: u64) -> Result<Vec<u8>, ObjectError> {
    let n = usize::try_from(len).map_err(|_| ObjectError::Alloc(len))?;
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| ObjectError::Alloc(len))?;
    v.resize(n, 0);
    Ok(v)
}

/// Codes a blob: one zstd frame if that is smaller, else the bytes as they are.
pub fn encode_blob(bytes: &[u8]) -> Vec<u8> {
    let level = if bytes.len() > LARGE_BLOB_BYTES {
        LARGE_BLOB_ZSTD_LEVEL
    } else {
        BLOB_ZSTD_LEVEL
    };
    let frame = zstd::bulk::compress(bytes, level)
        .ok()
        .filter(|f| f.len() < bytes.len());
    let header = Header::Blob {
        zstd: frame.is_some(),
        raw_len: bytes.len() as u64,
    };
    assemble(&header, &[frame.as_deref().unwrap_or(bytes)])
}

/// Codes a tensor on its own.
pub fn encode_plain(meta: TensorMeta, tensor: &EncodedTensor) -> Vec<u8> {
    let header = Header::Plain {
        meta,
        codec: tensor.codec,
        chunk_log2: tensor.chunk_log2,
        stream_lens: tensor.streams.iter().map(|s| s.len() as u64).collect(),
    };
    let pieces: Vec<&[u8]> = tensor
        .streams
        .iter()
        .flat_map(|s| s.segments())
        .map(Vec::as_slice)
        .collect();
    assemble(&header, &pieces)
}

/// Codes a tensor as `delta` (from [`mcodec::delta::encode`]) against the object `base`.
pub fn encode_delta(meta: TensorMeta, base: ObjectKey, plain_len: u64, delta: &[u8]) -> Vec<u8> {
    let header = Header::Delta {
        meta,
        base,
        plain_len,
    };
    assemble(&header, &[delta])
}

/// Decodes a blob's payload.
pub fn decode_blob(zstd: bool, raw_len: u64, payload: &[u8]) -> Result<Vec<u8>, ObjectError> {
    if !zstd {
        if payload.len() as u64 != raw_len {
            return Err(ObjectError::BlobSize {
                found: payload.len() as u64,
                expected: raw_len,
            });
        }
        return Ok(payload.to_vec());
    }
    let mut out = alloc(raw_len)?;
    let n = zstd::bulk::Decompressor::new()
        .and_then(|mut d| d.decompress_to_buffer(payload, &mut out[..]))
        .map_err(|e| ObjectError::Zstd(ZstdError::Decoder(e.to_string())))?;
    if n != out.len() {
        return Err(ObjectError::Zstd(ZstdError::DecodedSize {
            found: n as u64,
            expected: raw_len,
        }));
    }
    Ok(out)
}

thread_local! {
    /// This thread's zstd decoder for blobs, made on its first blob (a context is
    /// ~100 KB of fresh memory).
    static BLOB_DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decodes a zstd blob's payload into `out`, which must be exactly its decoded length,
/// with this thread's decoder.
pub(crate) fn decode_zstd_blob_into(payload: &[u8], out: &mut [u8]) -> Result<(), ObjectError> {
    let decoder_err = |e: std::io::Error| ObjectError::Zstd(ZstdError::Decoder(e.to_string()));
    let n = BLOB_DECOMPRESSOR.with(|slot| -> Result<usize, ObjectError> {
        // A nested use (none is made) would find the slot taken and use a decoder of its own.
        let mut own = None;
        let mut slot = slot.try_borrow_mut().ok();
        let cached = slot.as_deref_mut().unwrap_or(&mut own);
        if cached.is_none() {
            *cached = Some(zstd::bulk::Decompressor::new().map_err(decoder_err)?);
        }
        let d = cached.as_mut().expect("made above");
        d.decompress_to_buffer(payload, &mut *out)
            .map_err(decoder_err)
    })?;
    if n != out.len() {
        return Err(ObjectError::Zstd(ZstdError::DecodedSize {
            found: n as u64,
            expected: out.len() as u64,
        }));
    }
    Ok(())
}

/// Decodes a plain tensor object's payload into `out` (exactly its decoded length).
pub fn decode_plain_into(
    codec: Codec,
    chunk_log2: u8,
    stream_lens: &[u64],
    payload: &[u8],
    raw_len: u64,
    out: &mut [u8],
) -> Result<(), ObjectError> {
    // Not every codec's streams record their element count (constant and packed fields
    // fit several lengths): the header's length is the one to decode.
    if out.len() as u64 != raw_len {
        return Err(ObjectError::OutputLen {
            found: out.len() as u64,
            expected: raw_len,
        });
    }
    let decoder = plain_decoder(codec, chunk_log2, stream_lens, payload, out.len())?;
    Ok(decoder.decode(out)?)
}

/// The decoder of a plain tensor object's payload (streams of `stream_lens` back to back)
/// for a tensor of `len` bytes: [`decode_plain_into`] decodes with it whole, a reader in
/// pieces ([`TensorDecoder::decode_piece`]).
pub fn plain_decoder<'a>(
    codec: Codec,
    chunk_log2: u8,
    stream_lens: &[u64],
    payload: &'a [u8],
    len: usize,
) -> Result<TensorDecoder<'a>, ObjectError> {
    let mut streams = Vec::with_capacity(stream_lens.len());
    let mut rest = payload;
    for (i, &len) in stream_lens.iter().enumerate() {
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= rest.len())
            .ok_or(ObjectError::StreamLen {
                stream: i,
                len,
                left: rest.len(),
            })?;
        let (s, tail) = rest.split_at(len);
        streams.push(s);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(ObjectError::TrailingBytes { count: rest.len() });
    }
    Ok(TensorDecoder::new(codec, chunk_log2, len, &streams)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_truncations_fail() {
        let meta = TensorMeta {
            dtype: Dtype::BF16,
            shape: vec![3, 5],
            raw_len: 30,
        };
        let headers = [
            Header::Blob {
                zstd: true,
                raw_len: 99,
            },
            Header::Plain {
                meta: meta.clone(),
                codec: Codec::Zstd,
                chunk_log2: 0,
                stream_lens: vec![12],
            },
            Header::Delta {
                meta,
                base: ObjectKey([9; 32]),
                plain_len: 20,
            },
        ];
        for h in headers {
            let mut b = Vec::new();
            h.write(&mut b, None);
            assert!(b.len() <= MAX_HEADER_LEN);
            assert_eq!(Header::parse(&b).unwrap(), (h, b.len()));
            for cut in 0..b.len() {
                assert!(Header::parse(&b[..cut]).is_err());
            }
        }
        let mut b = Vec::new();
        Header::Plain {
            meta: TensorMeta {
                dtype: Dtype::F32,
                shape: vec![2],
                raw_len: 9,
            },
            codec: Codec::Stored,
            chunk_log2: 0,
            stream_lens: vec![9],
        }
        .write(&mut b, None);
        assert!(matches!(
            Header::parse(&b),
            Err(ObjectError::Shape(ShapeError {
                len: 9,
                needs: Some(8),
                ..
            }))
        ));
    }

    #[test]
    fn blobs_round_trip() {
        for bytes in [Vec::new(), b"abc".to_vec(), vec![b'x'; 5000]] {
            let o = encode_blob(&bytes);
            let (h, n) = Header::parse(&o).unwrap();
            let Header::Blob { zstd, raw_len } = h else {
                panic!("not a blob")
            };
            assert_eq!(decode_blob(zstd, raw_len, &o[n..]).unwrap(), bytes);
            let r = decode_blob(zstd, raw_len + 1, &o[n..]);
            assert!(
                r.is_err(),
                "{} bytes decoded with a wrong length",
                bytes.len()
            );
        }
    }

    /// A plain header claiming `raw_len` bytes of F32 with an empty stored stream.
    fn claim(raw_len: u64) -> Vec<u8> {
        let mut b = Vec::new();
        Header::Plain {
            meta: TensorMeta {
                dtype: Dtype::F32,
                shape: vec![raw_len / 4],
                raw_len,
            },
            codec: Codec::Stored,
            chunk_log2: 0,
            stream_lens: vec![0],
        }
        .write(&mut b, None);
        b
    }

    #[test]
    fn a_tiny_object_cannot_claim_a_terabyte() {
        let obj = claim(MAX_RAW_LEN);
        assert!(obj.len() < 64, "{} bytes", obj.len());
        let e = split(&obj).unwrap_err();
        assert_eq!(
            e,
            ObjectError::Limit {
                object_len: obj.len() as u64,
                requested: MAX_RAW_LEN,
                allowed: obj.len() as u64 * MAX_EXPANSION,
            }
        );
        // At the limit it is accepted (and fails later, for its missing stream).
        let at = claim(4 * 1024);
        assert!(split(&at).is_ok());
    }

    #[test]
    fn objects_compressing_beyond_the_limit_are_padded_and_read_back() {
        let zeros = vec![0u8; 4 << 20];
        let blob = encode_blob(&zeros);
        assert!(blob.len() as u64 * MAX_EXPANSION >= zeros.len() as u64);
        let (h, payload) = split(&blob).unwrap();
        let Header::Blob { zstd, raw_len } = h else {
            panic!("not a blob")
        };
        assert_eq!(decode_blob(zstd, raw_len, payload).unwrap(), zeros);

        let meta = TensorMeta {
            dtype: Dtype::F32,
            shape: vec![1 << 20],
            raw_len: 4 << 20,
        };
        let coded = mcodec::tensor::encode(&Dtype::F32, &zeros, &Default::default());
        let obj = encode_plain(meta, &coded);
        assert_eq!(obj[4], VERSION_PADDED);
        assert!(obj.len() as u64 * MAX_EXPANSION >= zeros.len() as u64);
        let (h, payload) = split(&obj).unwrap();
        let Header::Plain {
            codec,
            chunk_log2,
            stream_lens,
            ..
        } = h
        else {
            panic!("not plain")
        };
        let mut out = vec![1u8; zeros.len()];
        decode_plain_into(
            codec,
            chunk_log2,
            &stream_lens,
            payload,
            out.len() as u64,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, zeros);
        // Padding must be zeros and within the object.
        let mut bad = obj.clone();
        *bad.last_mut().unwrap() = 1;
        assert!(matches!(split(&bad), Err(ObjectError::Padding { .. })));
        assert!(split(&obj[..obj.len() - 1]).is_err());
        // Objects that compress less are written as before, unpadded.
        assert_eq!(encode_blob(b"abc")[4], VERSION);
    }
}
