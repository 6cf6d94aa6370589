//! Study (not the format): rANS over **pairs** of BF16 exponent-field symbols, one table
//! lookup and one renormalisation per two symbols, against the format's one-symbol rANS.
//!
//! `cargo run --release -p mcodec --example pair_rans -- FILE.safetensors [MIB] [ROUNDS] [ONLY]`
//!
//! Takes the BF16 exponent field (exponent + top mantissa bit, 9-bit symbols, as
//! `rans_loop` does) of the first `MIB` MiB of BF16 tensors in FILE (default: all), cuts it
//! into chunks of 2^18 symbols with one 12-bit table per chunk (`FreqTable::from_counts`,
//! the format's quantiser), and codes every chunk twice:
//!
//! * **single**: the codec's own `encode_chunk` / `decode_chunk` (32 lanes, 32-bit
//!   states, 16-bit words), on the path set by `MCODEC_SIMD` (the portable one by default);
//! * **pair**: the same 32 lanes, 32-bit states and 16-bit words, but the symbol of a
//!   step is a pair of neighbouring symbols (pair `j` = symbols `2j, 2j+1`, on lane
//!   `j % 32`). The pair table is *derived from the chunk's 12-bit single table*, so it
//!   costs no bytes: a pair's weight is `f(a)·f(b)` (they sum to 2^24), the `K` heaviest
//!   pairs (ties by symbols) and one escape share `2^N` slots (`quantise`). An escaped
//!   pair's two symbols go to a separate escape stream of [`ESC_STATES`] interleaved
//!   single-symbol states in the same chunk payload, coded with 8-bit tables of the
//!   escaped pairs' marginals (derived too): the pair loop never branches on, or waits
//!   for, an escape; it notes a lane mask per group, the escape stream is decoded into a
//!   buffer on its own, and a pass over the masks fills the escaped pairs in.
//!
//! Pair decoder layouts ([`Layout`]): `index` (slot → `u16` index, then `[freq,
//! start]` and the pair: two dependent loads, any precision `N`), `packed` (one `u32` per
//! slot: frequency, offset and index, 16 KiB at `N` = 12), `direct` (one `u64` per slot:
//! frequency, offset and both symbols, 32 KiB), and `avx2-packed` (the packed layout,
//! eight lanes per AVX2 vector, x86-64). Variant names read `LAYOUT-nN-kK`; `kall` takes
//! every pair (no escapes; a diagnostic of the loop, its size is not usable).
//!
//! Every decode is checked against the symbols. Prints the payload bytes of every coder
//! (the pair coders' include their escape streams and a 40-byte larger header), the
//! escape rate, and per decoder the median (and best) ns per symbol of `ROUNDS` rounds
//! (default 9) of its decode calls by thread CPU time, the decoders rotating within each
//! round; for the pair decoders also the medians of their phases (pair loop, filling the
//! escaped pairs in, escape stream). `ONLY` = `single` or a variant's name decodes with that one
//! alone (for `valgrind --tool=callgrind --toggle-collect='*decode_direct*'` and the like,
//! or `'*decode_chunk*'` for the single coder). Results: BENCHMARKS.md, twentieth session.

use mcodec::entropy::model::{DecTable, EncTable, FreqTable};
use mcodec::entropy::rans::{decode_chunk, encode_chunk};
use mcodec::simd::{set_simd_level, SimdLevel};
use mcodec::Dtype;
use std::io::{Read, Seek, SeekFrom};

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::CpuClock;

/// Symbols per chunk (even: a chunk holds whole pairs).
const CHUNK: usize = 1 << 18;
/// Block length of the single coder's table list (one table per chunk here).
const BLOCK: usize = 1 << 12;
/// Lanes per chunk, as in the format.
const LANES: usize = 32;
/// Lower bound of a normalised state, as in the format.
const RANS_L: u32 = 1 << 16;
/// Precision of the escape stream's single-symbol tables: 8 bits (256 slots, 1.5 KiB) for
/// +0.004 % of bytes against 12 bits; a chunk's few escapes touch 12-bit tables (2 × 24 KiB)
/// too seldom to keep them in cache: ~85 cycles per escaped pair against ~20 (MiniLM).
const ESC_BITS: u32 = 8;
/// Alphabet of the 9-bit field.
const ALPHABET: usize = 512;

