//! Packs a safetensors file in memory, decodes every tensor, checks the bytes and prints
//! size and timings (median of 5):
//! `cargo run --release -p mcodec --example roundtrip -- FILE [--max]`.

use std::time::Instant;

use mcodec::container::{pack, Archive, PackOptions};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: roundtrip FILE [--max]")?;
    let input = std::fs::read(path)?;
    let mut opts = PackOptions::default();
    if args.iter().any(|a| a == "--max") {
        opts.encode = mcodec::EncodeOptions::max();
    }
    let mut packed = Vec::with_capacity(input.len());
    let mut enc_times = Vec::new();
    for _ in 0..5 {
        packed.clear();
        let t = Instant::now();
        pack(&input, &opts, &mut packed, &|_| {})?;
        enc_times.push(t.elapsed().as_secs_f64());
    }
    let archive = Archive::open(&packed)?;
    let tensors = &archive.index().tensors;
    let tensor_bytes: u64 = tensors.iter().map(|t| t.original_len).sum();
    let mut bufs: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| vec![0u8; t.original_len as usize])
        .collect();
    let mut dec_times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for (i, buf) in bufs.iter_mut().enumerate() {
            archive.decode_tensor(i, buf)?;
        }
        dec_times.push(t.elapsed().as_secs_f64());
    }
    for (t, buf) in tensors.iter().zip(&bufs) {
        let start = t.original_offset as usize;
        assert!(
            input[start..start + buf.len()] == buf[..],
            "tensor {} differs",
            t.name
        );
    }
    let mb = tensor_bytes as f64 / 1e6;
    println!(
        "{path}: {:.4}% ({} -> {} bytes), encode {:.0} MB/s, decode {:.0} MB/s",
        100.0 * packed.len() as f64 / input.len() as f64,
        input.len(),
        packed.len(),
        mb / median(enc_times),
        mb / median(dec_times)
    );
    Ok(())
}
