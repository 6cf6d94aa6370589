//! Encode and decode speed of every code path this CPU has, interleaved in one process so
//! that a busy machine slows all paths alike: `cargo run --release -p mcodec --example
//! simd_paths -- FILE [ROUNDS] [PATH,...]`. Runs on the calling thread's rayon pool (set
//! `RAYON_NUM_THREADS=1` for one thread); prints median MB/s (MB = 1e6 bytes of tensor data)
//! per path, by wall time and by the process's CPU time (which other processes sharing the
//! cores do not inflate), and the CPU time per tensor. `SIMD_PATHS_ENCODE_ONLY=1` skips
//! the decodes (for profiling the encoder); `SIMD_PATHS_DECODE_ONLY=1` skips the encodes
//! (every path decodes the first pack: the packs are checked equal otherwise).

use std::time::Instant;

use mcodec::container::{pack, Archive, PackOptions};
use mcodec::cpu::{set_simd_level, SimdLevel};

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::process_cpu_seconds;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: simd_paths FILE [ROUNDS] [PATH,...]")?;
    let rounds: usize = args.get(2).map_or(Ok(7), |r| r.parse())?;
    let input = std::fs::read(path)?;
    let opts = PackOptions::default();
    let levels: Vec<SimdLevel> = match args.get(3) {
        None => SimdLevel::supported(),
        Some(list) => SimdLevel::supported()
            .into_iter()
            .filter(|l| list.split(',').any(|name| name == l.name()))
            .collect(),
    };
    let mut reference = Vec::new();
    pack(&input, &opts, &mut reference, &|_| {})?;
    let archive = Archive::open(&reference)?;
    let tensors = archive.index().tensors.len();
    let tensor_bytes: u64 = archive.index().tensors.iter().map(|t| t.original_len).sum();
    drop(archive);
    let flag = |name: &str| std::env::var_os(name).is_some_and(|v| v == "1");
    let (encode_only, decode_only) = (
        flag("SIMD_PATHS_ENCODE_ONLY"),
        flag("SIMD_PATHS_DECODE_ONLY"),
    );
    let mut out = vec![0u8; input.len()];
    let mut packed = Vec::with_capacity(reference.len());
    let (mut enc, mut dec) = (
        vec![Vec::new(); levels.len()],
        vec![Vec::new(); levels.len()],
    );
    let (mut enc_cpu, mut dec_cpu) = (
        vec![Vec::new(); levels.len()],
        vec![Vec::new(); levels.len()],
    );
    for _ in 0..rounds {
        for (i, &level) in levels.iter().enumerate() {
            set_simd_level(level)?;
            if decode_only {
                let (t, cpu) = (Instant::now(), process_cpu_seconds());
                Archive::open(&reference)?.unpack_into(&mut out)?;
                dec[i].push(t.elapsed().as_secs_f64());
                dec_cpu[i].push(process_cpu_seconds() - cpu);
                if out != input {
                    return Err(format!("{level}: decoded bytes differ").into());
                }
                continue;
            }
            packed.clear();
            let (t, cpu) = (Instant::now(), process_cpu_seconds());
            pack(&input, &opts, &mut packed, &|_| {})?;
            enc[i].push(t.elapsed().as_secs_f64());
            enc_cpu[i].push(process_cpu_seconds() - cpu);
            if packed != reference {
                return Err(format!("{level}: packed bytes differ from the first pack").into());
            }
            if encode_only {
                continue;
            }
            let (t, cpu) = (Instant::now(), process_cpu_seconds());
            Archive::open(&packed)?.unpack_into(&mut out)?;
            dec[i].push(t.elapsed().as_secs_f64());
            dec_cpu[i].push(process_cpu_seconds() - cpu);
            if out != input {
                return Err(format!("{level}: decoded bytes differ").into());
            }
        }
    }
    let mb = tensor_bytes as f64 / 1e6;
    println!(
        "{path}: {tensors} tensors, {tensor_bytes} tensor bytes, packed {} bytes ({:.3} % of \
         the file), {rounds} rounds, medians (MB/s by wall time | by process CPU time | CPU µs \
         per tensor)",
        reference.len(),
        100.0 * reference.len() as f64 / input.len() as f64
    );
    let figures = |wall: &[f64], cpu: &[f64]| {
        if wall.is_empty() {
            return "-".to_string();
        }
        let cpu = median(cpu.to_vec());
        format!(
            "{:>6.0} | {:>6.0} | {:>7.1}",
            mb / median(wall.to_vec()),
            mb / cpu,
            cpu * 1e6 / tensors.max(1) as f64
        )
    };
    for (i, level) in levels.iter().enumerate() {
        println!(
            "{:>7}  encode {}  decode {}",
            level.name(),
            figures(&enc[i], &enc_cpu[i]),
            figures(&dec[i], &dec_cpu[i])
        );
    }
    Ok(())
}
