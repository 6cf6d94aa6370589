//! The encoder: the entry points, the first pass that tokenizes and counts a chunk, and
//! the rANS pass that codes it (the vector loops of both are in `wide_encode`).

use rayon::prelude::*;

use super::plan::{plan, table_pairs, Plan, Stats};
use super::wide_encode::{self, PackedTables};
use super::wire::{write_table, write_varint};
use super::{load, tokenize_fast, Layout};
use super::{CHUNK_ELEMS, FLAG_CHUNKED, FLAG_PREV_ZERO, FLAG_WIDE, MAX_CHUNK_ELEMS};
use crate::cpu::{self, SimdLevel};
#[cfg(test)]
use crate::delta::coder::LANES;
use crate::delta::coder::{self, BitWriter, RansEncoder, WIDE_LANES};
use crate::delta::{DeltaError, DeltaMethod};
use crate::dtype::Dtype;
use crate::entropy::model::{EncTable, FreqTable};

/// Codes `target` against `base` (same length) in layout 3 with the default chunk
/// length. Non-float dtypes are not supported.
pub(in crate::delta) fn encode(
    dtype: &Dtype,
    base: &[u8],
    target: &[u8],
) -> Result<Vec<u8>, DeltaError> {
    encode_chunked(dtype, base, target, CHUNK_ELEMS)
}

/// [`encode`] with `chunk_elems` elements per chunk (a positive multiple of
/// [`WIDE_LANES`]).
pub(crate) fn encode_chunked(
    dtype: &Dtype,
    base: &[u8],
    target: &[u8],
    chunk_elems: usize,
) -> Result<Vec<u8>, DeltaError> {
    encode_chunked_on(cpu::simd_level(), dtype, base, target, chunk_elems)
}

/// [`encode_chunked`] on the code path `level` (scalar where the CPU lacks it); every
/// path gives the same bytes.
pub(crate) fn encode_chunked_on(
    level: SimdLevel,
    dtype: &Dtype,
    base: &[u8],
    target: &[u8],
    chunk_elems: usize,
) -> Result<Vec<u8>, DeltaError> {
    encode_lanes::<WIDE_LANES>(level, dtype, base, target, chunk_elems)
}

/// Whether path `level` codes layout 3's groups of `W`-byte elements with a vector encoder
/// (tests check that the path they compare with the scalar one is really taken).
#[cfg(test)]
pub(crate) fn has_vector_encoder<const W: usize>(level: SimdLevel) -> bool {
    wide_encode::supports::<W>(level)
}

/// Layout 2 (4 lanes), which the writer no longer emits: for tests of the decoder's
/// older path.
#[cfg(test)]
pub(crate) fn encode_layout2(
    dtype: &Dtype,
    base: &[u8],
    target: &[u8],
    chunk_elems: usize,
) -> Result<Vec<u8>, DeltaError> {
    encode_lanes::<LANES>(SimdLevel::Scalar, dtype, base, target, chunk_elems)
}

/// The chunked layout with `L` lanes per stream: layout 2 for
/// [`LANES`](crate::delta::coder::LANES), 3 for [`WIDE_LANES`].
fn encode_lanes<const L: usize>(
    level: SimdLevel,
    dtype: &Dtype,
    base: &[u8],
    target: &[u8],
    chunk_elems: usize,
) -> Result<Vec<u8>, DeltaError> {
    assert!(
        chunk_elems > 0 && chunk_elems.is_multiple_of(L) && chunk_elems as u64 <= MAX_CHUNK_ELEMS,
        "chunk length {chunk_elems} is not a positive multiple of {L}"
    );
    let layout = Layout::of(dtype).ok_or_else(|| DeltaError::Unsupported {
        method: DeltaMethod::Ulp.name(),
        dtype: dtype.to_string(),
    })?;
    Ok(match layout.width() {
        1 => encode_w::<1, L>(level, layout, base, target, chunk_elems),
        2 => encode_w::<2, L>(level, layout, base, target, chunk_elems),
        4 => encode_w::<4, L>(level, layout, base, target, chunk_elems),
        _ => encode_w::<8, L>(level, layout, base, target, chunk_elems),
    })
}

/// The difference of two elements, as FORMAT.md §9.3 defines it.
#[inline]
fn difference(layout: Layout, base: u64, target: u64) -> u64 {
    layout.key(target).wrapping_sub(layout.key(base)) & layout.mask()
}

/// Tokenizes one chunk's elements into `symbols`, counts them into `hist`
/// (`[exponent][context bit][symbol]`) and returns the chunk's raw extra bits (one pass
/// over the elements). The context bit looks `L` elements back; that of a chunk's first
/// `L` elements is "was zero": chunks are independent.
fn count_chunk<const W: usize, const L: usize>(
    level: SimdLevel,
    layout: Layout,
    base: &[u8],
    target: &[u8],
    symbols: &mut [u8],
    hist: &mut [u32],
) -> Vec<u8> {
    let alphabet = layout.alphabet();
    let mut bits = BitWriter::new();
    let done = if L == WIDE_LANES && wide_encode::supports::<W>(level) {
        wide_encode::count_elements::<W>(level, layout, base, target, symbols, hist, &mut bits)
    } else {
        0
    };
    for i in done..symbols.len() {
        let (b, t) = (load::<W>(&base[i * W..]), load::<W>(&target[i * W..]));
        let token = tokenize_fast(layout, difference(layout, b, t));
        let back_zero = usize::from(i < L || symbols[i - L] == 0);
        hist[(layout.exponent(b) * 2 + back_zero) * alphabet + usize::from(token.symbol)] += 1;
        // Below the alphabet, at most 255 (`Layout::alphabet`).
        symbols[i] = token.symbol as u8;
        bits.put(token.extra, token.extra_bits);
    }
    bits.finish()
}

