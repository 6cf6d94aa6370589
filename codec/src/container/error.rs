//! Errors of the container layer: each variant carries the values found and what they
//! had to be.

use std::io;

use super::{MAX_DTYPE_LEN, MAX_EXPANSION, MAX_NAME_LEN};
use crate::dtype::ShapeError;
use crate::safetensors::{self, HeaderError};
use crate::tensor::{TensorError, ZstdError};

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
    /// The output buffer given to [`Archive::unpack_into`](super::Archive::unpack_into) does not have the original size.
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
    /// The trailer names a stream alignment outside [`super::ALIGN_LOG2_RANGE`].
    #[error("trailer names a stream alignment of 2^{found} bytes, allowed 2^2..=2^6")]
    Alignment {
        /// The exponent found.
        found: u8,
    },
    /// A zstd-coded index (since 1.2) is not one frame of the length the trailer gives.
    #[error("zstd-coded index of {stored} bytes, {raw} bytes decoded: {problem}")]
    IndexFrame {
        /// Bytes stored.
        stored: u64,
        /// Decoded length the trailer gives.
        raw: u64,
        /// What was wrong.
        problem: String,
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
    #[error("nonzero padding byte at offset {offset}, after the {after}")]
    Padding {
        /// Its offset.
        offset: u64,
        /// The stream the padding follows: the header stream (or none yet) or a tensor's.
        after: Part,
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
    /// [`pack_parts`](super::pack_parts) was given a raw dtype.
    #[error("pack_parts packs safetensors data; raw_dtype must be unset")]
    RawParts,
    /// The header given to [`pack_parts`](super::pack_parts) declares another header length.
    #[error("header of {given} bytes declares {declared} bytes of header")]
    HeaderLen {
        /// Bytes given.
        given: u64,
        /// Bytes it declares.
        declared: u64,
    },
    /// [`pack_parts`](super::pack_parts) got another number of parts than the header has tensors.
    #[error("header lists {tensors} tensors, {parts} parts given")]
    PartCount {
        /// Tensors in the header.
        tensors: usize,
        /// Parts given.
        parts: usize,
    },
    /// A part given to [`pack_parts`](super::pack_parts) has another length than its tensor.
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
