//! Whole-file encode timing per code path, in one thread:
//! `cargo run --release -p mcodec --example encode_loop -- FILE.safetensors [ROUNDS] [LEVEL]`
//! (LEVEL: `fast`, `default` (the default) or `max`).
//! Packs FILE in memory (what `mcodec bench` times as encode: split, histograms, table
//! search, rANS, checksums, container) inside a one-thread rayon pool, on every path
//! the CPU has (or the one `MCODEC_SIMD` names), and prints the fastest and the median
//! round in MB/s of the file's bytes, from the worker thread's CPU time
//! (`/proc/thread-self/schedstat`), which other processes sharing the cores barely touch.
//! The paths are interleaved round by round, so drifting load hits them alike.

use mcodec::container::{pack, PackOptions};
use mcodec::simd::{set_simd_level, SimdLevel};
use mcodec::tensor::EncodeOptions;

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::thread_cpu_seconds;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: encode_loop FILE [ROUNDS]")?;
    let rounds: usize = args.get(2).map_or(Ok(5), |r| r.parse())?;
    let encode = match args.get(3).map(String::as_str) {
        None | Some("default") => EncodeOptions::default(),
        Some("fast") => EncodeOptions::fast(),
        Some("max") => EncodeOptions::max(),
        Some(other) => return Err(format!("unknown level {other:?}").into()),
    };
    let opts = PackOptions::new().encode(encode);
    let input = std::fs::read(path)?;
    let mut levels = SimdLevel::supported();
    if let Ok(Some(only)) =
        std::env::var("MCODEC_SIMD").map(|v| levels.iter().copied().find(|l| l.name() == v))
    {
        levels = vec![only];
    }
    levels.sort_by_key(|&l| std::cmp::Reverse(l as u8));
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let mut times = vec![Vec::new(); levels.len()];
    let mut sizes = vec![0usize; levels.len()];
    let mut out = Vec::with_capacity(input.len());
    for _ in 0..rounds {
        for (k, &level) in levels.iter().enumerate() {
            set_simd_level(level)?;
            let secs = pool.install(|| -> Result<f64, mcodec::container::ContainerError> {
                out.clear();
                let t = thread_cpu_seconds();
                pack(&input, &opts, &mut out, &|_| {})?;
                Ok(thread_cpu_seconds() - t)
            })?;
            times[k].push(secs);
            sizes[k] = out.len();
        }
    }
    for ((level, t), size) in levels.iter().zip(&mut times).zip(&sizes) {
        t.sort_by(f64::total_cmp);
        let mb = input.len() as f64 / 1e6;
        println!(
            "{:>7}: encode {:.1} MB/s fastest, {:.1} MB/s median of {rounds} (thread CPU time), {:.4} % of {path}",
            level.name(),
            mb / t[0],
            mb / t[t.len() / 2],
            100.0 * *size as f64 / input.len() as f64
        );
    }
    Ok(())
}
