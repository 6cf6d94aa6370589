//! The `.mcz` container (FORMAT.md §3): preamble, 64-byte aligned streams, an index of
//! every tensor and a trailer that locates and checks the index.
//!
//! The writer streams tensors out in batches, so memory is bounded by a batch rather than
//! the model; the reader needs only the bytes (typically a memory map) and gives random
//! access to any tensor. Every stream and every decoded tensor is checked against its
//! xxh3-64, so corruption cannot yield silently wrong weights.

use std::io::{self, Write};

use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64;

use crate::dtype::{Dtype, ShapeError};
use crate::entropy::stream::CodedStream;
use crate::safetensors::{self, HeaderError};
use crate::tensor::{self, Codec, EncodeOptions, TensorDecoder, TensorError, ZstdError};

/// File magic (FORMAT.md §3.1).
pub const MAGIC: [u8; 8] = *b"\x89MCZ\r\n\x1a\n";
/// Trailer magic (FORMAT.md §3.4).
pub const TRAILER_MAGIC: [u8; 8] = *b"MCZ-END\0";
/// Format major version this code reads and writes.
pub const VERSION_MAJOR: u16 = 1;
/// Format minor version this code writes.
pub const VERSION_MINOR: u16 = 0;
/// Alignment of every stream and of the index.
pub const ALIGN: u64 = 64;
/// Size of the preamble and of the trailer.
pub const BLOCK: u64 = 64;
/// Longest tensor name accepted (its length is a `u16` in the index).
pub const MAX_NAME_LEN: usize = u16::MAX as usize;
/// Longest dtype name accepted (its length is a `u8` in the index).
pub const MAX_DTYPE_LEN: usize = u8::MAX as usize;
/// Most original bytes a file may decode to per byte of the file itself (FORMAT.md §6,
/// check 4a). A hostile file could otherwise claim terabytes from a few Const streams;
/// with this bound, decoding time and output are at most 1024 times the bytes actually
/// read (deflate's own limit is about 1032:1). The writer pads files that compress
/// better than this (models of zeros), so every file it writes is readable.
pub const MAX_EXPANSION: u64 = 1024;
/// Tensors above twice this size overlap their checksum with decoding.
const OVERLAP_MIN_BYTES: usize = 8 << 20;
/// Largest piece of a tensor decoded at once when streaming it out.
const PIECE_BYTES: usize = 64 << 20;
/// Input bytes encoded together before they are written out.
const BATCH_BYTES: u64 = 256 << 20;

/// Where the packed bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A safetensors file: the prefix is its header.
    Safetensors,
    /// Raw bytes packed with an explicit dtype.
    Raw,
}

/// Errors of the container layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContainerError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The input is not a valid safetensors file.
    #[error("not a valid safetensors file: {0}")]
    Safetensors(#[from] HeaderError),
    /// The file is empty.
    #[error("not an mcz file: empty file")]
    Empty,
    /// The file does not start with the `.mcz` magic.
    #[error("not an mcz file: missing mcz magic")]
    NoMagic,
    /// The file has a format version this build does not read.
    #[error("not an mcz file: format version {found}, this build reads {supported}")]
    Version {
        /// Major version in the file.
        found: u16,
        /// Major version this build reads.
        supported: u16,
    },
    /// The file is structurally damaged.
    #[error("corrupt mcz file: {0}")]
    Corrupt(#[from] Corruption),
    /// The input cannot be represented (a name too long for the index, say) or the options
    /// are invalid.
    #[error("cannot pack: {0}")]
    Unsupported(#[from] Unsupported),
    /// A size the file claims exceeds what the reader allows.
    #[error("{what}: {requested} exceeds the limit of {allowed}")]
    Limit {
        /// What was claimed.
        what: Part,
        /// The size the file asks for.
        requested: u64,
        /// The largest size allowed.
        allowed: u64,
    },
    /// A checksum did not match.
    #[error("checksum mismatch in {what}: stored {stored:016x}, computed {computed:016x}")]
    Checksum {
        /// What was checked.
        what: Part,
        /// Stored checksum.
        stored: u64,
        /// Computed checksum.
        computed: u64,
    },
    /// The output buffer given to [`Archive::unpack_into`] does not have the original size.
    #[error("output buffer is {found} bytes, the original is {expected}")]
    OutputSize {
        /// Buffer bytes.
        found: u64,
        /// Original bytes.
        expected: u64,
    },
    /// A tensor failed to decode.
    #[error("tensor {name:?}: {source}")]
    Tensor {
        /// Tensor name.
        name: String,
        /// What went wrong.
        #[source]
        source: TensorError,
    },
}

/// The part of a file that a checksum or a limit applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Part {
    /// The trailer (FORMAT.md §3.4).
    Trailer,
    /// The index (FORMAT.md §3.3).
    Index,
    /// The stored stream of the original header.
    HeaderStream,
    /// The original header, decoded.
    Header,
    /// A stream of a tensor.
    Stream {
        /// Tensor name.
        tensor: String,
        /// Stream number.
        stream: usize,
    },
    /// A copy of a tensor's stream made for upload to a device (the GPU loader).
    UploadCopy {
        /// Tensor name.
        tensor: String,
        /// Stream number.
        stream: usize,
    },
    /// A tensor's decoded bytes.
    Tensor {
        /// Tensor name.
        name: String,
    },
    /// The original size a file claims, against its own size.
    OriginalSize {
        /// The file's size.
        file_len: u64,
    },
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Trailer => f.write_str("trailer"),
            Self::Index => f.write_str("index"),
            Self::HeaderStream => f.write_str("header stream"),
            Self::Header => f.write_str("header"),
            Self::Stream { tensor, stream } => write!(f, "tensor {tensor:?} stream {stream}"),
            Self::UploadCopy { tensor, stream } => {
                write!(f, "tensor {tensor:?} stream {stream} (copy for upload)")
            }
            Self::Tensor { name } => write!(f, "tensor {name:?}"),
            Self::OriginalSize { file_len } => write!(
                f,
                "original size claimed by a {file_len}-byte file (at most {MAX_EXPANSION} bytes per file byte)"
            ),
        }
    }
}

