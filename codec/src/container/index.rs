//! The index codec (FORMAT.md §3.3): serialisation, and the parser that checks every
//! field before anything is sized from it.

use super::{
    ContainerError, Corruption, Index, PrefixRef, SourceKind, StreamRef, TensorEntry, ALIGN,
    ALIGN_LOG2_RANGE, BLOCK, MAX_EXPANSION, STREAM_ALIGN, TRAILER_MAGIC,
};
use crate::bytes::{ByteReader, Truncated};
use crate::checksum::xxh3_64;
use crate::dtype::Dtype;
use crate::safetensors;
use crate::tensor::Codec;
use std::borrow::Cow;

/// How a file aligns its streams and stores its index: trailer bytes 32..41 (FORMAT.md
/// §3.4), zero in every file before version 1.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredForm {
    /// Alignment of every stream and of the index, in bytes.
    pub align: u64,
    /// Length of the serialised index when it is stored as one zstd frame; 0 when it is
    /// stored as it is.
    pub index_raw_len: u64,
}

impl StoredForm {
    /// The form of files before version 1.2: 64-byte alignment, the index as it is.
    pub const V1_1: Self = Self {
        align: ALIGN,
        index_raw_len: 0,
    };

    /// Reads the form from a trailer whose checksum was checked.
    pub fn from_trailer(trailer: &[u8; BLOCK as usize]) -> Result<Self, ContainerError> {
        let index_raw_len = u64::from_le_bytes(trailer[32..40].try_into().expect("8 bytes"));
        let align_log2 = match trailer[40] {
            0 => ALIGN.trailing_zeros() as u8,
            k if ALIGN_LOG2_RANGE.contains(&k) => k,
            found => return Err(Corruption::Alignment { found }.into()),
        };
        Ok(Self {
            align: 1 << align_log2,
            index_raw_len,
        })
    }

    /// The index bytes as serialised, from the bytes stored: checked to be one zstd frame
    /// of exactly [`Self::index_raw_len`] bytes where the index is coded, and that length
    /// at most [`MAX_EXPANSION`] times the stored bytes before anything is allocated.
    pub fn index_bytes<'a>(&self, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, ContainerError> {
        let raw = self.index_raw_len;
        if raw == 0 {
            return Ok(Cow::Borrowed(stored));
        }
        let bad = |problem: String| Corruption::IndexFrame {
            stored: stored.len() as u64,
            raw,
            problem,
        };
        if raw > (stored.len() as u64).saturating_mul(MAX_EXPANSION) {
            return Err(bad(format!("more than {MAX_EXPANSION} bytes per byte stored")).into());
        }
        crate::tensor::check_zstd_frame(stored, raw).map_err(|e| bad(e.to_string()))?;
        let mut out = vec![0u8; raw as usize];
        let n = zstd::bulk::Decompressor::new()
            .and_then(|mut d| d.decompress_to_buffer(stored, &mut out))
            .map_err(|e| bad(e.to_string()))?;
        if n != out.len() {
            return Err(bad(format!("decodes to {n} bytes")).into());
        }
        Ok(Cow::Owned(out))
    }
}

/// The trailer (FORMAT.md §3.4) of a file whose index, stored as `stored_index`, starts
/// at `index_offset`, which unpacks to `original_len` bytes and has the layout `form`.
pub fn trailer(
    index_offset: u64,
    stored_index: &[u8],
    original_len: u64,
    form: StoredForm,
) -> [u8; BLOCK as usize] {
    let mut trailer = [0u8; BLOCK as usize];
    trailer[0..8].copy_from_slice(&index_offset.to_le_bytes());
    trailer[8..16].copy_from_slice(&(stored_index.len() as u64).to_le_bytes());
    trailer[16..24].copy_from_slice(&xxh3_64(stored_index).to_le_bytes());
    trailer[24..32].copy_from_slice(&original_len.to_le_bytes());
    if form != StoredForm::V1_1 {
        trailer[32..40].copy_from_slice(&form.index_raw_len.to_le_bytes());
        trailer[40] = form.align.trailing_zeros() as u8;
    }
    trailer[48..56].copy_from_slice(&TRAILER_MAGIC);
    let check = xxh3_64(&trailer[..56]);
    trailer[56..64].copy_from_slice(&check.to_le_bytes());
    trailer
}

