//! Decode throughput on the device, beside a device-to-device copy of the same bytes in
//! the same run, timed with CUDA events around back-to-back launches; and the
//! bit-exactness check of the result. Only kernel-decoded bytes count towards GB/s;
//! tensors decoded on the CPU at upload (device copies at decode) are timed apart.

use std::sync::Arc;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaEvent, CudaStream};
use mcodec::container::Archive;
use rayon::prelude::*;

use crate::gpu::{GpuDecoder, GpuError, GpuModel};
use crate::plan::Body;

/// What [`throughput`] measured.
#[derive(Debug, Clone)]
pub struct Throughput {
    /// Device name, code kind and NVRTC version.
    pub device: String,
    /// Tensors decoded.
    pub tensors: usize,
    /// Of those, decoded by the kernel (the rest are copies of CPU-decoded bytes).
    pub kernel_tensors: usize,
    /// Output bytes the kernel decodes per iteration (the only bytes GB/s counts).
    pub kernel_bytes: u64,
    /// Output bytes of the tensors decoded on the CPU at upload: device copies, timed
    /// apart ([`Self::fallback_ms`]).
    pub fallback_bytes: u64,
    /// Device bytes the compressed model occupies (streams, tables, fallbacks).
    pub device_bytes: u64,
    /// Back-to-back launches (or copies) between each pair of timing events.
    pub launches: usize,
    /// Milliseconds per kernel launch over every kernel-decoded tensor (each event pair's
    /// time divided by [`Self::launches`]); empty when no tensor is kernel-decoded.
    pub decode_ms: Vec<f32>,
    /// Milliseconds per device-to-device copy of [`Self::kernel_bytes`], timed likewise.
    pub copy_ms: Vec<f32>,
    /// Milliseconds per round of the fallback tensors' device copies, timed likewise;
    /// empty when there are none.
    pub fallback_ms: Vec<f32>,
    /// Tensors whose decoded bytes did not match the checksum of the original.
    pub mismatches: Vec<String>,
    /// Tensors decoded on the CPU, with the reason.
    pub fallbacks: Vec<String>,
}

/// Median of `v` (mean of the middle two for an even count); 0 for none.
pub fn median(v: &[f32]) -> f32 {
    let mut s = v.to_vec();
    s.sort_by(f32::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// GB/s (10^9 bytes per second) of `bytes` in `ms` milliseconds.
pub fn gb_per_s(bytes: u64, ms: f32) -> f64 {
    if ms > 0.0 {
        bytes as f64 / 1e6 / f64::from(ms)
    } else {
        0.0
    }
}

/// A CUDA event that records timing.
pub fn timing_event(stream: &Arc<CudaStream>) -> Result<CudaEvent, GpuError> {
    stream
        .context()
        .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
        .map_err(|source| GpuError::Driver {
            what: "event creation",
            source,
        })
}

/// Times `iters` event pairs around `launches` back-to-back calls of `work` each, so that
/// host launch latency drops out of sub-millisecond work; returns milliseconds per call.
fn timed(
    stream: &Arc<CudaStream>,
    iters: usize,
    launches: usize,
    mut work: impl FnMut() -> Result<(), GpuError>,
) -> Result<Vec<f32>, GpuError> {
    let ev = |what| move |source| GpuError::Driver { what, source };
    let (start, end) = (timing_event(stream)?, timing_event(stream)?);
    let mut ms = Vec::with_capacity(iters);
    for _ in 0..iters {
        start.record(stream).map_err(ev("event record"))?;
        for _ in 0..launches {
            work()?;
        }
        end.record(stream).map_err(ev("event record"))?;
        ms.push(start.elapsed_ms(&end).map_err(ev("event timing"))? / launches as f32);
    }
    Ok(ms)
}

/// Uploads every tensor of `archive`; decodes the kernel-decoded tensors (one launch)
/// `iters` × `launches` times after two untimed runs, and as often copies the same number
/// of bytes device to device; times the fallback tensors' copies apart; then downloads
/// everything decoded and checks every tensor's checksum.
pub fn throughput(
    dec: &GpuDecoder,
    archive: &Archive<'_>,
    iters: usize,
    launches: usize,
) -> Result<Throughput, GpuError> {
    let launches = launches.max(1);
    let stream = dec.context().default_stream();
    let mut model = GpuModel::upload(dec, archive, None, &stream)?;
    let pick = |kernel: bool| -> Vec<usize> {
        model
            .tensors()
            .iter()
            .enumerate()
            .filter(|(_, t)| match t.body {
                Body::Split(_) => kernel,
                Body::Raw { .. } => !kernel,
                Body::Empty => false,
            })
            .map(|(i, _)| i)
            .collect()
    };
    let (kernel, fallback) = (pick(true), pick(false));
    let alloc = |what, bytes: u64| {
        stream
            .alloc_zeros::<u8>(bytes.max(1) as usize)
            .map_err(|source| {
                if source.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                    GpuError::OutOfMemory {
                        what,
                        bytes: bytes as usize,
                    }
                } else {
                    GpuError::Driver { what, source }
                }
            })
    };
    let mut decode_ms = Vec::new();
    let mut copy_ms = Vec::new();
    let mut fallback_ms = Vec::new();
    let mut mismatches = Vec::new();
    for (set, is_kernel) in [(&kernel, true), (&fallback, false)] {
        if set.is_empty() {
            continue;
        }
        let (_, total) = crate::work::output_layout(model.tensors(), set);
        let mut out = alloc("decoded tensors", total)?;
        let group = model.group(set, &out, &stream)?;
        for _ in 0..2 {
            model.launch(&group, &mut out, &stream)?;
        }
        model.check(&stream)?;
        let ms = timed(&stream, iters, launches, || {
            model.launch(&group, &mut out, &stream)
        })?;
        model.check(&stream)?;
        if is_kernel {
            decode_ms = ms;
            let mut copy = alloc("copy target", total)?;
            copy_ms = timed(&stream, iters, launches, || {
                stream
                    .memcpy_dtod(&out, &mut copy)
                    .map_err(|source| GpuError::Driver {
                        what: "device copy",
                        source,
                    })
            })?;
        } else {
            fallback_ms = ms;
        }
        let host = stream.clone_dtoh(&out).map_err(|source| GpuError::Driver {
            what: "download",
            source,
        })?;
        mismatches.extend(
            set.par_iter()
                .zip(group.offsets())
                .filter_map(|(&t, &off)| {
                    let t = &model.tensors()[t];
                    let bytes = &host[off as usize..(off + t.out_len) as usize];
                    crate::work::check_tensor(t, bytes)
                        .err()
                        .map(|_| t.name.clone())
                })
                .collect::<Vec<_>>(),
        );
    }
    let bytes = |set: &[usize]| -> u64 { set.iter().map(|&t| model.tensors()[t].out_len).sum() };
    Ok(Throughput {
        device: dec.describe(),
        tensors: model.tensors().len(),
        kernel_tensors: kernel.len(),
        kernel_bytes: bytes(&kernel),
        fallback_bytes: bytes(&fallback),
        device_bytes: model.device_bytes() as u64,
        launches,
        decode_ms,
        copy_ms,
        fallback_ms,
        mismatches,
        fallbacks: model
            .fallbacks()
            .into_iter()
            .map(|(name, why)| format!("{name}: {why}"))
            .collect(),
    })
}