type Res<T> = Result<T, Box<dyn std::error::Error>>;
/// A chunk's pair payload and its model.
type Coded = (Vec<u8>, PairModel);

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: pair_rans FILE [MIB] [ROUNDS] [ONLY]")?;
    let mib: u64 = args.get(2).map_or(Ok(u64::MAX >> 20), |r| r.parse())?;
    let rounds: usize = args.get(3).map_or(Ok(9), |r| r.parse())?;
    let only = args.get(4).cloned();
    let symbols = exponent_field(path, mib << 20)?;
    let chunks: Vec<&[u16]> = symbols.chunks(CHUNK).filter(|c| c.len() >= 64).collect();
    let n: usize = chunks.iter().map(|c| c.len() & !1).sum();
    let level = std::env::var("MCODEC_SIMD").unwrap_or_else(|_| "scalar".into());
    let level = SimdLevel::supported()
        .into_iter()
        .find(|l| l.name() == level)
        .ok_or("MCODEC_SIMD names a path this CPU lacks")?;
    set_simd_level(level)?;

    // The single coder: the codec's own.
    let mut single_bytes = 0usize;
    let mut single = Vec::new();
    for c in &chunks {
        let c = &c[..c.len() & !1];
        let table = FreqTable::from_counts(&histogram(c)).ok_or("empty chunk")?;
        let mut payload = Vec::new();
        let enc = EncTable::new(&table, 9);
        let blocks = c.len().div_ceil(BLOCK);
        encode_chunk(c, &vec![&enc; blocks], BLOCK, &mut payload)?;
        single_bytes += payload.len();
        single.push((payload, DecTable::new(&table), table));
    }

    // The pair coders, every one from the same 12-bit tables.
    // (name, pair precision, frequent pairs K, decoder layout); `kall` takes every pair of
    // the table's symbols (up to 2,047; none escape on these files): a diagnostic of the
    // loop, its size is not usable.
    let variants = [
        ("direct-n12-k255", 12, 255, Layout::Direct),
        ("direct-n12-k383", 12, 383, Layout::Direct),
        ("direct-n12-k511", 12, 511, Layout::Direct),
        ("packed-n12-k255", 12, 255, Layout::Packed),
        ("packed-n12-k383", 12, 383, Layout::Packed),
        ("avx2-packed-n12-k255", 12, 255, Layout::PackedAvx2),
        ("avx2-packed-n12-k383", 12, 383, Layout::PackedAvx2),
        ("index-n14-k511", 14, 511, Layout::Index),
        ("index-n15-k511", 15, 511, Layout::Index),
        ("direct-n12-kall", 12, MAX_INDEX - 1, Layout::Direct),
    ];
    // The AVX2 decoder only where the CPU has AVX2.
    let avx2 = SimdLevel::supported().iter().any(|l| l.name() == "avx2");
    let variants: Vec<(&str, u32, usize, Layout)> = variants
        .into_iter()
        .filter(|v| avx2 || !matches!(v.3, Layout::PackedAvx2))
        .collect();
    let mut coded: Vec<(&str, Vec<Coded>)> = Vec::new();
    println!(
        "{path}: {} symbols in {} chunks; single ({level}): {} payload bytes, {:.4} bits/symbol",
        n,
        chunks.len(),
        single_bytes,
        single_bytes as f64 * 8.0 / n as f64
    );
    for &(name, bits, k, _) in &variants {
        let mut list = Vec::new();
        let (mut bytes, mut escapes) = (0usize, 0usize);
        for (c, (_, _, table)) in chunks.iter().zip(&single) {
            let c = &c[..c.len() & !1];
            let model = PairModel::new(table, bits, k);
            let (payload, esc) = model.encode(c);
            bytes += payload.len();
            escapes += esc;
            list.push((payload, model));
        }
        println!(
            "{name}: {bytes} payload bytes ({:+.3} % against single), {:.4} bits/symbol, escapes {:.3} % of pairs",
            (bytes as f64 / single_bytes as f64 - 1.0) * 100.0,
            bytes as f64 * 8.0 / n as f64,
            escapes as f64 * 200.0 / n as f64
        );
        coded.push((name, list));
    }

    let mut out = vec![0u16; CHUNK];
    // Per decoder: round times, and the pair decoders' phase times per round.
    let mut times: Vec<(String, Vec<f64>, Vec<[f64; 3]>)> = std::iter::once("single".to_string())
        .chain(variants.iter().map(|v| v.0.to_string()))
        .map(|s| (s, Vec::new(), Vec::new()))
        .collect();
    for round in 0..rounds {
        // Rotate the order each round so that no decoder always runs first.
        for i in 0..times.len() {
            let d = (i + round) % times.len();
            let name = times[d].0.clone();
            if only.as_ref().is_some_and(|o| *o != name) {
                continue;
            }
            // Decode calls alone are timed; each chunk is checked after its call.
            let mut spent = 0.0;
            if d == 0 {
                for (c, (payload, dec, _)) in chunks.iter().zip(&single) {
                    let len = c.len() & !1;
                    let tables = vec![dec; len.div_ceil(BLOCK)];
                    let t = CpuClock::now();
                    decode_chunk(payload, &tables, BLOCK, &mut out[..len])?;
                    spent += t.elapsed();
                    check(&out[..len], c, &name)?;
                }
            } else {
                for (c, (payload, model)) in chunks.iter().zip(&coded[d - 1].1) {
                    let len = c.len() & !1;
                    let t = CpuClock::now();
                    model.decode(variants[d - 1].3, payload, &mut out[..len])?;
                    spent += t.elapsed();
                    check(&out[..len], c, &name)?;
                }
            }
            times[d].1.push(spent);
            times[d].2.push(PHASES.with(|p| p.replace([0.0; 3])));
        }
    }
    let per = |t: f64| t * 1e9 / n as f64;
    for (name, mut v, mut phases) in times {
        if v.is_empty() {
            continue;
        }
        v.sort_by(f64::total_cmp);
        print!(
            "{name:>16}: decode median {:.3} ns/symbol (best {:.3}), {} rounds",
            per(v[v.len() / 2]),
            per(v[0]),
            v.len()
        );
        if phases.iter().any(|p| p[0] > 0.0) {
            let mut median = |k: usize| {
                phases.sort_by(|a, b| a[k].total_cmp(&b[k]));
                per(phases[phases.len() / 2][k])
            };
            print!(
                "; pair loop {:.3}, escape fill {:.3}, escape stream {:.3}",
                median(0),
                median(1),
                median(2)
            );
        }
        println!();
    }
    Ok(())
}