/// What is wrong with a damaged file: each variant carries the values found and what
/// they had to be.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Corruption {
    /// The file cannot hold a preamble and a trailer.
    #[error("file of {len} bytes is shorter than preamble and trailer")]
    TooShort {
        /// File length.
        len: u64,
    },
    /// The trailer's magic is missing.
    #[error("trailer magic missing (truncated file?)")]
    NoTrailerMagic,
    /// The index does not end where the trailer starts.
    #[error("index at {offset} of {len} bytes does not end at the trailer ({trailer})")]
    IndexPlacement {
        /// Index offset.
        offset: u64,
        /// Index length.
        len: u64,
        /// Trailer offset.
        trailer: u64,
    },
    /// Trailer and index disagree on the original size.
    #[error("trailer says {trailer} original bytes, index says {index}")]
    OriginalLen {
        /// Size in the trailer.
        trailer: u64,
        /// Size in the index.
        index: u64,
    },
    /// The index ends inside a field.
    #[error("index truncated: needs {needed} bytes at {at}, has {len}")]
    IndexTruncated {
        /// Bytes of the field.
        needed: usize,
        /// Where it starts.
        at: usize,
        /// Index length.
        len: usize,
    },
    /// The source kind is neither safetensors (0) nor raw (1).
    #[error("unknown source kind {found}")]
    SourceKind {
        /// The byte found.
        found: u8,
    },
    /// The prefix coding is neither stored (0) nor zstd (1).
    #[error("prefix coding {found} is neither stored (0) nor zstd (1)")]
    PrefixCoding {
        /// The byte found.
        found: u8,
    },
    /// The prefix's sizes do not fit the original or the header limit.
    #[error("prefix of {raw_len} bytes (stored {stored_len}) does not fit the {original_len}-byte original (cap {cap})")]
    PrefixSize {
        /// Original prefix length.
        raw_len: u64,
        /// Stored stream length.
        stored_len: u64,
        /// Original file length.
        original_len: u64,
        /// Largest prefix allowed.
        cap: u64,
    },
    /// The tensor count cannot fit the index's bytes.
    #[error("index claims {count} tensors in {len} bytes")]
    TensorCount {
        /// Tensors claimed.
        count: usize,
        /// Index length.
        len: usize,
    },
    /// A tensor does not start where the one before it ends.
    #[error("tensor {tensor} ({name:?}) starts at original byte {found}, expected {expected}")]
    TensorOffset {
        /// Its position.
        tensor: usize,
        /// Its name.
        name: String,
        /// Its original offset.
        found: u64,
        /// Where the previous one ended.
        expected: u64,
    },
    /// A tensor ends past the original file.
    #[error("tensor {name:?} ends past the {original_len}-byte original")]
    TensorEnd {
        /// Its name.
        name: String,
        /// Original file length.
        original_len: u64,
    },
    /// The tensors do not cover the original file.
    #[error("tensors cover {covered} of {original_len} original bytes")]
    Coverage {
        /// Bytes covered (prefix and tensors).
        covered: u64,
        /// Original file length.
        original_len: u64,
    },
    /// Bytes follow the last tensor entry.
    #[error("{count} unread bytes after the index")]
    TrailingIndexBytes {
        /// How many.
        count: usize,
    },
    /// A padding byte outside every stream is not zero.
    #[error("nonzero padding byte at offset {offset}")]
    Padding {
        /// Its offset.
        offset: u64,
    },
    /// A stream is unaligned or lies outside the data area.
    #[error(
        "stream at {offset} of {len} bytes is unaligned or outside the data area {start}..{end}"
    )]
    StreamPlacement {
        /// Stream offset.
        offset: u64,
        /// Stream length.
        len: u64,
        /// Start of the data area.
        start: u64,
        /// End of the data area (the index offset).
        end: u64,
    },
    /// A tensor name is not UTF-8.
    #[error("tensor name is not UTF-8")]
    NameNotUtf8,
    /// A dtype name is not UTF-8.
    #[error("dtype of {name:?} is not UTF-8")]
    DtypeNotUtf8 {
        /// Tensor name.
        name: String,
    },
    /// A tensor's rank exceeds the limit.
    #[error("tensor {name:?} has rank {rank}, limit {limit}")]
    Rank {
        /// Tensor name.
        name: String,
        /// Its rank.
        rank: usize,
        /// Largest rank allowed.
        limit: usize,
    },
    /// A tensor names a codec this build does not know.
    #[error("tensor {name:?} has unknown codec {codec}")]
    UnknownCodec {
        /// Tensor name.
        name: String,
        /// The codec byte.
        codec: u8,
    },
    /// A tensor lists another number of streams than its codec has.
    #[error("tensor {name:?}: codec {codec} has {expected} streams, index lists {found}")]
    StreamCount {
        /// Tensor name.
        name: String,
        /// Codec name.
        codec: &'static str,
        /// Streams listed.
        found: usize,
        /// Streams the codec has.
        expected: usize,
    },
    /// A tensor's shape and dtype do not make its byte length.
    #[error("tensor {name:?}: {source}")]
    Shape {
        /// Tensor name.
        name: String,
        /// The shape, dtype and length.
        source: ShapeError,
    },
    /// A tensor is larger than this machine's address space.
    #[error("tensor {name:?} too large: {len} bytes")]
    TensorTooLarge {
        /// Tensor name.
        name: String,
        /// Its byte length.
        len: u64,
    },
    /// The header stream's zstd frame is bad.
    #[error("header stream: {0}")]
    HeaderFrame(ZstdError),
}

