//! Interleaved rANS coder for one chunk (FORMAT.md §5.4).
//!
//! A chunk's symbols are dealt round-robin to [`LANES`] independent rANS states: symbol
//! `i` belongs to lane `i % LANES`. States are 32-bit, normalised to `[RANS_L, 2^32)`, and
//! renormalise by whole 16-bit words, so a decode step reads at most one word. Words are
//! stored in the order the decoder consumes them (lane order within each step), which is
//! what lets a SIMD decoder or a GPU warp fetch them with one prefix sum over the lanes
//! that need a word.
//!
//! Payload layout: `LANES` × `u32` initial decoder states, then the `u16` words.
//! Every lane's encoder starts at `RANS_L`, so a correct decode ends with every state back
//! at `RANS_L` and every word consumed: the decoder checks both.

use super::model::{DecTable, EncTable, PROB_BITS, PROB_SCALE, RCP_SHIFT};
use super::EntropyError;

/// Independent rANS states per chunk.
pub const LANES: usize = 32;
/// Lower bound of the normalised state interval, and the encoder's initial state.
pub const RANS_L: u32 = 1 << 16;
/// Bytes of the state header at the start of a chunk payload.
pub const STATE_BYTES: usize = 4 * LANES;

/// Encodes `symbols` and appends the chunk payload to `out`. Symbol `i` is coded with
/// `tables[i / block_len]` (`block_len` a multiple of [`LANES`]).
///
/// Every symbol must have a non-zero frequency in its table.
pub fn encode_chunk(symbols: &[u16], tables: &[&EncTable], block_len: usize, out: &mut Vec<u8>) {
    debug_assert!(
        block_len.is_multiple_of(LANES) && tables.len() >= symbols.len().div_ceil(block_len)
    );
    // rANS encodes backwards. Groups of LANES symbols are coded from the last to the first,
    // and each group's words are placed, in lane order, just before the words of the group
    // after it: the buffer then reads front to back in exactly the decoder's order.
    ENCODE_WORDS.with(|buf| {
        let mut buf = buf.borrow_mut();
        // Only grow: every word the encoder emits is written before it is read, so the
        // buffer needs no clearing between chunks.
        let need = symbols.len() + LANES;
        if buf.len() < need {
            buf.resize(need, [0; 2]);
        }
        encode_into(symbols, tables, block_len, &mut buf[..need], out);
    });
}