/// The 9-bit field of the BF16 tensors in `path`, in file order, up to `max_bytes` of
/// tensor data (read tensor by tensor, so a large file is not read whole).
fn exponent_field(path: &str, max_bytes: u64) -> Res<Vec<u16>> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut head = [0u8; 8];
    file.read_exact(&mut head)?;
    let header_len = u64::from_le_bytes(head);
    let mut bytes = head.to_vec();
    bytes.resize(8 + usize::try_from(header_len)?, 0);
    file.read_exact(&mut bytes[8..])?;
    let header = mcodec::safetensors::parse(&bytes, len)?;
    let mut symbols = Vec::new();
    let mut buf = Vec::new();
    for t in header.tensors.iter().filter(|t| t.dtype == Dtype::BF16) {
        if symbols.len() as u64 * 2 >= max_bytes {
            break;
        }
        buf.resize(usize::try_from(t.range.end - t.range.start)?, 0);
        file.seek(SeekFrom::Start(t.range.start))?;
        file.read_exact(&mut buf)?;
        symbols.extend(
            buf.chunks_exact(2)
                .map(|b| (u16::from_le_bytes([b[0], b[1]]) >> 6) & 0x1FF),
        );
    }
    Ok(symbols)
}

fn histogram(symbols: &[u16]) -> Vec<u32> {
    let mut h = vec![0u32; ALPHABET];
    for &s in symbols {
        h[usize::from(s)] += 1;
    }
    h
}

fn check(got: &[u16], want: &[u16], name: &str) -> Res<()> {
    if got != &want[..got.len()] {
        return Err(format!("{name}: decoded symbols differ").into());
    }
    Ok(())
}

/// `weights` (positive, any scale) as frequencies summing to `2^bits`, each at least 1:
/// rounded shares, then the difference taken from or given to the largest entries.
/// Deterministic integer arithmetic, as a decoder deriving the same table would need.
fn quantise(weights: &[u64], bits: u32) -> Vec<u32> {
    let total: u64 = weights.iter().sum();
    let scale = 1u64 << bits;
    let mut f: Vec<u32> = weights
        .iter()
        .map(|&w| ((w * scale + total / 2) / total).max(1) as u32)
        .collect();
    let mut order: Vec<usize> = (0..f.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(f[i]), i));
    let mut diff = scale as i64 - f.iter().map(|&x| i64::from(x)).sum::<i64>();
    for &i in order.iter().cycle() {
        if diff == 0 {
            break;
        }
        if diff > 0 {
            f[i] += 1;
            diff -= 1;
        } else if f[i] > 1 {
            f[i] -= 1;
            diff += 1;
        }
    }
    f
}

/// A single-symbol table (`ESC_BITS` bits) for escaped pairs: encoder's `freq` / `cum` per symbol,
/// decoder's `[freq, slot − start, symbol]` per slot.
struct Single {
    freq: Vec<u32>,
    cum: Vec<u32>,
    slots: Vec<[u16; 3]>,
}

impl Single {
    fn new(weights: &[u64]) -> Self {
        let used: Vec<usize> = (0..weights.len()).filter(|&s| weights[s] > 0).collect();
        let w: Vec<u64> = used.iter().map(|&s| weights[s]).collect();
        let q = quantise(&w, ESC_BITS);
        let (mut freq, mut cum) = (vec![0u32; ALPHABET], vec![0u32; ALPHABET]);
        let mut slots = Vec::with_capacity(1 << ESC_BITS);
        let mut start = 0u32;
        for (&s, &f) in used.iter().zip(&q) {
            freq[s] = f;
            cum[s] = start;
            for k in 0..f {
                slots.push([f as u16, k as u16, s as u16]);
            }
            start += f;
        }
        Self { freq, cum, slots }
    }
}

/// The pair coder of one chunk: derived from the chunk's 12-bit single table.
struct PairModel {
    bits: u32,
    /// Coding alphabet: the frequent pairs, then the escape (index `pairs.len()`).
    pairs: Vec<[u16; 2]>,
    freq: Vec<u32>,
    cum: Vec<u32>,
    /// Pair → coding index (`pairs.len()` = escape), `ALPHABET²` entries (encoder only).
    index: Vec<u16>,
    esc_a: Single,
    esc_b: Single,
    /// Decoder: slot → coding index (`index` layout, and the last groups of every layout).
    slot16: Vec<u16>,
    /// Decoder, 12-bit pair tables of ≤ 1,024 indices whose frequencies are below 2^11
    /// (empty otherwise): per slot `freq | (slot − start) << 11 | index << 22`, so that the
    /// state's chain has one load, as in the single coder, and the pair's load hangs off it.
    slot32: Vec<u32>,
    /// Decoder, 12-bit pair tables, any alphabet: per slot `freq | (slot − start) << 16 |
    /// pair << 32`, everything a step needs in one load (32 KiB).
    slot64: Vec<u64>,
    /// Decoder: `[freq, start]` and the two symbols per index (the escape's symbols are
    /// [`ESCAPED`]), fixed-size so that a masked index needs no bounds check.
    fs: Box<[[u16; 2]; MAX_INDEX]>,
    syms: Box<[[u16; 2]; MAX_INDEX]>,
    /// The same pairs as little-endian `u32`s (what the AVX2 loop loads).
    #[cfg_attr(not(target_arch = "x86_64"), expect(dead_code))]
    syms32: Box<[u32; MAX_INDEX]>,
}

