//! Speed of the tensor checksum (XXH3-64) per code path against `xxhash-rust` (compiled
//! for the target's baseline, SSE2 on x86-64), by thread CPU time, rounds interleaved:
//! `cargo run --release -p mcodec --example xxh3_speed -- [ROUNDS]`. Hashes 1 MiB (in L2)
//! and 32 MiB (from memory) of fixed pseudo-random bytes and prints the best GB/s per
//! variant (GB = 1e9 bytes); every variant's value is checked against `xxhash-rust`.

use mcodec::checksum::Xxh3;
use mcodec::simd::SimdLevel;

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::thread_cpu_seconds;

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(7, |r| r.parse().expect("ROUNDS is a number"));
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..32 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    for size in [1usize << 20, 32 << 20] {
        let input = &data[..size];
        let expected = xxhash_rust::xxh3::xxh3_64(input);
        let repeats = (256 << 20) / size;
        let mut names = vec!["xxhash-rust".to_string()];
        names.extend(SimdLevel::supported().iter().map(|l| l.name().to_string()));
        let mut best = vec![f64::INFINITY; names.len()];
        for _ in 0..rounds {
            for (k, b) in best.iter_mut().enumerate() {
                let start = thread_cpu_seconds();
                for _ in 0..repeats {
                    let value = if k == 0 {
                        xxhash_rust::xxh3::xxh3_64(std::hint::black_box(input))
                    } else {
                        let mut h = Xxh3::for_level(SimdLevel::supported()[k - 1]);
                        h.update(std::hint::black_box(input));
                        h.digest()
                    };
                    assert_eq!(value, expected, "{}", names[k]);
                }
                *b = b.min((thread_cpu_seconds() - start) / repeats as f64);
            }
        }
        for (name, seconds) in names.iter().zip(&best) {
            println!(
                "{:>5} KiB {name:>12}: {:6.1} GB/s",
                size >> 10,
                size as f64 / seconds / 1e9
            );
        }
    }
}
