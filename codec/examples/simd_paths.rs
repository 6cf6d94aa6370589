//! Encode and decode speed of every code path this CPU has, interleaved in one process so
//! that a busy machine slows all paths alike: `cargo run --release -p mcodec --example
//! simd_paths -- FILE [ROUNDS] [PATH,...]`. Runs on the calling thread's rayon pool (set
//! `RAYON_NUM_THREADS=1` for one thread); prints median MB/s (MB = 1e6 bytes of tensor data)
//! per path.

use std::time::Instant;

use mcodec::container::{pack, Archive, PackOptions};
use mcodec::cpu::{set_simd_level, SimdLevel};

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
    let tensor_bytes: u64 = Archive::open(&reference)?
        .index()
        .tensors
        .iter()
        .map(|t| t.original_len)
        .sum();
    let mut out = vec![0u8; input.len()];
    let mut packed = Vec::with_capacity(reference.len());
    let (mut enc, mut dec) = (
        vec![Vec::new(); levels.len()],
        vec![Vec::new(); levels.len()],
    );
    for _ in 0..rounds {
        for (i, &level) in levels.iter().enumerate() {
            set_simd_level(level)?;
            packed.clear();
            let t = Instant::now();
            pack(&input, &opts, &mut packed, &|_| {})?;
            enc[i].push(t.elapsed().as_secs_f64());
            if packed != reference {
                return Err(format!("{level}: packed bytes differ from the first pack").into());
            }
            let t = Instant::now();
            Archive::open(&packed)?.unpack_into(&mut out)?;
            dec[i].push(t.elapsed().as_secs_f64());
            if out != input {
                return Err(format!("{level}: decoded bytes differ").into());
            }
        }
    }
    let mb = tensor_bytes as f64 / 1e6;
    println!("{path}: {tensor_bytes} tensor bytes, {rounds} rounds, median MB/s");
    for (i, level) in levels.iter().enumerate() {
        println!(
            "{:>7}  encode {:>7.0}  decode {:>7.0}",
            level.name(),
            mb / median(enc[i].clone()),
            mb / median(dec[i].clone())
        );
    }
    Ok(())
}
