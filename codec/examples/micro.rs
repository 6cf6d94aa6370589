use mcodec::entropy::{model::*, rans::*};
use std::time::Instant;
fn main() {
    let input = std::fs::read("benches/data/minilm-bf16.safetensors").unwrap();
    let n = 1 << 16;
    let off = input.len() - 2 * n * 40;
    let syms: Vec<u16> = input[off..off + 2 * n].chunks(2).map(|b| (u16::from_le_bytes([b[0], b[1]]) >> 6) & 0x1ff).collect();
    let mut h = vec![0u32; 512];
    for &s in &syms { h[s as usize] += 1; }
    let t = FreqTable::from_counts(&h).unwrap();
    let enc = EncTable::new(&t, 9);
    let dec = DecTable::new(&t);
    let mut payload = Vec::new();
    let reps = 200;
    let st = Instant::now();
    for _ in 0..reps { payload.clear(); encode_chunk(&syms, &enc, &mut payload); }
    let e = st.elapsed().as_secs_f64();
    let mut out = vec![0u16; n];
    let st = Instant::now();
    for _ in 0..reps { decode_chunk(&payload, &dec, &mut out).unwrap(); }
    let d = st.elapsed().as_secs_f64();
    assert_eq!(out, syms);
    let total = (n * reps) as f64;
    println!("bits/sym {:.3}; encode {:.2} ns/sym, decode {:.2} ns/sym", payload.len() as f64 * 8.0 / n as f64, e / total * 1e9, d / total * 1e9);
}