thread_local! {
    /// Per-thread word buffer of the encoder: a fresh chunk-sized allocation per chunk
    /// would cost a page fault per 4 KiB.
    static ENCODE_WORDS: std::cell::RefCell<Vec<[u8; 2]>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn encode_into(
    symbols: &[u16],
    tables: &[&EncTable],
    block_len: usize,
    words: &mut [[u8; 2]],
    out: &mut Vec<u8>,
) {
    let mut states = [RANS_L; LANES];
    let mut start = words.len();
    let mut g = symbols.len().div_ceil(LANES);
    while g > 0 {
        let full = symbols.len() / LANES;
        if g <= full {
            // SAFETY of the vector path is argued inside; it codes whole groups only.
            let done = simd::encode_groups(
                &mut states,
                symbols,
                tables,
                block_len,
                g,
                words,
                &mut start,
            );
            g -= done;
            if done > 0 {
                continue;
            }
        }
        g -= 1;
        let group = &symbols[g * LANES..symbols.len().min(g * LANES + LANES)];
        start = encode_group_scalar(
            &mut states,
            group,
            tables[g * LANES / block_len],
            words,
            start,
        );
    }
    out.reserve(STATE_BYTES + 2 * (words.len() - start));
    for s in states {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.extend_from_slice(words[start..].as_flattened());
}

/// Codes one group (lane `l` codes `group[l]`) and places its words, in lane order, just
/// before `words[start..]`; returns the new start.
fn encode_group_scalar(
    states: &mut [u32; LANES],
    group: &[u16],
    table: &EncTable,
    words: &mut [[u8; 2]],
    start: usize,
) -> usize {
    let mut emitted = [[0u8; 2]; LANES];
    let mut count = 0;
    for (x, &sym) in states.iter_mut().zip(group) {
        let e = &table.entries[usize::from(sym)];
        debug_assert!(e.freq > 0, "symbol {sym} missing from table");
        // x must end below 2^32 after coding: renormalise while x ≥ freq · 2^(32 - PROB_BITS).
        // Branch-free, since renormalisation is taken at random.
        let emit = u64::from(*x) >= e.x_max;
        emitted[count] = (*x as u16).to_le_bytes();
        count += usize::from(emit);
        let y = if emit { *x >> 16 } else { *x };
        // q = y / freq by multiplication with a 45-bit reciprocal: exact for y < 2^32 and
        // freq ≤ 2^12 (error y·ε/2^45 < 2^-13 < 1/freq).
        let q = ((u128::from(y) * u128::from(e.rcp)) >> RCP_SHIFT) as u32;
        *x = (q << PROB_BITS) + (y - q * e.freq) + e.start;
    }
    words[start - count..start].copy_from_slice(&emitted[..count]);
    start - count
}

/// Decodes `out.len()` symbols from one chunk payload, symbol `i` with
/// `tables[i / block_len]`.
///
/// Corrupt input cannot read out of bounds or loop: past the end of the words the
/// decoder reads zeros and counts the overrun, which fails the chunk once at the end.
pub fn decode_chunk(
    payload: &[u8],
    tables: &[&DecTable],
    block_len: usize,
    out: &mut [u16],
) -> Result<(), EntropyError> {
    check_blocks(tables, block_len, out.len())?;
    let (mut states, mut reader) = start_chunk(payload)?;
    for (block, table) in out.chunks_mut(block_len).zip(tables) {
        decode_block(&mut states, &mut reader, table, block);
    }
    finish_chunk(&states, &reader)
}

/// Decodes two chunks, each as [`decode_chunk`] would: the vector decoder interleaves
/// them, which hides the latency of its table gathers.
pub fn decode_chunk_pair(
    payloads: [&[u8]; 2],
    tables: [&[&DecTable]; 2],
    block_len: usize,
    outs: [&mut [u16]; 2],
) -> Result<(), EntropyError> {
    let [out_a, out_b] = outs;
    check_blocks(tables[0], block_len, out_a.len())?;
    check_blocks(tables[1], block_len, out_b.len())?;
    let (mut states_a, mut reader_a) = start_chunk(payloads[0])?;
    let (mut states_b, mut reader_b) = start_chunk(payloads[1])?;
    let mut blocks_b = out_b.chunks_mut(block_len).zip(tables[1]);
    for (block_a, table_a) in out_a.chunks_mut(block_len).zip(tables[0]) {
        let Some((block_b, table_b)) = blocks_b.next() else {
            decode_block(&mut states_a, &mut reader_a, table_a, block_a);
            continue;
        };
        if table_a.inline != table_b.inline {
            // The vector step is compiled for one slot layout: decode the two apart.
            decode_block(&mut states_a, &mut reader_a, table_a, block_a);
            decode_block(&mut states_b, &mut reader_b, table_b, block_b);
            continue;
        }
        let done = simd::decode_groups(
            [&mut states_a, &mut states_b],
            [&mut reader_a, &mut reader_b],
            [table_a, table_b],
            [&mut *block_a, &mut *block_b],
        );
        decode_block(&mut states_a, &mut reader_a, table_a, &mut block_a[done..]);
        decode_block(&mut states_b, &mut reader_b, table_b, &mut block_b[done..]);
    }
    for (block_b, table_b) in blocks_b {
        decode_block(&mut states_b, &mut reader_b, table_b, block_b);
    }
    finish_chunk(&states_a, &reader_a)?;
    finish_chunk(&states_b, &reader_b)
}

fn check_blocks(tables: &[&DecTable], block_len: usize, n: usize) -> Result<(), EntropyError> {
    if block_len == 0 || !block_len.is_multiple_of(LANES) || tables.len() < n.div_ceil(block_len) {
        return Err(EntropyError::BadChunk(format!(
            "block length {block_len} with {} tables for {n} symbols",
            tables.len()
        )));
    }
    Ok(())
}

/// Reads a payload's initial states and positions a reader on its words.
fn start_chunk(payload: &[u8]) -> Result<([u32; LANES], WordReader<'_>), EntropyError> {
    if payload.len() < STATE_BYTES || !(payload.len() - STATE_BYTES).is_multiple_of(2) {
        return Err(EntropyError::BadChunk(format!(
            "payload of {} bytes: needs {STATE_BYTES} bytes of states and whole 16-bit words",
            payload.len()
        )));
    }
    let (state_bytes, word_bytes) = payload.split_at(STATE_BYTES);
    let mut states = [0u32; LANES];
    for (s, b) in states.iter_mut().zip(state_bytes.chunks_exact(4)) {
        *s = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if *s < RANS_L {
            return Err(EntropyError::BadChunk(format!(
                "initial state {s:#x} below {RANS_L:#x}"
            )));
        }
    }
    Ok((
        states,
        WordReader {
            words: word_bytes.as_chunks::<2>().0,
            pos: 0,
        },
    ))
}

/// Decodes one block (a whole number of groups, or the chunk's tail) with one table:
/// vector path first, scalar loop for the rest.
fn decode_block(
    states: &mut [u32; LANES],
    reader: &mut WordReader,
    table: &DecTable,
    out: &mut [u16],
) {
    let done = simd::decode_groups([&mut *states], [&mut *reader], [table], [&mut *out]);
    decode_scalar(states, reader, table, &mut out[done..]);
}

/// A correct chunk consumes exactly its words and returns every lane to `RANS_L`.
fn finish_chunk(states: &[u32; LANES], reader: &WordReader) -> Result<(), EntropyError> {
    let words = reader.words.len();
    if reader.pos != words {
        return Err(EntropyError::BadChunk(format!(
            "decoder consumed {} of {words} words",
            reader.pos
        )));
    }
    if let Some(lane) = states.iter().position(|&s| s != RANS_L) {
        return Err(EntropyError::BadChunk(format!(
            "lane {lane} ended in state {:#x}, expected {RANS_L:#x}",
            states[lane]
        )));
    }
    Ok(())
}

/// Decodes `out` with the portable scalar loop; `out` starts at a multiple of [`LANES`].
fn decode_scalar(
    states: &mut [u32; LANES],
    reader: &mut WordReader,
    table: &DecTable,
    out: &mut [u16],
) {
    if table.inline {
        decode_scalar_layout::<true>(states, reader, table, out);
    } else {
        decode_scalar_layout::<false>(states, reader, table, out);
    }
}

/// [`decode_scalar`] for one slot layout (`INLINE`: see [`DecTable`]).
fn decode_scalar_layout<const INLINE: bool>(
    states: &mut [u32; LANES],
    reader: &mut WordReader,
    table: &DecTable,
    out: &mut [u16],
) {
    let (groups, rest) = out.as_chunks_mut::<LANES>();
    for group in groups {
        for lane in 0..LANES {
            group[lane] = decode_step::<INLINE>(&mut states[lane], table, reader);
        }
    }
    for (x, o) in states.iter_mut().zip(rest) {
        *o = decode_step::<INLINE>(x, table, reader);
    }
}

/// One decode step of one lane: look up the slot, advance the state, renormalise
/// branch-free (the renormalisation is taken at random, so a branch would mispredict).
#[inline(always)]
fn decode_step<const INLINE: bool>(x: &mut u32, table: &DecTable, reader: &mut WordReader) -> u16 {
    let entry = table.slots[(*x & (PROB_SCALE - 1)) as usize];
    let freq_mask = if INLINE { 0x7FF } else { 0xFFF };
    let freq = ((entry >> 12) & freq_mask) + 1;
    let y = freq * (*x >> PROB_BITS) + (entry & 0xFFF);
    let need = u32::from(y < RANS_L);
    let word = u32::from(reader.peek()) & need.wrapping_neg();
    *x = (y << (need * 16)) | word;
    reader.pos += need as usize;
    if INLINE {
        (entry >> 23) as u16
    } else {
        table.symbols[(entry >> 24) as usize]
    }
}

/// Reads 16-bit words; past the end it yields zeros and keeps counting, so the overrun
/// shows up as a position beyond the word count.
pub(crate) struct WordReader<'a> {
    pub(crate) words: &'a [[u8; 2]],
    pub(crate) pos: usize,
}

impl WordReader<'_> {
    /// The word at the current position, or 0 past the end.
    #[inline(always)]
    fn peek(&self) -> u16 {
        self.words
            .get(self.pos)
            .map_or(0, |&w| u16::from_le_bytes(w))
    }
}

