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

use super::model::{DecTable, EncEntry, EncTable, ScalarSlots, PROB_BITS, PROB_SCALE, RCP_SHIFT};
use super::EntropyError;
use crate::cpu::SimdLevel;

/// Independent rANS states per chunk.
pub const LANES: usize = 32;
/// Lower bound of the normalised state interval, and the encoder's initial state.
pub const RANS_L: u32 = 1 << 16;
/// Bytes of the state header at the start of a chunk payload.
pub const STATE_BYTES: usize = 4 * LANES;

/// What the decoder writes per symbol: `u16` for any field, `u8` for fields of 8-bit
/// symbols (FP8), which then decode straight into the tensor's bytes instead of through a
/// `u16` buffer and a narrowing pass.
pub(crate) trait Symbol: Copy {
    /// `symbol` as this type. Only called with symbols of the table in use, which
    /// [`FreqTable::parse`](super::model::FreqTable::parse) keeps below `2^symbol_bits`;
    /// callers pick `u8` only for streams of at most 8-bit symbols, so nothing is cut.
    fn from_symbol(symbol: u16) -> Self;
}

impl Symbol for u16 {
    #[inline(always)]
    fn from_symbol(symbol: u16) -> Self {
        symbol
    }
}

impl Symbol for u8 {
    #[inline(always)]
    fn from_symbol(symbol: u16) -> Self {
        symbol as u8
    }
}

/// Encodes `symbols` and appends the chunk payload to `out`. Symbol `i` is coded with
/// `tables[i / block_len]` (`block_len` a multiple of [`LANES`]).
///
/// Every symbol must have a non-zero frequency in its table, else nothing is appended and
/// the first symbol that has not is named in the error: the vector encoders gather table
/// entries by symbol value, so they only ever see symbols checked here.
pub fn encode_chunk(
    symbols: &[u16],
    tables: &[&EncTable],
    block_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), EntropyError> {
    check_blocks_enc(symbols, tables, block_len)?;
    if encode_chunk_on(crate::cpu::simd_level(), symbols, tables, block_len, out) {
        return Ok(());
    }
    // A coder met a symbol outside its table (and appended nothing): name the first one.
    check_symbols(symbols, tables, block_len)?;
    unreachable!("the coder refused a chunk whose symbols all check")
}

/// The structural half of what [`encode_chunk`] requires: `block_len` a positive multiple
/// of [`LANES`] and a table for every block. (Every symbol's presence in its block's table
/// is checked by the coders as they go, which costs a fraction of a pass of its own.)
fn check_blocks_enc(
    symbols: &[u16],
    tables: &[&EncTable],
    block_len: usize,
) -> Result<(), EntropyError> {
    if block_len == 0 || !block_len.is_multiple_of(LANES) {
        return Err(EntropyError::BlockLength {
            block_len,
            lanes: LANES,
        });
    }
    let needed = symbols.len().div_ceil(block_len);
    if tables.len() < needed {
        return Err(EntropyError::MissingTables {
            needed,
            have: tables.len(),
        });
    }
    Ok(())
}

/// Checks what [`encode_chunk`] requires, naming the first symbol absent from its
/// block's table.
fn check_symbols(
    symbols: &[u16],
    tables: &[&EncTable],
    block_len: usize,
) -> Result<(), EntropyError> {
    check_blocks_enc(symbols, tables, block_len)?;
    for (b, (block, table)) in symbols.chunks(block_len).zip(tables).enumerate() {
        let present = |&s: &u16| {
            table
                .entries
                .get(usize::from(s))
                .is_some_and(|e| e.freq > 0)
        };
        if let Some(k) = block.iter().position(|s| !present(s)) {
            return Err(EntropyError::SymbolNotInModel {
                index: b * block_len + k,
                symbol: block[k],
            });
        }
    }
    Ok(())
}

/// [`encode_chunk`] on the given code path (one the CPU supports), for a chunk that
/// [`check_blocks_enc`] accepted. Returns false, appending nothing, if a symbol is absent
/// from its block's table (the coders clamp such symbols to their table, so no lookup goes
/// out of bounds, and flag them).
fn encode_chunk_on(
    level: SimdLevel,
    symbols: &[u16],
    tables: &[&EncTable],
    block_len: usize,
    out: &mut Vec<u8>,
) -> bool {
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
        encode_into(level, symbols, tables, block_len, &mut buf[..need], out)
    })
}