impl PairModel {
    fn new(table: &FreqTable, bits: u32, k: usize) -> Self {
        let sym: Vec<usize> = table.symbols().iter().map(|&s| usize::from(s)).collect();
        let f: Vec<u64> = table.freqs().iter().map(|&f| u64::from(f)).collect();
        // Every pair of the table's symbols with its weight f(a)·f(b); the heaviest first
        // (ties by pair, so that a decoder derives the same order).
        let mut all: Vec<(u64, usize, usize)> = Vec::with_capacity(sym.len() * sym.len());
        for (i, &a) in sym.iter().enumerate() {
            for (j, &b) in sym.iter().enumerate() {
                all.push((f[i] * f[j], a, b));
            }
        }
        all.sort_by_key(|&(w, a, b)| (std::cmp::Reverse(w), a, b));
        let k = k.min(all.len());
        let (top, rest) = all.split_at(k);
        let mut weights: Vec<u64> = top.iter().map(|t| t.0).collect();
        let esc_weight: u64 = rest.iter().map(|t| t.0).sum();
        // The escape keeps a slot even when nothing is left over (then it is never coded).
        weights.push(esc_weight.max(1));
        let freq = quantise(&weights, bits);
        let mut cum = Vec::with_capacity(freq.len());
        let mut start = 0u32;
        for &q in &freq {
            cum.push(start);
            start += q;
        }
        let pairs: Vec<[u16; 2]> = top.iter().map(|t| [t.1 as u16, t.2 as u16]).collect();
        let mut index = vec![k as u16; ALPHABET * ALPHABET];
        for (i, p) in pairs.iter().enumerate() {
            index[usize::from(p[0]) * ALPHABET + usize::from(p[1])] = i as u16;
        }
        // Marginals of the escaped pairs, for their two single-symbol steps.
        let (mut ma, mut mb) = (vec![0u64; ALPHABET], vec![0u64; ALPHABET]);
        for &(w, a, b) in rest {
            ma[a] += w;
            mb[b] += w;
        }
        if rest.is_empty() {
            ma[sym[0]] = 1;
            mb[sym[0]] = 1;
        }
        let mut slot16 = Vec::with_capacity(1 << bits);
        for (i, &q) in freq.iter().enumerate() {
            slot16.extend(std::iter::repeat_n(i as u16, q as usize));
        }
        let mut slot32 = Vec::new();
        if bits == 12 && freq.len() <= 1 << 10 && freq.iter().all(|&f| f < 1 << 11) {
            for (i, &f) in freq.iter().enumerate() {
                slot32.extend((0..f).map(|k| f | k << 11 | (i as u32) << 22));
            }
        }
        let mut slot64 = Vec::new();
        if bits == 12 {
            for (i, &f) in freq.iter().enumerate() {
                let [a, b] = pairs.get(i).copied().unwrap_or([ESCAPED; 2]);
                let pair = u64::from(a) | u64::from(b) << 16;
                slot64.extend((0..f).map(|k| u64::from(f) | u64::from(k) << 16 | pair << 32));
            }
        }
        let mut fs = Box::new([[0u16; 2]; MAX_INDEX]);
        let mut syms = Box::new([[0u16; 2]; MAX_INDEX]);
        for (i, (&f, &c)) in freq.iter().zip(&cum).enumerate() {
            fs[i] = [f as u16, c as u16];
            syms[i] = pairs.get(i).copied().unwrap_or([ESCAPED; 2]);
        }
        Self {
            bits,
            pairs,
            freq,
            cum,
            index,
            esc_a: Single::new(&ma),
            esc_b: Single::new(&mb),
            slot32,
            slot64,
            slot16,
            fs,
            syms32: Box::new(syms.map(|[a, b]| u32::from(a) | u32::from(b) << 16)),
            syms,
        }
    }

    /// The payload and the number of escaped pairs. Pair `j` is lane `j % LANES`'s step
    /// `j / LANES` of the pair stream; the escaped pairs' symbols `a0 b0 a1 b1 …` (pair
    /// order) form a separate single-symbol stream of [`ESC_STATES`] interleaved states
    /// (symbol `k` on state `k % ESC_STATES`, `a` by the first escape table, `b` by the
    /// second), so that the pair loop never waits for, or branches on, an escape.
    /// Layout: `LANES` u32 states, `ESC_STATES` u32 states, the pair stream's word count
    /// (u32), the escaped pairs' count (u32), the pair stream's words, the escape stream's
    /// words (u16, each in decoding order).
    fn encode(&self, symbols: &[u16]) -> (Vec<u8>, usize) {
        let idx: Vec<u16> = symbols
            .chunks_exact(2)
            .map(|p| self.index[usize::from(p[0]) * ALPHABET + usize::from(p[1])])
            .collect();
        let esc = self.pairs.len() as u16;
        let mut x = [RANS_L; LANES];
        let mut words = Vec::new();
        for g in (0..idx.len().div_ceil(LANES)).rev() {
            let group = &idx[g * LANES..idx.len().min((g + 1) * LANES)];
            for (l, &i) in group.iter().enumerate().rev() {
                let i = usize::from(i);
                put(&mut x[l], self.freq[i], self.cum[i], self.bits, &mut words);
            }
        }
        let escaped: Vec<u16> = idx
            .iter()
            .enumerate()
            .filter(|&(_, &i)| i == esc)
            .flat_map(|(j, _)| [symbols[2 * j], symbols[2 * j + 1]])
            .collect();
        let mut e = [RANS_L; ESC_STATES];
        let mut esc_words = Vec::new();
        for (k, &s) in escaped.iter().enumerate().rev() {
            let t = if k % 2 == 0 { &self.esc_a } else { &self.esc_b };
            let s = usize::from(s);
            put(
                &mut e[k % ESC_STATES],
                t.freq[s],
                t.cum[s],
                ESC_BITS,
                &mut esc_words,
            );
        }
        let mut payload = Vec::new();
        for s in x.iter().chain(&e) {
            payload.extend_from_slice(&s.to_le_bytes());
        }
        payload.extend_from_slice(&(words.len() as u32).to_le_bytes());
        payload.extend_from_slice(&(escaped.len() as u32 / 2).to_le_bytes());
        for w in words.iter().rev().chain(esc_words.iter().rev()) {
            payload.extend_from_slice(&w.to_le_bytes());
        }
        (payload, escaped.len() / 2)
    }