/// Why an input cannot be packed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unsupported {
    /// [`pack_parts`] was given a raw dtype.
    #[error("pack_parts packs safetensors data; raw_dtype must be unset")]
    RawParts,
    /// The header given to [`pack_parts`] declares another header length.
    #[error("header of {given} bytes declares {declared} bytes of header")]
    HeaderLen {
        /// Bytes given.
        given: u64,
        /// Bytes it declares.
        declared: u64,
    },
    /// [`pack_parts`] got another number of parts than the header has tensors.
    #[error("header lists {tensors} tensors, {parts} parts given")]
    PartCount {
        /// Tensors in the header.
        tensors: usize,
        /// Parts given.
        parts: usize,
    },
    /// A part given to [`pack_parts`] has another length than its tensor.
    #[error("tensor {name:?}: header gives {expected} bytes, its part has {found}")]
    PartLen {
        /// Tensor name.
        name: String,
        /// Bytes the header gives it.
        expected: u64,
        /// Bytes of its part.
        found: u64,
    },
    /// A tensor's name, dtype name or rank does not fit the index.
    #[error("tensor {name:?}: name of {name_len} bytes (limit {MAX_NAME_LEN}), dtype name of {dtype_len} bytes (limit {MAX_DTYPE_LEN}) or rank {rank} (limit {})", safetensors::MAX_RANK)]
    IndexField {
        /// The name's first 64 characters.
        name: String,
        /// Name bytes.
        name_len: usize,
        /// Dtype name bytes.
        dtype_len: usize,
        /// Rank.
        rank: usize,
    },
    /// The encoder options are invalid.
    #[error("{0}")]
    Options(TensorError),
}

/// One tensor as the index records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<u64>,
    /// Byte offset in the original file.
    pub original_offset: u64,
    /// Byte length in the original file.
    pub original_len: u64,
    /// xxh3-64 of the original bytes.
    pub checksum: u64,
    /// How it is coded.
    pub codec: Codec,
    /// Chunk length exponent (split codecs).
    pub chunk_log2: u8,
    /// Its streams.
    pub streams: Vec<StreamRef>,
}

impl TensorEntry {
    /// Total coded bytes.
    pub fn coded_len(&self) -> u64 {
        self.streams.iter().map(|s| s.len).sum()
    }
}

/// Location and checksum of one stream in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamRef {
    /// Absolute offset (a multiple of [`ALIGN`]).
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// xxh3-64 of the stream bytes.
    pub checksum: u64,
}

/// The stored prefix: bytes of the original file before the first tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixRef {
    /// The stored stream.
    pub stream: StreamRef,
    /// Stored as is (false) or as a zstd frame (true).
    pub zstd: bool,
    /// Original length.
    pub raw_len: u64,
    /// xxh3-64 of the original prefix bytes.
    pub raw_checksum: u64,
}

/// The parsed index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Index {
    /// What was packed.
    pub source: SourceKind,
    /// Original file length.
    pub original_len: u64,
    /// The original header bytes.
    pub prefix: PrefixRef,
    /// Tensors in original file order.
    pub tensors: Vec<TensorEntry>,
}

/// Options for [`pack`].
#[derive(Clone, Debug, Default)]
pub struct PackOptions {
    /// Tensor encoder settings.
    pub encode: EncodeOptions,
    /// Pack the input as raw elements of this dtype instead of parsing safetensors.
    pub raw_dtype: Option<Dtype>,
}

/// Sizes of a finished pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackStats {
    /// Input bytes.
    pub original_len: u64,
    /// Output bytes.
    pub packed_len: u64,
}

struct CountingWriter<W> {
    inner: W,
    pos: u64,
}

impl<W: Write> CountingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn align(&mut self) -> io::Result<()> {
        let pad = self.pos.next_multiple_of(ALIGN) - self.pos;
        self.write(&[0u8; ALIGN as usize][..pad as usize])
    }

    fn zeros(&mut self, mut n: u64) -> io::Result<()> {
        let zeros = [0u8; 1 << 16];
        while n > 0 {
            let k = n.min(zeros.len() as u64);
            self.write(&zeros[..k as usize])?;
            n -= k;
        }
        Ok(())
    }

    fn stream(&mut self, stream: &CodedStream) -> io::Result<StreamRef> {
        self.align()?;
        let offset = self.pos;
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for segment in stream.segments() {
            hasher.update(segment);
            self.write(segment)?;
        }
        Ok(StreamRef {
            offset,
            len: self.pos - offset,
            checksum: hasher.digest(),
        })
    }
}

/// Coded tensors of one batch, each with the checksum of its original bytes.
type CodedBatch = Vec<(tensor::EncodedTensor, u64)>;

