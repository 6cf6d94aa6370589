//! The rANS chunk decoder: checks, the portable and scalar loops, and the pairing of
//! two chunks for the vector decoders (in `simd`).

use super::*;

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
pub(super) fn decode_chunk_on<S: Symbol>(
    level: SimdLevel,
    payload: &[u8],
    tables: &[&DecTable],
    block_len: usize,
    out: &mut [S],
) -> Result<(), EntropyError> {
    decode_chunk_merged_on(level, payload, tables, block_len, out, None).map(|_| ())
}

/// [`decode_chunk_on`], with `merge` (8-bit symbols) the vector loop's symbols merged by
/// it instead of written to `out`: returns how many leading symbols were (their part of
/// `out` is left as it was), 0 without a merge.
pub(super) fn decode_chunk_merged_on<S: Symbol>(
    level: SimdLevel,
    payload: &[u8],
    tables: &[&DecTable],
    block_len: usize,
    out: &mut [S],
    merge: Option<F16Merge>,
) -> Result<usize, EntropyError> {
    check_blocks(tables, block_len, out.len())?;
    let (mut states, mut reader) = start_chunk(payload)?;
    let level = simd::decoder_level(level);
    crate::cpu::note_run(level);
    let merged = decode_coded(
        level,
        &mut states,
        &mut reader,
        tables,
        block_len,
        out,
        merge,
    );
    finish_chunk(&states, &reader)?;
    Ok(merged)
}

/// Decodes `out` (starting at a block boundary of its chunk, block `b` of it with
/// `tables[b]`) from the states and words where they are: the vector loop across blocks,
/// then the spans it left. With `merge`, the vector loop's symbols are merged by it
/// instead of written: returns how many (0 without).
fn decode_coded<S: Symbol>(
    level: SimdLevel,
    states: &mut [u32; LANES],
    reader: &mut WordReader,
    tables: &[&DecTable],
    block_len: usize,
    out: &mut [S],
    merge: Option<F16Merge>,
) -> usize {
    let done = match group_shift(block_len) {
        Some(shift) if level != SimdLevel::Scalar => simd::decode_groups_merged(
            level,
            [&mut *states],
            [&mut *reader],
            [tables],
            shift,
            [&mut *out],
            merge.map(|m| [m]),
        ),
        _ => 0,
    };
    decode_spans(level, states, reader, tables, block_len, out, done);
    if simd::merging::<S, 1>(level, merge.map(|m| [m])) {
        done
    } else {
        0
    }
}

/// Bytes of the raw area of a chunk payload (format 1.4, stream mode 5; FORMAT.md
/// §5.5.1) holding `raw_symbols` symbols of `bits` bits: bit-packed, padded with zero
/// bits to a whole number of 16-bit words so that the words after it stay whole.
pub(crate) fn raw_area_len(raw_symbols: usize, bits: u32) -> usize {
    raw_symbols.saturating_mul(bits as usize).div_ceil(16) * 2
}

/// Symbols of a chunk of `n` symbols in its raw blocks (`raw[b]` for block `b`).
pub(crate) fn raw_symbols(raw: &[bool], block_len: usize, n: usize) -> usize {
    raw.iter()
        .take(n.div_ceil(block_len))
        .enumerate()
        .filter(|(_, &r)| r)
        .map(|(b, _)| block_len.min(n - b * block_len))
        .sum()
}

/// A run of raw blocks of 8-bit symbols left in the payload instead of copied out
/// ([`decode_chunk_raw`]): symbols `start..end` of the chunk are the payload's
/// bytes `at..at + (end - start)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawSpan {
    /// First symbol of the run in the chunk.
    pub start: usize,
    /// One past its last symbol.
    pub end: usize,
    /// Where its bytes start in the chunk's payload.
    pub at: usize,
}