    /// One pair step from the index tables, whatever the layout (for the last groups).
    fn tail_step(&self, x: u32) -> (u32, [u16; 2]) {
        let slot = x & ((1 << self.bits) - 1);
        let i = usize::from(self.slot16[slot as usize]) & (MAX_INDEX - 1);
        let [freq, start] = self.fs[i];
        let y = u32::from(freq) * (x >> self.bits) + slot - u32::from(start);
        (y, self.syms[i])
    }

    fn decode(&self, layout: Layout, payload: &[u8], out: &mut [u16]) -> Res<()> {
        let (p, o) = (payload, out);
        match (layout, self.bits) {
            (Layout::Direct, 12) => decode_direct(self, p, o),
            (Layout::Packed, 12) => decode_packed(self, p, o),
            #[cfg(target_arch = "x86_64")]
            (Layout::PackedAvx2, 12) => decode_packed_avx2(self, p, o),
            (Layout::Index, 14) => decode_index::<14>(self, &self.slot16, p, o),
            (Layout::Index, 15) => decode_index::<15>(self, &self.slot16, p, o),
            _ => Err("no decoder compiled for this variant".into()),
        }
    }
}

/// How the decoder finds a slot's pair.
#[derive(Clone, Copy)]
enum Layout {
    /// Slot → `u16` index, then `[freq, start]` and the pair by index: two
    /// dependent loads on the state's chain; any precision.
    Index,
    /// One `u32` per slot, `freq | (slot − start) << 11 | index << 22` (12 bits, K ≤ 1,023,
    /// frequencies below 2^11).
    Packed,
    /// [`Layout::Packed`] decoded eight lanes per AVX2 vector (x86-64 with AVX2 only).
    PackedAvx2,
    /// One `u64` per slot, `freq | (slot − start) << 16 | a << 32 | b << 48` (12 bits).
    Direct,
}

/// Coding indices the decoder's per-index arrays hold (K + 1 at most).
const MAX_INDEX: usize = 2048;
/// What the pair loop writes for an escaped pair: no 9-bit symbol has this value, nor its
/// top bit, so the loop's lane masks find the escaped pairs.
const ESCAPED: u16 = u16::MAX;

/// Lanes per iteration of the main pass, as in the codec's portable loop.
const UNROLL: usize = 8;

/// One rANS encoder step at `bits` precision (words pushed in encoding order).
fn put(x: &mut u32, f: u32, c: u32, bits: u32, words: &mut Vec<u16>) {
    let x_max = (u64::from(RANS_L >> bits) << 16) * u64::from(f);
    if u64::from(*x) >= x_max {
        words.push(*x as u16);
        *x >>= 16;
    }
    *x = ((*x / f) << bits) + *x % f + c;
}

/// Interleaved states of the escape stream.
const ESC_STATES: usize = 8;

/// A chunk payload's parts (see [`PairModel::encode`]).
struct Parts<'a> {
    states: [u32; LANES],
    esc_states: [u32; ESC_STATES],
    /// Escaped pairs in the chunk (the escape stream holds twice as many symbols).
    escapes: usize,
    words: &'a [[u8; 2]],
    esc_words: &'a [[u8; 2]],
}

fn parts(payload: &[u8]) -> Res<Parts<'_>> {
    let (head, rest) = payload
        .split_first_chunk::<{ 4 * (LANES + ESC_STATES) + 8 }>()
        .ok_or("short payload")?;
    let mut states = [0u32; LANES];
    let mut esc_states = [0u32; ESC_STATES];
    let (h, _) = head.as_chunks::<4>();
    for (s, b) in states.iter_mut().chain(&mut esc_states).zip(h) {
        *s = u32::from_le_bytes(*b);
    }
    let count = u32::from_le_bytes(h[LANES + ESC_STATES]) as usize;
    let escapes = u32::from_le_bytes(h[LANES + ESC_STATES + 1]) as usize;
    let (words, esc_words) = rest
        .as_chunks::<2>()
        .0
        .split_at_checked(count)
        .ok_or("bad word count")?;
    Ok(Parts {
        states,
        esc_states,
        escapes,
        words,
        esc_words,
    })
}

/// The pair decoder with an index per slot: slot → index, then `[freq, start]` and the
/// pair by index (two dependent loads on the state's chain).
#[inline(never)]
fn decode_index<const BITS: u32>(
    m: &PairModel,
    slots: &[u16],
    payload: &[u8],
    out: &mut [u16],
) -> Res<()> {
    let mask = (1u32 << BITS) - 1;
    let slots = &slots[..1 << BITS];
    decode_stream(
        m,
        payload,
        out,
        portable_groups(|x: u32| {
            let slot = x & mask;
            let i = usize::from(slots[slot as usize]) & (MAX_INDEX - 1);
            let [freq, start] = m.fs[i];
            let y = u32::from(freq) * (x >> BITS) + slot - u32::from(start);
            (y, m.syms[i])
        }),
    )
}