/// Packs `input` (a safetensors file, or raw elements with [`PackOptions::raw_dtype`])
/// into `out`. `progress` is called with the input bytes done so far.
pub fn pack<W: Write + Send>(
    input: &[u8],
    opts: &PackOptions,
    out: W,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PackStats, ContainerError> {
    let file_len = input.len() as u64;
    let (source, prefix_len, infos) = match &opts.raw_dtype {
        None => {
            let header = safetensors::parse(input, file_len)?;
            (SourceKind::Safetensors, header.prefix_len, header.tensors)
        }
        Some(dtype) => (SourceKind::Raw, 0, raw_tensors(dtype, file_len)),
    };
    let data = |i: usize| {
        let r = &infos[i].range;
        &input[r.start as usize..r.end as usize]
    };
    pack_tensors(
        source,
        &input[..prefix_len as usize],
        &infos,
        &data,
        opts,
        out,
        progress,
    )
}

/// Packs a safetensors file given as its header (the 8-byte length and the JSON, with its
/// padding) and the bytes of each tensor in file order, without joining them first: the
/// `.mcz` unpacks to `header` followed by every part. Each part must have exactly the
/// length the header gives its tensor. [`PackOptions::raw_dtype`] must be unset.
pub fn pack_parts<W: Write + Send>(
    header: &[u8],
    parts: &[&[u8]],
    opts: &PackOptions,
    out: W,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PackStats, ContainerError> {
    if opts.raw_dtype.is_some() {
        return Err(Unsupported::RawParts.into());
    }
    let data_len = parts.iter().map(|p| p.len() as u64).sum::<u64>();
    let parsed = safetensors::parse(header, header.len() as u64 + data_len)?;
    if parsed.prefix_len != header.len() as u64 {
        return Err(Unsupported::HeaderLen {
            given: header.len() as u64,
            declared: parsed.prefix_len,
        }
        .into());
    }
    if parsed.tensors.len() != parts.len() {
        return Err(Unsupported::PartCount {
            tensors: parsed.tensors.len(),
            parts: parts.len(),
        }
        .into());
    }
    for (t, part) in parsed.tensors.iter().zip(parts) {
        let want = t.range.end - t.range.start;
        if want != part.len() as u64 {
            return Err(Unsupported::PartLen {
                name: t.name.clone(),
                expected: want,
                found: part.len() as u64,
            }
            .into());
        }
    }
    pack_tensors(
        SourceKind::Safetensors,
        header,
        &parsed.tensors,
        &|i| parts[i],
        opts,
        out,
        progress,
    )
}

/// The writer behind [`pack`] and [`pack_parts`]: `prefix` is the original file's bytes
/// before the first tensor, `data(i)` the bytes of `infos[i]`.
fn pack_tensors<'d, W: Write + Send>(
    source: SourceKind,
    prefix: &[u8],
    infos: &[safetensors::TensorInfo],
    data: &(dyn Fn(usize) -> &'d [u8] + Sync),
    opts: &PackOptions,
    out: W,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PackStats, ContainerError> {
    let prefix_len = prefix.len() as u64;
    let file_len = infos.last().map_or(prefix_len, |t| t.range.end);
    opts.encode.validate().map_err(Unsupported::Options)?;
    // The index stores name lengths in 16 bits and dtype names in 8: refuse what does not
    // fit rather than write an unreadable file.
    for t in infos {
        if t.name.len() > MAX_NAME_LEN
            || t.dtype.name().len() > MAX_DTYPE_LEN
            || t.shape.len() > safetensors::MAX_RANK
        {
            return Err(Unsupported::IndexField {
                name: t.name.chars().take(64).collect(),
                name_len: t.name.len(),
                dtype_len: t.dtype.name().len(),
                rank: t.shape.len(),
            }
            .into());
        }
    }
    let mut w = CountingWriter { inner: out, pos: 0 };
    let mut preamble = [0u8; BLOCK as usize];
    preamble[..8].copy_from_slice(&MAGIC);
    preamble[8..10].copy_from_slice(&VERSION_MAJOR.to_le_bytes());
    preamble[10..12].copy_from_slice(&VERSION_MINOR.to_le_bytes());
    w.write(&preamble)?;

    let compressed = zstd::bulk::compress(prefix, opts.encode.zstd_level.max(3)).ok();
    let compressed = compressed.filter(|c| !prefix.is_empty() && c.len() < prefix.len());
    let zstd = compressed.is_some();
    let stream = w.stream(&compressed.unwrap_or_else(|| prefix.to_vec()).into())?;
    let prefix = PrefixRef {
        stream,
        zstd,
        raw_len: prefix_len,
        raw_checksum: xxh3_64(prefix),
    };

    // Batches of tensors are encoded in parallel; writing one batch (a serial copy and
    // checksum) overlaps with encoding the next.
    let mut batches = Vec::new();
    let mut batch_start = 0;
    while batch_start < infos.len() {
        let mut batch_end = batch_start;
        let mut batch_bytes = 0;
        while batch_end < infos.len() && (batch_end == batch_start || batch_bytes < BATCH_BYTES) {
            batch_bytes += infos[batch_end].range.end - infos[batch_end].range.start;
            batch_end += 1;
        }
        batches.push(batch_start..batch_end);
        batch_start = batch_end;
    }
    let encode_batch = |range: std::ops::Range<usize>| -> CodedBatch {
        infos[range.clone()]
            .par_iter()
            .zip(range)
            .map(|(t, i)| {
                let data = data(i);
                rayon::join(
                    || tensor::encode(&t.dtype, data, &opts.encode),
                    || xxh3_64(data),
                )
            })
            .collect()
    };
    let mut entries = Vec::with_capacity(infos.len());
    let mut write_batch = |range: std::ops::Range<usize>,
                           coded: Vec<(tensor::EncodedTensor, u64)>|
     -> io::Result<()> {
        for (t, (enc, checksum)) in infos[range.clone()].iter().zip(coded) {
            let streams = enc
                .streams
                .iter()
                .map(|s| w.stream(s))
                .collect::<io::Result<Vec<_>>>()?;
            entries.push(TensorEntry {
                name: t.name.clone(),
                dtype: t.dtype.clone(),
                shape: t.shape.clone(),
                original_offset: t.range.start,
                original_len: t.range.end - t.range.start,
                checksum,
                codec: enc.codec,
                chunk_log2: enc.chunk_log2,
                streams,
            });
        }
        if let Some(last) = range.last() {
            progress(infos[last].range.end);
        }
        Ok(())
    };
    let mut pending: Option<(std::ops::Range<usize>, CodedBatch)> = None;
    for range in batches {
        let (written, coded) = rayon::join(
            || pending.take().map_or(Ok(()), |(r, c)| write_batch(r, c)),
            || encode_batch(range.clone()),
        );
        written?;
        pending = Some((range, coded));
    }
    if let Some((r, c)) = pending {
        write_batch(r, c)?;
    }
    let index = Index {
        source,
        original_len: file_len,
        prefix,
        tensors: entries,
    };
    let index_bytes = index.serialize();
    w.align()?;
    // A file that codes almost nothing (a model of zeros) is padded with zeros before its
    // index up to the reader's expansion limit.
    let min_len = file_len.div_ceil(MAX_EXPANSION);
    let end = w.pos + index_bytes.len() as u64 + BLOCK;
    if end < min_len {
        w.zeros(min_len - end)?;
        w.align()?;
    }
    let index_offset = w.pos;
    w.write(&index_bytes)?;
    let mut trailer = [0u8; BLOCK as usize];
    trailer[0..8].copy_from_slice(&index_offset.to_le_bytes());
    trailer[8..16].copy_from_slice(&(index_bytes.len() as u64).to_le_bytes());
    trailer[16..24].copy_from_slice(&xxh3_64(&index_bytes).to_le_bytes());
    trailer[24..32].copy_from_slice(&file_len.to_le_bytes());
    trailer[48..56].copy_from_slice(&TRAILER_MAGIC);
    let check = xxh3_64(&trailer[..56]);
    trailer[56..64].copy_from_slice(&check.to_le_bytes());
    w.write(&trailer)?;
    w.inner.flush()?;
    progress(file_len);
    Ok(PackStats {
        original_len: file_len,
        packed_len: w.pos,
    })
}

/// Tensors of a raw input: the whole elements as one 1-D tensor, and any leftover bytes
/// as a `U8` tail.
fn raw_tensors(dtype: &Dtype, file_len: u64) -> Vec<safetensors::TensorInfo> {
    let size = dtype.element_size().unwrap_or(1) as u64;
    let body = file_len / size * size;
    let mut v = vec![safetensors::TensorInfo {
        name: "data".into(),
        dtype: dtype.clone(),
        shape: vec![file_len / size],
        range: 0..body,
    }];
    if body < file_len {
        v.push(safetensors::TensorInfo {
            name: "tail".into(),
            dtype: Dtype::U8,
            shape: vec![file_len - body],
            range: body..file_len,
        });
    }
    v
}

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
        let mut r = Reader { bytes, pos: 0 };
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
        // Each entry takes at least 49 bytes: bound the count before allocating for it.
        const MIN_ENTRY: usize = 2 + 1 + 1 + 8 * 3 + 3 + 24;
        if count > (bytes.len() - r.pos) / (MIN_ENTRY - 24) {
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
        if r.pos != bytes.len() {
            return Err(Corruption::TrailingIndexBytes {
                count: bytes.len() - r.pos,
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

/// Checks that the bytes of the stream area outside every stream (alignment padding and
/// the padding before the index) are zero (FORMAT.md §3.2), so that no byte of a file
/// can change without an error. Streams may come in any order and may overlap.
fn check_padding(bytes: &[u8], index: &Index, index_offset: u64) -> Result<(), ContainerError> {
    let mut spans: Vec<(u64, u64)> = std::iter::once(&index.prefix.stream)
        .chain(index.tensors.iter().flat_map(|t| &t.streams))
        .map(|s| (s.offset, s.offset + s.len))
        .collect();
    spans.sort_unstable();
    spans.push((index_offset, index_offset));
    let mut covered = BLOCK;
    for (start, end) in spans {
        if start > covered {
            // Offsets were checked against the index offset when the index was parsed.
            let gap = &bytes[covered as usize..start as usize];
            if let Some(k) = gap.iter().position(|&b| b != 0) {
                return Err(Corruption::Padding {
                    offset: covered + k as u64,
                }
                .into());
            }
        }
        covered = covered.max(end);
    }
    Ok(())
}

fn put_stream(b: &mut Vec<u8>, s: &StreamRef) {
    b.extend_from_slice(&s.offset.to_le_bytes());
    b.extend_from_slice(&s.len.to_le_bytes());
    b.extend_from_slice(&s.checksum.to_le_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ContainerError> {
        let s = self.bytes.get(self.pos..self.pos.saturating_add(n)).ok_or(
            Corruption::IndexTruncated {
                needed: n,
                at: self.pos,
                len: self.bytes.len(),
            },
        )?;
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, ContainerError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ContainerError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, ContainerError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, ContainerError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
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

/// A readable `.mcz` file over its bytes: borrowed ([`Archive::open`]) or a memory map
/// the archive owns ([`Archive::open_path`]).
#[derive(Debug)]
pub struct Archive<'a> {
    bytes: Bytes<'a>,
    index: Index,
    /// Tensor position by name, for [`Archive::find`].
    by_name: std::collections::HashMap<String, usize>,
}

/// Where an archive's bytes live.
#[derive(Debug)]
enum Bytes<'a> {
    Borrowed(&'a [u8]),
    Mapped(memmap2::Mmap),
}

impl std::ops::Deref for Bytes<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Borrowed(b) => b,
            Bytes::Mapped(m) => m,
        }
    }
}

impl Archive<'static> {
    /// Opens the `.mcz` file at `path` over a memory map the archive owns; checks the
    /// preamble, trailer and index. Errors are [`ContainerError::Io`] for the file itself.
    ///
    /// Like every memory-mapped reader, the archive assumes the file is not truncated or
    /// rewritten while it is open; every stream is still checked against its checksum
    /// when it is read, so a file changed underneath yields an error, not other weights.
    pub fn open_path(path: impl AsRef<std::path::Path>) -> Result<Self, ContainerError> {
        let file = std::fs::File::open(path)?;
        // An empty file cannot be mapped on every platform; it is not an mcz file either.
        if file.metadata()?.len() == 0 {
            return Err(ContainerError::Empty);
        }
        // SAFETY: the map is read-only and private to this archive; a concurrent writer
        // can change the bytes seen, which every reader path checks against checksums
        // before trusting (see above). Truncation by another process is the documented
        // limit of memory-mapped files.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Self::parse(Bytes::Mapped(map))
    }
}

impl<'a> Archive<'a> {
    /// Checks the preamble, trailer and index. Streams are checked when read.
    pub fn open(bytes: &'a [u8]) -> Result<Self, ContainerError> {
        Self::parse(Bytes::Borrowed(bytes))
    }

    fn parse(source: Bytes<'a>) -> Result<Self, ContainerError> {
        let bytes: &[u8] = &source;
        let len = bytes.len() as u64;
        if bytes.len() < 8 || bytes[..8] != MAGIC {
            return Err(ContainerError::NoMagic);
        }
        if len < 2 * BLOCK {
            return Err(Corruption::TooShort { len }.into());
        }
        let major = u16::from_le_bytes([bytes[8], bytes[9]]);
        if major != VERSION_MAJOR {
            return Err(ContainerError::Version {
                found: major,
                supported: VERSION_MAJOR,
            });
        }
        let t = &bytes[bytes.len() - BLOCK as usize..];
        let word = |i: usize| u64::from_le_bytes(t[i..i + 8].try_into().expect("8 bytes"));
        if t[48..56] != TRAILER_MAGIC {
            return Err(Corruption::NoTrailerMagic.into());
        }
        let stored = word(56);
        let computed = xxh3_64(&t[..56]);
        if stored != computed {
            return Err(ContainerError::Checksum {
                what: Part::Trailer,
                stored,
                computed,
            });
        }
        let (index_offset, index_len, index_sum) = (word(0), word(8), word(16));
        // Bound the claimed output by the bytes really there before anything is sized
        // from the index.
        let allowed = len.saturating_mul(MAX_EXPANSION);
        if word(24) > allowed {
            return Err(ContainerError::Limit {
                what: Part::OriginalSize { file_len: len },
                requested: word(24),
                allowed,
            });
        }
        if index_offset < BLOCK
            || index_offset % ALIGN != 0
            || index_offset.checked_add(index_len) != Some(len - BLOCK)
        {
            return Err(Corruption::IndexPlacement {
                offset: index_offset,
                len: index_len,
                trailer: len - BLOCK,
            }
            .into());
        }
        let index_bytes = &bytes[index_offset as usize..(len - BLOCK) as usize];
        let computed = xxh3_64(index_bytes);
        if computed != index_sum {
            return Err(ContainerError::Checksum {
                what: Part::Index,
                stored: index_sum,
                computed,
            });
        }
        let index = Index::parse(index_bytes, index_offset)?;
        if index.original_len != word(24) {
            return Err(Corruption::OriginalLen {
                trailer: word(24),
                index: index.original_len,
            }
            .into());
        }
        check_padding(bytes, &index, index_offset)?;
        let by_name = index
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            bytes: source,
            index,
            by_name,
        })
    }

    /// The index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The position in [`Index::tensors`] of the tensor called `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Hints that the whole file is about to be read (archives from
    /// [`Archive::open_path`]): the kernel reads ahead while tensors decode, which is what
    /// makes a load from a cold page cache fast. A no-op elsewhere; failures are ignored.
    pub fn prefetch(&self) {
        #[cfg(unix)]
        if let Bytes::Mapped(map) = &self.bytes {
            let _ = map.advise(memmap2::Advice::WillNeed);
        }
    }

    /// Hints that tensor `i`'s streams will not be read again (archives from
    /// [`Archive::open_path`]): their pages leave this process's resident set, so a loader
    /// holds about the decoded model, not the decoded model plus the file. The page cache
    /// keeps them; a later read faults them back in from the file. Failures are ignored.
    pub fn release(&self, i: usize) {
        #[cfg(unix)]
        if let (Bytes::Mapped(map), Some(t)) = (&self.bytes, self.index.tensors.get(i)) {
            for s in &t.streams {
                // SAFETY: the map is a read-only, shared mapping of a file, so dropping
                // its pages discards nothing: the next access reads the same file
                // bytes again, which are checked against their checksum as always. The
                // range lies inside the map (the index was checked on open).
                let _ = unsafe {
                    map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        s.offset as usize,
                        s.len as usize,
                    )
                };
            }
        }
    }

    /// The bytes of a stream, checked against its checksum.
    pub fn stream(
        &self,
        s: &StreamRef,
        what: impl FnOnce() -> Part,
    ) -> Result<&[u8], ContainerError> {
        let bytes = &self.bytes[s.offset as usize..(s.offset + s.len) as usize];
        let computed = xxh3_64(bytes);
        if computed != s.checksum {
            return Err(ContainerError::Checksum {
                what: what(),
                stored: s.checksum,
                computed,
            });
        }
        Ok(bytes)
    }

    /// The bytes of a stream as stored, not checked against its checksum: for a caller
    /// that copies them (the GPU loader) and verifies the copy, so that what it uses is
    /// what was verified. Bounds were checked when the archive was opened.
    pub fn stream_unverified(&self, s: &StreamRef) -> &[u8] {
        &self.bytes[s.offset as usize..(s.offset + s.len) as usize]
    }

    /// The original bytes before the first tensor (the safetensors header), checked.
    pub fn prefix(&self) -> Result<Vec<u8>, ContainerError> {
        let p = &self.index.prefix;
        let stored = self.stream(&p.stream, || Part::HeaderStream)?;
        let raw = if p.zstd {
            tensor::check_zstd_frame(stored, p.raw_len).map_err(Corruption::HeaderFrame)?;
            let mut out = vec![0u8; p.raw_len as usize];
            let n = zstd::bulk::Decompressor::new()
                .and_then(|mut d| d.decompress_to_buffer(stored, &mut out))
                .map_err(|e| Corruption::HeaderFrame(ZstdError::Decoder(e.to_string())))?;
            if n != out.len() {
                return Err(Corruption::HeaderFrame(ZstdError::DecodedSize {
                    found: n as u64,
                    expected: out.len() as u64,
                })
                .into());
            }
            out
        } else {
            stored.to_vec()
        };
        let computed = xxh3_64(&raw);
        if computed != p.raw_checksum {
            return Err(ContainerError::Checksum {
                what: Part::Header,
                stored: p.raw_checksum,
                computed,
            });
        }
        Ok(raw)
    }

    /// A decoder for tensor `i`, its streams checked.
    pub fn tensor_decoder(&self, i: usize) -> Result<TensorDecoder<'_>, ContainerError> {
        let t = &self.index.tensors[i];
        // Large streams are checked in parallel: a serial pass would cap decoding speed.
        let check = |(k, s): (usize, &StreamRef)| {
            self.stream(s, || Part::Stream {
                tensor: t.name.clone(),
                stream: k,
            })
        };
        let streams = if t.coded_len() > 1 << 20 {
            t.streams
                .par_iter()
                .enumerate()
                .map(check)
                .collect::<Result<Vec<_>, _>>()?
        } else {
            t.streams
                .iter()
                .enumerate()
                .map(check)
                .collect::<Result<Vec<_>, _>>()?
        };
        let len = usize::try_from(t.original_len).map_err(|_| Corruption::TensorTooLarge {
            name: t.name.clone(),
            len: t.original_len,
        })?;
        TensorDecoder::new(t.codec, t.chunk_log2, len, &streams).map_err(|source| {
            ContainerError::Tensor {
                name: t.name.clone(),
                source,
            }
        })
    }

    /// Decodes tensor `i` into `out` (exactly its original length) and checks its checksum.
    pub fn decode_tensor(&self, i: usize, out: &mut [u8]) -> Result<(), ContainerError> {
        let t = &self.index.tensors[i];
        let decoder = self.tensor_decoder(i)?;
        let tensor_error = |source| ContainerError::Tensor {
            name: t.name.clone(),
            source,
        };
        let computed = if out.len() > 2 * OVERLAP_MIN_BYTES {
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            decoder
                .decode_overlapped(out, &mut |piece| hasher.update(piece))
                .map_err(tensor_error)?;
            hasher.digest()
        } else {
            decoder.decode(out).map_err(tensor_error)?;
            xxh3_64(out)
        };
        if computed != t.checksum {
            return Err(ContainerError::Checksum {
                what: Part::Tensor {
                    name: t.name.clone(),
                },
                stored: t.checksum,
                computed,
            });
        }
        Ok(())
    }

    /// Decodes the whole original file into `out` (exactly its length), tensors in
    /// parallel with each other and within themselves, checking every checksum.
    pub fn unpack_into(&self, out: &mut [u8]) -> Result<(), ContainerError> {
        if out.len() as u64 != self.index.original_len {
            return Err(ContainerError::OutputSize {
                found: out.len() as u64,
                expected: self.index.original_len,
            });
        }
        let prefix = self.prefix()?;
        let (head, mut rest) = out.split_at_mut(prefix.len());
        head.copy_from_slice(&prefix);
        // The index tiles the original exactly (checked on open): cut `out` into one slice
        // per tensor, in order.
        let mut slices = Vec::with_capacity(self.index.tensors.len());
        for t in &self.index.tensors {
            let (slice, tail) = std::mem::take(&mut rest).split_at_mut(t.original_len as usize);
            slices.push(slice);
            rest = tail;
        }
        slices
            .into_par_iter()
            .enumerate()
            .try_for_each(|(i, slice)| self.decode_tensor(i, slice))
    }

    /// Writes the original file to `out`, checking every checksum; `progress` gets the
    /// original bytes written so far. Tensors are decoded in pieces of at most 64 MiB, so
    /// memory stays bounded whatever sizes the file claims; a tensor whose checksum fails
    /// has already been partly written, so callers write to a temporary file.
    pub fn unpack_to<W: Write>(
        &self,
        mut out: W,
        progress: &dyn Fn(u64),
    ) -> Result<(), ContainerError> {
        let prefix = self.prefix()?;
        out.write_all(&prefix)?;
        for (i, t) in self.index.tensors.iter().enumerate() {
            let decoder = self.tensor_decoder(i)?;
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            let mut write_error = None;
            decoder
                .decode_pieces(PIECE_BYTES, &mut |piece, range| {
                    hasher.update(piece);
                    if let Err(e) = out.write_all(piece) {
                        write_error = Some(e);
                        return Err(TensorError::Stopped);
                    }
                    progress(t.original_offset + range.end as u64);
                    Ok(())
                })
                .map_err(|source| match write_error.take() {
                    Some(e) => ContainerError::Io(e),
                    None => ContainerError::Tensor {
                        name: t.name.clone(),
                        source,
                    },
                })?;
            let computed = hasher.digest();
            if computed != t.checksum {
                return Err(ContainerError::Checksum {
                    what: Part::Tensor {
                        name: t.name.clone(),
                    },
                    stored: t.checksum,
                    computed,
                });
            }
        }
        out.flush()?;
        Ok(())
    }

    /// Decodes every tensor and checks every checksum without writing anything; returns
    /// the original bytes checked.
    pub fn verify(&self, progress: &dyn Fn(u64)) -> Result<u64, ContainerError> {
        self.unpack_to(io::sink(), progress)?;
        Ok(self.index.original_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safetensors_file() -> Vec<u8> {
        let n = 50_000usize;
        let mut data = Vec::new();
        let mut seed = 1u64;
        for _ in 0..n {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.05;
            data.extend_from_slice(&((v.to_bits() >> 16) as u16).to_le_bytes());
        }
        data.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        let header = format!(
            r#"{{"__metadata__":{{"format":"pt"}},"w":{{"dtype":"BF16","shape":[{n}],"data_offsets":[0,{}]}},"i":{{"dtype":"I64","shape":[1],"data_offsets":[{},{}]}}}}   "#,
            2 * n,
            2 * n,
            2 * n + 8
        );
        let mut f = (header.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(header.as_bytes());
        f.extend_from_slice(&data);
        f
    }

    fn pack_vec(input: &[u8], opts: &PackOptions) -> Vec<u8> {
        let mut out = Vec::new();
        pack(input, opts, &mut out, &|_| {}).unwrap();
        out
    }

    #[test]
    fn pack_unpack_is_byte_exact() {
        let input = safetensors_file();
        let packed = pack_vec(&input, &PackOptions::default());
        assert!(packed.len() < input.len() * 3 / 4);
        let archive = Archive::open(&packed).unwrap();
        assert_eq!(archive.index().tensors.len(), 2);
        let mut back = Vec::new();
        archive.unpack_to(&mut back, &|_| {}).unwrap();
        assert_eq!(back, input);
        let serialized = archive.index().serialize();
        assert_eq!(
            Index::parse(&serialized, packed.len() as u64).unwrap(),
            *archive.index()
        );
    }

    #[test]
    fn unrepresentable_input_and_bad_options_are_refused() {
        let long_dtype = "X".repeat(300);
        let header =
            format!(r#"{{"t":{{"dtype":"{long_dtype}","shape":[2],"data_offsets":[0,2]}}}}"#);
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header.as_bytes());
        file.extend_from_slice(&[1, 2]);
        let err = pack(&file, &PackOptions::default(), Vec::new(), &|_| {}).unwrap_err();
        assert!(matches!(err, ContainerError::Unsupported(_)), "{err}");
        let mut opts = PackOptions::default();
        opts.encode.chunk_log2 = 10;
        opts.encode.block_log2 = 12;
        let err = pack(&safetensors_file(), &opts, Vec::new(), &|_| {}).unwrap_err();
        assert!(matches!(err, ContainerError::Unsupported(_)), "{err}");
    }

    #[test]
    fn streamed_unpack_matches_with_small_pieces() {
        let input = safetensors_file();
        let mut opts = PackOptions::default();
        opts.encode.chunk_log2 = 10;
        opts.encode.block_log2 = 8;
        let packed = pack_vec(&input, &opts);
        let archive = Archive::open(&packed).unwrap();
        let t = &archive.index().tensors[0];
        let decoder = archive.tensor_decoder(0).unwrap();
        let mut out = vec![0u8; t.original_len as usize];
        let mut pieces = 0;
        decoder
            .decode_pieces(3000, &mut |piece, range| {
                out[range].copy_from_slice(piece);
                pieces += 1;
                Ok(())
            })
            .unwrap();
        assert!(pieces > 10);
        let start = t.original_offset as usize;
        assert!(out == input[start..start + out.len()]);
    }

    #[test]
    fn parallel_unpack_into_matches_streamed_unpack() {
        let input = safetensors_file();
        let packed = pack_vec(&input, &PackOptions::default());
        let archive = Archive::open(&packed).unwrap();
        let mut out = vec![0xEEu8; input.len()];
        archive.unpack_into(&mut out).unwrap();
        assert!(out == input);
        assert!(archive.unpack_into(&mut out[1..]).is_err());
    }

    #[test]
    fn raw_input_with_tail_round_trips() {
        let input: Vec<u8> = (0..10_001u32).map(|i| (i % 251) as u8).collect();
        let opts = PackOptions {
            raw_dtype: Some(Dtype::BF16),
            ..Default::default()
        };
        let packed = pack_vec(&input, &opts);
        let archive = Archive::open(&packed).unwrap();
        assert_eq!(archive.index().source, SourceKind::Raw);
        let mut back = Vec::new();
        archive.unpack_to(&mut back, &|_| {}).unwrap();
        assert_eq!(back, input);
        assert!(matches!(
            pack(&input, &PackOptions::default(), Vec::new(), &|_| {}),
            Err(ContainerError::Safetensors(_))
        ));
    }

    #[test]
    fn every_truncation_and_many_bit_flips_fail_cleanly() {
        let input = safetensors_file();
        let packed = pack_vec(&input, &PackOptions::default());
        for cut in (0..packed.len()).step_by(97) {
            assert!(Archive::open(&packed[..cut]).is_err(), "truncated at {cut}");
        }
        for pos in (0..packed.len()).step_by(61) {
            let mut bad = packed.clone();
            bad[pos] ^= 1 << (pos % 8);
            let result = Archive::open(&bad).and_then(|a| {
                let mut out = Vec::new();
                a.unpack_to(&mut out, &|_| {}).map(|_| out)
            });
            // Padding bytes are not covered by checksums; any success must be exact.
            if let Ok(out) = result {
                assert_eq!(out, input, "flip at {pos} gave different bytes");
            }
        }
    }
}
