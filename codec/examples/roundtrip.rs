//! Packs a safetensors file in memory, unpacks it, checks the bytes and prints size and
//! timings: `cargo run --release -p mcodec --example roundtrip -- FILE [--max]`.

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: roundtrip FILE [--max]")?;
    let input = std::fs::read(path)?;
    let mut opts = mcodec::container::PackOptions::default();
    if args.iter().any(|a| a == "--max") {
        opts.encode = mcodec::EncodeOptions::max();
    }
    let t = Instant::now();
    let mut packed = Vec::new();
    mcodec::container::pack(&input, &opts, &mut packed, &|_| {})?;
    let enc = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let archive = mcodec::container::Archive::open(&packed)?;
    let mut back = Vec::with_capacity(input.len());
    archive.unpack_to(&mut back, &|_| {})?;
    let dec = t.elapsed().as_secs_f64();
    assert!(back == input, "round trip differs");
    let mb = input.len() as f64 / 1e6;
    println!(
        "{path}: {:.4}% ({} -> {} bytes), encode {:.0} MB/s, decode {:.0} MB/s",
        100.0 * packed.len() as f64 / input.len() as f64,
        input.len(),
        packed.len(),
        mb / enc,
        mb / dec
    );
    Ok(())
}