thread_local! {
    /// Per-thread word buffer of the encoder: a fresh chunk-sized allocation per chunk
    /// would cost a page fault per 4 KiB.
    static ENCODE_WORDS: std::cell::RefCell<Vec<[u8; 2]>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn encode_into(
    level: SimdLevel,
    symbols: &[u16],
    tables: &[&EncTable],
    block_len: usize,
    words: &mut [[u8; 2]],
    out: &mut Vec<u8>,
) -> bool {
    let level = simd::encoder_level(level);
    crate::cpu::note_run(level);
    let mut states = [RANS_L; LANES];
    let mut start = words.len();
    let mut g = symbols.len().div_ceil(LANES);
    let mut all_present = true;
    while g > 0 {
        let full = symbols.len() / LANES;
        if g <= full {
            // SAFETY of the vector path is argued inside; it codes whole groups only.
            let (done, present) = simd::encode_groups(
                level,
                &mut states,
                symbols,
                tables,
                block_len,
                g,
                words,
                &mut start,
            );
            all_present &= present;
            g -= done;
            if done > 0 {
                continue;
            }
        }
        g -= 1;
        let group = &symbols[g * LANES..symbols.len().min(g * LANES + LANES)];
        let (next, present) = encode_group_scalar(
            &mut states,
            group,
            tables[g * LANES / block_len],
            words,
            start,
        );
        start = next;
        all_present &= present;
    }
    if !all_present {
        return false;
    }
    out.reserve(STATE_BYTES + 2 * (words.len() - start));
    for s in states {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.extend_from_slice(words[start..].as_flattened());
    true
}

/// The scalar path's encoder for whole groups `g-1, g-2, …, 0` (all within `symbols`),
/// placing words as [`encode_chunk`] describes; returns `(g, every symbol was in its
/// table)`. Plain Rust written for the compiler to pipeline: the 32 lanes are coded from
/// the last down, each writing its word (if any) just below the previous one, so the only
/// value carried from lane to lane is the write position; the table is fetched once per
/// block, the words go straight to their place, and every step is branch-free (an absent
/// symbol reads as frequency 0, which keeps the arithmetic in range and drops the chunk).
fn encode_groups_portable(
    states: &mut [u32; LANES],
    symbols: &[u16],
    tables: &[&EncTable],
    block_len: usize,
    g: usize,
    words: &mut [[u8; 2]],
    start: &mut usize,
) -> (usize, bool) {
    const ABSENT: EncEntry = EncEntry {
        freq: 0,
        start: 0,
        x_max: 0,
        rcp: 0,
    };
    let groups_per_block = block_len / LANES;
    let groups = symbols[..g * LANES].as_chunks::<LANES>().0;
    let mut wp = *start;
    let mut absent = 0u32;
    let mut end = g;
    while end > 0 {
        let first = (end - 1) / groups_per_block * groups_per_block;
        let entries = tables[first / groups_per_block].entries.as_slice();
        for group in groups[first..end].iter().rev() {
            // A group emits at most LANES words, written downwards from wp; the buffer
            // holds one word per symbol plus LANES, so wp ≥ LANES here.
            let window: &mut [[u8; 2]; LANES] = (&mut words[wp - LANES..wp])
                .try_into()
                .expect("a window of LANES words");
            // The index of the next free word of the window, minus one.
            let mut free = LANES - 1;
            // Four lanes per iteration, fully unrolled: no loop counter per lane.
            for (xs, syms) in states
                .as_chunks_mut::<4>()
                .0
                .iter_mut()
                .zip(group.as_chunks::<4>().0)
                .rev()
            {
                for (x, &sym) in xs.iter_mut().zip(syms).rev() {
                    let e = entries.get(usize::from(sym)).unwrap_or(&ABSENT);
                    // freq - 1 has its top bit set only for an absent symbol (freq 0).
                    absent |= e.freq.wrapping_sub(1);
                    // x must end below 2^32 after coding: renormalise while x ≥ freq ·
                    // 2^(32 - PROB_BITS). Taken at random: a select, not a branch.
                    let emit = u64::from(*x) >= e.x_max;
                    // At most 31 earlier lanes emitted, so free has not wrapped: the mask
                    // only spares a bounds check. A lane that emits nothing leaves a word
                    // that the next emitting lane (or the next group) overwrites.
                    window[free & (LANES - 1)] = (*x as u16).to_le_bytes();
                    free = free.wrapping_sub(usize::from(emit));
                    let y = std::hint::select_unpredictable(emit, *x >> 16, *x);
                    // q = y / freq (see `EncEntry::rcp`); wrapping only matters for the
                    // garbage of an absent symbol.
                    let q = ((u64::from(y) * e.rcp) >> RCP_SHIFT) as u32;
                    *x = (q << PROB_BITS)
                        .wrapping_add(y.wrapping_sub(q.wrapping_mul(e.freq)))
                        .wrapping_add(e.start);
                }
            }
            wp -= LANES - 1 - free;
        }
        end = first;
    }
    *start = wp;
    (g, absent >> 31 == 0)
}

/// Codes one group (lane `l` codes `group[l]`) and places its words, in lane order, just
/// before `words[start..]`; returns the new start, and whether every symbol was in the
/// table (an absent one is coded as if its frequency were 1: the chunk is dropped).
fn encode_group_scalar(
    states: &mut [u32; LANES],
    group: &[u16],
    table: &EncTable,
    words: &mut [[u8; 2]],
    start: usize,
) -> (usize, bool) {
    const ABSENT: EncEntry = EncEntry {
        freq: 1,
        start: 0,
        x_max: 1 << (32 - PROB_BITS),
        rcp: 1 << RCP_SHIFT,
    };
    let mut emitted = [[0u8; 2]; LANES];
    let mut count = 0;
    let mut present = true;
    for (x, &sym) in states.iter_mut().zip(group) {
        let e = match table.entries.get(usize::from(sym)) {
            Some(e) if e.freq > 0 => e,
            _ => {
                present = false;
                &ABSENT
            }
        };
        // x must end below 2^32 after coding: renormalise while x ≥ freq · 2^(32 - PROB_BITS).
        // Branch-free, since renormalisation is taken at random.
        let emit = u64::from(*x) >= e.x_max;
        // count < LANES here (it counts earlier lanes): the mask only spares a bounds check.
        emitted[count & (LANES - 1)] = (*x as u16).to_le_bytes();
        count += usize::from(emit);
        let y = if emit { *x >> 16 } else { *x };
        // q = y / freq by multiplication with the 44-bit reciprocal: exact, and within 64
        // bits, since y < freq · 2^20 after renormalisation (see `EncEntry::rcp`).
        let q = ((u64::from(y) * e.rcp) >> RCP_SHIFT) as u32;
        *x = (q << PROB_BITS) + (y - q * e.freq) + e.start;
    }
    words[start - count..start].copy_from_slice(&emitted[..count]);
    (start - count, present)
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
    decode_chunk_on(crate::cpu::simd_level(), payload, tables, block_len, out)
}

/// [`decode_chunk`] on the given code path (one the CPU supports).
fn decode_chunk_on<S: Symbol>(
    level: SimdLevel,
    payload: &[u8],
    tables: &[&DecTable],
    block_len: usize,
    out: &mut [S],
) -> Result<(), EntropyError> {
    check_blocks(tables, block_len, out.len())?;
    let (mut states, mut reader) = start_chunk(payload)?;
    let level = simd::decoder_level(level);
    crate::cpu::note_run(level);
    for (block, table) in out.chunks_mut(block_len).zip(tables) {
        decode_block(level, &mut states, &mut reader, table, block);
    }
    finish_chunk(&states, &reader)
}

/// Decodes two chunks, each as [`decode_chunk`] would: the AVX-512 decoder interleaves
/// them, which hides the latency of its table gathers.
pub fn decode_chunk_pair(
    payloads: [&[u8]; 2],
    tables: [&[&DecTable]; 2],
    block_len: usize,
    outs: [&mut [u16]; 2],
) -> Result<(), EntropyError> {
    decode_chunk_pair_on(crate::cpu::simd_level(), payloads, tables, block_len, outs)
}

/// [`decode_chunk`] writing symbols as `S`: `u8` for streams of at most 8-bit symbols
/// (FP8 fields decode straight into the tensor).
pub(crate) fn decode_chunk_as<S: Symbol>(
    payload: &[u8],
    tables: &[&DecTable],
    block_len: usize,
    out: &mut [S],
) -> Result<(), EntropyError> {
    decode_chunk_on(crate::cpu::simd_level(), payload, tables, block_len, out)
}

/// [`decode_chunk_pair`] writing symbols as `S` (see [`decode_chunk_as`]).
pub(crate) fn decode_chunk_pair_as<S: Symbol>(
    payloads: [&[u8]; 2],
    tables: [&[&DecTable]; 2],
    block_len: usize,
    outs: [&mut [S]; 2],
) -> Result<(), EntropyError> {
    decode_chunk_pair_on(crate::cpu::simd_level(), payloads, tables, block_len, outs)
}

/// [`decode_chunk_pair`] on the given code path (one the CPU supports).
fn decode_chunk_pair_on<S: Symbol>(
    level: SimdLevel,
    payloads: [&[u8]; 2],
    tables: [&[&DecTable]; 2],
    block_len: usize,
    outs: [&mut [S]; 2],
) -> Result<(), EntropyError> {
    let level = simd::decoder_level(level);
    crate::cpu::note_run(level);
    let [out_a, out_b] = outs;
    check_blocks(tables[0], block_len, out_a.len())?;
    check_blocks(tables[1], block_len, out_b.len())?;
    let (mut states_a, mut reader_a) = start_chunk(payloads[0])?;
    let (mut states_b, mut reader_b) = start_chunk(payloads[1])?;
    if level != SimdLevel::Avx512 {
        // Only the AVX-512 decoder gains from interleaving. The AVX2 one, with twice the
        // state vectors of one chunk, runs out of registers and spills: one chunk after
        // the other measured 12–25 % less CPU time on Zen 4 (BENCHMARKS.md, 2026-12-02
        // fifth session). The scalar loop never interleaved.
        for (block, table) in out_a.chunks_mut(block_len).zip(tables[0]) {
            decode_block(level, &mut states_a, &mut reader_a, table, block);
        }
        for (block, table) in out_b.chunks_mut(block_len).zip(tables[1]) {
            decode_block(level, &mut states_b, &mut reader_b, table, block);
        }
        finish_chunk(&states_a, &reader_a)?;
        return finish_chunk(&states_b, &reader_b);
    }
    let mut blocks_b = out_b.chunks_mut(block_len).zip(tables[1]);
    for (block_a, table_a) in out_a.chunks_mut(block_len).zip(tables[0]) {
        let Some((block_b, table_b)) = blocks_b.next() else {
            decode_block(level, &mut states_a, &mut reader_a, table_a, block_a);
            continue;
        };
        if table_a.inline != table_b.inline {
            // The vector step is compiled for one slot layout: decode the two apart.
            decode_block(level, &mut states_a, &mut reader_a, table_a, block_a);
            decode_block(level, &mut states_b, &mut reader_b, table_b, block_b);
            continue;
        }
        let done = simd::decode_groups(
            level,
            [&mut states_a, &mut states_b],
            [&mut reader_a, &mut reader_b],
            [table_a, table_b],
            [&mut *block_a, &mut *block_b],
        );
        decode_block(
            level,
            &mut states_a,
            &mut reader_a,
            table_a,
            &mut block_a[done..],
        );
        decode_block(
            level,
            &mut states_b,
            &mut reader_b,
            table_b,
            &mut block_b[done..],
        );
    }
    for (block_b, table_b) in blocks_b {
        decode_block(level, &mut states_b, &mut reader_b, table_b, block_b);
    }
    finish_chunk(&states_a, &reader_a)?;
    finish_chunk(&states_b, &reader_b)
}

fn check_blocks(tables: &[&DecTable], block_len: usize, n: usize) -> Result<(), EntropyError> {
    if block_len == 0 || !block_len.is_multiple_of(LANES) {
        return Err(EntropyError::BlockLength {
            block_len,
            lanes: LANES,
        });
    }
    if tables.len() < n.div_ceil(block_len) {
        return Err(EntropyError::MissingTables {
            needed: n.div_ceil(block_len),
            have: tables.len(),
        });
    }
    Ok(())
}

/// Reads a payload's initial states and positions a reader on its words.
fn start_chunk(payload: &[u8]) -> Result<([u32; LANES], WordReader<'_>), EntropyError> {
    if payload.len() < STATE_BYTES || !(payload.len() - STATE_BYTES).is_multiple_of(2) {
        return Err(EntropyError::PayloadSize {
            len: payload.len(),
            state_bytes: STATE_BYTES,
        });
    }
    let (state_bytes, word_bytes) = payload.split_at(STATE_BYTES);
    let mut states = [0u32; LANES];
    for (s, b) in states.iter_mut().zip(state_bytes.chunks_exact(4)) {
        *s = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if *s < RANS_L {
            return Err(EntropyError::InitialState {
                state: *s,
                min: RANS_L,
            });
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
fn decode_block<S: Symbol>(
    level: SimdLevel,
    states: &mut [u32; LANES],
    reader: &mut WordReader,
    table: &DecTable,
    out: &mut [S],
) {
    if level == SimdLevel::Scalar {
        decode_portable(states, reader, table.scalar(), out);
        return;
    }
    let done = simd::decode_groups(level, [&mut *states], [&mut *reader], [table], [&mut *out]);
    decode_scalar(states, reader, table, &mut out[done..]);
}

/// The scalar path's decoder (what CPUs without a vector path run, ARM among them):
/// plain Rust, fast through the table layout ([`ScalarSlots`]) and a branch-free step;
/// `out` starts at a multiple of [`LANES`].
fn decode_portable<S: Symbol>(
    states: &mut [u32; LANES],
    reader: &mut WordReader,
    table: &ScalarSlots,
    out: &mut [S],
) {
    let (groups, rest) = out.as_chunks_mut::<LANES>();
    let mut groups = groups.iter_mut();
    // The states live in a local copy while the loop runs: the compiler then need not
    // assume that the output stores may change them.
    let mut x = *states;
    while let Some(window) =
        reader.words[reader.pos.min(reader.words.len())..].first_chunk::<LANES>()
    {
        let Some(group) = groups.next() else { break };
        let mut used = 0usize;
        // Eight lanes per iteration: the lanes are independent but for the running word
        // count, so the lookups and multiplies of neighbouring lanes overlap.
        for (xs, outs) in x
            .as_chunks_mut::<PORTABLE_UNROLL>()
            .0
            .iter_mut()
            .zip(group.as_chunks_mut::<PORTABLE_UNROLL>().0)
        {
            for (x, o) in xs.iter_mut().zip(outs) {
                let slot = (*x & (PROB_SCALE - 1)) as usize;
                let [freq, offset] = table.freq_offset[slot];
                let y = u32::from(freq) * (*x >> PROB_BITS) + u32::from(offset);
                // SAFETY: `used` counts the words taken by the lanes before this one in
                // the group, so `used` ≤ lane < LANES = window.len(). (An unchecked read
                // instead of a masked index: the mask was one of the step's ~17
                // instructions, measured in BENCHMARKS.md, 2026-12-02 fifth session.)
                let word = u32::from(u16::from_le_bytes(unsafe { *window.get_unchecked(used) }));
                let need = y < RANS_L;
                // Renormalisation is taken at random: a select, not a branch.
                *x = std::hint::select_unpredictable(need, (y << 16) | word, y);
                used += usize::from(need);
                *o = S::from_symbol(table.symbols[slot]);
            }
        }
        reader.pos += used;
    }
    *states = x;
    for group in groups {
        for (x, o) in states.iter_mut().zip(group) {
            *o = S::from_symbol(portable_step(x, table, reader));
        }
    }
    for (x, o) in states.iter_mut().zip(rest) {
        *o = S::from_symbol(portable_step(x, table, reader));
    }
}

/// Lanes per iteration of [`decode_portable`]'s group loop: 8 measured 1.29–1.32 ns/symbol
/// against 1.32–1.49 for 4, 1.39–1.45 for 16 and 1.43–1.46 for 32 (Zen 4, `rans_loop`,
/// BENCHMARKS.md 2026-12-03): fewer loop-counter steps than 4, no spills as with 16 or 32.
const PORTABLE_UNROLL: usize = 8;

/// One step of [`decode_portable`] reading through the bounds-checked reader (near the end
/// of the words).
#[inline(always)]
fn portable_step(x: &mut u32, table: &ScalarSlots, reader: &mut WordReader) -> u16 {
    let slot = (*x & (PROB_SCALE - 1)) as usize;
    let [freq, offset] = table.freq_offset[slot];
    let y = u32::from(freq) * (*x >> PROB_BITS) + u32::from(offset);
    let need = y < RANS_L;
    let word = u32::from(reader.peek());
    *x = std::hint::select_unpredictable(need, (y << 16) | word, y);
    reader.pos += usize::from(need);
    table.symbols[slot]
}

/// A correct chunk consumes exactly its words and returns every lane to `RANS_L`.
fn finish_chunk(states: &[u32; LANES], reader: &WordReader) -> Result<(), EntropyError> {
    let words = reader.words.len();
    if reader.pos != words {
        return Err(EntropyError::WordsConsumed {
            consumed: reader.pos,
            words,
        });
    }
    if let Some(lane) = states.iter().position(|&s| s != RANS_L) {
        return Err(EntropyError::EndState {
            lane,
            state: states[lane],
            expected: RANS_L,
        });
    }
    Ok(())
}

/// Decodes `out` with the portable scalar loop; `out` starts at a multiple of [`LANES`].
fn decode_scalar<S: Symbol>(
    states: &mut [u32; LANES],
    reader: &mut WordReader,
    table: &DecTable,
    out: &mut [S],
) {
    if table.inline {
        decode_scalar_layout::<S, true>(states, reader, table, out);
    } else {
        decode_scalar_layout::<S, false>(states, reader, table, out);
    }
}

/// [`decode_scalar`] for one slot layout (`INLINE`: see [`DecTable`]).
fn decode_scalar_layout<S: Symbol, const INLINE: bool>(
    states: &mut [u32; LANES],
    reader: &mut WordReader,
    table: &DecTable,
    out: &mut [S],
) {
    let (groups, rest) = out.as_chunks_mut::<LANES>();
    let mut groups = groups.iter_mut();
    // While a whole group's worth of words remains, a group reads from a fixed window:
    // no bounds check and no branch per lane.
    while let Some(window) = reader.words[reader.pos.min(reader.words.len())..].first_chunk() {
        let Some(group) = groups.next() else { break };
        reader.pos += decode_group_windowed::<S, INLINE>(states, table, window, group);
    }
    for group in groups {
        for lane in 0..LANES {
            group[lane] = S::from_symbol(decode_step::<INLINE>(&mut states[lane], table, reader));
        }
    }
    for (x, o) in states.iter_mut().zip(rest) {
        *o = S::from_symbol(decode_step::<INLINE>(x, table, reader));
    }
}

/// Decodes one whole group reading its words from `window` (which holds at least every
/// word the group can need); returns the number of words used. The lanes are independent
/// but for the running word count, so the compiler can overlap their table lookups and
/// multiplies; the renormalisation is a mask, not a branch (it is taken at random).
#[inline(always)]
fn decode_group_windowed<S: Symbol, const INLINE: bool>(
    states: &mut [u32; LANES],
    table: &DecTable,
    window: &[[u8; 2]; LANES],
    out: &mut [S; LANES],
) -> usize {
    let mut used = 0usize;
    for lane in 0..LANES {
        let x = states[lane];
        let entry = table.slots[(x & (PROB_SCALE - 1)) as usize];
        let (freq, offset, symbol) = table.unpack::<INLINE>(entry);
        let y = freq * (x >> PROB_BITS) + offset;
        let need = u32::from(y < RANS_L);
        // `used` ≤ lane < LANES: the mask only spares the compiler a bounds check.
        let word = u32::from(u16::from_le_bytes(window[used & (LANES - 1)]));
        let keep = need.wrapping_neg();
        states[lane] = (((y << 16) | word) & keep) | (y & !keep);
        used += need as usize;
        out[lane] = S::from_symbol(symbol);
    }
    used
}

/// One decode step of one lane: look up the slot, advance the state, renormalise
/// branch-free (the renormalisation is taken at random, so a branch would mispredict).
#[inline(always)]
fn decode_step<const INLINE: bool>(x: &mut u32, table: &DecTable, reader: &mut WordReader) -> u16 {
    let entry = table.slots[(*x & (PROB_SCALE - 1)) as usize];
    let (freq, offset, symbol) = table.unpack::<INLINE>(entry);
    let y = freq * (*x >> PROB_BITS) + offset;
    let need = u32::from(y < RANS_L);
    let word = u32::from(reader.peek()) & need.wrapping_neg();
    *x = (y << (need * 16)) | word;
    reader.pos += need as usize;
    symbol
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

/// Vector coding of whole groups, on the path the caller chose.
mod simd {
    use super::{DecTable, EncTable, Symbol, WordReader, LANES};
    use crate::cpu::SimdLevel;

    /// The path whose decoder runs for `level`: `level` itself where the CPU has it (every
    /// level has a decoder), else the scalar one.
    pub(super) fn decoder_level(level: SimdLevel) -> SimdLevel {
        debug_assert!(
            level.is_supported(),
            "{level} requested on a CPU without it"
        );
        if level.is_supported() {
            level
        } else {
            SimdLevel::Scalar
        }
    }

    /// The path whose encoder runs for `level` (every level has one).
    pub(super) fn encoder_level(level: SimdLevel) -> SimdLevel {
        decoder_level(level)
    }

    /// Decodes as many leading whole groups of each of `N` independent chunks' outputs as
    /// the vector path of `level` (from [`decoder_level`]) can, the same number in each,
    /// returning the number of symbols written to each; the caller finishes with the
    /// scalar loop.
    pub(super) fn decode_groups<S: Symbol, const N: usize>(
        level: SimdLevel,
        states: [&mut [u32; LANES]; N],
        readers: [&mut WordReader; N],
        tables: [&DecTable; N],
        outs: [&mut [S]; N],
    ) -> usize {
        let inline = if tables.iter().all(|t| t.inline) {
            true
        } else if tables.iter().all(|t| !t.inline) {
            false
        } else {
            // Mixed layouts: leave it all to the scalar loop (callers avoid this).
            return 0;
        };
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY (all four calls): `level` comes from `decoder_level`, so the CPU
            // supports every feature the called function enables.
            match (level, inline) {
                (SimdLevel::Avx512, true) => {
                    return unsafe {
                        x86::decode_groups_avx512::<S, N, true>(states, readers, tables, outs)
                    }
                }
                (SimdLevel::Avx512, false) => {
                    return unsafe {
                        x86::decode_groups_avx512::<S, N, false>(states, readers, tables, outs)
                    }
                }
                (SimdLevel::Avx2, true) => {
                    return unsafe {
                        x86::decode_groups_avx2::<S, N, true>(states, readers, tables, outs)
                    }
                }
                (SimdLevel::Avx2, false) => {
                    return unsafe {
                        x86::decode_groups_avx2::<S, N, false>(states, readers, tables, outs)
                    }
                }
                (SimdLevel::Scalar, _) => {}
            }
        }
        let _ = (level, inline, states, readers, tables, outs);
        0
    }

    /// Codes whole groups `g-1, g-2, …` (all within `symbols`) with the vector encoder of
    /// `level` (from [`encoder_level`]), or the portable one on the scalar path, placing
    /// words as [`super::encode_chunk`] describes; returns the number of groups coded and whether
    /// every symbol coded was in its table (absent ones are clamped into the table and
    /// flagged: the chunk is then dropped).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn encode_groups(
        level: SimdLevel,
        states: &mut [u32; LANES],
        symbols: &[u16],
        tables: &[&EncTable],
        block_len: usize,
        g: usize,
        words: &mut [[u8; 2]],
        start: &mut usize,
    ) -> (usize, bool) {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY (both calls): `level` comes from `encoder_level`, so the CPU supports
            // every feature the called function enables.
            match level {
                SimdLevel::Avx512 => {
                    return unsafe {
                        x86::encode_groups_avx512(
                            states, symbols, tables, block_len, g, words, start,
                        )
                    }
                }
                SimdLevel::Avx2 => {
                    return unsafe {
                        x86::encode_groups_avx2(states, symbols, tables, block_len, g, words, start)
                    }
                }
                SimdLevel::Scalar => {}
            }
        }
        let _ = level;
        super::encode_groups_portable(states, symbols, tables, block_len, g, words, start)
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::super::{DecTable, EncTable, Symbol, WordReader, LANES, RANS_L};
        use crate::entropy::model::PROB_BITS;
        use std::arch::x86_64::*;

        /// Encodes groups `g-1` down to 0 (each of LANES symbols, all in `symbols`): per
        /// 16-lane vector, gather `freq << 16 | start`, renormalise the lanes at or above
        /// `freq · 2^20` (their low words compressed into lane order in registers, then
        /// stored under a length mask), and compute `x / freq` as an f32 product with
        /// `1 / freq` (divided off the state's dependency chain), corrected to the exact
        /// quotient.
        ///
        /// The table entries of the next group are gathered while the current one is
        /// coded: a group is a few hundred instructions, so the out-of-order window would
        /// otherwise not reach the next group's gathers before the states need them, and
        /// their latency would add to every group's.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi2,popcnt")]
        pub(super) unsafe fn encode_groups_avx512(
            states: &mut [u32; LANES],
            symbols: &[u16],
            tables: &[&EncTable],
            block_len: usize,
            g: usize,
            words: &mut [[u8; 2]],
            start: &mut usize,
        ) -> (usize, bool) {
            assert!(g * LANES <= symbols.len() && words.len() >= symbols.len() + LANES);
            if g == 0 {
                return (0, true);
            }
            let groups_per_block = block_len / LANES;
            let lanes = states.as_mut_ptr() as *mut __m512i;
            // SAFETY: `states` is 32 u32s, exactly two 512-bit vectors.
            let mut x = unsafe { [_mm512_loadu_si512(lanes), _mm512_loadu_si512(lanes.add(1))] };
            let low16 = _mm512_set1_epi32(0xFFFF);
            let one = _mm512_set1_epi32(1);
            let one_f = _mm512_set1_ps(1.0);
            let zero = _mm512_setzero_si512();
            let mut wp = *start;
            let mut absent = 0u16;
            // The block of group g - 1 and its first group: one division per call.
            let mut block = (g - 1) / groups_per_block;
            let mut block_first = block * groups_per_block;
            let mut next = gather_entries_avx512(symbols, g - 1, tables[block], &mut absent);
            for group in (0..g).rev() {
                let entries = next;
                if group > 0 {
                    if group - 1 < block_first {
                        block -= 1;
                        block_first -= groups_per_block;
                    }
                    next = gather_entries_avx512(symbols, group - 1, tables[block], &mut absent);
                }
                let mut words16 = [_mm256_setzero_si256(); 2];
                let mut masks = [0u16; 2];
                for v in 0..2 {
                    let e = entries[v];
                    let freq = _mm512_srli_epi32::<16>(e);
                    let cum = _mm512_and_si512(e, low16);
                    // q ≈ y · (1/freq): the reciprocal depends on the symbol alone, so its
                    // division runs off the state's dependency chain, which then holds a
                    // multiply instead of a division. y / freq < 2^20 (what renormalisation
                    // leaves) and the three roundings (y, 1/freq, the product) are each
                    // within 2^-24 relative, so the f32 quotient is within 2^20 · 3 · 2^-24
                    // < 1/5 of y / freq: the truncated quotient is off by at most one
                    // either way. (An absent symbol's frequency 0 gives garbage, no fault.)
                    let inv = _mm512_div_ps(one_f, _mm512_cvtepu32_ps(freq));
                    let m = _mm512_cmpge_epu32_mask(
                        _mm512_srli_epi32::<{ 32 - PROB_BITS }>(x[v]),
                        freq,
                    );
                    words16[v] = _mm512_cvtepi32_epi16(x[v]);
                    masks[v] = m;
                    let y = _mm512_mask_srli_epi32(x[v], m, x[v], 16);
                    let qf = _mm512_mul_ps(_mm512_cvtepu32_ps(y), inv);
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
            (g, absent == 0)
        }

        /// The packed entries `freq << 16 | start` of group `group`'s symbols in `table`,
        /// as two 16-lane vectors. Symbols past the table are clamped into it and flagged
        /// in `absent`, as are symbols of frequency 0 (the chunk is then dropped).
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi2,popcnt")]
        fn gather_entries_avx512(
            symbols: &[u16],
            group: usize,
            table: &EncTable,
            absent: &mut u16,
        ) -> [__m512i; 2] {
            let group_symbols: &[u16; LANES] = symbols[group * LANES..][..LANES]
                .try_into()
                .expect("a whole group");
            let packed = table.packed.as_ptr() as *const i32;
            let last = _mm512_set1_epi32(table.packed.len() as i32 - 1);
            std::array::from_fn(|v| {
                // SAFETY: the 16 symbols at 16v lie within `group_symbols`.
                let s = unsafe {
                    _mm256_loadu_si256(group_symbols.as_ptr().add(16 * v) as *const __m256i)
                };
                let s = _mm512_cvtepu16_epi32(s);
                let beyond = _mm512_cmpgt_epu32_mask(s, last);
                let s = _mm512_min_epu32(s, last);
                // SAFETY: s ≤ table.packed.len() - 1, scaled by 4 bytes.
                let e = unsafe { _mm512_i32gather_epi32::<4>(s, packed) };
                let freq = _mm512_srli_epi32::<16>(e);
                *absent |= beyond | _mm512_cmpeq_epi32_mask(freq, _mm512_setzero_si512());
                e
            })
        }

        /// Word compaction for the AVX2 encoder, indexed by the renormalise mask of four
        /// 32-bit lanes: the low 16 bits of the set lanes, in lane order, end up as the
        /// *last* `count` of four 16-bit words (the others zero), so a store that ends at
        /// the write position leaves its unused words below it, where nothing is yet.
        const COMPACT4_HIGH: [[u8; 16]; 16] = {
            let mut t = [[0x80u8; 16]; 16];
            let mut mask = 0;
            while mask < 16 {
                let count = (mask as u32).count_ones() as usize;
                let (mut lane, mut k) = (0, 0);
                while lane < 4 {
                    if mask >> lane & 1 == 1 {
                        let at = 2 * (4 - count + k);
                        t[mask][at] = 4 * lane as u8;
                        t[mask][at + 1] = 4 * lane as u8 + 1;
                        k += 1;
                    }
                    lane += 1;
                }
                mask += 1;
            }
            t
        };

        /// The AVX2 twin of [`encode_groups_avx512`]: four 8-lane vectors per group,
        /// taken from the last lane down. Each half-vector's emitted words are compacted
        /// by a byte shuffle and stored in one 8-byte store that ends at the write
        /// position; `x / freq` is an f32 product with `1 / freq` (divided off the state's
        /// dependency chain), corrected to the exact quotient (AVX2 converts only signed
        /// integers, so `y` is converted in two 16-bit halves).
        #[target_feature(enable = "avx2,bmi1,popcnt")]
        pub(super) unsafe fn encode_groups_avx2(
            states: &mut [u32; LANES],
            symbols: &[u16],
            tables: &[&EncTable],
            block_len: usize,
            g: usize,
            words: &mut [[u8; 2]],
            start: &mut usize,
        ) -> (usize, bool) {
            assert!(g * LANES <= symbols.len() && words.len() >= symbols.len() + LANES);
            if g == 0 {
                return (0, true);
            }
            let lanes = states.as_mut_ptr() as *mut __m256i;
            let mut x = [_mm256_setzero_si256(); 4];
            for (v, xv) in x.iter_mut().enumerate() {
                // SAFETY: `states` is 32 u32s, exactly four 256-bit vectors.
                *xv = unsafe { _mm256_loadu_si256(lanes.add(v)) };
            }
            let low16 = _mm256_set1_epi32(0xFFFF);
            let ones = _mm256_set1_epi32(-1);
            let zero = _mm256_setzero_si256();
            let two16 = _mm256_set1_ps(65536.0);
            let one_f = _mm256_set1_ps(1.0);
            let compact = COMPACT4_HIGH.as_ptr() as *const __m128i;
            let out = words.as_mut_ptr() as *mut u8;
            let mut wp = *start;
            let mut absent = zero;
            // The block of group g - 1 and its first group: one division per call. The
            // next group's entries are gathered while this one is coded (see
            // `encode_groups_avx512`).
            let groups_per_block = block_len / LANES;
            let mut block = (g - 1) / groups_per_block;
            let mut block_first = block * groups_per_block;
            let mut next = gather_entries_avx2(symbols, g - 1, tables[block], &mut absent);
            for group in (0..g).rev() {
                let entries = next;
                if group > 0 {
                    if group - 1 < block_first {
                        block -= 1;
                        block_first -= groups_per_block;
                    }
                    next = gather_entries_avx2(symbols, group - 1, tables[block], &mut absent);
                }
                for v in (0..4).rev() {
                    let e = entries[v];
                    let freq = _mm256_srli_epi32::<16>(e);
                    let cum = _mm256_and_si256(e, low16);
                    // Renormalise where x ≥ freq · 2^20; both sides are below 2^13, so the
                    // signed compare is exact.
                    let need = _mm256_xor_si256(
                        _mm256_cmpgt_epi32(
                            freq,
                            _mm256_srli_epi32::<{ 32 - PROB_BITS as i32 }>(x[v]),
                        ),
                        ones,
                    );
                    let mask = _mm256_movemask_ps(_mm256_castsi256_ps(need)) as usize;
                    let halves = [
                        (mask & 15, _mm256_castsi256_si128(x[v])),
                        (mask >> 4, _mm256_extracti128_si256::<1>(x[v])),
                    ];
                    for &(m, half) in halves.iter().rev() {
                        // SAFETY: m < 16 = COMPACT4_HIGH's length. Each symbol emits at
                        // most one word and the buffer holds one per symbol plus LANES, so
                        // wp ≥ LANES ≥ 4 here and the 8 bytes at wp - 4 are in bounds; the
                        // words below wp - count are not written yet (the encoder fills
                        // the buffer downwards), so overwriting them is harmless.
                        unsafe {
                            let packed_words =
                                _mm_shuffle_epi8(half, _mm_loadu_si128(compact.add(m)));
                            _mm_storel_epi64(out.add(2 * (wp - 4)) as *mut __m128i, packed_words);
                        }
                        wp -= m.count_ones() as usize;
                    }
                    // The reciprocal depends on the symbol alone: its division runs off
                    // the state's dependency chain, which then holds a multiply instead.
                    let inv = _mm256_div_ps(one_f, _mm256_cvtepi32_ps(freq));
                    let y = _mm256_blendv_epi8(x[v], _mm256_srli_epi32::<16>(x[v]), need);
                    // y < freq · 2^20 ≤ 2^32: converted exactly in halves, then one rounding.
                    // y / freq < 2^20 and the three roundings (y, 1/freq, the product) are
                    // each within 2^-24 relative, so the f32 quotient is within
                    // 2^20 · 3 · 2^-24 < 1/5 of y / freq: the truncated quotient is off by
                    // at most one either way.
                    let y_f = _mm256_add_ps(
                        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32::<16>(y)), two16),
                        _mm256_cvtepi32_ps(_mm256_and_si256(y, low16)),
                    );
                    let mut q = _mm256_cvttps_epi32(_mm256_mul_ps(y_f, inv));
                    let mut r = _mm256_sub_epi32(y, _mm256_mullo_epi32(q, freq));
                    // r is in (-freq, 2·freq): move one step down or up where it is out.
                    let low = _mm256_cmpgt_epi32(zero, r);
                    q = _mm256_add_epi32(q, low);
                    r = _mm256_add_epi32(r, _mm256_and_si256(low, freq));
                    let high = _mm256_xor_si256(_mm256_cmpgt_epi32(freq, r), ones);
                    q = _mm256_sub_epi32(q, high);
                    r = _mm256_sub_epi32(r, _mm256_and_si256(high, freq));
                    x[v] = _mm256_add_epi32(
                        _mm256_add_epi32(_mm256_slli_epi32::<{ PROB_BITS as i32 }>(q), r),
                        cum,
                    );
                }
            }
            for (v, &xv) in x.iter().enumerate() {
                // SAFETY: as for the loads above.
                unsafe { _mm256_storeu_si256(lanes.add(v), xv) };
            }
            *start = wp;
            (g, _mm256_testz_si256(absent, absent) == 1)
        }

        /// The packed entries `freq << 16 | start` of group `group`'s symbols in `table`,
        /// as four 8-lane vectors. Symbols past the table are clamped into it and flagged
        /// in `absent` (all ones), as are symbols of frequency 0 (the chunk is then
        /// dropped).
        #[target_feature(enable = "avx2,bmi1,popcnt")]
        fn gather_entries_avx2(
            symbols: &[u16],
            group: usize,
            table: &EncTable,
            absent: &mut __m256i,
        ) -> [__m256i; 4] {
            let group_symbols: &[u16; LANES] = symbols[group * LANES..][..LANES]
                .try_into()
                .expect("a whole group");
            let packed = table.packed.as_ptr() as *const i32;
            let last = _mm256_set1_epi32(table.packed.len() as i32 - 1);
            std::array::from_fn(|v| {
                // SAFETY: the 8 symbols at 8v lie within `group_symbols`.
                let s =
                    unsafe { _mm_loadu_si128(group_symbols.as_ptr().add(8 * v) as *const __m128i) };
                // Both sides of the compare are below 2^16, so the signed compare is exact.
                let s = _mm256_cvtepu16_epi32(s);
                let beyond = _mm256_cmpgt_epi32(s, last);
                let s = _mm256_min_epi32(s, last);
                // SAFETY: s ≤ table.packed.len() - 1, scaled by 4 bytes.
                let e = unsafe { _mm256_i32gather_epi32::<4>(packed, s) };
                let freq = _mm256_srli_epi32::<16>(e);
                let zero_freq = _mm256_cmpeq_epi32(freq, _mm256_setzero_si256());
                *absent = _mm256_or_si256(*absent, _mm256_or_si256(beyond, zero_freq));
                e
            })
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
        pub(super) unsafe fn decode_groups_avx512<S: Symbol, const N: usize, const INLINE: bool>(
            states: [&mut [u32; LANES]; N],
            readers: [&mut WordReader; N],
            tables: [&DecTable; N],
            outs: [&mut [S]; N],
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
            let low11 = _mm512_set1_epi32(0x7FF);
            let one = _mm512_set1_epi32(1);
            let lower = _mm512_set1_epi32(RANS_L as i32);
            let low9 = _mm512_set1_epi32(0x1FF);
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
                        // The inline layout keeps the frequency one shift from the gather
                        // (the state's dependency chain); see `DecTable`.
                        let (freq, offset) = if INLINE {
                            (
                                _mm512_srli_epi32::<20>(e[j][v]),
                                _mm512_and_si512(_mm512_srli_epi32::<9>(e[j][v]), low11),
                            )
                        } else {
                            (
                                _mm512_add_epi32(
                                    _mm512_and_si512(_mm512_srli_epi32::<12>(e[j][v]), low12),
                                    one,
                                ),
                                _mm512_and_si512(e[j][v], low12),
                            )
                        };
                        y[j][v] = _mm512_add_epi32(
                            _mm512_mullo_epi32(freq, _mm512_srli_epi32::<PROB_BITS>(x[j][v])),
                            offset,
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
                            _mm512_and_si512(e[j][v], low9)
                        } else {
                            let idx = _mm512_srli_epi32::<24>(e[j][v]);
                            // SAFETY: idx < 256 = table.symbols32.len(), scaled by 4 bytes.
                            unsafe { _mm512_i32gather_epi32::<4>(idx, symbols) }
                        };
                        let at = outs[j].as_mut_ptr().wrapping_add(g * LANES + 16 * v);
                        // SAFETY: group g covers out[32g..32g+32], in bounds since g < groups;
                        // 16 symbols of `S` are 16 bytes (`u8`) or 32 (`u16`), what is stored.
                        unsafe {
                            if size_of::<S>() == 1 {
                                // Symbols of u8 streams are below 2^8: truncation is exact.
                                _mm_storeu_si128(at as *mut __m128i, _mm512_cvtepi32_epi8(sym))
                            } else {
                                _mm256_storeu_si256(at as *mut __m256i, _mm512_cvtepi32_epi16(sym))
                            }
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

        /// Refill shuffles for four 32-bit lanes, indexed by the lanes' need mask: lane `i`
        /// with its bit set takes 16-bit word `k` of the source (`k` = set bits below `i`),
        /// the others zero.
        const REFILL4: [[u8; 16]; 16] = {
            let mut t = [[0x80u8; 16]; 16];
            let mut mask = 0;
            while mask < 16 {
                let (mut lane, mut k) = (0, 0u8);
                while lane < 4 {
                    if mask >> lane & 1 == 1 {
                        t[mask][4 * lane] = 2 * k;
                        t[mask][4 * lane + 1] = 2 * k + 1;
                        k += 1;
                    }
                    lane += 1;
                }
                mask += 1;
            }
            t
        };

        /// `vpgatherdd` done by hand: eight scalar loads of `table[idx[k]]`, packed into a
        /// vector by inserts. On Zen 4 a 256-bit gather costs more than that (the AVX2
        /// decoder spent ~14 % less CPU time with this in place: BENCHMARKS.md, 2026-12-02
        /// fifth session); the AVX-512 decoder keeps its gathers, which measured no slower.
        ///
        /// # Safety
        ///
        /// Every lane of `idx`, read as unsigned, must index an element of the `i32` array
        /// at `table`; the caller must have AVX2 (this is inlined into such functions).
        #[inline(always)]
        unsafe fn gather8_by_loads(table: *const i32, idx: __m256i) -> __m256i {
            let (lo, hi) = (
                _mm256_castsi256_si128(idx),
                _mm256_extracti128_si256::<1>(idx),
            );
            // Two indices per 64-bit extract: four extracts instead of eight.
            let pairs = [
                _mm_cvtsi128_si64(lo),
                _mm_extract_epi64::<1>(lo),
                _mm_cvtsi128_si64(hi),
                _mm_extract_epi64::<1>(hi),
            ]
            .map(|p| p as u64);
            // SAFETY: the caller guarantees every index is in bounds.
            let at = |k: u64| unsafe { *table.add(k as u32 as usize) };
            _mm256_setr_epi32(
                at(pairs[0]),
                at(pairs[0] >> 32),
                at(pairs[1]),
                at(pairs[1] >> 32),
                at(pairs[2]),
                at(pairs[2] >> 32),
                at(pairs[3]),
                at(pairs[3] >> 32),
            )
        }

        /// The AVX2 twin of [`decode_groups_avx512`]: four 8-lane state vectors per chunk
        /// and step. Refills take the lanes in halves of four: the need mask of a half picks
        /// a byte shuffle that spreads the next words, in lane order, over the lanes that
        /// need one. `N` chunks are interleaved to hide the latency of the gathers.
        #[target_feature(enable = "avx2,bmi1,popcnt")]
        pub(super) unsafe fn decode_groups_avx2<S: Symbol, const N: usize, const INLINE: bool>(
            states: [&mut [u32; LANES]; N],
            readers: [&mut WordReader; N],
            tables: [&DecTable; N],
            outs: [&mut [S]; N],
        ) -> usize {
            let groups = outs.iter().map(|o| o.len() / LANES).min().unwrap_or(0);
            let n_words: [usize; N] = std::array::from_fn(|j| readers[j].words.len());
            let words: [*const u8; N] =
                std::array::from_fn(|j| readers[j].words.as_ptr() as *const u8);
            let mut pos: [usize; N] = std::array::from_fn(|j| readers[j].pos);
            let mut x = [[_mm256_setzero_si256(); 4]; N];
            for j in 0..N {
                let lanes = states[j].as_ptr() as *const __m256i;
                for (v, xv) in x[j].iter_mut().enumerate() {
                    // SAFETY: `states[j]` is 32 u32s, exactly four 256-bit vectors.
                    *xv = unsafe { _mm256_loadu_si256(lanes.add(v)) };
                }
            }
            let low12 = _mm256_set1_epi32(0xFFF);
            let low11 = _mm256_set1_epi32(0x7FF);
            let low9 = _mm256_set1_epi32(0x1FF);
            let one = _mm256_set1_epi32(1);
            let zero = _mm256_setzero_si256();
            let refill = REFILL4.as_ptr() as *const __m128i;
            let mut g = 0;
            // A step reads at most LANES words per chunk: stay where that cannot pass an end.
            while g < groups && (0..N).all(|j| pos[j] + LANES <= n_words[j]) {
                for j in 0..N {
                    let slots = tables[j].slots.as_ptr() as *const i32;
                    let symbols = tables[j].symbols32.as_ptr() as *const i32;
                    let mut sym = [zero; 4];
                    let mut y = [zero; 4];
                    let mut need = [zero; 4];
                    let mut mask = 0usize;
                    for v in 0..4 {
                        let slot = _mm256_and_si256(x[j][v], low12);
                        // SAFETY: slot < 4096 = table.slots.len().
                        let e = unsafe { gather8_by_loads(slots, slot) };
                        // The inline layout keeps the frequency one shift from the gather
                        // (the state's dependency chain); see `DecTable`.
                        let (freq, offset) = if INLINE {
                            (
                                _mm256_srli_epi32::<20>(e),
                                _mm256_and_si256(_mm256_srli_epi32::<9>(e), low11),
                            )
                        } else {
                            (
                                _mm256_add_epi32(
                                    _mm256_and_si256(_mm256_srli_epi32::<12>(e), low12),
                                    one,
                                ),
                                _mm256_and_si256(e, low12),
                            )
                        };
                        y[v] = _mm256_add_epi32(
                            _mm256_mullo_epi32(
                                freq,
                                _mm256_srli_epi32::<{ PROB_BITS as i32 }>(x[j][v]),
                            ),
                            offset,
                        );
                        // y < RANS_L = 2^16 exactly when its high half is zero.
                        need[v] = _mm256_cmpeq_epi32(_mm256_srli_epi32::<16>(y[v]), zero);
                        mask |=
                            (_mm256_movemask_ps(_mm256_castsi256_ps(need[v])) as usize) << (8 * v);
                        sym[v] = if INLINE {
                            _mm256_and_si256(e, low9)
                        } else {
                            let idx = _mm256_srli_epi32::<24>(e);
                            // SAFETY: idx < 256 = table.symbols32.len().
                            unsafe { gather8_by_loads(symbols, idx) }
                        };
                    }
                    // Each half-vector's first word is found from the step's mask by one
                    // popcount, not by a chain of them through the halves before it.
                    for v in 0..4 {
                        let (lo, hi) = ((mask >> (8 * v)) & 15, (mask >> (8 * v + 4)) & 15);
                        let at_lo = pos[j] + (mask & ((1 << (8 * v)) - 1)).count_ones() as usize;
                        let at_hi = at_lo + lo.count_ones() as usize;
                        // SAFETY: at the step's start pos + 32 ≤ n_words, and at most 8v + 4
                        // words are taken before `at_hi`, so the 4 words (8 bytes) at `at_lo`
                        // and at `at_hi` are in bounds; `lo` and `hi` are below 16, REFILL4's
                        // length.
                        let w = unsafe {
                            let words_lo = _mm_loadl_epi64(words[j].add(2 * at_lo) as *const _);
                            let words_hi = _mm_loadl_epi64(words[j].add(2 * at_hi) as *const _);
                            _mm256_set_m128i(
                                _mm_shuffle_epi8(words_hi, _mm_loadu_si128(refill.add(hi))),
                                _mm_shuffle_epi8(words_lo, _mm_loadu_si128(refill.add(lo))),
                            )
                        };
                        x[j][v] = _mm256_blendv_epi8(
                            y[v],
                            _mm256_or_si256(_mm256_slli_epi32::<16>(y[v]), w),
                            need[v],
                        );
                    }
                    pos[j] += mask.count_ones() as usize;
                    // Symbols are below 2^16 (2^8 for `u8`), so the saturating packs are
                    // exact; they work per 128-bit lane, and the permutes restore lane order.
                    let halves = [
                        _mm256_permute4x64_epi64::<0xD8>(_mm256_packus_epi32(sym[0], sym[1])),
                        _mm256_permute4x64_epi64::<0xD8>(_mm256_packus_epi32(sym[2], sym[3])),
                    ];
                    let at = outs[j].as_mut_ptr().wrapping_add(g * LANES);
                    // SAFETY: group g covers out[32g..32g+32], in bounds since g < groups;
                    // 32 symbols of `S` are 32 bytes (`u8`) or 64 (`u16`), what is stored.
                    unsafe {
                        if size_of::<S>() == 1 {
                            let bytes = _mm256_permute4x64_epi64::<0xD8>(_mm256_packus_epi16(
                                halves[0], halves[1],
                            ));
                            _mm256_storeu_si256(at as *mut __m256i, bytes);
                        } else {
                            _mm256_storeu_si256(at as *mut __m256i, halves[0]);
                            _mm256_storeu_si256((at as *mut __m256i).add(1), halves[1]);
                        }
                    }
                }
                g += 1;
            }
            for j in 0..N {
                let lanes = states[j].as_mut_ptr() as *mut __m256i;
                for (v, &xv) in x[j].iter().enumerate() {
                    // SAFETY: as for the loads above.
                    unsafe { _mm256_storeu_si256(lanes.add(v), xv) };
                }
                readers[j].pos = pos[j];
            }
            g * LANES
        }

        #[cfg(test)]
        mod tests {
            use super::*;

            /// The hand-made gather returns what `vpgatherdd` returns, for indices across
            /// the whole table (the last element included).
            #[test]
            fn gather_by_loads_matches_the_gather_instruction() {
                if !std::arch::is_x86_feature_detected!("avx2") {
                    eprintln!("skipped: this CPU has no AVX2");
                    return;
                }
                let table: Vec<i32> = (0..4096)
                    .map(|i| (i * 2_654_435_761u32 as i64) as i32)
                    .collect();
                let mut seed = 5u32;
                for round in 0..200 {
                    let idx: [i32; 8] = std::array::from_fn(|k| {
                        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        match (round + k) % 5 {
                            0 => 4095,
                            1 => 0,
                            _ => (seed >> 20) as i32,
                        }
                    });
                    // SAFETY: AVX2 was detected above; every index is below 4096 =
                    // table.len(), and both vectors are 8 i32s.
                    let (by_loads, by_gather) = unsafe {
                        let v = _mm256_loadu_si256(idx.as_ptr() as *const __m256i);
                        (
                            gather8_by_loads(table.as_ptr(), v),
                            _mm256_i32gather_epi32::<4>(table.as_ptr(), v),
                        )
                    };
                    let (mut a, mut b) = ([0i32; 8], [0i32; 8]);
                    // SAFETY: AVX2 was detected; a and b hold 8 i32s each.
                    unsafe {
                        _mm256_storeu_si256(a.as_mut_ptr() as *mut __m256i, by_loads);
                        _mm256_storeu_si256(b.as_mut_ptr() as *mut __m256i, by_gather);
                    }
                    assert_eq!(a, b, "indices {idx:?}");
                    assert_eq!(a, idx.map(|i| table[i as usize]));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::FreqTable;
    use super::*;

    /// A xorshift64 generator from `seed` (not zero): the tests' random data.
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

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
        )
        .unwrap();
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
        let mut next = xorshift(0x1234_5678_9abc_def0);
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
        let mut reference = Vec::new();
        encode_chunk_on(
            SimdLevel::Scalar,
            &symbols,
            &enc_refs,
            block_len,
            &mut reference,
        );
        for level in SimdLevel::supported() {
            let mut payload = Vec::new();
            encode_chunk_on(level, &symbols, &enc_refs, block_len, &mut payload);
            assert!(payload == reference, "{level} and scalar encoders differ");
            let mut out = vec![0u16; symbols.len()];
            decode_chunk_on(level, &payload, &dec_refs, block_len, &mut out).unwrap();
            assert!(out == symbols, "{level} decoder");
            // Truncated words: every path must stop on the overrun, not read past it.
            let cut = &payload[..payload.len() - 2];
            assert!(decode_chunk_on(level, cut, &dec_refs, block_len, &mut out).is_err());
        }
        let single = FreqTable::from_counts(&[0, 5]).unwrap();
        let ones = vec![1u16; 100];
        for level in SimdLevel::supported() {
            let mut payload = Vec::new();
            encode_chunk_on(
                level,
                &ones,
                &[&EncTable::new(&single, 1)],
                128,
                &mut payload,
            );
            assert_eq!(payload.len(), STATE_BYTES, "a certain symbol costs nothing");
        }
    }

    #[test]
    fn every_path_codes_random_tables_and_lengths_like_scalar() {
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
        for round in 0..40 {
            let bits = 1 + (round % 9) as u32;
            let alphabet = 1usize << bits;
            // Skewed counts: some symbols dominate, some occur once (frequency 1).
            let mut counts: Vec<u32> = (0..alphabet)
                .map(|_| match next() % 4 {
                    0 => 0,
                    1 => 1,
                    2 => (next() % 50) as u32 + 1,
                    _ => (next() % 100_000) as u32,
                })
                .collect();
            counts[(next() as usize) % alphabet] += 1;
            let present: Vec<u16> = (0..alphabet as u16)
                .filter(|&s| counts[usize::from(s)] > 0)
                .collect();
            let Some(table) = FreqTable::from_counts(&counts) else {
                continue;
            };
            let n = (next() % 6000) as usize;
            let symbols: Vec<u16> = (0..n)
                .map(|_| present[(next() as usize) % present.len()])
                .collect();
            let block_len = LANES << (next() % 4);
            let n_blocks = n.div_ceil(block_len).max(1);
            let enc = EncTable::new(&table, bits);
            let dec = DecTable::new(&table);
            let mut reference = Vec::new();
            encode_chunk_on(
                SimdLevel::Scalar,
                &symbols,
                &vec![&enc; n_blocks],
                block_len,
                &mut reference,
            );
            for level in SimdLevel::supported() {
                let mut payload = Vec::new();
                encode_chunk_on(
                    level,
                    &symbols,
                    &vec![&enc; n_blocks],
                    block_len,
                    &mut payload,
                );
                assert!(
                    payload == reference,
                    "round {round}: {level} encoder differs"
                );
                let mut out = vec![0u16; n];
                decode_chunk_on(level, &payload, &vec![&dec; n_blocks], block_len, &mut out)
                    .unwrap();
                assert!(out == symbols, "round {round}: {level} decoder");
            }
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
            encode_chunk(&symbols, &tables, block_len, &mut p).unwrap();
            p
        };
        let (pa, pb) = (payload(&pick_a), payload(&pick_b));
        let dec = [&inline, &general];
        let ta: Vec<&DecTable> = (0..n_blocks).map(|b| dec[pick_a(b)]).collect();
        let tb: Vec<&DecTable> = (0..n_blocks).map(|b| dec[pick_b(b)]).collect();
        for level in SimdLevel::supported() {
            let (mut a, mut b) = (vec![0u16; symbols.len()], vec![0u16; symbols.len()]);
            decode_chunk_pair_on(level, [&pa, &pb], [&ta, &tb], block_len, [&mut a, &mut b])
                .unwrap();
            let mut single = vec![0u16; symbols.len()];
            decode_chunk_on(level, &pa, &ta, block_len, &mut single).unwrap();
            assert!(a == symbols && b == symbols, "{level} pair decoder");
            assert!(single == symbols, "{level} decoder");
        }
    }

    /// FP8 fields decode into bytes: every path, single chunks and pairs, both slot layouts
    /// (a peaked table takes the general one), lengths off the group size, must give the
    /// symbols the `u16` decoder gives, and fail where it fails.
    #[test]
    fn byte_outputs_decode_like_u16_on_every_path() {
        let mut next = xorshift(0xD1B5_4A32_D192_ED03);
        let mut layouts_seen = [false; 2];
        for round in 0..48 {
            let bits = 1 + (round % 8) as u32;
            let alphabet = 1usize << bits;
            let mut counts: Vec<u32> = (0..alphabet)
                .map(|_| match next() % 3 {
                    0 => 0,
                    1 => (next() % 40) as u32 + 1,
                    _ => (next() % 50_000) as u32,
                })
                .collect();
            let top = (next() as usize) % alphabet;
            counts[top] += if round % 2 == 0 { 1 } else { 5_000_000 };
            let present: Vec<u16> = (0..alphabet as u16)
                .filter(|&s| counts[usize::from(s)] > 0)
                .collect();
            let Some(table) = FreqTable::from_counts(&counts) else {
                continue;
            };
            let (enc, dec) = (EncTable::new(&table, bits), DecTable::new(&table));
            layouts_seen[usize::from(dec.is_inline())] = true;
            let block_len = LANES << (next() % 4);
            let lens = [(next() % 9000) as usize, (next() % 9000) as usize];
            let symbols = lens.map(|n| -> Vec<u16> {
                (0..n)
                    .map(|_| {
                        // Mostly the peak, so the peaked tables' runs are long.
                        if next().is_multiple_of(3) {
                            top as u16
                        } else {
                            present[(next() as usize) % present.len()]
                        }
                    })
                    .collect()
            });
            let tables = lens.map(|n| vec![&dec; n.div_ceil(block_len).max(1)]);
            let payloads = [0, 1].map(|k| {
                let mut p = Vec::new();
                let enc_tables = vec![&enc; tables[k].len()];
                encode_chunk(&symbols[k], &enc_tables, block_len, &mut p).unwrap();
                p
            });
            let bytes = [0, 1].map(|k| symbols[k].iter().map(|&s| s as u8).collect::<Vec<_>>());
            let mut cut = payloads[1].clone();
            cut.truncate(cut.len() - 2);
            for level in SimdLevel::supported() {
                let mut single = vec![0u8; lens[0]];
                decode_chunk_on(level, &payloads[0], &tables[0], block_len, &mut single).unwrap();
                assert!(single == bytes[0], "round {round}: {level} byte decoder");
                let (mut a, mut b) = (vec![0u8; lens[0]], vec![0u8; lens[1]]);
                decode_chunk_pair_on(
                    level,
                    [&payloads[0], &payloads[1]],
                    [&tables[0], &tables[1]],
                    block_len,
                    [&mut a, &mut b],
                )
                .unwrap();
                assert!(
                    a == bytes[0] && b == bytes[1],
                    "round {round}: {level} byte pair"
                );
                let (mut wide_a, mut wide_b) = (vec![0u16; lens[0]], vec![0u16; lens[1]]);
                let wide = decode_chunk_pair_on(
                    level,
                    [&payloads[0], &cut],
                    [&tables[0], &tables[1]],
                    block_len,
                    [&mut wide_a, &mut wide_b],
                );
                let narrow = decode_chunk_pair_on(
                    level,
                    [&payloads[0], &cut],
                    [&tables[0], &tables[1]],
                    block_len,
                    [&mut a, &mut b],
                );
                assert_eq!(
                    wide.map_err(|e| e.to_string()),
                    narrow.map_err(|e| e.to_string()),
                    "round {round}: {level} truncated"
                );
            }
        }
        assert_eq!(layouts_seen, [true, true], "both slot layouts met");
    }

    /// The vector encoders take `y / freq` as `trunc(f32(y) · f32(1 / freq))` and correct
    /// it by at most one either way: check that bound in the same IEEE single arithmetic
    /// for every frequency, at the top of the state range (where the error is largest),
    /// next to exact multiples, and at random states.
    #[test]
    fn reciprocal_quotient_is_within_one() {
        let mut next = xorshift(0x2545_F491_4F6C_DD1D);
        for freq in 1..=PROB_SCALE {
            let inv = 1.0f32 / freq as f32;
            let top = u64::from(freq) << (32 - PROB_BITS);
            let mut ys: Vec<u64> = (1..=64).map(|d| top - d).collect();
            for k in [1u64, 2, 3, 1 << 10, (top / u64::from(freq)) - 1] {
                let m = k * u64::from(freq);
                ys.extend([m - 1, m, m + 1].into_iter().filter(|&y| y < top));
            }
            ys.extend((0..64).map(|_| next() % top));
            for y in ys {
                let q = (y as u32 as f32 * inv) as u64;
                let exact = y / u64::from(freq);
                assert!(q.abs_diff(exact) <= 1, "freq {freq}, y {y}: {q} vs {exact}");
            }
        }
    }

    /// The portable whole-group encoder (the scalar path) writes exactly what coding one
    /// group at a time with the reference step writes, block tables and all.
    #[test]
    fn portable_encoder_matches_the_group_reference() {
        let mut next = xorshift(0x0123_4567_89AB_CDEF);
        for round in 0..20 {
            // Up to 256 symbols: what one table holds.
            let bits = 1 + (round % 8) as u32;
            let counts: Vec<u32> = (0..1usize << bits)
                .map(|_| (next() % 1000) as u32 + 1)
                .collect();
            let mut skewed = counts.clone();
            skewed[0] *= 3000;
            let tables = [
                EncTable::new(&FreqTable::from_counts(&counts).unwrap(), bits),
                EncTable::new(&FreqTable::from_counts(&skewed).unwrap(), bits),
            ];
            let n = LANES * (1 + (next() % 300) as usize);
            let symbols: Vec<u16> = (0..n).map(|_| (next() % (1 << bits)) as u16).collect();
            let block_len = LANES << (next() % 3);
            let refs: Vec<&EncTable> = (0..n.div_ceil(block_len)).map(|b| &tables[b % 2]).collect();
            let mut words = vec![[0u8; 2]; n + LANES];
            let (mut states, mut start) = ([RANS_L; LANES], words.len());
            let g = n / LANES;
            assert_eq!(
                encode_groups_portable(
                    &mut states,
                    &symbols,
                    &refs,
                    block_len,
                    g,
                    &mut words,
                    &mut start
                ),
                (g, true)
            );
            let mut ref_words = vec![[0u8; 2]; n + LANES];
            let (mut ref_states, mut ref_start) = ([RANS_L; LANES], ref_words.len());
            for group in (0..g).rev() {
                let (next_start, present) = encode_group_scalar(
                    &mut ref_states,
                    &symbols[group * LANES..][..LANES],
                    refs[group * LANES / block_len],
                    &mut ref_words,
                    ref_start,
                );
                assert!(present);
                ref_start = next_start;
            }
            assert_eq!((states, start), (ref_states, ref_start), "round {round}");
            assert!(words[start..] == ref_words[ref_start..], "round {round}");
        }
    }

    #[test]
    fn corrupt_payloads_fail_cleanly() {
        let symbols: Vec<u16> = (0..4000u32).map(|i| ((i * 7919) % 13) as u16).collect();
        let table = FreqTable::from_counts(&histogram(&symbols, 4)).unwrap();
        let mut payload = Vec::new();
        encode_chunk(&symbols, &[&EncTable::new(&table, 4)], 4096, &mut payload).unwrap();
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

    /// Symbols outside their table (zero frequency, or past the table's end) are refused
    /// with an error before any code path runs (the vector encoders gather table entries
    /// by symbol value). Before the check, the scalar path panicked on an index out of
    /// bounds and the AVX-512/AVX2 paths read past the table.
    #[test]
    fn symbols_outside_their_table_are_refused() {
        let table = FreqTable::from_counts(&[5, 0, 7, 1]).unwrap();
        let enc = EncTable::new(&table, 2);
        let good: Vec<u16> = (0..256u32).map(|i| [0, 2, 3][i as usize % 3]).collect();
        for (bad_at, bad) in [(0, 1u16), (200, 4), (255, 0xFFFF), (100, 1000)] {
            let mut symbols = good.clone();
            symbols[bad_at] = bad;
            let mut out = vec![9u8];
            assert_eq!(
                encode_chunk(&symbols, &[&enc; 4], 64, &mut out),
                Err(EntropyError::SymbolNotInModel {
                    index: bad_at,
                    symbol: bad
                })
            );
            assert_eq!(out, [9], "nothing appended");
        }
        let mut out = Vec::new();
        assert_eq!(
            encode_chunk(&good, &[&enc, &enc], 64, &mut out),
            Err(EntropyError::MissingTables { needed: 4, have: 2 })
        );
        assert_eq!(
            encode_chunk(&good, &[&enc; 8], 48, &mut out),
            Err(EntropyError::BlockLength {
                block_len: 48,
                lanes: LANES
            })
        );
        assert_eq!(
            encode_chunk(&good, &[&enc], 0, &mut out),
            Err(EntropyError::BlockLength {
                block_len: 0,
                lanes: LANES
            })
        );
        assert!(out.is_empty());
        encode_chunk(&good, &[&enc; 4], 64, &mut out).unwrap();
        assert!(!out.is_empty());
    }
}
