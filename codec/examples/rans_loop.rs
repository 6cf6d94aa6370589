//! rANS-only timing loop for the exponent field, per code path:
//! `cargo run --release -p mcodec --example rans_loop -- FILE.safetensors [ROUNDS]`.
//! Takes the BF16 exponent field (exponent + top mantissa bit, 9-bit symbols) of every
//! BF16 tensor in FILE, codes it in chunks of 2^18 symbols with blocks of 2^12 and one
//! table per chunk, then times encode and pair decode (what the tensor decoder calls)
//! on every path the CPU has and prints the median ns per symbol. Nothing else of the
//! codec (float split, merge, checksums) is timed.

use mcodec::entropy::model::{DecTable, EncTable, FreqTable};
use mcodec::entropy::rans::{decode_chunk, decode_chunk_pair, encode_chunk};
use mcodec::simd::{set_simd_level, SimdLevel};
use mcodec::Dtype;

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::CpuClock;

const CHUNK: usize = 1 << 18;
const BLOCK: usize = 1 << 12;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: rans_loop FILE [ROUNDS]")?;
    let rounds: usize = args.get(2).map_or(Ok(7), |r| r.parse())?;
    let file = std::fs::read(path)?;
    let header = mcodec::safetensors::parse(&file, file.len() as u64)?;
    let mut symbols = Vec::new();
    for t in header.tensors.iter().filter(|t| t.dtype == Dtype::BF16) {
        let bytes = &file[t.range.start as usize..t.range.end as usize];
        symbols.extend(
            bytes
                .chunks_exact(2)
                .map(|b| (u16::from_le_bytes([b[0], b[1]]) >> 6) & 0x1FF),
        );
    }
    // Whole chunk pairs only, so every decode call is a pair.
    symbols.truncate(symbols.len() / (2 * CHUNK) * (2 * CHUNK));
    if symbols.is_empty() {
        return Err("fewer than 2^19 BF16 elements".into());
    }
    let chunks: Vec<&[u16]> = symbols.chunks(CHUNK).collect();
    let freq: Vec<FreqTable> = chunks
        .iter()
        .map(|c| {
            let mut h = vec![0u32; 512];
            for &s in *c {
                h[usize::from(s)] += 1;
            }
            FreqTable::from_counts(&h).expect("a non-empty chunk")
        })
        .collect();
    let enc: Vec<EncTable> = freq.iter().map(|t| EncTable::new(t, 9)).collect();
    let dec: Vec<DecTable> = freq.iter().map(DecTable::new).collect();
    let n = symbols.len() as f64;
    let mut levels = SimdLevel::supported();
    // `MCODEC_SIMD` set to one path times that path alone.
    if let Ok(Some(only)) =
        std::env::var("MCODEC_SIMD").map(|v| levels.iter().copied().find(|l| l.name() == v))
    {
        levels = vec![only];
    }
    levels.sort_by_key(|&l| std::cmp::Reverse(l as u8));
    for level in levels {
        set_simd_level(level)?;
        let mut payloads: Vec<Vec<u8>> = vec![Vec::new(); chunks.len()];
        let mut enc_times = Vec::new();
        for _ in 0..rounds {
            let t = CpuClock::now();
            for ((c, p), e) in chunks.iter().zip(&mut payloads).zip(&enc) {
                p.clear();
                encode_chunk(c, &[e; CHUNK / BLOCK], BLOCK, p)?;
            }
            enc_times.push(t.elapsed());
        }
        let mut out = vec![0u16; symbols.len()];
        let mut dec_times = Vec::new();
        for _ in 0..rounds {
            let t = CpuClock::now();
            for (k, pair) in out.chunks_mut(2 * CHUNK).enumerate() {
                let (a, b) = pair.split_at_mut(CHUNK);
                let (ta, tb) = (
                    &[&dec[2 * k]; CHUNK / BLOCK],
                    &[&dec[2 * k + 1]; CHUNK / BLOCK],
                );
                decode_chunk_pair(
                    [&payloads[2 * k], &payloads[2 * k + 1]],
                    [ta, tb],
                    BLOCK,
                    [a, b],
                )?;
            }
            dec_times.push(t.elapsed());
        }
        if out != symbols {
            return Err(format!("{level}: decoded symbols differ").into());
        }
        let mut single_times = Vec::new();
        for _ in 0..rounds {
            let t = CpuClock::now();
            for (k, chunk) in out.chunks_mut(CHUNK).enumerate() {
                decode_chunk(&payloads[k], &[&dec[k]; CHUNK / BLOCK], BLOCK, chunk)?;
            }
            single_times.push(t.elapsed());
        }
        if out != symbols {
            return Err(format!("{level}: decoded symbols differ (single)").into());
        }
        // The fastest round: on a shared machine the others carry other work's noise.
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[0]
        };
        let bytes: usize = payloads.iter().map(Vec::len).sum();
        println!(
            "{level:>7}: encode {:.3} ns/symbol, decode {:.3} ns/symbol (one chunk at a time {:.3}) ({} symbols, {:.3} bits/symbol)",
            median(&mut enc_times) * 1e9 / n,
            median(&mut dec_times) * 1e9 / n,
            median(&mut single_times) * 1e9 / n,
            symbols.len(),
            bytes as f64 * 8.0 / n
        );
    }
    Ok(())
}
