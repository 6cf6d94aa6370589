//! mcodec-gpu: decodes `.mcz` tensors on an NVIDIA GPU, straight from their compressed
//! streams into device memory (FORMAT.md §7).
//!
//! An inference engine opens a packed model, uploads the compressed streams of the tensors
//! it wants once ([`GpuModel`]), and decodes each layer's weights into a reusable buffer
//! just before it needs them ([`GpuModel::group`], [`GpuModel::launch`]), asynchronously
//! on its own stream. Results are bit-identical to the CPU decoder.
//!
//! Layers: [`plan`] parses and validates on the host and lays out what the kernel reads;
//! `kernels/mcz_decode.cu` decodes (compiled at run time by NVRTC, so no PTX is committed
//! that could drift from the source); [`mirror`] is the kernel's algorithm in Rust, which
//! CI runs against the CPU decoder; the CUDA driver is reached through `cudarc` with
//! dynamic loading, so this crate builds and its tests run on machines without CUDA.
#![warn(missing_docs)]

pub mod bench;
mod gpu;
pub mod mirror;
pub mod plan;

pub use gpu::{compile_ptx, DecodeGroup, GpuDecoder, GpuError, GpuModel};

use plan::{Body, Prepared, PreparedTensor, TensorDesc};

/// The kernel source, compiled at run time.
pub const KERNEL_SOURCE: &str = include_str!("../kernels/mcz_decode.cu");
/// Name of the kernel function.
pub const KERNEL_NAME: &str = "mcz_decode";
/// Alignment of each tensor in a group's output buffer.
pub const OUTPUT_ALIGN: u64 = 256;

/// Where each tensor of a group lands in one output buffer: back to back, each at a
/// multiple of [`OUTPUT_ALIGN`]. Returns the offsets and the total size.
pub fn output_layout(prepared: &[PreparedTensor], tensors: &[usize]) -> (Vec<u64>, u64) {
    let mut at = 0u64;
    let offsets = tensors
        .iter()
        .map(|&t| {
            let here = at.next_multiple_of(OUTPUT_ALIGN);
            at = here + prepared[t].out_len;
            here
        })
        .collect();
    (offsets, at)
}

/// The kernel work of decoding `tensors` of `prepared` into a buffer at `dst`, with the
/// arena at `arena` and the tables at `tables`: the kernel descriptors, and the
/// CPU-decoded tensors as (arena offset, output offset, length) copies.
pub fn launch_work(
    prepared: &[PreparedTensor],
    tensors: &[usize],
    offsets: &[u64],
    arena: u64,
    tables: u64,
    dst: u64,
) -> (Vec<TensorDesc>, Vec<(u64, u64, u64)>) {
    let mut descs = Vec::new();
    let mut copies = Vec::new();
    for (&t, &off) in tensors.iter().zip(offsets) {
        let p = &prepared[t];
        match &p.body {
            Body::Empty => {}
            Body::Split(d) => descs.push(d.relocate(arena, tables, dst + off)),
            Body::Raw { offset, .. } => copies.push((*offset, off, p.out_len)),
        }
    }
    (descs, copies)
}

/// A chunk the kernel (or its mirror) found corrupt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tensor {tensor:?} chunk {chunk}: {}", if *.code == plan::ERR_BAD_TABLE_ID { "block names a missing table" } else { "rANS end state or word count wrong (corrupt stream)" })]
pub struct CorruptChunk {
    /// Tensor name.
    pub tensor: String,
    /// Chunk index.
    pub chunk: u32,
    /// Kernel error code (`plan::ERR_*`).
    pub code: u32,
}

/// Decodes `tensors` of `prepared` with the CPU mirror of the kernel, into one buffer laid
/// out by [`output_layout`]. Returns the buffer and the offsets.
pub fn mirror_decode(
    prepared: &Prepared,
    tensors: &[usize],
) -> Result<(Vec<u8>, Vec<u64>), CorruptChunk> {
    const ARENA: u64 = 1 << 40;
    const TABLES: u64 = 2 << 40;
    const OUT: u64 = 3 << 40;
    let (offsets, total) = output_layout(&prepared.tensors, tensors);
    let (descs, copies) = launch_work(&prepared.tensors, tensors, &offsets, ARENA, TABLES, OUT);
    let mut out = vec![0u8; total as usize];
    for &(from, to, len) in &copies {
        let (from, to, len) = (from as usize, to as usize, len as usize);
        out[to..to + len].copy_from_slice(&prepared.arena[from..from + len]);
    }
    let mem = mirror::Memory::new(vec![(ARENA, &prepared.arena), (TABLES, &prepared.tables)]);
    let mut err = [0u32; 3];
    mirror::launch(
        &mem,
        &mut mirror::Output {
            base: OUT,
            bytes: &mut out,
        },
        &descs,
        &plan::tasks(&descs),
        &mut err,
    );
    if err[0] != 0 {
        let t = split_tensor(prepared, tensors, err[1] as usize);
        return Err(CorruptChunk {
            tensor: prepared.tensors[t].name.clone(),
            chunk: err[2],
            code: err[0],
        });
    }
    Ok((out, offsets))
}

/// The prepared-tensor index of kernel descriptor `k` of a launch over `tensors`.
fn split_tensor(prepared: &Prepared, tensors: &[usize], k: usize) -> usize {
    tensors
        .iter()
        .copied()
        .filter(|&t| matches!(prepared.tensors[t].body, Body::Split(_)))
        .nth(k)
        .unwrap_or(0)
}
