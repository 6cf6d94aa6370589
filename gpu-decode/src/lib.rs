//! mcodec-gpu: decodes `.mcz` tensors on an NVIDIA GPU, straight from their compressed
//! streams into device memory (FORMAT.md §7).
//!
//! An inference engine opens a packed model, uploads the compressed streams of the tensors
//! it wants once ([`GpuModel`]), and decodes each layer's weights into a reusable buffer
//! just before it needs them ([`GpuModel::group`], [`GpuModel::launch`]), asynchronously
//! on its own stream. Results are bit-identical to the CPU decoder.
//!
//! Layers: the plan parses and validates on the host and lays out what the kernel reads
//! ([`Prepared`]); `kernels/mcz_decode.cu` decodes (compiled at run time by NVRTC, so no
//! PTX is committed that could drift from the source); the mirror is the kernel's
//! algorithm in Rust, which CI runs against the CPU decoder; the CUDA driver is reached through `cudarc` with
//! dynamic loading, so this crate builds and its tests run on machines without CUDA.
#![warn(missing_docs, unnameable_types)]

// Throughput measurement for the CLI's `gpu-bench` command and the `infer` example: a
// bench helper another crate of ours (the CLI) must reach, not an API, so hidden from the
// docs.
#[doc(hidden)]
pub mod bench;
mod gpu;
mod work;

// Internal layers: the host-side plan (what the kernel reads) and the kernel's CPU mirror.
// The `fuzzing` feature (the `gpu_plan` fuzz target, this crate's tests and examples)
// makes them and the mirror's entry points public, hidden from the docs; what the public
// API names of them is exported below either way.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod mirror;
// Without the feature only the table expansion uses the mirror.
#[cfg(not(feature = "fuzzing"))]
#[allow(dead_code)]
mod mirror;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod plan;
#[cfg(not(feature = "fuzzing"))]
mod plan;

pub use gpu::{
    compile_cubin, compile_ptx, nvrtc_version, CodeKind, DecodeGroup, GpuDecoder, GpuError,
    GpuModel,
};
pub use plan::{Fallback, PlanError, Prepared, PreparedTensor};
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use work::{
    check_decoded, check_tensor, launch_work, mirror_decode, mirror_decode_raw, output_layout,
    raw_work,
};
pub use work::{CorruptChunk, DecodedMismatch, Verify};

/// The kernel source, compiled at run time.
pub const KERNEL_SOURCE: &str = include_str!("../kernels/mcz_decode.cu");
/// Name of the kernel function.
pub const KERNEL_NAME: &str = "mcz_decode";
/// Alignment of each tensor in a group's output buffer.
pub const OUTPUT_ALIGN: u64 = 256;

/// Environment variable that turns every skip for want of a GPU, driver, NVRTC, cuBLAS or
/// test data into a failure (tests, examples, `mcodec gpu-bench`): set to anything but
/// empty or `0` on a device run, so that a run that could not measure cannot pass.
pub const GPU_REQUIRED_ENV: &str = "MCODEC_GPU_REQUIRED";

/// Whether [`GPU_REQUIRED_ENV`] is set.
pub fn gpu_required() -> bool {
    std::env::var_os(GPU_REQUIRED_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Where [`GpuModel::decode_into_raw`] writes one tensor: memory the caller owns (a
/// PyTorch CUDA tensor, say), anywhere in device memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawTarget {
    /// Index into the prepared tensors ([`GpuModel::tensors`]).
    pub tensor: usize,
    /// Device address (16-byte aligned unless the tensor is empty).
    pub address: u64,
    /// Bytes at `address`: the tensor's decoded length.
    pub len: u64,
}