/// Vector decoding of whole 16-symbol groups, chosen at run time.
mod simd {
    use super::{DecTable, EncTable, WordReader, LANES};

    /// Decodes as many leading whole groups of each of `N` independent chunks' outputs as
    /// the vector path can (the same number in each), returning the number of symbols
    /// written to each; the caller finishes with the scalar loop.
    pub(super) fn decode_groups<const N: usize>(
        states: [&mut [u32; LANES]; N],
        readers: [&mut WordReader; N],
        tables: [&DecTable; N],
        outs: [&mut [u16]; N],
    ) -> usize {
        #[cfg(target_arch = "x86_64")]
        {
            if crate::cpu::avx512_enabled() {
                // SAFETY: the CPU supports every feature the function enables.
                return unsafe {
                    if tables.iter().all(|t| t.inline) {
                        x86::decode_groups_avx512::<N, true>(states, readers, tables, outs)
                    } else if tables.iter().all(|t| !t.inline) {
                        x86::decode_groups_avx512::<N, false>(states, readers, tables, outs)
                    } else {
                        // Mixed layouts: leave it all to the scalar loop (callers avoid this).
                        0
                    }
                };
            }
        }
        let _ = (states, readers, tables, outs);
        0
    }

    /// Codes whole groups `g-1, g-2, …` (all within `symbols`) with the vector path while
    /// it is available, placing words as [`super::encode_chunk`] describes; returns the
    /// number of groups coded (0 when the vector path is unavailable).
    pub(super) fn encode_groups(
        states: &mut [u32; LANES],
        symbols: &[u16],
        tables: &[&EncTable],
        block_len: usize,
        g: usize,
        words: &mut [[u8; 2]],
        start: &mut usize,
    ) -> usize {
        #[cfg(target_arch = "x86_64")]
        {
            if crate::cpu::avx512_enabled() {
                // SAFETY: the CPU supports every feature the function enables.
                return unsafe {
                    x86::encode_groups_avx512(states, symbols, tables, block_len, g, words, start)
                };
            }
        }
        let _ = (states, symbols, tables, block_len, g, words, start);
        0
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::super::{DecTable, EncTable, WordReader, LANES, RANS_L};
        use crate::entropy::model::PROB_BITS;
        use std::arch::x86_64::*;

        /// Encodes groups `g-1` down to 0 (each of LANES symbols, all in `symbols`): per
        /// 16-lane vector, gather `freq << 16 | start`, renormalise the lanes at or above
        /// `freq · 2^20` (their low words compressed into lane order in registers, then
        /// stored under a length mask), and compute `x / freq` by f32 division corrected
        /// to the exact quotient.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi2,popcnt")]
        pub(super) unsafe fn encode_groups_avx512(
            states: &mut [u32; LANES],
            symbols: &[u16],
            tables: &[&EncTable],
            block_len: usize,
            g: usize,
            words: &mut [[u8; 2]],
            start: &mut usize,
        ) -> usize {
            assert!(g * LANES <= symbols.len() && words.len() >= symbols.len() + LANES);
            let lanes = states.as_mut_ptr() as *mut __m512i;
            // SAFETY: `states` is 32 u32s, exactly two 512-bit vectors.
            let mut x = unsafe { [_mm512_loadu_si512(lanes), _mm512_loadu_si512(lanes.add(1))] };
            let low16 = _mm512_set1_epi32(0xFFFF);
            let one = _mm512_set1_epi32(1);
            let zero = _mm512_setzero_si512();
            let mut wp = *start;
            for group in (0..g).rev() {
                let table = tables[group * LANES / block_len];
                let packed = table.packed.as_ptr() as *const i32;
                let base = group * LANES;
                let mut words16 = [_mm256_setzero_si256(); 2];
                let mut masks = [0u16; 2];
                for v in 0..2 {
                    // SAFETY: base + 16v + 16 ≤ g·LANES ≤ symbols.len().
                    let s = unsafe {
                        _mm256_loadu_si256(symbols.as_ptr().add(base + 16 * v) as *const __m256i)
                    };
                    let s = _mm512_cvtepu16_epi32(s);
                    // SAFETY: symbols are below 1 << symbol_bits = table.packed.len().
                    let e = unsafe { _mm512_i32gather_epi32::<4>(s, packed) };
                    let freq = _mm512_srli_epi32::<16>(e);
                    let cum = _mm512_and_si512(e, low16);
                    let m = _mm512_cmpge_epu32_mask(
                        _mm512_srli_epi32::<{ 32 - PROB_BITS }>(x[v]),
                        freq,
                    );
                    words16[v] = _mm512_cvtepi32_epi16(x[v]);
                    masks[v] = m;
                    let y = _mm512_mask_srli_epi32(x[v], m, x[v], 16);
                    // y < 2^32 and freq ≤ 2^12: the f32 quotient is within 1/8 of y / freq,
                    // so the truncated quotient is off by at most one either way.
                    let qf = _mm512_div_ps(_mm512_cvtepu32_ps(y), _mm512_cvtepu32_ps(freq));
                    let mut q = _mm512_cvttps_epu32(qf);
                    let mut r = _mm512_sub_epi32(y, _mm512_mullo_epi32(q, freq));
                    let low = _mm512_cmplt_epi32_mask(r, zero);
                    q = _mm512_mask_sub_epi32(q, low, q, one);
                    r = _mm512_mask_add_epi32(r, low, r, freq);
                    let high = _mm512_cmpge_epi32_mask(r, freq);
                    q = _mm512_mask_add_epi32(q, high, q, one);
                    r = _mm512_mask_sub_epi32(r, high, r, freq);
                    x[v] = _mm512_add_epi32(
                        _mm512_add_epi32(_mm512_slli_epi32::<PROB_BITS>(q), r),
                        cum,
                    );
                }
                let (c0, c1) = (
                    masks[0].count_ones() as usize,
                    masks[1].count_ones() as usize,
                );
                wp -= c0 + c1;
                // Compress in registers and store with a length mask: a compress-store
                // straight to memory is microcoded and very slow on some cores (Zen 4).
                let packed0 = _mm256_maskz_compress_epi16(masks[0], words16[0]);
                let packed1 = _mm256_maskz_compress_epi16(masks[1], words16[1]);
                // SAFETY: each group emits at most LANES words and the buffer holds one per
                // symbol plus LANES, so [wp, wp + c0 + c1) lies within words; the masks
                // write exactly c0 and c1 words.
                unsafe {
                    let dst = words.as_mut_ptr().add(wp) as *mut i16;
                    _mm256_mask_storeu_epi16(dst, low_mask(c0), packed0);
                    _mm256_mask_storeu_epi16(dst.add(c0), low_mask(c1), packed1);
                }
            }
            // SAFETY: as for the loads above.
            unsafe {
                _mm512_storeu_si512(lanes, x[0]);
                _mm512_storeu_si512(lanes.add(1), x[1]);
            }
            *start = wp;
            g
        }

        /// A mask of the low `n` (≤ 16) bits.
        #[inline(always)]
        fn low_mask(n: usize) -> u16 {
            ((1u32 << n) - 1) as u16
        }

        /// Two 16-lane state vectors per chunk and step, `N` chunks interleaved: gather the
        /// slot entries, update all states, and refill the lanes that fell below `RANS_L`
        /// with the next words in lane order (the order the scalar decoder reads them).
        /// With `INLINE` tables the symbol comes from the slot entry itself; otherwise a
        /// second gather maps the entry's index to its symbol.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi2,popcnt")]
        pub(super) unsafe fn decode_groups_avx512<const N: usize, const INLINE: bool>(
            states: [&mut [u32; LANES]; N],
            readers: [&mut WordReader; N],
            tables: [&DecTable; N],
            outs: [&mut [u16]; N],
        ) -> usize {
            let groups = outs.iter().map(|o| o.len() / LANES).min().unwrap_or(0);
            let n_words: [usize; N] = std::array::from_fn(|j| readers[j].words.len());
            let words: [*const u8; N] =
                std::array::from_fn(|j| readers[j].words.as_ptr() as *const u8);
            let mut pos: [usize; N] = std::array::from_fn(|j| readers[j].pos);
            let mut x = [[_mm512_setzero_si512(); 2]; N];
            for j in 0..N {
                let lanes = states[j].as_ptr() as *const __m512i;
                // SAFETY: `states[j]` is 32 u32s, exactly two 512-bit vectors.
                x[j] = unsafe { [_mm512_loadu_si512(lanes), _mm512_loadu_si512(lanes.add(1))] };
            }
            let slot_mask = _mm512_set1_epi32((1 << PROB_BITS) - 1);
            let low12 = _mm512_set1_epi32(0xFFF);
            let freq_mask = _mm512_set1_epi32(if INLINE { 0x7FF } else { 0xFFF });
            let one = _mm512_set1_epi32(1);
            let lower = _mm512_set1_epi32(RANS_L as i32);
            let mut g = 0;
            // A step reads at most LANES words per chunk: stay where that cannot pass an end.
            while g < groups && (0..N).all(|j| pos[j] + LANES <= n_words[j]) {
                let mut e = [[_mm512_setzero_si512(); 2]; N];
                let mut y = [[_mm512_setzero_si512(); 2]; N];
                for j in 0..N {
                    let slots = tables[j].slots.as_ptr() as *const i32;
                    for v in 0..2 {
                        let slot = _mm512_and_si512(x[j][v], slot_mask);
                        // SAFETY: slot < 4096 = table.slots.len(), scaled by 4 bytes.
                        e[j][v] = unsafe { _mm512_i32gather_epi32::<4>(slot, slots) };
                        let freq = _mm512_add_epi32(
                            _mm512_and_si512(_mm512_srli_epi32::<12>(e[j][v]), freq_mask),
                            one,
                        );
                        y[j][v] = _mm512_add_epi32(
                            _mm512_mullo_epi32(freq, _mm512_srli_epi32::<PROB_BITS>(x[j][v])),
                            _mm512_and_si512(e[j][v], low12),
                        );
                    }
                }
                for j in 0..N {
                    let symbols = tables[j].symbols32.as_ptr() as *const i32;
                    for v in 0..2 {
                        let need = _mm512_cmplt_epu32_mask(y[j][v], lower);
                        // SAFETY: pos + 32 ≤ n_words at the step's start and pos advanced by
                        // at most 16 since, so 16 words from pos are in bounds. (Load, then
                        // expand in registers: expand-loads from memory are slow on some
                        // cores.)
                        let next = unsafe {
                            _mm256_loadu_si256(words[j].add(2 * pos[j]) as *const __m256i)
                        };
                        let w = _mm512_cvtepu16_epi32(_mm256_maskz_expand_epi16(need, next));
                        x[j][v] = _mm512_mask_or_epi32(
                            y[j][v],
                            need,
                            _mm512_slli_epi32::<16>(y[j][v]),
                            w,
                        );
                        pos[j] += need.count_ones() as usize;
                        let sym = if INLINE {
                            _mm512_srli_epi32::<23>(e[j][v])
                        } else {
                            let idx = _mm512_srli_epi32::<24>(e[j][v]);
                            // SAFETY: idx < 256 = table.symbols32.len(), scaled by 4 bytes.
                            unsafe { _mm512_i32gather_epi32::<4>(idx, symbols) }
                        };
                        // SAFETY: group g covers out[32g..32g+32], in bounds since g < groups.
                        unsafe {
                            _mm256_storeu_si256(
                                outs[j].as_mut_ptr().add(g * LANES + 16 * v) as *mut __m256i,
                                _mm512_cvtepi32_epi16(sym),
                            )
                        };
                    }
                }
                g += 1;
            }
            for j in 0..N {
                let lanes = states[j].as_mut_ptr() as *mut __m512i;
                // SAFETY: as for the loads above.
                unsafe {
                    _mm512_storeu_si512(lanes, x[j][0]);
                    _mm512_storeu_si512(lanes.add(1), x[j][1]);
                }
                readers[j].pos = pos[j];
            }
            g * LANES
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::FreqTable;
    use super::*;

    fn histogram(symbols: &[u16], bits: u32) -> Vec<u32> {
        let mut h = vec![0u32; 1 << bits];
        for &s in symbols {
            h[usize::from(s)] += 1;
        }
        h
    }

    fn round_trip(symbols: &[u16], bits: u32) -> Vec<u8> {
        let table = FreqTable::from_counts(&histogram(symbols, bits)).unwrap();
        let mut payload = Vec::new();
        let n_blocks = symbols.len().div_ceil(64).max(1);
        encode_chunk(
            symbols,
            &vec![&EncTable::new(&table, bits); n_blocks],
            64,
            &mut payload,
        );
        let mut back = vec![0u16; symbols.len()];
        decode_chunk(
            &payload,
            &vec![&DecTable::new(&table); n_blocks],
            64,
            &mut back,
        )
        .unwrap();
        assert_eq!(back, symbols);
        payload
    }

    #[test]
    fn round_trips_skewed_and_uniform_data() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let skewed: Vec<u16> = (0..100_003)
            .map(|_| (next().trailing_zeros() as u16).min(40) + 100)
            .collect();
        let payload = round_trip(&skewed, 9);
        // ~2 bits of entropy per symbol: the chunk must be far below 9 bits per symbol.
        assert!(
            payload.len() * 8 < skewed.len() * 3,
            "{} bytes",
            payload.len()
        );
        let uniform: Vec<u16> = (0..5000).map(|_| (next() & 0xFF) as u16).collect();
        round_trip(&uniform, 8);
        round_trip(&[7], 9);
        round_trip(&[3; 33], 9);
    }

    #[test]
    fn vector_and_scalar_paths_agree() {
        let mut seed = 99u64;
        let symbols: Vec<u16> = (0..70_001)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                ((seed >> 33).trailing_zeros() as u16 * 3) % 200
            })
            .collect();
        // Two tables over alternating blocks, one of them with a single symbol's worth of
        // mass on the most common value (frequency up to the full scale).
        let table_a = FreqTable::from_counts(&histogram(&symbols, 8)).unwrap();
        let mut skewed = histogram(&symbols, 8);
        skewed[0] *= 1000;
        let table_b = FreqTable::from_counts(&skewed).unwrap();
        let enc = [EncTable::new(&table_a, 8), EncTable::new(&table_b, 8)];
        let dec = [DecTable::new(&table_a), DecTable::new(&table_b)];
        let block_len = 1024;
        let n_blocks = symbols.len().div_ceil(block_len);
        let enc_refs: Vec<&EncTable> = (0..n_blocks).map(|b| &enc[b % 2]).collect();
        let dec_refs: Vec<&DecTable> = (0..n_blocks).map(|b| &dec[b % 2]).collect();
        let mut payloads = Vec::new();
        let mut outs = Vec::new();
        for force_scalar in [false, true] {
            crate::cpu::set_simd_enabled(!force_scalar);
            let mut payload = Vec::new();
            encode_chunk(&symbols, &enc_refs, block_len, &mut payload);
            let mut out = vec![0u16; symbols.len()];
            let result = decode_chunk(&payload, &dec_refs, block_len, &mut out);
            crate::cpu::set_simd_enabled(true);
            result.unwrap();
            payloads.push(payload);
            outs.push(out);
        }
        assert!(
            payloads[0] == payloads[1],
            "vector and scalar encoders differ"
        );
        assert_eq!(outs[0], symbols);
        assert_eq!(outs[1], symbols);
        let single = FreqTable::from_counts(&[0, 5]).unwrap();
        let ones = vec![1u16; 100];
        for force_scalar in [false, true] {
            crate::cpu::set_simd_enabled(!force_scalar);
            let mut payload = Vec::new();
            encode_chunk(&ones, &[&EncTable::new(&single, 1)], 128, &mut payload);
            crate::cpu::set_simd_enabled(true);
            assert_eq!(payload.len(), STATE_BYTES, "a certain symbol costs nothing");
        }
    }

    #[test]
    fn both_slot_layouts_decode_alike_on_every_path() {
        let mut seed = 7u64;
        let symbols: Vec<u16> = (0..40_000)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                ((seed >> 40) % 200) as u16 + 200
            })
            .collect();
        let flat = FreqTable::from_counts(&histogram(&symbols, 9)).unwrap();
        let mut counts = histogram(&symbols, 9);
        counts[250] *= 5000;
        let peaked = FreqTable::from_counts(&counts).unwrap();
        let (inline, general) = (DecTable::new(&flat), DecTable::new(&peaked));
        assert!(inline.is_inline() && !general.is_inline());
        let block_len = 2048;
        let n_blocks = symbols.len().div_ceil(block_len);
        let enc = [EncTable::new(&flat, 9), EncTable::new(&peaked, 9)];
        // Chunk A uses the inline table only; chunk B alternates, so the pair decoder meets
        // both layouts side by side.
        let pick_a = |_: usize| 0;
        let pick_b = |b: usize| b % 2;
        let payload = |pick: &dyn Fn(usize) -> usize| {
            let tables: Vec<&EncTable> = (0..n_blocks).map(|b| &enc[pick(b)]).collect();
            let mut p = Vec::new();
            encode_chunk(&symbols, &tables, block_len, &mut p);
            p
        };
        let (pa, pb) = (payload(&pick_a), payload(&pick_b));
        let dec = [&inline, &general];
        let ta: Vec<&DecTable> = (0..n_blocks).map(|b| dec[pick_a(b)]).collect();
        let tb: Vec<&DecTable> = (0..n_blocks).map(|b| dec[pick_b(b)]).collect();
        for force_scalar in [false, true] {
            crate::cpu::set_simd_enabled(!force_scalar);
            let (mut a, mut b) = (vec![0u16; symbols.len()], vec![0u16; symbols.len()]);
            let pair = decode_chunk_pair([&pa, &pb], [&ta, &tb], block_len, [&mut a, &mut b]);
            let mut single = vec![0u16; symbols.len()];
            let one = decode_chunk(&pa, &ta, block_len, &mut single);
            crate::cpu::set_simd_enabled(true);
            pair.unwrap();
            one.unwrap();
            assert_eq!(a, symbols);
            assert_eq!(b, symbols);
            assert_eq!(single, symbols);
        }
    }

    #[test]
    fn corrupt_payloads_fail_cleanly() {
        let symbols: Vec<u16> = (0..4000u32).map(|i| ((i * 7919) % 13) as u16).collect();
        let table = FreqTable::from_counts(&histogram(&symbols, 4)).unwrap();
        let mut payload = Vec::new();
        encode_chunk(&symbols, &[&EncTable::new(&table, 4)], 4096, &mut payload);
        let dec = [&DecTable::new(&table)];
        let mut out = vec![0u16; symbols.len()];
        for cut in [0, 10, STATE_BYTES, payload.len() - 2] {
            assert!(
                decode_chunk(&payload[..cut], &dec, 4096, &mut out).is_err(),
                "cut at {cut}"
            );
        }
        let mut flipped = payload.clone();
        flipped[STATE_BYTES + 100] ^= 0x10;
        assert!(decode_chunk(&flipped, &dec, 4096, &mut out).is_err());
    }
}