/// The pair decoder on one packed `u32` per slot (12-bit tables, 16 KiB, see
/// `PairModel::slot32`): the state's chain has one table load, as in the single coder;
/// the pair's load hangs off it.
#[inline(never)]
fn decode_packed(m: &PairModel, payload: &[u8], out: &mut [u16]) -> Res<()> {
    let slots: &[u32; 1 << 12] = m.slot32.as_slice().try_into()?;
    let syms: &[[u16; 2]; MAX_INDEX] = &m.syms;
    decode_stream(m, payload, out, portable_groups(packed_step(slots, syms)))
}

#[inline(always)]
fn packed_step<'a>(
    slots: &'a [u32; 1 << 12],
    syms: &'a [[u16; 2]; MAX_INDEX],
) -> impl Fn(u32) -> (u32, [u16; 2]) + Copy + 'a {
    |x| {
        let e = slots[(x & 0xFFF) as usize];
        let y = (e & 0x7FF) * (x >> 12) + ((e >> 11) & 0x7FF);
        (y, syms[(e >> 22) as usize])
    }
}

/// [`decode_packed`] with the group loop in AVX2 (eight lanes per vector).
#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn decode_packed_avx2(m: &PairModel, payload: &[u8], out: &mut [u16]) -> Res<()> {
    if !std::arch::is_x86_feature_detected!("avx2")
        || !std::arch::is_x86_feature_detected!("popcnt")
    {
        return Err("no AVX2".into());
    }
    let slots: &[u32; 1 << 12] = m.slot32.as_slice().try_into()?;
    let syms = &m.syms32;
    decode_stream(m, payload, out, |x, words, pos, groups, masks| {
        // SAFETY: AVX2 and POPCNT were detected above.
        unsafe { avx2::groups(slots, syms, x, words, pos, groups, masks) }
    })
}

/// The pair decoder on one `u64` per slot (12-bit tables, 32 KiB): frequency, offset and
/// both symbols in one load.
#[inline(never)]
fn decode_direct(m: &PairModel, payload: &[u8], out: &mut [u16]) -> Res<()> {
    let slots: &[u64; 1 << 12] = m.slot64.as_slice().try_into()?;
    decode_stream(
        m,
        payload,
        out,
        portable_groups(|x: u32| {
            let e = slots[(x & 0xFFF) as usize];
            let y = u32::from(e as u16) * (x >> 12) + u32::from((e >> 16) as u16);
            (y, [(e >> 32) as u16, (e >> 48) as u16])
        }),
    )
}

/// A group loop: `(states, words, word position, groups, masks)` → groups decoded.
trait GroupLoop:
    FnOnce(&mut [u32; LANES], &[[u8; 2]], &mut usize, &mut [[[u16; 2]; LANES]], &mut [u32]) -> usize
{
}
impl<F> GroupLoop for F where
    F: FnOnce(
        &mut [u32; LANES],
        &[[u8; 2]],
        &mut usize,
        &mut [[[u16; 2]; LANES]],
        &mut [u32],
    ) -> usize
{
}

/// The portable group loop (the codec's `decode_portable` with a pair per step, eight
/// lanes per iteration) over `step`, which gives the state before renormalisation and the
/// pair ([`ESCAPED`] for the escape): decodes whole groups while a group's words are
/// sure to be there, notes each group's lane mask of escapes, and returns the groups
/// done. The loop does nothing else for escapes: a branch there mispredicts, and each
/// mispredict drains the overlap of the lanes' chains (measured: the escapes then cost
/// more than the pairs saved); a list of escaped positions, a store per pair, measured
/// slower too.
fn portable_groups(step: impl Fn(u32) -> (u32, [u16; 2])) -> impl GroupLoop {
    move |x, words, pos, groups, masks| {
        let mut g = 0;
        while let Some(window) = words[(*pos).min(words.len())..].first_chunk::<LANES>() {
            let Some(group) = groups.get_mut(g) else {
                break;
            };
            let mut used = 0usize;
            let mut mask = 0u32;
            for (c, (xs, outs)) in x
                .as_chunks_mut::<UNROLL>()
                .0
                .iter_mut()
                .zip(group.as_chunks_mut::<UNROLL>().0)
                .enumerate()
            {
                for (l, (x, o)) in xs.iter_mut().zip(outs).enumerate() {
                    let (y, pair) = step(*x);
                    // Only the escape's marker has a symbol's top bit set.
                    mask |= u32::from(pair[1] >> 15) << (c * UNROLL + l);
                    // SAFETY: `used` ≤ the lanes before this one < LANES = window.len().
                    let word =
                        u32::from(u16::from_le_bytes(unsafe { *window.get_unchecked(used) }));
                    let need = y < RANS_L;
                    *x = std::hint::select_unpredictable(need, (y << 16) | word, y);
                    used += usize::from(need);
                    *o = pair;
                }
            }
            *pos += used;
            masks[g.min(masks.len() - 1)] = mask;
            g += 1;
        }
        g
    }
}

