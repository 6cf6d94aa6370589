//! Decode throughput on the device, beside a device-to-device copy of the same bytes in
//! the same run, timed with CUDA events; and the bit-exactness check of the result.

use std::sync::Arc;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaEvent, CudaStream};
use mcodec::container::Archive;
use rayon::prelude::*;

use crate::gpu::{GpuDecoder, GpuError, GpuModel};

/// What [`throughput`] measured.
#[derive(Debug, Clone)]
pub struct Throughput {
    /// Device name and architecture.
    pub device: String,
    /// Tensors decoded.
    pub tensors: usize,
    /// Of those, decoded by the kernel (the rest are copies of CPU-decoded bytes).
    pub kernel_tensors: usize,
    /// Decoded bytes per iteration.
    pub output_bytes: u64,
    /// Device bytes the compressed model occupies (streams, tables, fallbacks).
    pub device_bytes: u64,
    /// Milliseconds of each timed decode of the whole model.
    pub decode_ms: Vec<f32>,
    /// Milliseconds of each timed device-to-device copy of `output_bytes`.
    pub copy_ms: Vec<f32>,
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

fn timed(
    stream: &Arc<CudaStream>,
    iters: usize,
    mut work: impl FnMut() -> Result<(), GpuError>,
) -> Result<Vec<f32>, GpuError> {
    let ev = |what| move |source| GpuError::Driver { what, source };
    let (start, end) = (timing_event(stream)?, timing_event(stream)?);
    let mut ms = Vec::with_capacity(iters);
    for _ in 0..iters {
        start.record(stream).map_err(ev("event record"))?;
        work()?;
        end.record(stream).map_err(ev("event record"))?;
        ms.push(start.elapsed_ms(&end).map_err(ev("event timing"))?);
    }
    Ok(ms)
}

/// Uploads every tensor of `archive`, decodes the whole model `iters` times (after two
/// untimed runs) into one buffer and copies the same number of bytes device to device
/// `iters` times; then downloads the result and checks every tensor's checksum.
pub fn throughput(
    dec: &GpuDecoder,
    archive: &Archive<'_>,
    iters: usize,
) -> Result<Throughput, GpuError> {
    let stream = dec.context().default_stream();
    let mut model = GpuModel::upload(dec, archive, None, &stream)?;
    let all: Vec<usize> = (0..model.tensors().len()).collect();
    let (_, total) = crate::output_layout(model.tensors(), &all);
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
    let mut out = alloc("decoded model", total)?;
    let group = model.group(&all, &out, &stream)?;
    for _ in 0..2 {
        model.launch(&group, &mut out, &stream)?;
    }
    model.check(&stream)?;
    let decode_ms = timed(&stream, iters, || model.launch(&group, &mut out, &stream))?;
    model.check(&stream)?;

    let mut copy = alloc("copy target", total)?;
    let copy_ms = timed(&stream, iters, || {
        stream
            .memcpy_dtod(&out, &mut copy)
            .map_err(|source| GpuError::Driver {
                what: "device copy",
                source,
            })
    })?;
    drop(copy);

    let host = stream.clone_dtoh(&out).map_err(|source| GpuError::Driver {
        what: "download",
        source,
    })?;
    let mismatches = model
        .tensors()
        .par_iter()
        .zip(group.offsets())
        .filter(|(t, &off)| {
            let bytes = &host[off as usize..(off + t.out_len) as usize];
            xxhash_rust::xxh3::xxh3_64(bytes) != t.checksum
        })
        .map(|(t, _)| t.name.clone())
        .collect();
    let kernel_tensors = model
        .tensors()
        .iter()
        .filter(|t| matches!(t.body, crate::plan::Body::Split(_)))
        .count();
    Ok(Throughput {
        device: dec.describe(),
        tensors: all.len(),
        kernel_tensors,
        output_bytes: model.tensors().iter().map(|t| t.out_len).sum(),
        device_bytes: model.device_bytes() as u64,
        decode_ms,
        copy_ms,
        mismatches,
        fallbacks: model
            .fallbacks()
            .into_iter()
            .map(|(name, why)| format!("{name}: {why}"))
            .collect(),
    })
}
