//! The tensor layer's errors.

use crate::entropy::EntropyError;

/// Errors of the tensor codec.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TensorError {
    /// A stream failed to parse or decode.
    #[error("stream {stream}: {source}")]
    Stream {
        /// Which stream of the tensor.
        stream: usize,
        /// What went wrong.
        #[source]
        source: EntropyError,
    },
    /// The zstd frame is corrupt or decodes to the wrong size.
    #[error("zstd stream: {0}")]
    Zstd(#[from] ZstdError),
    /// The stored stream has the wrong size.
    #[error("stored stream is {found} bytes, expected {expected}")]
    StoredSize {
        /// Bytes found.
        found: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// The index gives the codec another number of streams than it has.
    #[error("bad codec parameters: {codec} has {found} streams, expected {expected}")]
    StreamCount {
        /// The codec's name.
        codec: &'static str,
        /// Streams given.
        found: usize,
        /// Streams the codec has.
        expected: usize,
    },
    /// The chunk length exponent is outside [`CHUNK_LOG2_RANGE`](super::CHUNK_LOG2_RANGE).
    #[error("chunk length exponent {found} outside {min}..={max}")]
    ChunkLog2 {
        /// The exponent.
        found: u8,
        /// Smallest allowed.
        min: u8,
        /// Largest allowed.
        max: u8,
    },
    /// The block length exponent of [`EncodeOptions`](super::EncodeOptions) is outside what its chunks allow.
    #[error("block length exponent {found} outside {min}..={max}")]
    BlockLog2 {
        /// The exponent.
        found: u8,
        /// Smallest allowed.
        min: u8,
        /// Largest allowed (the chunk length exponent).
        max: u8,
    },
    /// The tensor's size is not a whole number of elements of its float layout.
    #[error(
        "bad codec parameters: {len} bytes is not a whole number of {element_size}-byte elements"
    )]
    PartialElement {
        /// Tensor bytes.
        len: usize,
        /// Element size.
        element_size: usize,
    },
    /// The output buffer does not have the tensor's size.
    #[error("output buffer is {found} bytes, tensor is {expected}")]
    OutputSize {
        /// Buffer bytes.
        found: usize,
        /// Tensor bytes.
        expected: usize,
    },
    /// The receiver of decoded pieces stopped the decode (its own error says why).
    #[error("the receiver of decoded pieces stopped the decode")]
    Stopped,
}

/// A zstd frame that is not exactly one frame of the expected size.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZstdError {
    /// zstd cannot find the frame's end.
    #[error("bad frame: {reason}")]
    BadFrame {
        /// zstd's name for the error.
        reason: &'static str,
    },
    /// Bytes follow the first frame.
    #[error("the first frame ends at byte {frame_end} of {len}: trailing bytes or a second frame")]
    TrailingBytes {
        /// Where the first frame ends.
        frame_end: usize,
        /// Stream length.
        len: usize,
    },
    /// The frame header declares another size than the index.
    #[error("frame declares {declared} bytes, expected {expected}")]
    DeclaredSize {
        /// Size in the frame header.
        declared: u64,
        /// Size in the index.
        expected: u64,
    },
    /// The frame header cannot be read.
    #[error("unreadable frame header")]
    UnreadableHeader,
    /// The frame decodes to another size than expected.
    #[error("decoded {found} bytes, expected {expected}")]
    DecodedSize {
        /// Bytes it decoded to (for a frame that ran short while streaming: at least
        /// the bytes before the failure).
        found: u64,
        /// Bytes expected.
        expected: u64,
    },
    /// The frame holds more bytes than expected.
    #[error("frame holds more than {expected} bytes")]
    TooLong {
        /// Bytes expected.
        expected: u64,
    },
    /// zstd's decoder failed; its own message.
    #[error("{0}")]
    Decoder(String),
}