/// One chunk: `groups_fn` (a group loop, see [`portable_groups`]) decodes the whole groups
/// it can, the last groups go through checked reads and `PairModel::tail_step`, then the
/// escape stream fills the escaped pairs.
#[inline(always)]
fn decode_stream(
    m: &PairModel,
    payload: &[u8],
    out: &mut [u16],
    groups_fn: impl GroupLoop,
) -> Res<()> {
    let start = cpu_time::thread_cpu_seconds();
    // Per group of pairs, a lane mask of its escapes.
    let mut masks = [0u32; CHUNK / 2 / LANES + 1];
    let Parts {
        states: mut x,
        esc_states: mut e,
        escapes,
        words,
        esc_words,
    } = parts(payload)?;
    let (pairs, _) = out.as_chunks_mut::<2>();
    let mut pos = 0usize;
    let (groups, rest) = pairs.as_chunks_mut::<LANES>();
    let mut g = groups_fn(&mut x, words, &mut pos, groups, &mut masks);
    let tail_step = |x: u32| m.tail_step(x);
    let groups = groups[g..].iter_mut();
    // The last groups, near the end of the words: checked reads.
    for group in groups.map(|g| g.as_mut_slice()).chain([&mut *rest]) {
        let mut mask = 0u32;
        for (l, (x, o)) in x.iter_mut().zip(group.iter_mut()).enumerate() {
            let (y, pair) = tail_step(*x);
            *x = renormalise(y, words, &mut pos);
            *o = pair;
            mask |= u32::from(pair[1] >> 15) << l;
        }
        masks[g.min(masks.len() - 1)] = mask;
        g += 1;
    }
    let looped = cpu_time::thread_cpu_seconds();
    ESCAPED_PAIRS.with_borrow_mut(|buf| {
        // The escape stream first, into a buffer, [`ESC_STATES`] / 2 pairs per round: its
        // states are independent but for the running word count, as in the pair loop, and
        // nothing else waits on them.
        if escapes > pairs.len() {
            return Err("escape count too large".into());
        }
        buf.clear();
        buf.resize(escapes.next_multiple_of(ESC_STATES / 2), [0; 2]);
        let mut esc_pos = 0usize;
        let full = escapes / (ESC_STATES / 2);
        for four in buf.as_chunks_mut::<{ ESC_STATES / 2 }>().0[..full].iter_mut() {
            for (s, o) in e.as_chunks_mut::<2>().0.iter_mut().zip(four) {
                *o = [
                    single_step(&mut s[0], &m.esc_a, esc_words, &mut esc_pos),
                    single_step(&mut s[1], &m.esc_b, esc_words, &mut esc_pos),
                ];
            }
        }
        for (s, o) in e
            .as_chunks_mut::<2>()
            .0
            .iter_mut()
            .zip(&mut buf[full * (ESC_STATES / 2)..escapes])
        {
            *o = [
                single_step(&mut s[0], &m.esc_a, esc_words, &mut esc_pos),
                single_step(&mut s[1], &m.esc_b, esc_words, &mut esc_pos),
            ];
        }
        let streamed = cpu_time::thread_cpu_seconds();
        // The escaped pairs, found from the masks, filled in order.
        let mut k = 0usize;
        for (g, &mask) in masks[..g].iter().enumerate() {
            let mut mask = mask;
            while mask != 0 {
                let p = g * LANES + mask.trailing_zeros() as usize;
                if let (Some(o), Some(&pair)) = (pairs.get_mut(p), buf.get(k)) {
                    *o = pair;
                }
                k += 1;
                mask &= mask - 1;
            }
        }
        let done = cpu_time::thread_cpu_seconds();
        PHASES.with(|p| {
            let [a, b, c] = p.get();
            p.set([
                a + looped - start,
                b + done - streamed,
                c + streamed - looped,
            ]);
        });
        if pos != words.len()
            || esc_pos != esc_words.len()
            || k != escapes
            || x.iter().chain(&e).any(|&s| s != RANS_L)
        {
            return Err("pair chunk did not end clean".into());
        }
        Ok(())
    })
}

