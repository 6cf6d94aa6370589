//! rANS-only timing loop, per code path (`MCODEC_SIMD=P` for one path):
//! `cargo run --release -p mcodec --example rans_loop -- FILE.safetensors [ROUNDS] [--dtype D]`.
//!
//! `--dtype bf16` (the default) takes the BF16 exponent field (exponent + top mantissa
//! bit, 9-bit symbols) of every BF16 tensor in FILE, coded in chunks of 2^18 symbols with
//! blocks of 2^12. `--dtype f8e4m3` or `f8e5m2` takes every tensor of that dtype's bytes
//! as 8-bit symbols, in chunks of 2^18 with blocks of 2^8 (the tensor encoder's FP8 chunk
//! and block sizes). Symbols are decoded as `u16` (the public entry points), not straight
//! into bytes as the tensor decoder does for FP8; the loop's work is the same but for the
//! final stores. One table per chunk. Times encode, pair decode (two chunks interleaved,
//! what the tensor decoder calls for most chunks) and one chunk at a time on every path
//! the CPU has, and prints the best thread-CPU ns per symbol of ROUNDS rounds. Nothing
//! else of the codec (float split, merge, checksums, container) is timed.

use mcodec::entropy::model::{DecTable, EncTable, FreqTable};
use mcodec::entropy::rans::{decode_chunk, decode_chunk_pair, encode_chunk};
use mcodec::simd::{set_simd_level, SimdLevel};
use mcodec::Dtype;

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::CpuClock;

const CHUNK: usize = 1 << 18;
const USAGE: &str = "usage: rans_loop FILE [ROUNDS] [--dtype bf16|f8e4m3|f8e5m2]";

/// What one `--dtype` takes from the file and how it is coded.
struct Field {
    dtype: Dtype,
    /// Bits per symbol (the alphabet is `1 << bits`).
    bits: u32,
    /// Symbols per block.
    block: usize,
}

impl Field {
    fn parse(name: &str) -> Result<Self, String> {
        let (dtype, bits, block) = match name {
            "bf16" => (Dtype::BF16, 9, 1 << 12),
            "f8e4m3" => (Dtype::F8E4M3, 8, 1 << 8),
            "f8e5m2" => (Dtype::F8E5M2, 8, 1 << 8),
            _ => return Err(format!("unknown --dtype {name}; {USAGE}")),
        };
        Ok(Self { dtype, bits, block })
    }

    /// This field's symbols of one tensor's bytes.
    fn symbols(&self, bytes: &[u8], out: &mut Vec<u16>) {
        if self.dtype == Dtype::BF16 {
            out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| (u16::from_le_bytes([b[0], b[1]]) >> 6) & 0x1FF),
            );
        } else {
            out.extend(bytes.iter().map(|&b| u16::from(b)));
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut field = Field::parse("bf16")?;
    if let Some(i) = args.iter().position(|a| a == "--dtype") {
        field = Field::parse(args.get(i + 1).ok_or(USAGE)?)?;
        args.drain(i..i + 2);
    }
    let path = args.first().ok_or(USAGE)?;
    let rounds: usize = args.get(1).map_or(Ok(7), |r| r.parse())?;
    let block = field.block;
    let file = std::fs::read(path)?;
    let header = mcodec::safetensors::parse(&file, file.len() as u64)?;
    let mut symbols = Vec::new();
    for t in header.tensors.iter().filter(|t| t.dtype == field.dtype) {
        field.symbols(
            &file[t.range.start as usize..t.range.end as usize],
            &mut symbols,
        );
    }
    // Whole chunk pairs only, so every pair call decodes two whole chunks.
    symbols.truncate(symbols.len() / (2 * CHUNK) * (2 * CHUNK));
    if symbols.is_empty() {
        return Err(format!("fewer than 2^19 {} symbols", field.dtype).into());
    }
    let chunks: Vec<&[u16]> = symbols.chunks(CHUNK).collect();
    let freq: Vec<FreqTable> = chunks
        .iter()
        .map(|c| {
            let mut h = vec![0u32; 1 << field.bits];
            for &s in *c {
                h[usize::from(s)] += 1;
            }
            FreqTable::from_counts(&h).expect("a non-empty chunk")
        })
        .collect();
    let enc: Vec<EncTable> = freq.iter().map(|t| EncTable::new(t, field.bits)).collect();
    let dec: Vec<DecTable> = freq.iter().map(DecTable::new).collect();
    let enc_tables: Vec<Vec<&EncTable>> = enc.iter().map(|e| vec![e; CHUNK / block]).collect();
    let dec_tables: Vec<Vec<&DecTable>> = dec.iter().map(|d| vec![d; CHUNK / block]).collect();
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
        let mut out = vec![0u16; symbols.len()];
        let (mut enc_times, mut pair_times, mut one_times) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t = CpuClock::now();
            for ((c, p), e) in chunks.iter().zip(&mut payloads).zip(&enc_tables) {
                p.clear();
                encode_chunk(c, e, block, p)?;
            }
            enc_times.push(t.elapsed());
            out.fill(0);
            let t = CpuClock::now();
            for (k, pair) in out.chunks_mut(2 * CHUNK).enumerate() {
                let (a, b) = pair.split_at_mut(CHUNK);
                decode_chunk_pair(
                    [&payloads[2 * k], &payloads[2 * k + 1]],
                    [&dec_tables[2 * k], &dec_tables[2 * k + 1]],
                    block,
                    [a, b],
                )?;
            }
            pair_times.push(t.elapsed());
            if out != symbols {
                return Err(format!("{level}: pair-decoded symbols differ").into());
            }
            out.fill(0);
            let t = CpuClock::now();
            for (k, chunk) in out.chunks_mut(CHUNK).enumerate() {
                decode_chunk(&payloads[k], &dec_tables[k], block, chunk)?;
            }
            one_times.push(t.elapsed());
            if out != symbols {
                return Err(format!("{level}: one-chunk-decoded symbols differ").into());
            }
        }
        // The fastest round: on a shared machine the others carry other work's noise.
        let best = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[0] * 1e9 / n
        };
        let bytes: usize = payloads.iter().map(Vec::len).sum();
        println!(
            "{level:>7}: encode {:.3} ns/symbol, decode {:.3} ns/symbol (one chunk at a time {:.3}) ({} symbols, {:.3} bits/symbol)",
            best(&mut enc_times),
            best(&mut pair_times),
            best(&mut one_times),
            symbols.len(),
            bytes as f64 * 8.0 / n
        );
    }
    Ok(())
}
