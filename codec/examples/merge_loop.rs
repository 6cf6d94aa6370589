//! Field-merge timing loop, per code path: `cargo run --release -p mcodec --example
//! merge_loop -- FILE.safetensors [ROUNDS]`. Splits every F32 tensor of FILE into its four
//! fields (the sign+mantissa field bit-packed, as the decoder finds it) and times the F32
//! merge in chunks of 2^18 elements, with the two low mantissa bytes read as decoded
//! 16-bit symbols (rANS-coded fields) and in place as bytes (packed fields); then the FP8
//! merge (16-bit symbols to bytes) of the same bytes. Prints the fastest round's ns per
//! element by thread CPU time. Nothing else of the codec is timed.

use mcodec::float_split::{merge_f32_packed, ByteField, Layout};
use mcodec::simd::{set_simd_level, SimdLevel};
use mcodec::Dtype;

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::CpuClock;

const CHUNK: usize = 1 << 18;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: merge_loop FILE [ROUNDS]")?;
    let rounds: usize = args.get(2).map_or(Ok(7), |r| r.parse())?;
    let file = std::fs::read(path)?;
    let header = mcodec::safetensors::parse(&file, file.len() as u64)?;
    let mut src = Vec::new();
    for t in header.tensors.iter().filter(|t| t.dtype == Dtype::F32) {
        src.extend_from_slice(&file[t.range.start as usize..t.range.end as usize]);
    }
    let n = src.len() / 4;
    if n == 0 {
        return Err("no F32 tensor".into());
    }
    let mut f: [Vec<u16>; 4] = std::array::from_fn(|_| vec![0u16; n]);
    {
        let [a, b, c, d] = &mut f;
        Layout::F32.split(&src, &mut [a, b, c, d]);
    }
    // Each chunk's residual packed on its own, as a stream's chunks are.
    let packed: Vec<Vec<u8>> = f[1]
        .chunks(CHUNK)
        .map(|c| {
            let mut p = Vec::new();
            mcodec::entropy::bitpack::pack(c, 7, &mut p);
            p
        })
        .collect();
    let bytes: [Vec<u8>; 2] = std::array::from_fn(|k| f[2 + k].iter().map(|&s| s as u8).collect());
    let mut out = vec![0u8; src.len()];
    let mut levels = SimdLevel::supported();
    levels.sort_by_key(|&l| std::cmp::Reverse(l as u8));
    for level in levels {
        set_simd_level(level)?;
        let mut line = format!("{level:>7}: F32 merge ns/element");
        for (name, in_place) in [("symbols", false), ("bytes", true)] {
            let mut best = f64::INFINITY;
            for _ in 0..rounds {
                let t = CpuClock::now();
                for (k, dst) in out.chunks_mut(4 * CHUNK).enumerate() {
                    let r = k * CHUNK..(k * CHUNK + dst.len() / 4);
                    let field = |j: usize| {
                        if in_place {
                            ByteField::Bytes(&bytes[j][r.clone()])
                        } else {
                            ByteField::Symbols(&f[2 + j][r.clone()])
                        }
                    };
                    merge_f32_packed(false, &f[0][r.clone()], &packed[k], field(0), field(1), dst);
                }
                best = best.min(t.elapsed());
            }
            if out != src {
                return Err(format!("{level}: merged F32 bytes differ").into());
            }
            line += &format!(" {name} {:.3}", best * 1e9 / n as f64);
        }
        // FP8: the file's bytes as 8-bit symbols.
        let symbols: Vec<u16> = src.iter().map(|&b| u16::from(b)).collect();
        let mut best = f64::INFINITY;
        for _ in 0..rounds {
            let t = CpuClock::now();
            for (s, d) in symbols.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
                Layout::F8.merge(&[s], d);
            }
            best = best.min(t.elapsed());
        }
        if out != src {
            return Err(format!("{level}: merged FP8 bytes differ").into());
        }
        line += &format!(", FP8 merge ns/byte {:.3}", best * 1e9 / src.len() as f64);
        println!("{line} ({n} F32 elements)");
    }
    Ok(())
}