/// Replaces the index of the packed `file` by `index` and rewrites the trailer for it: for
/// tools and tests that rewrite an index (to plant a wrong checksum, or to fix up the
/// checksums after editing stream bytes). The new index goes where the trailer says the
/// old one starts, stored the way the trailer says the old one is: as it is when trailer
/// bytes 32..40 are zero (every file before 1.2), else as one zstd frame
/// ([`Index::to_stored`]) whose decoded length the new trailer records, with the file's
/// stream alignment kept (FORMAT.md §3.4). Only the trailer's index offset and stored form
/// are read, not its checksums; the streams are left as they are, so `index` must describe
/// the streams the file holds for the result to open.
///
/// Fails, leaving `file` unchanged, when `file` is too short for a preamble and a trailer
/// ([`Corruption::TooShort`]), the index offset lies past the trailer
/// ([`Corruption::IndexPlacement`]) or the trailer names an invalid alignment
/// ([`Corruption::Alignment`]).
pub fn replace_index(file: &mut Vec<u8>, index: &Index) -> Result<(), ContainerError> {
    let len = file.len() as u64;
    if len < 2 * BLOCK {
        return Err(Corruption::TooShort { len }.into());
    }
    let at = len - BLOCK;
    let old: &[u8; BLOCK as usize] = file[at as usize..].try_into().expect("64 bytes");
    let word = |i: usize| u64::from_le_bytes(old[i..i + 8].try_into().expect("8 bytes"));
    let (offset, old_len) = (word(0), word(8));
    if offset > at {
        return Err(Corruption::IndexPlacement {
            offset,
            len: old_len,
            trailer: at,
        }
        .into());
    }
    let old_form = StoredForm::from_trailer(old)?;
    let (stored, form) = if old_form.index_raw_len == 0 {
        (index.serialize(), old_form)
    } else {
        let (frame, coded) = index.to_stored();
        let form = StoredForm {
            align: old_form.align,
            ..coded
        };
        (frame, form)
    };
    file.truncate(offset as usize);
    file.extend_from_slice(&stored);
    file.extend_from_slice(&trailer(offset, &stored, index.original_len, form));
    Ok(())
}

/// zstd level of the index: tiny next to the model, coded once.
const INDEX_ZSTD_LEVEL: i32 = 19;

impl Index {
    /// The index as the writer stores it since 1.2 (one zstd frame, streams aligned to
    /// [`STREAM_ALIGN`]) and the form to record in the trailer.
    pub fn to_stored(&self) -> (Vec<u8>, StoredForm) {
        self.to_stored_at(INDEX_ZSTD_LEVEL)
    }

    /// [`Self::to_stored`] with the index coded at zstd level `level` (at most; large
    /// indexes are coded at level 3).
    pub(crate) fn to_stored_at(&self, level: i32) -> (Vec<u8>, StoredForm) {
        let raw = self.serialize();
        let level = if raw.len() <= 1 << 20 {
            level
        } else {
            level.min(3)
        };
        let frame = zstd::bulk::compress(&raw, level).expect("zstd compresses any input");
        let form = StoredForm {
            align: STREAM_ALIGN,
            index_raw_len: raw.len() as u64,
        };
        (frame, form)
    }

    /// Parses an index stored in `form` (see [`StoredForm::index_bytes`]) starting at
    /// `index_offset`.
    pub fn parse_stored(
        stored: &[u8],
        index_offset: u64,
        form: StoredForm,
    ) -> Result<Self, ContainerError> {
        Self::parse_aligned(&form.index_bytes(stored)?, index_offset, form.align)
    }

