//! Study: FP8 rANS decode one chunk at a time against chunk pairs interleaved in the
//! vector loop, per code path (`MCODEC_SIMD=P` for one path):
//! `cargo run --release -p mcodec --example fp8_interleave -- FILE.safetensors [ROUNDS]`.
//! Symbols are decoded as `u16` (the public entry points), not straight into bytes as
//! the tensor decoder does; the loop's work is the same but for the final stores.
//! Takes every F8 tensor's bytes of FILE as 8-bit symbols, codes them in chunks of 2^18
//! symbols with blocks of 2^8 and one table per chunk (as the tensor encoder's chunk
//! size and block size, one table instead of its per-block choice), and prints the best
//! thread-CPU ns per symbol of each decode on every path the CPU has. Only the rANS loop
//! is timed (no checksums, no container).

use mcodec::entropy::model::{DecTable, EncTable, FreqTable};
use mcodec::entropy::rans::{decode_chunk, decode_chunk_pair, encode_chunk};
use mcodec::simd::{set_simd_level, SimdLevel};
use mcodec::Dtype;

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::CpuClock;

const CHUNK: usize = 1 << 18;
const BLOCK: usize = 1 << 8;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: fp8_interleave FILE [ROUNDS]")?;
    let rounds: usize = args.get(2).map_or(Ok(7), |r| r.parse())?;
    let file = std::fs::read(path)?;
    let header = mcodec::safetensors::parse(&file, file.len() as u64)?;
    let mut symbols: Vec<u16> = Vec::new();
    for t in header
        .tensors
        .iter()
        .filter(|t| matches!(t.dtype, Dtype::F8E4M3 | Dtype::F8E5M2))
    {
        symbols.extend(
            file[t.range.start as usize..t.range.end as usize]
                .iter()
                .map(|&b| u16::from(b)),
        );
    }
    // Whole chunk pairs only, so every pair call decodes two whole chunks.
    symbols.truncate(symbols.len() / (2 * CHUNK) * (2 * CHUNK));
    if symbols.is_empty() {
        return Err("fewer than 2^19 F8 elements".into());
    }
    let chunks: Vec<&[u16]> = symbols.chunks(CHUNK).collect();
    let freq: Vec<FreqTable> = chunks
        .iter()
        .map(|c| {
            let mut h = vec![0u32; 256];
            for &s in *c {
                h[usize::from(s)] += 1;
            }
            FreqTable::from_counts(&h).expect("a non-empty chunk")
        })
        .collect();
    let enc: Vec<EncTable> = freq.iter().map(|t| EncTable::new(t, 8)).collect();
    let dec: Vec<DecTable> = freq.iter().map(DecTable::new).collect();
    let n = symbols.len() as f64;
    let mut levels = SimdLevel::supported();
    if let Ok(Some(only)) =
        std::env::var("MCODEC_SIMD").map(|v| levels.iter().copied().find(|l| l.name() == v))
    {
        levels = vec![only];
    }
    levels.sort_by_key(|&l| std::cmp::Reverse(l as u8));
    let tables: Vec<Vec<&DecTable>> = dec.iter().map(|d| vec![d; CHUNK / BLOCK]).collect();
    for level in levels {
        set_simd_level(level)?;
        let mut payloads: Vec<Vec<u8>> = vec![Vec::new(); chunks.len()];
        for ((c, p), e) in chunks.iter().zip(&mut payloads).zip(&enc) {
            encode_chunk(c, &vec![e; CHUNK / BLOCK], BLOCK, p)?;
        }
        let mut out = vec![0u16; symbols.len()];
        let (mut one, mut two) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            out.fill(0);
            let t = CpuClock::now();
            for (k, chunk) in out.chunks_mut(CHUNK).enumerate() {
                decode_chunk(&payloads[k], &tables[k], BLOCK, chunk)?;
            }
            one.push(t.elapsed());
            assert!(out == symbols, "{level}: single differs");
            out.fill(0);
            let t = CpuClock::now();
            for (k, pair) in out.chunks_mut(2 * CHUNK).enumerate() {
                let (a, b) = pair.split_at_mut(CHUNK);
                decode_chunk_pair(
                    [&payloads[2 * k], &payloads[2 * k + 1]],
                    [&tables[2 * k], &tables[2 * k + 1]],
                    BLOCK,
                    [a, b],
                )?;
            }
            two.push(t.elapsed());
            assert!(out == symbols, "{level}: pair differs");
        }
        let best = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[0] * 1e9 / n
        };
        println!(
            "{level:>7}: ns/symbol one chunk {:.3}, pair {:.3} ({} symbols)",
            best(&mut one),
            best(&mut two),
            symbols.len()
        );
    }
    Ok(())
}
