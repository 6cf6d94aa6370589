//! The rANS chunk encoder: checks, the scalar and portable group coders, and the
//! word layout of a payload (the vector group coders are in `simd`).

use super::*;

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
pub(super) fn encode_chunk_on(
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
    // Room for the 0–3 bytes of padding that the stream puts after the piece (payloads
    // start at multiples of 4), so that padding it does not move it.
    let len = STATE_BYTES + 2 * (words.len() - start) + 3;
    if out.capacity() == 0 {
        // A fresh piece: a spare buffer if there is one (its pages already mapped).
        *out = crate::recycle::buffer(len);
    } else {
        out.reserve(len);
    }
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
/// block, the words go straight to their place, and every step is branch-free. A step
/// reads the block's [`PortableEntry`] table, indexed by the symbol's low 9 bits without
/// a bounds check (a wider symbol is refused by one OR over the groups first): an absent
/// symbol reads as `cmpl = PROB_SCALE`, which keeps the arithmetic in range and drops
/// the chunk. Tables wider than 9 bits (never the codec's) are left to the group-at-a-
/// time coder: nothing is coded and `(0, true)` returned.
pub(super) fn encode_groups_portable(
    states: &mut [u32; LANES],
    symbols: &[u16],
    tables: &[&EncTable],
    block_len: usize,
    g: usize,
    words: &mut [[u8; 2]],
    start: &mut usize,
) -> (usize, bool) {
    let groups_per_block = block_len / LANES;
    if tables[..g.div_ceil(groups_per_block)]
        .iter()
        .any(|t| t.entries.len() > PORTABLE_ENTRIES)
    {
        return (0, true);
    }
    let groups = symbols[..g * LANES].as_chunks::<LANES>().0;
    // One OR over the symbols (vectorised) tells whether any is wider than 9 bits.
    if groups.as_flattened().iter().fold(0, |m, &s| m | s) >> MAX_SYMBOL_BITS != 0 {
        return (g, false);
    }
    let mut wp = *start;
    let mut absent = 0u32;
    let mut end = g;
    while end > 0 {
        let first = (end - 1) / groups_per_block * groups_per_block;
        let entries: &[PortableEntry; PORTABLE_ENTRIES] =
            tables[first / groups_per_block].portable();
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
                    let e = &entries[usize::from(sym) & (PORTABLE_ENTRIES - 1)];
                    // Only an absent symbol's cmpl has the PROB_SCALE bit.
                    absent |= e.cmpl;
                    // x must end below 2^32 after coding: renormalise while x ≥ freq ·
                    // 2^(32 - PROB_BITS). Taken at random: a select, not a branch.
                    let emit = *x > e.x_max_m1;
                    // At most 31 earlier lanes emitted, so free has not wrapped: the mask
                    // only spares a bounds check. A lane that emits nothing leaves a word
                    // that the next emitting lane (or the next group) overwrites.
                    window[free & (LANES - 1)] = (*x as u16).to_le_bytes();
                    free = free.wrapping_sub(usize::from(emit));
                    let y = std::hint::select_unpredictable(emit, *x >> 16, *x);
                    // q = y / freq (see `EncEntry::rcp`), then x' = (q << PROB_BITS) +
                    // (y - q · freq) + start, written as y + q · (PROB_SCALE - freq) +
                    // start; wrapping only matters for the garbage of an absent symbol.
                    let q = ((u64::from(y) * e.rcp) >> RCP_SHIFT) as u32;
                    *x = y.wrapping_add(q.wrapping_mul(e.cmpl)).wrapping_add(e.start);
                }
            }
            wp -= LANES - 1 - free;
        }
        end = first;
    }
    *start = wp;
    (g, absent & PROB_SCALE == 0)
}

/// Codes one group (lane `l` codes `group[l]`) and places its words, in lane order, just
/// before `words[start..]`; returns the new start, and whether every symbol was in the
/// table (an absent one is coded as if its frequency were 1: the chunk is dropped).
pub(super) fn encode_group_scalar(
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