    /// Serialises the index (FORMAT.md §3.3).
    pub fn serialize(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.push(match self.source {
            SourceKind::Safetensors => 0,
            SourceKind::Raw => 1,
        });
        b.extend_from_slice(&self.original_len.to_le_bytes());
        put_stream(&mut b, &self.prefix.stream);
        b.push(u8::from(self.prefix.zstd));
        b.extend_from_slice(&self.prefix.raw_len.to_le_bytes());
        b.extend_from_slice(&self.prefix.raw_checksum.to_le_bytes());
        b.extend_from_slice(&(self.tensors.len() as u32).to_le_bytes());
        for t in &self.tensors {
            b.extend_from_slice(&(t.name.len() as u16).to_le_bytes());
            b.extend_from_slice(t.name.as_bytes());
            b.push(t.dtype.name().len() as u8);
            b.extend_from_slice(t.dtype.name().as_bytes());
            b.push(t.shape.len() as u8);
            for d in &t.shape {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&t.original_offset.to_le_bytes());
            b.extend_from_slice(&t.original_len.to_le_bytes());
            b.extend_from_slice(&t.checksum.to_le_bytes());
            b.push(t.codec.id());
            b.push(t.chunk_log2);
            b.push(t.streams.len() as u8);
            for s in &t.streams {
                put_stream(&mut b, s);
            }
        }
        b
    }

    /// Parses and validates an index read from a file of `file_len` bytes whose index
    /// starts at `index_offset`.
    pub fn parse(bytes: &[u8], index_offset: u64) -> Result<Self, ContainerError> {
        Self::parse_aligned(bytes, index_offset, ALIGN)
    }

    /// [`Self::parse`] for streams aligned to `align` bytes (FORMAT.md §3.4).
    pub fn parse_aligned(
        bytes: &[u8],
        index_offset: u64,
        align: u64,
    ) -> Result<Self, ContainerError> {
        let mut r = Reader(ByteReader::new(bytes), align);
        let source = match r.u8()? {
            0 => SourceKind::Safetensors,
            1 => SourceKind::Raw,
            found => return Err(Corruption::SourceKind { found }.into()),
        };
        let original_len = r.u64()?;
        let stream = r.stream(index_offset)?;
        let zstd = match r.u8()? {
            0 => false,
            1 => true,
            found => return Err(Corruption::PrefixCoding { found }.into()),
        };
        let raw_len = r.u64()?;
        let cap = safetensors::MAX_HEADER_LEN + 8;
        if raw_len > cap || raw_len > original_len || (!zstd && stream.len != raw_len) {
            return Err(Corruption::PrefixSize {
                raw_len,
                stored_len: stream.len,
                original_len,
                cap,
            }
            .into());
        }
        let prefix = PrefixRef {
            stream,
            zstd,
            raw_len,
            raw_checksum: r.u64()?,
        };
        let count = r.u32()? as usize;
        // Each entry takes at least 55 bytes (every codec has a stream): bound the count
        // before allocating for it.
        const MIN_ENTRY: usize = 2 + 1 + 1 + 8 * 3 + 3 + 24;
        if count > r.0.remaining() / MIN_ENTRY {
            return Err(Corruption::TensorCount {
                count,
                len: bytes.len(),
            }
            .into());
        }
        let mut tensors = Vec::with_capacity(count);
        let mut at = raw_len;
        for i in 0..count {
            let t = r.tensor(index_offset)?;
            if t.original_offset != at {
                return Err(Corruption::TensorOffset {
                    tensor: i,
                    name: t.name,
                    found: t.original_offset,
                    expected: at,
                }
                .into());
            }
            at = at
                .checked_add(t.original_len)
                .filter(|&e| e <= original_len)
                .ok_or_else(|| Corruption::TensorEnd {
                    name: t.name.clone(),
                    original_len,
                })?;
            tensors.push(t);
        }
        if at != original_len {
            return Err(Corruption::Coverage {
                covered: at,
                original_len,
            }
            .into());
        }
        if r.0.remaining() != 0 {
            return Err(Corruption::TrailingIndexBytes {
                count: r.0.remaining(),
            }
            .into());
        }
        Ok(Self {
            source,
            original_len,
            prefix,
            tensors,
        })
    }
}

