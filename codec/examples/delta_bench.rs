//! Delta coding of fine-tunes against their base, BitX beside ULP in one run:
//! `cargo run --release -p mcodec --example delta_bench -- BASE FT [FT ...] [--per-tensor]`.
//!
//! BASE and each FT are safetensors files or model directories holding `model.safetensors`.
//! Tensors are paired by name (same dtype and shape; others are skipped and counted). For
//! each fine-tune it prints the delta bytes of each method, and of `encode` (the smaller
//! per tensor), as a percentage of the fine-tune's file size, and single-threaded encode
//! and decode throughput in MB/s of tensor bytes (1 MB = 1e6 bytes), median of 5 runs, by
//! wall clock and by the thread's CPU time (Linux; the fair figure on a shared, loaded
//! machine). Every decode is checked against the fine-tune's bytes, outside the timing.

use std::path::Path;
use std::time::Instant;

use mcodec::delta::{self, DeltaMethod};
use mcodec::safetensors::{self, TensorInfo};

const REPEATS: usize = 5;

/// Seconds this thread has run on a CPU (Linux: /proc/thread-self/schedstat, in ns), so
/// that throughput can also be read on a loaded machine; `None` elsewhere.
fn thread_cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

/// Wall-clock and CPU seconds of `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, Option<f64>) {
    let cpu = thread_cpu_seconds();
    let start = Instant::now();
    let out = f();
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu.and_then(|c0| Some(thread_cpu_seconds()? - c0));
    (out, wall, cpu)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[path = "support/model_file.rs"]
mod model_file;
use model_file::model_file;

fn load(path: &Path) -> Result<(Vec<u8>, Vec<TensorInfo>), Box<dyn std::error::Error>> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let header = safetensors::parse(&bytes, bytes.len() as u64)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((bytes, header.tensors))
}

fn slice<'a>(bytes: &'a [u8], t: &TensorInfo) -> &'a [u8] {
    &bytes[t.range.start as usize..t.range.end as usize]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let per_tensor = args.iter().any(|a| a == "--per-tensor");
    let paths: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    if paths.len() < 2 {
        return Err("usage: delta_bench BASE FT [FT ...] [--per-tensor]".into());
    }
    let base_path = model_file(paths[0]);
    let (base_bytes, base_tensors) = load(&base_path)?;
    for ft_arg in &paths[1..] {
        let ft_path = model_file(ft_arg);
        let (ft_bytes, ft_tensors) = load(&ft_path)?;
        let mut pairs = Vec::new();
        let mut skipped = 0;
        for t in &ft_tensors {
            match base_tensors
                .iter()
                .find(|b| b.name == t.name && b.dtype == t.dtype && b.shape == t.shape)
            {
                Some(b) => pairs.push((b, t)),
                None => skipped += 1,
            }
        }
        let tensor_bytes: usize = pairs.iter().map(|(_, t)| slice(&ft_bytes, t).len()).sum();
        let file = ft_bytes.len() as f64;
        let mb = tensor_bytes as f64 / 1e6;
        println!(
            "{} vs {}: {} tensors paired ({skipped} skipped), {tensor_bytes} tensor bytes, file {} bytes",
            ft_path.display(),
            base_path.display(),
            pairs.len(),
            ft_bytes.len()
        );
        let mut sizes = vec![vec![0usize; pairs.len()]; DeltaMethod::ALL.len()];
        for (m, method) in DeltaMethod::ALL.into_iter().enumerate() {
            let (mut enc_wall, mut enc_cpu, mut dec_wall, mut dec_cpu) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..REPEATS {
                let (deltas, wall, cpu) = timed(|| {
                    pairs
                        .iter()
                        .map(|(b, t)| {
                            // Non-float tensors (position ids) use BitX under either method.
                            let m = if method.supports(&t.dtype) {
                                method
                            } else {
                                DeltaMethod::BitX
                            };
                            delta::encode_with(
                                m,
                                &t.dtype,
                                slice(&base_bytes, b),
                                slice(&ft_bytes, t),
                            )
                        })
                        .collect::<Result<Vec<_>, _>>()
                });
                let deltas = deltas?;
                enc_wall.push(wall);
                enc_cpu.extend(cpu);
                let mut outs: Vec<Vec<u8>> = pairs
                    .iter()
                    .map(|(b, _)| vec![0u8; slice(&base_bytes, b).len()])
                    .collect();
                let (decoded, wall, cpu) = timed(|| {
                    for (((b, t), d), out) in pairs.iter().zip(&deltas).zip(&mut outs) {
                        delta::decode(&t.dtype, slice(&base_bytes, b), d, out)?;
                    }
                    Ok::<(), delta::DeltaError>(())
                });
                decoded?;
                dec_wall.push(wall);
                dec_cpu.extend(cpu);
                for ((_, t), out) in pairs.iter().zip(&outs) {
                    if out[..] != *slice(&ft_bytes, t) {
                        return Err(
                            format!("{}: {} round trip differs", t.name, method.name()).into()
                        );
                    }
                }
                for (s, d) in sizes[m].iter_mut().zip(&deltas) {
                    *s = d.len();
                }
            }
            let total: usize = sizes[m].iter().sum();
            let cpu_rate = |v: Vec<f64>| {
                if v.is_empty() {
                    "n/a".to_string()
                } else {
                    format!("{:.0}", mb / median(v))
                }
            };
            println!(
                "  {:5} {:>10} bytes = {:6.2}% of file   encode {:5.0} MB/s (CPU time: {:>5})   decode {:5.0} MB/s (CPU time: {:>5})",
                method.name(),
                total,
                100.0 * total as f64 / file,
                mb / median(enc_wall),
                cpu_rate(enc_cpu),
                mb / median(dec_wall),
                cpu_rate(dec_cpu),
            );
        }
        let best: usize = (0..pairs.len())
            .map(|i| sizes.iter().map(|s| s[i]).min().unwrap_or(0))
            .sum();
        println!(
            "  best  {best:>10} bytes = {:6.2}% of file (smaller method per tensor, as delta::encode keeps)",
            100.0 * best as f64 / file
        );
        if per_tensor {
            println!(
                "  {:<55} {:>10} {:>10} {:>10}",
                "tensor", "bytes", "bitx %", "ulp %"
            );
            for (i, (_, t)) in pairs.iter().enumerate() {
                let n = slice(&ft_bytes, t).len() as f64;
                println!(
                    "  {:<55} {:>10} {:>9.2}% {:>9.2}%",
                    t.name,
                    n,
                    100.0 * sizes[0][i] as f64 / n,
                    100.0 * sizes[1][i] as f64 / n
                );
            }
        }
    }
    Ok(())
}