/// [`decode_chunk_on`] for a chunk of a mode 5 stream with raw blocks (`raw[b]` for
/// block `b`; `tables[b]` is not used where it is set): the raw blocks are copied
/// (unpacked) from the raw area after the states, the coded ones decoded from the words
/// after it, each run of coded blocks as a chunk of its own would be. The lanes skip the
/// raw blocks, which hold whole groups of lanes (but for a chunk's short last block), so
/// a coded symbol's lane is its position modulo [`LANES`] as in any chunk. A chunk whose
/// blocks are all raw is its raw area alone.
///
/// With `spans` given and 8-bit symbols, the raw runs are not copied into `out`: each is
/// pushed onto `spans` (in order) for the caller to read in place, and `out` holds only
/// the coded runs' symbols (the rest of it is left as it was). The checks are the same.
#[allow(clippy::too_many_arguments)]
pub(super) fn decode_chunk_raw_on<S: Symbol>(
    level: SimdLevel,
    payload: &[u8],
    tables: &[&DecTable],
    raw: &[bool],
    bits: u32,
    block_len: usize,
    out: &mut [S],
    mut spans: Option<&mut Vec<RawSpan>>,
) -> Result<(), EntropyError> {
    if bits != 8 {
        spans = None;
    }
    check_blocks(tables, block_len, out.len())?;
    let n_blocks = out.len().div_ceil(block_len);
    if raw.len() < n_blocks {
        return Err(EntropyError::MissingTables {
            needed: n_blocks,
            have: raw.len(),
        });
    }
    let raw = &raw[..n_blocks];
    let raw_count = raw_symbols(raw, block_len, out.len());
    let area = raw_area_len(raw_count, bits);
    let level = simd::decoder_level(level);
    crate::cpu::note_run(level);
    if raw_count == out.len() {
        if payload.len() != area {
            return Err(EntropyError::RawChunkSize {
                len: payload.len(),
                expected: area,
            });
        }
        match spans {
            Some(spans) => spans.push(RawSpan {
                start: 0,
                end: out.len(),
                at: 0,
            }),
            None => unpack_raw(payload, bits, out),
        }
        return Ok(());
    }
    if payload.len() < STATE_BYTES + area {
        return Err(EntropyError::RawChunkSize {
            len: payload.len(),
            expected: STATE_BYTES + area,
        });
    }
    let (state_bytes, rest) = payload.split_at(STATE_BYTES);
    let (raw_bytes, word_bytes) = rest.split_at(area);
    let mut states = read_states(state_bytes)?;
    if !word_bytes.len().is_multiple_of(2) {
        return Err(EntropyError::PayloadSize {
            len: payload.len(),
            state_bytes: STATE_BYTES + area,
        });
    }
    let mut reader = WordReader {
        words: word_bytes.as_chunks::<2>().0,
        pos: 0,
    };
    let (mut b, mut raw_at, n) = (0, 0, out.len());
    while b < n_blocks {
        let mut e = b + 1;
        while e < n_blocks && raw[e] == raw[b] {
            e += 1;
        }
        let span = &mut out[b * block_len..(e * block_len).min(n)];
        if raw[b] {
            // Raw runs but the chunk's last hold whole groups: `span.len() · bits` is a
            // multiple of 32 bits, so the next run starts at a whole byte.
            match spans.as_deref_mut() {
                Some(spans) => spans.push(RawSpan {
                    start: b * block_len,
                    end: b * block_len + span.len(),
                    at: STATE_BYTES + raw_at,
                }),
                None => unpack_raw(&raw_bytes[raw_at..], bits, span),
            }
            raw_at += (span.len() * bits as usize).div_ceil(8);
            skip_ahead(span.len() / LANES);
        } else {
            decode_coded(
                level,
                &mut states,
                &mut reader,
                &tables[b..e],
                block_len,
                span,
                None,
            );
        }
        b = e;
    }
    finish_chunk(&states, &reader)
}