fn put_stream(b: &mut Vec<u8>, s: &StreamRef) {
    b.extend_from_slice(&s.offset.to_le_bytes());
    b.extend_from_slice(&s.len.to_le_bytes());
    b.extend_from_slice(&s.checksum.to_le_bytes());
}

/// The index's field reader: [`ByteReader`], with a read past the end of the index
/// reported as [`Corruption::IndexTruncated`]; with the stream alignment the offsets
/// must keep.
struct Reader<'a>(ByteReader<'a>, u64);

fn truncated(t: Truncated) -> Corruption {
    Corruption::IndexTruncated {
        needed: t.needed,
        at: t.at,
        len: t.len,
    }
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ContainerError> {
        Ok(self.0.take(n).map_err(truncated)?)
    }
    fn u8(&mut self) -> Result<u8, ContainerError> {
        Ok(self.0.u8().map_err(truncated)?)
    }
    fn u16(&mut self) -> Result<u16, ContainerError> {
        Ok(self.0.u16().map_err(truncated)?)
    }
    fn u32(&mut self) -> Result<u32, ContainerError> {
        Ok(self.0.u32().map_err(truncated)?)
    }
    fn u64(&mut self) -> Result<u64, ContainerError> {
        Ok(self.0.u64().map_err(truncated)?)
    }
    fn stream(&mut self, index_offset: u64) -> Result<StreamRef, ContainerError> {
        let s = StreamRef {
            offset: self.u64()?,
            len: self.u64()?,
            checksum: self.u64()?,
        };
        let end = s.offset.checked_add(s.len);
        if s.offset < BLOCK
            || !s.offset.is_multiple_of(self.1)
            || end.is_none_or(|e| e > index_offset)
        {
            return Err(Corruption::StreamPlacement {
                offset: s.offset,
                len: s.len,
                start: BLOCK,
                end: index_offset,
            }
            .into());
        }
        Ok(s)
    }
    fn tensor(&mut self, index_offset: u64) -> Result<TensorEntry, ContainerError> {
        let name_len = usize::from(self.u16()?);
        let name = std::str::from_utf8(self.take(name_len)?)
            .map_err(|_| Corruption::NameNotUtf8)?
            .to_owned();
        let dtype_len = usize::from(self.u8()?);
        let dtype = std::str::from_utf8(self.take(dtype_len)?)
            .map_err(|_| Corruption::DtypeNotUtf8 { name: name.clone() })?;
        let dtype = Dtype::parse(dtype);
        let rank = usize::from(self.u8()?);
        if rank > safetensors::MAX_RANK {
            return Err(Corruption::Rank {
                name,
                rank,
                limit: safetensors::MAX_RANK,
            }
            .into());
        }
        let shape = (0..rank)
            .map(|_| self.u64())
            .collect::<Result<Vec<_>, _>>()?;
        let original_offset = self.u64()?;
        let original_len = self.u64()?;
        let checksum = self.u64()?;
        let codec_id = self.u8()?;
        let codec = Codec::from_id(codec_id).ok_or_else(|| Corruption::UnknownCodec {
            name: name.clone(),
            codec: codec_id,
        })?;
        let chunk_log2 = self.u8()?;
        let n_streams = usize::from(self.u8()?);
        if n_streams != codec.stream_count() {
            return Err(Corruption::StreamCount {
                name,
                codec: codec.name(),
                found: n_streams,
                expected: codec.stream_count(),
            }
            .into());
        }
        let streams = (0..n_streams)
            .map(|_| self.stream(index_offset))
            .collect::<Result<Vec<_>, _>>()?;
        if let Err(source) = dtype.check_shape(&shape, original_len) {
            return Err(Corruption::Shape { name, source }.into());
        }
        Ok(TensorEntry {
            name,
            dtype,
            shape,
            original_offset,
            original_len,
            checksum,
            codec,
            chunk_log2,
            streams,
        })
    }
}