fn encode_w<const W: usize, const L: usize>(
    level: SimdLevel,
    layout: Layout,
    base: &[u8],
    target: &[u8],
    chunk: usize,
) -> Vec<u8> {
    let n = base.len() / W;
    let body = n * W;
    let alphabet = layout.alphabet();
    let hist_len = layout.exponents() * 2 * alphabet;
    // A byte per symbol (alphabets have at most 255): half the fresh pages of 16-bit
    // symbols, which a tensor-sized buffer costs (~2 µs per 4 KiB here).
    let mut symbols = vec![0u8; n];
    // Chunks are counted in parallel, each thread into its own histogram; each chunk's
    // extra bits come back with its index.
    let (hist, mut extra) = symbols
        .par_chunks_mut(chunk)
        .zip(base[..body].par_chunks(chunk * W))
        .zip(target[..body].par_chunks(chunk * W))
        .enumerate()
        .fold(
            || (vec![0u32; hist_len], Vec::new()),
            |(mut hist, mut extra), (i, ((s, b), t))| {
                extra.push((i, count_chunk::<W, L>(level, layout, b, t, s, &mut hist)));
                (hist, extra)
            },
        )
        .reduce_with(|(mut a, mut ea), (b, eb)| {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
            ea.extend(eb);
            (a, ea)
        })
        .unwrap_or_else(|| (vec![0; hist_len], Vec::new()));
    extra.sort_unstable_by_key(|(i, _)| *i);
    let stats = Stats { hist, alphabet };
    let plan = [false, true]
        .into_iter()
        .map(|prev| plan(layout, &stats, prev))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .expect("two candidate plans")
        .1;

    let wide = if L == WIDE_LANES { FLAG_WIDE } else { 0 };
    let mut out = vec![
        DeltaMethod::Ulp.id(),
        (u8::from(plan.prev_zero) * FLAG_PREV_ZERO) | FLAG_CHUNKED | wide,
    ];
    write_varint(&mut out, plan.group_last.len() as u64);
    for &last in &plan.group_last {
        write_varint(&mut out, last as u64);
    }
    for t in &plan.tables {
        write_table(&mut out, t.as_ref(), alphabet);
    }
    out.extend(base[body..].iter().zip(&target[body..]).map(|(b, t)| b ^ t));

    let symbol_bits = usize::BITS - (alphabet - 1).leading_zeros();
    let dummy = FreqTable::from_counts(&[1]).expect("one symbol");
    let enc = coder::enc_tables(
        &plan
            .tables
            .iter()
            .map(|t| t.clone().unwrap_or_else(|| dummy.clone()))
            .collect::<Vec<_>>(),
        symbol_bits,
    );
    let pairs = table_pairs(&plan.group_of, plan.prev_zero);
    let packed: Vec<u32> = enc.iter().flat_map(|t| t.packed.iter().copied()).collect();
    let packed = PackedTables {
        pairs: &pairs,
        packed: &packed,
        symbol_bits,
    };
    let chunks: Vec<Vec<u8>> = symbols
        .par_chunks(chunk)
        .zip(base[..body].par_chunks(chunk * W))
        .zip(extra)
        .map(|((s, b), (_, bits))| {
            encode_chunk::<W, L>(level, layout, &plan, &enc, &packed, s, b, &bits)
        })
        .collect();
    write_varint(&mut out, chunk as u64);
    for c in &chunks {
        write_varint(&mut out, c.len() as u64);
    }
    out.reserve(chunks.iter().map(Vec::len).sum());
    for c in chunks {
        out.extend_from_slice(&c);
    }
    out
}

/// One chunk's rANS states, words and extra bits (a layout-1 stream over its elements).
/// With 32 lanes and a vector encoder on path `level`, the scalar loop codes the elements
/// after the last whole group and the vector loop the groups (the encoder runs backwards).
#[allow(clippy::too_many_arguments)]
fn encode_chunk<const W: usize, const L: usize>(
    level: SimdLevel,
    layout: Layout,
    plan: &Plan,
    enc: &[EncTable],
    packed: &PackedTables<'_>,
    symbols: &[u8],
    base: &[u8],
    extra_bits: &[u8],
) -> Vec<u8> {
    let k = plan.contexts_per_group();
    let mut rans = RansEncoder::<L>::new(symbols.len());
    let vector = L == WIDE_LANES && wide_encode::supports::<W>(level);
    let groups = if vector { symbols.len() / L } else { 0 };
    for i in (groups * L..symbols.len()).rev() {
        let exp = layout.exponent(load::<W>(&base[i * W..]));
        let prev_zero = if plan.prev_zero {
            usize::from(i < L || symbols[i - L] == 0)
        } else {
            0
        };
        let table = &enc[usize::from(plan.group_of[exp]) * k + prev_zero];
        rans.put(i, u16::from(symbols[i]), table);
    }
    if vector {
        wide_encode::encode_groups::<W, L>(level, layout, packed, &mut rans, symbols, base, groups);
        cpu::note_run(level);
    }
    let mut out = Vec::with_capacity(rans.coded_len() + extra_bits.len());
    rans.finish(&mut out);
    out.extend_from_slice(extra_bits);
    out
}
