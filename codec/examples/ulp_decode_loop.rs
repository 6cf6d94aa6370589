//! The ULP delta decode loop alone, per code path, one thread, as `store get` runs it
//! (`DeltaPieces::decode_at`, two chunks at a time — `get`'s pieces of BF16 tensors —
//! from the base's bytes into a reused buffer): `cargo run --release -p mcodec --example ulp_decode_loop -- BASE FT [REPEATS]
//! [PATHS]`.
//!
//! BASE and FT are safetensors files or model directories holding `model.safetensors`;
//! float tensors paired by name are coded once with the ULP method (layout 3). Prints, per
//! path (`PATHS`: comma-separated `avx512,avx2,scalar`, default all the CPU has), the
//! thread's CPU time per element, best of REPEATS (default 5), and what the data looks
//! like (unchanged elements, vectors of 16 and groups of 32 wholly unchanged). Every decode
//! is checked against the fine-tune's bytes outside the timing. Under valgrind, give one
//! path and REPEATS = 1 and collect with `--toggle-collect='*decode_stream_wide*'`.

use mcodec::cpu::{self, SimdLevel};
use mcodec::delta::{self, DeltaMethod, DeltaPieces};

#[path = "support/cpu_time.rs"]
mod cpu_time;

#[path = "support/model_file.rs"]
mod model_file;
use model_file::model_file;

#[path = "support/ulp_pairs.rs"]
mod ulp_pairs;
use ulp_pairs::ulp_pairs;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err("usage: ulp_decode_loop BASE FT [REPEATS] [PATHS]".into());
    }
    let repeats: usize = args.get(2).map_or(Ok(5), |r| r.parse())?;
    let paths: Vec<SimdLevel> = match args.get(3) {
        Some(list) => list
            .split(',')
            .map(|p| match p {
                "avx512" => Ok(SimdLevel::Avx512),
                "avx2" => Ok(SimdLevel::Avx2),
                "scalar" => Ok(SimdLevel::Scalar),
                _ => Err(format!("unknown path {p}")),
            })
            .collect::<Result<_, _>>()?,
        None => SimdLevel::supported(),
    };
    let base = std::fs::read(model_file(&args[0]))?;
    let ft = std::fs::read(model_file(&args[1]))?;
    let mut pairs = ulp_pairs(&base, &ft)?;
    // An empty tensor has no pieces to decode.
    pairs.retain(|(_, _, t)| !t.is_empty());
    let mut elements = 0usize;
    let (mut same, mut same16, mut vec16, mut same32, mut grp32) = (0usize, 0, 0, 0, 0);
    for (d, br, tr) in &pairs {
        let w = d.element_size().unwrap_or(1);
        let (b, t) = (&base[br.clone()], &ft[tr.clone()]);
        let eq: Vec<bool> = b
            .chunks_exact(w)
            .zip(t.chunks_exact(w))
            .map(|(x, y)| x == y)
            .collect();
        elements += eq.len();
        same += eq.iter().filter(|&&e| e).count();
        for (n, all, count) in [(16, &mut same16, &mut vec16), (32, &mut same32, &mut grp32)] {
            for c in eq.chunks_exact(n) {
                *count += 1;
                *all += usize::from(c.iter().all(|&e| e));
            }
        }
    }
    let deltas = pairs
        .iter()
        .map(|(d, b, t)| delta::encode_with(DeltaMethod::Ulp, d, &base[b.clone()], &ft[t.clone()]))
        .collect::<Result<Vec<_>, _>>()?;
    let delta_bytes: usize = deltas.iter().map(Vec::len).sum();
    // Slot tables per delta (exponent groups × context bits, FORMAT.md §9.3: the group
    // count is the varint after the method and flag bytes, below 128), weighted by
    // elements: each is 16 KiB of decoder table.
    let weighted_tables: f64 = pairs
        .iter()
        .zip(&deltas)
        .map(|((d, b, _), x)| {
            let k = 1 + usize::from(x[1] & 1);
            (usize::from(x[2]) * k * b.len() / d.element_size().unwrap_or(1)) as f64
        })
        .sum();
    println!(
        "slot tables per element-weighted delta: {:.1} ({:.0} KiB)",
        weighted_tables / elements as f64,
        weighted_tables / elements as f64 * 16.0
    );
    println!(
        "{} tensors, {elements} elements, {delta_bytes} delta bytes ({:.3} bits/element); \
         unchanged: {:.1} % of elements, {:.1} % of vectors of 16, {:.1} % of groups of 32",
        pairs.len(),
        8.0 * delta_bytes as f64 / elements as f64,
        100.0 * same as f64 / elements as f64,
        100.0 * same16 as f64 / vec16.max(1) as f64,
        100.0 * same32 as f64 / grp32.max(1) as f64,
    );
    let mut out = Vec::new();
    for level in paths {
        if !level.is_supported() {
            println!("{}: not supported by this CPU", level.name());
            continue;
        }
        cpu::set_simd_level(level)?;
        let pieces = pairs
            .iter()
            .zip(&deltas)
            .map(|((d, b, _), x)| {
                DeltaPieces::new(d, x, b.len())
                    .map(|p| p.expect("a layout-3 ULP delta decodes in pieces"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut best = f64::INFINITY;
        for rep in 0..repeats {
            let clock = cpu_time::CpuClock::now();
            for ((_, br, _), p) in pairs.iter().zip(&pieces) {
                let b = &base[br.clone()];
                let chunk = 2 * p.chunk_bytes();
                for (k, bc) in b.chunks(chunk).enumerate() {
                    if out.len() < bc.len() {
                        out.resize(bc.len(), 0);
                    }
                    p.decode_at(k * chunk, bc, &mut out[..bc.len()])?;
                }
            }
            best = best.min(clock.elapsed());
            if rep == 0 {
                // Checked outside the timing: the same decode, compared chunk by chunk.
                for ((_, br, tr), p) in pairs.iter().zip(&pieces) {
                    let (b, t) = (&base[br.clone()], &ft[tr.clone()]);
                    let chunk = 2 * p.chunk_bytes();
                    for (k, (bc, tc)) in b.chunks(chunk).zip(t.chunks(chunk)).enumerate() {
                        p.decode_at(k * chunk, bc, &mut out[..bc.len()])?;
                        if out[..bc.len()] != tc[..] {
                            return Err(format!("{}: round trip differs", level.name()).into());
                        }
                    }
                }
            }
        }
        if std::env::var_os("ULP_PER_TENSOR").is_some() {
            // Per large tensor: its slot tables and its own best time.
            for (((d, br, _), p), x) in pairs.iter().zip(&pieces).zip(&deltas) {
                let n = br.len() / d.element_size().unwrap_or(1);
                if n < 1 << 17 {
                    continue;
                }
                let b = &base[br.clone()];
                let chunk = 2 * p.chunk_bytes();
                let mut t = f64::INFINITY;
                for _ in 0..repeats {
                    let clock = cpu_time::CpuClock::now();
                    for (k, bc) in b.chunks(chunk).enumerate() {
                        p.decode_at(k * chunk, bc, &mut out[..bc.len()])?;
                    }
                    t = t.min(clock.elapsed());
                }
                println!(
                    "  {n} elements, {} tables: {:.3} ns per element",
                    usize::from(x[2]) * (1 + usize::from(x[1] & 1)),
                    t / n as f64 * 1e9
                );
            }
        }
        println!(
            "{:>6}: decode {:.3} ns per element (thread CPU, best of {repeats})",
            level.name(),
            best / elements as f64 * 1e9
        );
    }
    Ok(())
}
