//! Block-histogram timing loop (the encoder's first pass over a tensor):
//! `cargo run --release -p mcodec --example count_loop -- FILE.safetensors [ROUNDS]`.
//! Counts the exponent field (exponent + top mantissa bit) of every BF16 tensor in FILE
//! per block of 4096 elements, as the encoder does, once with [`Layout::count`] into a
//! dense histogram per block and once with `Layout::count_sparse` (per-thread scratch,
//! sparse result), and prints the fastest and median ns per element of the calling
//! thread's CPU time. Checks that both give the same counts.

use mcodec::{Dtype, Layout};

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::CpuClock;

const BLOCK_BYTES: usize = 2 << 12;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: count_loop FILE [ROUNDS]")?;
    let rounds: usize = args.get(2).map_or(Ok(9), |r| r.parse())?;
    let file = std::fs::read(path)?;
    let header = mcodec::safetensors::parse(&file, file.len() as u64)?;
    let tensors: Vec<&[u8]> = header
        .tensors
        .iter()
        .filter(|t| t.dtype == Dtype::BF16)
        .map(|t| &file[t.range.start as usize..t.range.end as usize])
        .collect();
    let n: usize = tensors.iter().map(|t| t.len() / 2).sum();
    if n == 0 {
        return Err("no BF16 tensor".into());
    }
    let fields = [true, false];
    let mut dense_t = Vec::new();
    let mut sparse_t = Vec::new();
    for _ in 0..rounds {
        let clock = CpuClock::now();
        let dense: Vec<Vec<Vec<u32>>> = tensors
            .iter()
            .flat_map(|t| t.chunks(BLOCK_BYTES))
            .map(|block| {
                let mut h = vec![vec![0u32; 512], Vec::new()];
                Layout::Bf16.count(block, &mut h);
                h
            })
            .collect();
        dense_t.push(clock.elapsed());
        let clock = CpuClock::now();
        let sparse: Vec<Vec<Vec<(u16, u32)>>> = tensors
            .iter()
            .flat_map(|t| t.chunks(BLOCK_BYTES))
            .map(|block| Layout::Bf16.count_sparse(block, &fields))
            .collect();
        sparse_t.push(clock.elapsed());
        for (d, s) in dense.iter().zip(&sparse) {
            let back: Vec<(u16, u32)> = d[0]
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(s, &c)| (s as u16, c))
                .collect();
            assert_eq!(back, s[0], "dense and sparse counts differ");
            assert!(s[1].is_empty());
        }
    }
    for (name, t) in [("dense", &mut dense_t), ("sparse", &mut sparse_t)] {
        t.sort_by(f64::total_cmp);
        println!(
            "{name:>6}: {:.3} ns/element fastest, {:.3} median of {rounds} ({n} elements)",
            1e9 * t[0] / n as f64,
            1e9 * t[t.len() / 2] / n as f64
        );
    }
    Ok(())
}