/// Unpacks `out.len()` symbols of `bits` bits from the start of `bytes` (which holds at
/// least their packed length: the caller sized the raw area from them).
fn unpack_raw<S: Symbol>(bytes: &[u8], bits: u32, out: &mut [S]) {
    if bits == 8 {
        S::from_bytes(&bytes[..out.len()], out);
        return;
    }
    let mask = (1u64 << bits) - 1;
    let (mut acc, mut have, mut at) = (0u64, 0u32, 0usize);
    for o in out.iter_mut() {
        while have < bits {
            acc |= u64::from(bytes[at]) << have;
            at += 1;
            have += 8;
        }
        *o = S::from_symbol((acc & mask) as u16);
        acc >>= bits;
        have -= bits;
    }
}

/// `log2` of the groups of [`LANES`] symbols per block, where that is a power of two
/// (format 1.3's blocks always are): the vector loops then find a group's table by a
/// shift and run across blocks in one call.
fn group_shift(block_len: usize) -> Option<u32> {
    let groups = block_len / LANES;
    groups.is_power_of_two().then(|| groups.trailing_zeros())
}

/// A shift that maps every group of a call to its first table: for calls with one.
const ONE_TABLE: u32 = usize::BITS - 1;

/// Decodes `out[from..]` (`from` a multiple of [`LANES`]), block `b` of the chunk with
/// `tables[b]`, each run of blocks with the same table in one [`decode_block`]: what is
/// left after the vector loop ran across blocks (it stops short of a chunk's last words),
/// or the whole chunk on the scalar path.
fn decode_spans<S: Symbol>(
    level: SimdLevel,
    states: &mut [u32; LANES],
    reader: &mut WordReader,
    tables: &[&DecTable],
    block_len: usize,
    out: &mut [S],
    from: usize,
) {
    let mut at = from;
    while at < out.len() {
        let mut block = at / block_len;
        let table = tables[block];
        let mut end = ((block + 1) * block_len).min(out.len());
        while end < out.len() && std::ptr::eq(tables[block + 1], table) {
            block += 1;
            end = ((block + 1) * block_len).min(out.len());
        }
        decode_block(level, states, reader, table, &mut out[at..end]);
        at = end;
    }
}

/// The chunk's blocks as spans of consecutive blocks with the same table: `(table,
/// symbols)`, in order, covering `n` symbols. Decoding a span in one call is the same as
/// decoding its blocks one by one (a block holds whole groups of lanes), without the
/// per-block set-up.
fn spans<'t>(tables: &[&'t DecTable], block_len: usize, n: usize) -> Vec<(&'t DecTable, usize)> {
    let mut spans: Vec<(&DecTable, usize)> = Vec::new();
    let mut left = n;
    for &table in tables {
        if left == 0 {
            break;
        }
        let len = block_len.min(left);
        left -= len;
        match spans.last_mut() {
            Some((t, l)) if std::ptr::eq(*t, table) => *l += len,
            _ => spans.push((table, len)),
        }
    }
    spans
}

/// Decodes two chunks, each as [`decode_chunk`] would: where it is faster, the vector
/// decoder interleaves them, which hides the latency of its table gathers (the AVX2
/// path); elsewhere they decode one after the other.
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
///
/// With `merge`, as [`decode_chunk_merged_on`]: returns the symbols merged.
pub(crate) fn decode_chunk_as<S: Symbol>(
    payload: &[u8],
    tables: &[&DecTable],
    block_len: usize,
    out: &mut [S],
    merge: Option<F16Merge>,
) -> Result<usize, EntropyError> {
    let level = crate::cpu::simd_level();
    decode_chunk_merged_on(level, payload, tables, block_len, out, merge)
}

