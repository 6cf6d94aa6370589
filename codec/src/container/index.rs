//! The index codec (FORMAT.md §3.3): serialisation, and the parser that checks every
//! field before anything is sized from it.

use super::{
    ContainerError, Corruption, Index, PrefixRef, SourceKind, StreamRef, TensorEntry, ALIGN, BLOCK,
};
use crate::bytes::{ByteReader, Truncated};
use crate::dtype::Dtype;
use crate::safetensors;
use crate::tensor::Codec;

impl Index {
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
        let mut r = Reader(ByteReader::new(bytes));
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
/// reported as [`Corruption::IndexTruncated`].
struct Reader<'a>(ByteReader<'a>);

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
            || !s.offset.is_multiple_of(ALIGN)
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
