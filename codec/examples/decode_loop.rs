//! Decode-only timing loop, for profilers (`perf stat`, `perf record`, callgrind):
//! `cargo run --release -p mcodec --example decode_loop -- FILE [ROUNDS] [warm|cold]`.
//! Packs FILE once (untimed), then decodes it ROUNDS times on the current rayon pool
//! (`RAYON_NUM_THREADS=1` for one thread) into one reused buffer (`warm`, the default) or a
//! fresh allocation per round (`cold`), and prints the median MB/s (MB = 1e6 bytes of
//! tensor data) by wall time and by the process's CPU time (which other processes on
//! shared cores do not inflate; with one thread, that thread's). The code path follows
//! `MCODEC_SIMD`.

use std::time::Instant;

use mcodec::container::{pack, Archive, PackOptions};

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::process_cpu_seconds;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: decode_loop FILE [ROUNDS] [warm|cold]")?;
    let rounds: usize = args.get(2).map_or(Ok(9), |r| r.parse())?;
    let cold = match args.get(3).map(String::as_str) {
        None | Some("warm") => false,
        Some("cold") => true,
        Some(other) => return Err(format!("mode {other:?}: warm or cold").into()),
    };
    let input = std::fs::read(path)?;
    let mut packed = Vec::new();
    pack(&input, &PackOptions::default(), &mut packed, &|_| {})?;
    let archive = Archive::open(&packed)?;
    let tensor_bytes: u64 = archive.index().tensors.iter().map(|t| t.original_len).sum();
    let mut out = vec![0u8; input.len()];
    let mut times = Vec::with_capacity(rounds);
    let mut cpu_times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let cpu = process_cpu_seconds();
        if cold {
            let mut fresh = vec![0u8; input.len()];
            Archive::open(&packed)?.unpack_into(&mut fresh)?;
            times.push(t.elapsed().as_secs_f64());
            cpu_times.push(process_cpu_seconds() - cpu);
            out = fresh;
        } else {
            Archive::open(&packed)?.unpack_into(&mut out)?;
            times.push(t.elapsed().as_secs_f64());
            cpu_times.push(process_cpu_seconds() - cpu);
        }
    }
    if out != input {
        return Err("decoded bytes differ".into());
    }
    times.sort_by(f64::total_cmp);
    cpu_times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let cpu_median = cpu_times[cpu_times.len() / 2];
    println!(
        "{path}: {} {:.1} MB/s decode (median of {rounds}: {median:.4} s; by CPU time {:.1} MB/s), ratio {:.4}, simd {}",
        if cold { "cold" } else { "warm" },
        tensor_bytes as f64 / 1e6 / median,
        tensor_bytes as f64 / 1e6 / cpu_median,
        packed.len() as f64 / input.len() as f64,
        mcodec::cpu::simd_level().name()
    );
    Ok(())
}
