//! mcodec: a lossless codec for neural-network weights.
//!
//! Layers, each talking only to the one below it (see `docs/FORMAT.md`):
//! [`float_split`] → [`entropy`] (model, rANS coder, streams) → [`tensor`] →
//! [`container`] (the `.mcz` file, with [`safetensors`] parsing the input).
//! [`delta`] codes a tensor against a base tensor (hub store).

pub mod container;
pub mod cpu;
pub mod delta;
pub mod dtype;
pub mod entropy;
pub mod float_split;
pub mod safetensors;
pub mod tensor;

pub use dtype::Dtype;
pub use tensor::{Codec, EncodeOptions, EncodedTensor, TensorDecoder};
