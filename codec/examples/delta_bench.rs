//! Delta coding of fine-tunes against their base, BitX beside ULP in one run:
//! `cargo run --release -p mcodec --example delta_bench -- BASE FT [FT ...] [--per-tensor]`.
//!
//! BASE and each FT are safetensors files or model directories holding `model.safetensors`.
//! Tensors are paired by name (same dtype and shape; others are skipped and counted). For
//! each fine-tune it prints the delta bytes of each method, and of `encode` (the smaller
//! per tensor), as a percentage of the fine-tune's file size, and single-threaded encode
//! and decode throughput in MB/s of tensor bytes (1 MB = 1e6 bytes), median of 5 runs.
//! Every decode is checked against the fine-tune's bytes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use mcodec::delta::{self, DeltaMethod};
use mcodec::safetensors::{self, TensorInfo};

const REPEATS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn model_file(arg: &str) -> PathBuf {
    let p = PathBuf::from(arg);
    if p.is_dir() {
        p.join("model.safetensors")
    } else {
        p
    }
}

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
        let mut out = Vec::new();
        for (m, method) in DeltaMethod::ALL.into_iter().enumerate() {
            let mut enc_times = Vec::new();
            let mut dec_times = Vec::new();
            for _ in 0..REPEATS {
                let mut deltas = Vec::with_capacity(pairs.len());
                let start = Instant::now();
                for (b, t) in &pairs {
                    let d = if method.supports(&t.dtype) {
                        delta::encode_with(
                            method,
                            &t.dtype,
                            slice(&base_bytes, b),
                            slice(&ft_bytes, t),
                        )?
                    } else {
                        delta::encode_with(
                            DeltaMethod::BitX,
                            &t.dtype,
                            slice(&base_bytes, b),
                            slice(&ft_bytes, t),
                        )?
                    };
                    deltas.push(d);
                }
                enc_times.push(start.elapsed().as_secs_f64());
                let start = Instant::now();
                for ((b, t), d) in pairs.iter().zip(&deltas) {
                    let base = slice(&base_bytes, b);
                    out.resize(base.len(), 0);
                    delta::decode(&t.dtype, base, d, &mut out)?;
                    if out[..] != *slice(&ft_bytes, t) {
                        return Err(
                            format!("{}: {} round trip differs", t.name, method.name()).into()
                        );
                    }
                }
                dec_times.push(start.elapsed().as_secs_f64());
                for (s, d) in sizes[m].iter_mut().zip(&deltas) {
                    *s = d.len();
                }
            }
            let total: usize = sizes[m].iter().sum();
            println!(
                "  {:5} {:>10} bytes = {:6.2}% of file   encode {:6.0} MB/s   decode {:6.0} MB/s (decode includes the byte comparison)",
                method.name(),
                total,
                100.0 * total as f64 / file,
                mb / median(enc_times),
                mb / median(dec_times)
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