/// [`decode_chunk_as`] for a chunk with raw blocks (format 1.4, stream mode 5): see
/// [`decode_chunk_raw_on`]; with `spans` given, 8-bit raw runs are left in the payload
/// and listed there instead of copied out (see [`decode_chunk_raw_on`]).
pub(crate) fn decode_chunk_raw<S: Symbol>(
    payload: &[u8],
    tables: &[&DecTable],
    raw: &[bool],
    bits: u32,
    block_len: usize,
    out: &mut [S],
    spans: Option<&mut Vec<RawSpan>>,
) -> Result<(), EntropyError> {
    decode_chunk_raw_on(
        crate::cpu::simd_level(),
        payload,
        tables,
        raw,
        bits,
        block_len,
        out,
        spans,
    )
}

/// Whether the decoder of `level` (a path [`simd::decoder_level`] returned) decodes a
/// pair of chunks interleaved in one call (see [`decode_chunk_pair_on`]) rather than one
/// chunk after the other.
fn interleaves(level: SimdLevel) -> bool {
    match level {
        SimdLevel::Avx512 => false,
        SimdLevel::Avx2 => true,
        SimdLevel::Scalar => false,
    }
}

/// Whether [`decode_chunk_pair_as`] on the current code path interleaves the two chunks;
/// where it does not, a caller gains nothing by handing it both at once.
pub(crate) fn pairs_interleaved() -> bool {
    interleaves(simd::decoder_level(crate::cpu::simd_level()))
}

/// [`decode_chunk_pair`] writing symbols as `S` (see [`decode_chunk_as`]), with
/// `merges` as [`decode_chunk_pair_merged_on`] takes them: returns the symbols of each
/// chunk merged.
pub(crate) fn decode_chunk_pair_as<S: Symbol>(
    payloads: [&[u8]; 2],
    tables: [&[&DecTable]; 2],
    block_len: usize,
    outs: [&mut [S]; 2],
    merges: Option<[F16Merge; 2]>,
) -> Result<[usize; 2], EntropyError> {
    let level = crate::cpu::simd_level();
    decode_chunk_pair_merged_on(level, payloads, tables, block_len, outs, merges)
}

/// [`decode_chunk_pair`] on the given code path (one the CPU supports).
pub(super) fn decode_chunk_pair_on<S: Symbol>(
    level: SimdLevel,
    payloads: [&[u8]; 2],
    tables: [&[&DecTable]; 2],
    block_len: usize,
    outs: [&mut [S]; 2],
) -> Result<(), EntropyError> {
    decode_chunk_pair_merged_on(level, payloads, tables, block_len, outs, None).map(|_| ())
}

