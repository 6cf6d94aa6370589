//! mcodec: a lossless codec for neural-network weights.
//!
//! Layers, each talking only to the one below it (see `docs/FORMAT.md`): float split
//! ([`Layout`]) → entropy coding (frequency tables, rANS coder, streams) → [`tensor`] →
//! [`container`] (the `.mcz` file, with [`safetensors`] parsing the input). [`delta`] codes
//! a tensor against a base tensor (hub store).
//!
//! The public API is the container, the tensor codec, the delta codec and the safetensors
//! parser; [`simd`] chooses the code path, and [`format`](mod@format) names what a decoder outside
//! this crate (the GPU kernel) needs of the on-disk streams. The entropy coder and the
//! float split are internal: their entry points take raw symbols and tables, which the
//! layers above build and check.
// Every type a public signature names must be reachable by its path (exported).
#![warn(unnameable_types)]

pub mod bytes;
pub mod container;
pub mod delta;
pub mod dtype;
pub mod safetensors;
pub mod tensor;

// Internal layers. The `fuzzing` feature (fuzz targets, this crate's own integration tests)
// makes them public, hidden from the docs; the checked entry points stay the same.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod checksum;
#[cfg(not(feature = "fuzzing"))]
pub(crate) mod checksum;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod cpu;
#[cfg(not(feature = "fuzzing"))]
pub(crate) mod cpu;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod entropy;
#[cfg(not(feature = "fuzzing"))]
pub(crate) mod entropy;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod float_split;
#[cfg(not(feature = "fuzzing"))]
pub(crate) mod float_split;
mod huge_pages;
mod recycle;

pub use dtype::{Dtype, ShapeError};
pub use entropy::stream::{CodedStream, Effort, StreamKind};
pub use entropy::EntropyError;
pub use float_split::Layout;
pub use tensor::{Codec, EncodeOptions, EncodedTensor, TensorDecoder};

/// Run-time choice of the code path (AVX-512, AVX2 or scalar): every path produces the
/// same bytes, only speed differs. `MCODEC_SIMD=auto|avx512|avx2|scalar` picks one from
/// the environment ([`simd_level_from_env`](simd::simd_level_from_env) reports a bad
/// value), [`set_simd_level`](simd::set_simd_level) from code.
pub mod simd {
    pub use crate::cpu::{
        reset_simd_level, set_simd_level, simd_level, simd_level_from_env, SimdError, SimdLevel,
    };
}

/// What a decoder outside this crate (the GPU kernel and its CPU mirror) needs to know of
/// the coded streams (FORMAT.md §5): the rANS parameters, the frequency tables, and each
/// stream's layout as the CPU decoder's own parser checked it
/// ([`StreamLayout`](format::StreamLayout)).
pub mod format {
    pub use crate::entropy::model::{FreqTable, MAX_TABLE_SYMBOLS, PROB_BITS, PROB_SCALE};
    pub use crate::entropy::rans::{LANES, RANS_L, STATE_BYTES};
    pub use crate::entropy::stream::{StreamLayout, MIN_BLOCK_LOG2};
    pub use crate::entropy::table_code::{ids_bits, tables_len as compact_tables_len};
}
