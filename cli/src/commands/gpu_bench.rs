//! `mcodec gpu-bench`: decode a packed model on the GPU many times, report the BF16 (or
//! other) output throughput beside a device-to-device copy of the same bytes in the same
//! run, and check every decoded tensor against the original's checksum.

use mcodec::container::Archive;
use mcodec_gpu::bench::{gb_per_s, median, throughput};
use mcodec_gpu::GpuDecoder;
use serde_json::json;

use super::emit;
use crate::error::{Classify, CliError, Context, Failure};
use crate::fsutil::{input_name, read_input};
use crate::{Global, GpuBenchArgs};

/// Runs `gpu-bench`.
pub fn run(a: &GpuBenchArgs, g: &Global) -> Result<(), CliError> {
    let data = read_input(&a.file)?;
    let file = input_name(&a.file);
    let archive = Archive::open(&data).at(file)?;
    let dec = GpuDecoder::new(a.device).map_err(|e| CliError::plain(e.failure(), e))?;
    let r = throughput(&dec, &archive, a.iters as usize, a.launches as usize).at(file)?;
    if !g.quiet {
        for f in &r.fallbacks {
            eprintln!(
                "mcodec: {}: decoded on the CPU, not the GPU: {f}",
                file.display()
            );
        }
    }
    let (dec_ms, copy_ms, fb_ms) = (
        median(&r.decode_ms),
        median(&r.copy_ms),
        median(&r.fallback_ms),
    );
    let (dec_gb, copy_gb, fb_gb) = (
        gb_per_s(r.kernel_bytes, dec_ms),
        gb_per_s(r.kernel_bytes, copy_ms),
        gb_per_s(r.fallback_bytes, fb_ms),
    );
    let exact = r.mismatches.is_empty();
    let text = if a.json {
        let v = json!({
            "file": file.to_string_lossy(),
            "device": r.device,
            "tensors": r.tensors,
            "kernel_tensors": r.kernel_tensors,
            "kernel_bytes": r.kernel_bytes,
            "fallback_bytes": r.fallback_bytes,
            "device_bytes": r.device_bytes,
            "iters": a.iters,
            "launches_per_timing": r.launches,
            "decode_median_ms": dec_ms,
            "decode_gb_s": dec_gb,
            "copy_median_ms": copy_ms,
            "copy_gb_s": copy_gb,
            "fallback_copy_median_ms": fb_ms,
            "fallback_copy_gb_s": fb_gb,
            "decode_ms": r.decode_ms,
            "copy_ms": r.copy_ms,
            "fallback_ms": r.fallback_ms,
            "bit_exact": exact,
            "mismatches": r.mismatches,
            "fallbacks": r.fallbacks,
        });
        format!("{v:#}\n")
    } else {
        let output = r.kernel_bytes + r.fallback_bytes;
        let fallback_line = if r.fallback_bytes > 0 {
            format!(
                "CPU-decoded {} bytes in {} tensors, copied on the device: {fb_gb:.1} GB/s (median {fb_ms:.4} ms; not in the decode figure)\n",
                r.fallback_bytes,
                r.fallbacks.len(),
            )
        } else {
            String::new()
        };
        format!(
            "file        {}\ndevice      {}\ntensors     {} ({} by the kernel)\noutput      {} bytes ({} by the kernel)\non device   {} bytes compressed ({:.2}% of output)\ntiming      median of {} event pairs, {} back-to-back launches each, per launch\ndecode      {dec_gb:.1} GB/s of kernel-decoded output ({dec_ms:.4} ms)\nD2D copy    {copy_gb:.1} GB/s of the same bytes ({copy_ms:.4} ms; read+write traffic {:.1} GB/s)\ndecode/copy {:.2}\n{fallback_line}bit-exact   {}\n",
            file.display(),
            r.device,
            r.tensors,
            r.kernel_tensors,
            output,
            r.kernel_bytes,
            r.device_bytes,
            100.0 * r.device_bytes as f64 / output.max(1) as f64,
            a.iters,
            r.launches,
            2.0 * copy_gb,
            if copy_ms > 0.0 { copy_ms / dec_ms.max(f32::MIN_POSITIVE) } else { 0.0 },
            if exact { "yes: every tensor matches the original's checksum".to_owned() } else { format!("NO: {}", r.mismatches.join(", ")) },
        )
    };
    emit(&text)?;
    if !exact {
        return Err(CliError::at_kind(
            file,
            Failure::Other,
            format!(
                "GPU decode of {} tensors differs from the original",
                r.mismatches.len()
            ),
        ));
    }
    if r.kernel_tensors == 0 && mcodec_gpu::gpu_required() {
        return Err(CliError::at_kind(
            file,
            Failure::Other,
            format!(
                "no tensor is decoded by the kernel, so nothing was measured ({} is set)",
                mcodec_gpu::GPU_REQUIRED_ENV
            ),
        ));
    }
    Ok(())
}
