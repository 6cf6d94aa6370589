//! Tensor codec (FORMAT.md §4): turns one tensor's bytes into streams and back.
//!
//! Float tensors are split into fields ([`Layout`]), each field coded as one entropy
//! stream with a common chunk length, so chunk `c` of every stream covers the same
//! elements and chunks decode in parallel. Other dtypes go through zstd. Whatever is not
//! smaller than the original is stored as it is.

//!
//! Files: `encode.rs` the encoder (options, layout sample, field streams), `decode.rs`
//! the decoder (whole tensors, pieces, chunk pairs), `buffers.rs` the per-thread field
//! buffers both use, `prefault.rs` how decoders populate their output pages, `error.rs`
//! the errors.

use crate::float_split::Layout;

mod buffers;
mod decode;
mod encode;
mod error;
mod prefault;
#[cfg(test)]
mod tests;

pub(crate) use decode::check_zstd_frame;
pub use decode::{PieceSink, TensorDecoder};
pub use encode::{encode, file_bytes, EncodeOptions, EncodedTensor};
pub use error::{TensorError, ZstdError};
pub(crate) use prefault::prefault_task;

/// How a tensor's bytes are stored (index field `codec`, FORMAT.md §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// One stream holding the original bytes.
    Stored,
    /// One zstd frame of the original bytes.
    Zstd,
    /// Float split: one entropy stream per field of the dtype's [`Layout`].
    Split(Layout),
}

impl Codec {
    /// The byte that identifies the codec in the index.
    pub fn id(self) -> u8 {
        match self {
            Self::Stored => 0,
            Self::Zstd => 1,
            Self::Split(Layout::Bf16) => 2,
            Self::Split(Layout::F16) => 3,
            Self::Split(Layout::F32) => 4,
            Self::Split(Layout::F8) => 5,
            Self::Split(Layout::Bf16Joint) => 6,
            Self::Split(Layout::F16Joint) => 7,
            Self::Split(Layout::F32Joint) => 8,
        }
    }

    /// The format minor version (FORMAT.md §8) that introduced the codec: a file that
    /// uses it says at least this minor version in its preamble.
    pub fn minor_version(self) -> u16 {
        match self {
            Self::Split(layout) if layout.is_joint() => 1,
            _ => 0,
        }
    }

    /// Inverse of [`Self::id`].
    pub fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::Stored,
            1 => Self::Zstd,
            2 => Self::Split(Layout::Bf16),
            3 => Self::Split(Layout::F16),
            4 => Self::Split(Layout::F32),
            5 => Self::Split(Layout::F8),
            6 => Self::Split(Layout::Bf16Joint),
            7 => Self::Split(Layout::F16Joint),
            8 => Self::Split(Layout::F32Joint),
            _ => return None,
        })
    }

    /// Number of streams the codec stores.
    pub fn stream_count(self) -> usize {
        match self {
            Self::Stored | Self::Zstd => 1,
            Self::Split(layout) => layout.field_bits().len(),
        }
    }

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Zstd => "zstd",
            Self::Split(Layout::Bf16) => "split-bf16",
            Self::Split(Layout::F16) => "split-f16",
            Self::Split(Layout::F32) => "split-f32",
            Self::Split(Layout::F8) => "split-f8",
            Self::Split(Layout::Bf16Joint) => "split-bf16-joint",
            Self::Split(Layout::F16Joint) => "split-f16-joint",
            Self::Split(Layout::F32Joint) => "split-f32-joint",
        }
    }
}

/// Smallest and largest chunk length exponent a file may declare (FORMAT.md §4.2).
pub const CHUNK_LOG2_RANGE: std::ops::RangeInclusive<u8> = 10..=22;

/// Default chunk length exponent: 262 144 elements per chunk. Longer chunks spend less on
/// rANS states (0.006 instead of 0.018 bit per symbol); a multi-GB model still has
/// thousands of chunks for CPU threads and GPU warps.
pub const DEFAULT_CHUNK_LOG2: u8 = 18;

/// Default block length exponent: streams with several tables get blocks of 256
/// elements (the tables are searched on blocks of 2048, `PLAN_BLOCK_LOG2`, then refined),
/// and each stream keeps longer blocks where they code smaller. Format 1.3's run-coded
/// block ids cost a few bits per change of table instead of a byte per block, so short
/// blocks follow the weights' scale along a tensor (rows of 384 in MiniLM): MiniLM's F32
/// file 65 KB smaller than 1.2's blocks of 2048, the other dtypes 12–21 KB smaller
/// (BENCHMARKS.md, fifteenth session).
pub const DEFAULT_BLOCK_LOG2: u8 = 8;
/// Block length exponent of the archival setting.
pub const MAX_BLOCK_LOG2: u8 = 8;

/// Order-0 entropy of a histogram, in bits per symbol.
pub(crate) fn entropy_bits(hist: &[u64]) -> f64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let t = total as f64;
    hist.iter()
        .filter(|&&c| c > 0)
        .map(|&c| -(c as f64 / t) * (c as f64 / t).log2())
        .sum()
}
