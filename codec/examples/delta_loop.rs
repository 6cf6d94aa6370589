//! ULP delta encode and decode in a loop, for profilers and A/B timing:
//! `cargo run --release -p mcodec --example delta_loop -- BASE FT [REPEATS]`.
//!
//! BASE and FT are safetensors files or model directories holding `model.safetensors`;
//! float tensors paired by name are coded with the ULP method. Prints the process's CPU
//! time (all threads) per element for encode and decode, best of REPEATS
//! (default 5). Every decode is checked against the fine-tune's bytes outside the timing.

use mcodec::delta::{self, DeltaMethod};

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::process_cpu_seconds as cpu_seconds;

#[path = "support/model_file.rs"]
mod model_file;
use model_file::model_file;

#[path = "support/ulp_pairs.rs"]
mod ulp_pairs;
use ulp_pairs::ulp_pairs;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err("usage: delta_loop BASE FT [REPEATS]".into());
    }
    let repeats: usize = args.get(2).map_or(Ok(5), |r| r.parse())?;
    let base = std::fs::read(model_file(&args[0]))?;
    let ft = std::fs::read(model_file(&args[1]))?;
    let pairs: Vec<_> = ulp_pairs(&base, &ft)?
        .into_iter()
        .map(|(d, b, t)| (d, &base[b], &ft[t]))
        .collect();
    let elements: usize = pairs
        .iter()
        .map(|(d, b, _)| b.len() / d.element_size().unwrap_or(1))
        .sum();
    let (mut enc, mut dec) = (f64::INFINITY, f64::INFINITY);
    let mut deltas = Vec::new();
    let mut outs: Vec<Vec<u8>> = pairs.iter().map(|(_, b, _)| vec![0u8; b.len()]).collect();
    for _ in 0..repeats {
        let c = cpu_seconds();
        deltas = pairs
            .iter()
            .map(|(d, b, t)| delta::encode_with(DeltaMethod::Ulp, d, b, t))
            .collect::<Result<Vec<_>, _>>()?;
        enc = enc.min(cpu_seconds() - c);
        let c = cpu_seconds();
        for (((d, b, _), x), out) in pairs.iter().zip(&deltas).zip(&mut outs) {
            delta::decode(d, b, x, out)?;
        }
        dec = dec.min(cpu_seconds() - c);
        for ((_, _, t), out) in pairs.iter().zip(&outs) {
            if out[..] != t[..] {
                return Err("round trip differs".into());
            }
        }
    }
    let bytes: usize = deltas.iter().map(Vec::len).sum();
    println!(
        "{} tensors, {elements} elements, {bytes} delta bytes; CPU per element: encode {:.2} ns, decode {:.2} ns (best of {repeats})",
        pairs.len(),
        enc / elements as f64 * 1e9,
        dec / elements as f64 * 1e9
    );
    Ok(())
}