thread_local! {
    /// Thread CPU seconds of the pair decoders' phases since the last take: the pair loop,
    /// filling the escaped pairs in, the escape stream.
    static PHASES: std::cell::Cell<[f64; 3]> = const { std::cell::Cell::new([0.0; 3]) };
    /// The escaped pairs of the chunk being decoded (kept: one allocation).
    static ESCAPED_PAIRS: std::cell::RefCell<Vec<[u16; 2]>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// A checked renormalisation (past the end of the words it reads zeros, and the end check
/// sees the overrun); a select, not a branch: it is taken at random.
#[inline(always)]
fn renormalise(y: u32, words: &[[u8; 2]], pos: &mut usize) -> u32 {
    let need = y < RANS_L;
    let w = words
        .get(*pos)
        .map_or(0, |&w| u32::from(u16::from_le_bytes(w)));
    *pos += usize::from(need);
    std::hint::select_unpredictable(need, (y << 16) | w, y)
}

/// One single-symbol step of the escape stream.
#[inline(always)]
fn single_step(x: &mut u32, t: &Single, words: &[[u8; 2]], pos: &mut usize) -> u16 {
    let slot = (*x & ((1 << ESC_BITS) - 1)) as usize;
    let [freq, offset, symbol] = t.slots[slot];
    let y = u32::from(freq) * (*x >> ESC_BITS) + u32::from(offset);
    *x = renormalise(y, words, pos);
    symbol
}

/// The AVX2 group loop of the packed layout.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{LANES, MAX_INDEX, RANS_L};
    use std::arch::x86_64::*;

    /// For each 8-bit mask of lanes that take a word: lane `i`'s index among them (the
    /// count of set bits below `i`), as `vpermd` wants it.
    const PERMUTE: [[u32; 8]; 256] = {
        let mut t = [[0u32; 8]; 256];
        let mut m = 0;
        while m < 256 {
            let mut i = 0;
            let mut k = 0;
            while i < 8 {
                t[m][i] = k;
                if m >> i & 1 == 1 {
                    k += 1;
                }
                i += 1;
            }
            m += 1;
        }
        t
    };

    /// Eight table entries by eight scalar loads, the indices taken out two per 64-bit
    /// extract (the codec's `gather8_by_loads`: on Zen 4 faster than `vpgatherdd`,
    /// BENCHMARKS.md, fifth and sixteenth sessions); indices are masked to the table.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn gather<const N: usize>(table: &[u32; N], index: __m256i) -> __m256i {
        let (lo, hi) = (
            _mm256_castsi256_si128(index),
            _mm256_extracti128_si256::<1>(index),
        );
        let pairs = [
            _mm_cvtsi128_si64(lo),
            _mm_extract_epi64::<1>(lo),
            _mm_cvtsi128_si64(hi),
            _mm_extract_epi64::<1>(hi),
        ]
        .map(|p| p as u64);
        let t = |k: u64| table[k as u32 as usize % N] as i32;
        _mm256_setr_epi32(
            t(pairs[0]),
            t(pairs[0] >> 32),
            t(pairs[1]),
            t(pairs[1] >> 32),
            t(pairs[2]),
            t(pairs[2] >> 32),
            t(pairs[3]),
            t(pairs[3] >> 32),
        )
    }

    /// Whole groups while their 32 words are there, four vectors of eight lanes per
    /// group: slots gathered, `y` by `vpmulld`, the pair gathered off the state's chain,
    /// the words of the lanes that renormalise spread by one `vpermd` from a table by
    /// need mask; the escape lanes' mask from the pairs' sign bits (the marker `[ESCAPED; 2]` is the
    /// only pair with it). Returns groups done.
    ///
    /// # Safety
    /// The CPU must have AVX2 and POPCNT.
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) unsafe fn groups(
        slots: &[u32; 1 << 12],
        syms: &[u32; MAX_INDEX],
        x: &mut [u32; LANES],
        words: &[[u8; 2]],
        pos: &mut usize,
        groups: &mut [[[u16; 2]; LANES]],
        masks: &mut [u32],
    ) -> usize {
        let low12 = _mm256_set1_epi32(0xFFF);
        let low11 = _mm256_set1_epi32(0x7FF);
        let limit = _mm256_set1_epi32(RANS_L as i32 - 1);
        let mut state = [_mm256_setzero_si256(); 4];
        for (v, s) in state.iter_mut().enumerate() {
            // SAFETY: 8 u32 at x[8v..], inside x.
            *s = unsafe { _mm256_loadu_si256(x.as_ptr().add(8 * v).cast()) };
        }
        let mut g = 0;
        while *pos + LANES <= words.len() && g < groups.len() {
            let mut mask = 0u32;
            for (v, s) in state.iter_mut().enumerate() {
                let slot = _mm256_and_si256(*s, low12);
                let e = gather(slots, slot);
                let freq = _mm256_and_si256(e, low11);
                let offset = _mm256_and_si256(_mm256_srli_epi32::<11>(e), low11);
                let index = _mm256_srli_epi32::<22>(e);
                let y = _mm256_add_epi32(
                    _mm256_mullo_epi32(freq, _mm256_srli_epi32::<12>(*s)),
                    offset,
                );
                let pair = gather(syms, index);
                // SAFETY: 8 pairs (32 bytes) at lane 8v of the group.
                unsafe { _mm256_storeu_si256(groups[g].as_mut_ptr().add(8 * v).cast(), pair) };
                mask |= (_mm256_movemask_ps(_mm256_castsi256_ps(pair)) as u32) << (8 * v);
                // y < 2^16 as unsigned: min(y, 2^16 − 1) == y.
                let need = _mm256_cmpeq_epi32(_mm256_min_epu32(y, limit), y);
                let need_bits = _mm256_movemask_ps(_mm256_castsi256_ps(need)) as usize;
                // SAFETY: *pos + 8 ≤ *pos + LANES − (words taken by the earlier vectors of
                // this group, ≤ 24) … within words: the loop condition keeps *pos + 32
                // words from the group's start, and each vector takes at most 8.
                let next = unsafe { _mm_loadu_si128(words.as_ptr().add(*pos).cast()) };
                let spread = _mm256_permutevar8x32_epi32(
                    _mm256_cvtepu16_epi32(next),
                    // SAFETY: 8 u32 of the table's row.
                    unsafe { _mm256_loadu_si256(PERMUTE[need_bits].as_ptr().cast()) },
                );
                let refilled = _mm256_or_si256(_mm256_slli_epi32::<16>(y), spread);
                *s = _mm256_blendv_epi8(y, refilled, need);
                *pos += need_bits.count_ones() as usize;
            }
            masks[g.min(masks.len() - 1)] = mask;
            g += 1;
        }
        for (v, s) in state.iter().enumerate() {
            // SAFETY: 8 u32 at x[8v..], inside x.
            unsafe { _mm256_storeu_si256(x.as_mut_ptr().add(8 * v).cast(), *s) };
        }
        g
    }
}