/// [`decode_chunk_pair_on`], with `merges` (8-bit symbols) each chunk's symbols of the
/// vector loop merged by its [`F16Merge`] instead of written to its output: returns how
/// many leading symbols of each chunk were (their part of the output is left as it
/// was), 0 without merges.
pub(super) fn decode_chunk_pair_merged_on<S: Symbol>(
    level: SimdLevel,
    payloads: [&[u8]; 2],
    tables: [&[&DecTable]; 2],
    block_len: usize,
    outs: [&mut [S]; 2],
    merges: Option<[F16Merge; 2]>,
) -> Result<[usize; 2], EntropyError> {
    let level = simd::decoder_level(level);
    crate::cpu::note_run(level);
    let [out_a, out_b] = outs;
    check_blocks(tables[0], block_len, out_a.len())?;
    check_blocks(tables[1], block_len, out_b.len())?;
    let (mut states_a, mut reader_a) = start_chunk(payloads[0])?;
    let (mut states_b, mut reader_b) = start_chunk(payloads[1])?;
    // The AVX2 decoder gains from interleaving the two chunks for 16-bit symbols
    // (BF16/F16 +4–7 %, F32 +1–3 % of the whole decode by CPU time on Zen 4:
    // BENCHMARKS.md, 2026-12-03 eleventh session, dec13; the fifth session's AVX2 loop
    // lost 12–25 % to spills), and since its one-shuffle refill (twenty-second session,
    // fp822) for 8-bit symbols too (FP8 +0.5–1 %; paired on the old refill, FP8 lost
    // 1.5–2.3 %). The AVX-512 path decodes one chunk at a time: its 256-bit AVX-512VL kernel
    // decodes one chunk at 0.49 ns per symbol against 0.55 for the retired 512-bit
    // kernel's interleaved pairs and 0.56 for itself on pairs (FP8 and BF16 exponents of
    // MiniLM, `examples/rans_loop`, BENCHMARKS.md twenty-first session, fp821). The
    // scalar loop never interleaved.
    if !interleaves(level) {
        // One chunk after the other, each as `decode_chunk` decodes it: one vector call
        // across its blocks, not one per run of a table (FP8 tables change every few
        // blocks of 256).
        let merged_a = decode_coded(
            level,
            &mut states_a,
            &mut reader_a,
            tables[0],
            block_len,
            out_a,
            merges.map(|m| m[0]),
        );
        let merged_b = decode_coded(
            level,
            &mut states_b,
            &mut reader_b,
            tables[1],
            block_len,
            out_b,
            merges.map(|m| m[1]),
        );
        finish_chunk(&states_a, &reader_a)?;
        finish_chunk(&states_b, &reader_b)?;
        return Ok([merged_a, merged_b]);
    }
    if let Some(shift) = group_shift(block_len) {
        // Both chunks in one call across their blocks, the rest of each on its own.
        let done = simd::decode_groups_merged(
            level,
            [&mut states_a, &mut states_b],
            [&mut reader_a, &mut reader_b],
            tables,
            shift,
            [&mut *out_a, &mut *out_b],
            merges,
        );
        if done > 0 {
            decode_spans(
                level,
                &mut states_a,
                &mut reader_a,
                tables[0],
                block_len,
                out_a,
                done,
            );
            decode_spans(
                level,
                &mut states_b,
                &mut reader_b,
                tables[1],
                block_len,
                out_b,
                done,
            );
            finish_chunk(&states_a, &reader_a)?;
            finish_chunk(&states_b, &reader_b)?;
            let merged = if simd::merging::<S, 2>(level, merges) {
                done
            } else {
                0
            };
            return Ok([merged; 2]);
        }
    }
    // Tables of mixed slot layouts: paired where both chunks' tables have the same.
    let spans_a = spans(tables[0], block_len, out_a.len());
    let spans_b = spans(tables[1], block_len, out_b.len());
    // Position in each chunk: the span index and the symbols of it already decoded.
    let (mut ia, mut off_a, mut pos_a) = (0, 0, 0);
    let (mut ib, mut off_b, mut pos_b) = (0, 0, 0);
    while ia < spans_a.len() && ib < spans_b.len() {
        let ((table_a, len_a), (table_b, len_b)) = (spans_a[ia], spans_b[ib]);
        let step = (len_a - off_a).min(len_b - off_b);
        // Both chunks stay at whole groups of lanes, but for a chunk's short last block,
        // which is decoded on its own below.
        let paired = step / LANES * LANES;
        if paired == 0 {
            break;
        }
        let block_a = &mut out_a[pos_a..pos_a + paired];
        let block_b = &mut out_b[pos_b..pos_b + paired];
        if table_a.inline != table_b.inline {
            // The vector step is compiled for one slot layout: decode the two apart.
            decode_block(level, &mut states_a, &mut reader_a, table_a, block_a);
            decode_block(level, &mut states_b, &mut reader_b, table_b, block_b);
        } else {
            let done = simd::decode_groups(
                level,
                [&mut states_a, &mut states_b],
                [&mut reader_a, &mut reader_b],
                [
                    std::slice::from_ref(&table_a),
                    std::slice::from_ref(&table_b),
                ],
                ONE_TABLE,
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
        (pos_a, off_a, pos_b, off_b) = (
            pos_a + paired,
            off_a + paired,
            pos_b + paired,
            off_b + paired,
        );
        if off_a == len_a {
            (ia, off_a) = (ia + 1, 0);
        }
        if off_b == len_b {
            (ib, off_b) = (ib + 1, 0);
        }
        if paired != step {
            break;
        }
    }
    // What is left of each chunk, one after the other.
    for (spans, mut i, mut off, mut pos, states, reader, out) in [
        (
            &spans_a,
            ia,
            off_a,
            pos_a,
            &mut states_a,
            &mut reader_a,
            &mut *out_a,
        ),
        (
            &spans_b,
            ib,
            off_b,
            pos_b,
            &mut states_b,
            &mut reader_b,
            &mut *out_b,
        ),
    ] {
        while let Some(&(table, len)) = spans.get(i) {
            let block = &mut out[pos..pos + len - off];
            decode_block(level, states, reader, table, block);
            (pos, off, i) = (pos + len - off, 0, i + 1);
        }
    }
    finish_chunk(&states_a, &reader_a)?;
    finish_chunk(&states_b, &reader_b)?;
    Ok([0; 2])
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
    Ok((
        read_states(state_bytes)?,
        WordReader {
            words: word_bytes.as_chunks::<2>().0,
            pos: 0,
        },
    ))
}

/// The 32 initial states of a payload's first [`STATE_BYTES`] bytes, each checked.
fn read_states(state_bytes: &[u8]) -> Result<[u32; LANES], EntropyError> {
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
    Ok(states)
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
    let one = std::slice::from_ref(&table);
    let mut done = simd::decode_groups(
        level,
        [&mut *states],
        [&mut *reader],
        [one],
        ONE_TABLE,
        [&mut *out],
    );
    if out.len() - done >= LANES {
        // The vector loop stopped short of the last words: the groups left run on the
        // vector path too, from a padded copy of those words.
        let rest = &mut out[done..];
        done += with_padded_tail(reader, |tail| {
            simd::decode_groups(level, [&mut *states], [tail], [one], ONE_TABLE, [rest])
        });
    }
    decode_scalar(states, reader, table, &mut out[done..]);
}

/// Runs `decode` on a reader over a copy of `reader`'s last words padded with zeros to
/// `2 × LANES` words, at the same place, and moves `reader` on by what it used; returns
/// what `decode` returns. For where fewer than `LANES` words are left: the vector loops
/// read a step's worth of words from their position on and stop short of that, and the
/// groups left over went through the scalar step, one lane at a time (on the AVX2 path
/// 3 % of an F32 decode's instructions, 1 % of a BF16 one's; every group of a small
/// tensor). Zeros past the end are what [`WordReader`] yields there, and the position
/// keeps counting past the real end as it does, so a damaged chunk fails at the same
/// check. Nothing is run when `LANES` or more words are left (the loop then stopped
/// because its output ended).
fn with_padded_tail(
    reader: &mut WordReader,
    decode: impl FnOnce(&mut WordReader) -> usize,
) -> usize {
    let start = reader.pos.min(reader.words.len());
    let left = &reader.words[start..];
    if left.len() >= LANES {
        return 0;
    }
    let mut padded = [[0u8; 2]; 2 * LANES];
    padded[..left.len()].copy_from_slice(left);
    let mut tail = WordReader {
        words: &padded,
        pos: reader.pos - start,
    };
    let done = decode(&mut tail);
    reader.pos = start + tail.pos;
    done
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
    // The groups that reach the last few words go through the bounds-checked step: a
    // padded copy of those words as on the vector paths (`with_padded_tail`) measured
    // 0.2 % more instructions here, the group loop taking as many per symbol as the step.
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
/// Re-measured in one process (2026-12-04, sc14): 8 at 1.29–1.30 against 1.33 for 4, 1.33–1.34
/// for 16 and 1.32–1.33 for 32; two chunks interleaved eight lanes at a time 1.44–1.45.
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
