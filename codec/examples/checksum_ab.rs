//! What the tensor checksum costs a one-thread decode, per code path, rounds interleaved in
//! one process: `cargo run --release -p mcodec --example checksum_ab -- FILE [ROUNDS]`
//! (one rayon thread, which runs the whole loop, so its CPU time is the decode's). Packs FILE once, then decodes every tensor into one reused buffer three
//! ways: `none` (no checksum), `after` (decode the tensor, then XXH3 of all of it with
//! `xxhash-rust`, as the decoder did before the checksum was hashed piece by piece: the
//! output is read back from memory) and `decoder` (`Archive::decode_tensor`, the codec's
//! own path). Prints MB/s (1e6 bytes of tensor data) by the thread's CPU time, best and
//! median of the rounds.

use mcodec::container::{pack, Archive, PackOptions};
use mcodec::simd::{set_simd_level, SimdLevel};

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::thread_cpu_seconds;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    pool.install(run)
        .map_err(|e| e as Box<dyn std::error::Error>)
}

fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: checksum_ab FILE [ROUNDS]")?;
    let rounds: usize = args.get(2).map_or(Ok(9), |r| r.parse())?;
    let input = std::fs::read(path)?;
    let mut packed = Vec::new();
    pack(&input, &PackOptions::default(), &mut packed, &|_| {})?;
    let archive = Archive::open(&packed)?;
    let tensors = &archive.index().tensors;
    let bytes: u64 = tensors.iter().map(|t| t.original_len).sum();
    let decoders = (0..tensors.len())
        .map(|i| archive.tensor_decoder(i))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = vec![
        0u8;
        tensors
            .iter()
            .map(|t| t.original_len as usize)
            .max()
            .unwrap_or(0)
    ];
    const WAYS: [&str; 3] = ["none", "after", "decoder"];
    for level in SimdLevel::supported().into_iter().rev() {
        set_simd_level(level)?;
        let mut seconds = vec![Vec::new(); WAYS.len()];
        for _ in 0..rounds {
            for (way, times) in seconds.iter_mut().enumerate() {
                let start = thread_cpu_seconds();
                for (i, (t, decoder)) in tensors.iter().zip(&decoders).enumerate() {
                    let dst = &mut out[..t.original_len as usize];
                    match way {
                        0 => decoder.decode(dst)?,
                        1 => {
                            decoder.decode(dst)?;
                            if xxhash_rust::xxh3::xxh3_64(dst) != t.checksum {
                                return Err(format!("tensor {i}: checksum differs").into());
                            }
                        }
                        _ => archive.decode_tensor(i, dst)?,
                    }
                }
                times.push(thread_cpu_seconds() - start);
            }
        }
        let line: Vec<String> = WAYS
            .iter()
            .zip(&mut seconds)
            .map(|(way, times)| {
                times.sort_by(f64::total_cmp);
                let mb = bytes as f64 / 1e6;
                format!(
                    "{way} {:.0} / {:.0}",
                    mb / times[0],
                    mb / times[times.len() / 2]
                )
            })
            .collect();
        println!(
            "{:>7}: MB/s best / median: {}",
            level.name(),
            line.join(", ")
        );
    }
    Ok(())
}
