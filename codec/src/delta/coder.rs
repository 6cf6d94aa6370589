//! The coder of the ULP delta: rANS with a table chosen per symbol, plus a raw bit stream.
//!
//! It knows nothing about tokens or contexts: the model hands it, per symbol, the table to
//! use. Tables are the entropy layer's ([`FreqTable`], [`EncTable`], probabilities in
//! 1/[`PROB_SCALE`]); the coding loop is its own because the entropy layer's chunk coder
//! changes tables only per block, not per symbol. The decoder table is its own too
//! ([`SlotTables`]): one word per probability slot holding frequency, offset and symbol,
//! so that a decode step — the lane's latency chain — is a single load (measured faster
//! than a byte per slot plus an entry table, which needs two dependent loads).
//!
//! `L` rANS states are interleaved, symbol `i` on state `i % L` ([`LANES`] = 4 in layouts 1
//! and 2, [`WIDE_LANES`] = 32 in layout 3). States are
//! 32-bit in `[RANS_L, 2^32)` and renormalise by 16-bit words. The encoder runs from the
//! last symbol to the first and places its words from the end of its buffer down, so the
//! decoder reads them front to back. Every state starts at `RANS_L`, so a correct decode ends with every state back
//! at `RANS_L` and every word consumed, which the decoder checks.

use std::cell::Cell;

use crate::entropy::model::{EncTable, FreqTable, PROB_BITS, PROB_SCALE, RCP_SHIFT};

/// Interleaved rANS states of layouts 1 and 2.
pub const LANES: usize = 4;
/// Interleaved rANS states of layout 3: two 16-lane vectors, so the decoder steps 32
/// independent chains at once (FORMAT.md §9.3).
pub const WIDE_LANES: usize = 32;
/// Lower bound of a normalised state and the encoder's initial state.
const RANS_L: u32 = 1 << 16;

/// Errors of the coder; the model wraps them with the tensor's context.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CoderError {
    /// A structure ended early.
    #[error("{what} needs {needed} bytes, {have} left")]
    Truncated {
        /// Which structure.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes left.
        have: usize,
    },
    /// An initial state is outside `[2^16, 2^32)`.
    #[error("rANS lane {lane} starts at {state}, below 65536")]
    BadState {
        /// Lane index.
        lane: usize,
        /// The state read.
        state: u32,
    },
    /// The decoder did not end where the encoder started.
    #[error("rANS stream does not end cleanly: {words_left} words left, {overrun} words missing, final states {states:?}")]
    BadEnd {
        /// Words never read.
        words_left: usize,
        /// Words read past the end.
        overrun: usize,
        /// The final states (all 65536 in a correct stream).
        states: Vec<u32>,
    },
    /// The raw bit stream is not exactly as long as the symbols need.
    #[error("raw bit stream is {have} bytes, the symbols need {needed_bits} bits")]
    BadBits {
        /// Bytes present.
        have: usize,
        /// Bits the decoded symbols read.
        needed_bits: u64,
    },
}

/// Encodes symbols in reverse; see the module comment.
pub struct RansEncoder<const L: usize> {
    states: [u32; L],
    /// Room for one word per symbol plus one, filled downwards from the end, so that
    /// `words[pos..]` is in the decoder's order: a word is written without a branch (below
    /// the position) and only counted when the state renormalises.
    words: Vec<u16>,
    pos: usize,
}

impl<const L: usize> RansEncoder<L> {
    /// An encoder for at most `n` symbols.
    pub fn new(n: usize) -> Self {
        Self {
            states: [RANS_L; L],
            words: vec![0; n + 1],
            pos: n + 1,
        }
    }

    /// Codes symbol number `i` (call with decreasing `i`, from the last symbol to 0, at
    /// most `n` times). The symbol must have a non-zero frequency in `table`.
    #[inline]
    pub fn put(&mut self, i: usize, symbol: u16, table: &EncTable) {
        let e = &table.entries[usize::from(symbol)];
        debug_assert!(e.freq > 0, "symbol {symbol} missing from its table");
        let mut x = self.states[i % L];
        // Renormalisation is taken at random: written always, counted when needed. At
        // most `n` words for `n` symbols, so `pos ≥ 1` here.
        let flush = u64::from(x) >= e.x_max;
        self.words[self.pos - 1] = x as u16;
        self.pos -= usize::from(flush);
        x = if flush { x >> 16 } else { x };
        // q = x / freq via the table's 44-bit reciprocal: exact, and within 64 bits, since
        // x < freq · 2^20 after renormalisation (see `EncEntry::rcp`).
        let q = ((u64::from(x) * e.rcp) >> RCP_SHIFT) as u32;
        self.states[i % L] = (q << PROB_BITS) + (x - q * e.freq) + e.start;
    }

    /// What a vector encoder works on: the states, the word buffer and the position of
    /// the first word written (words go below it), which it lowers.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // read by the x86-64 vector code only
    pub fn parts(&mut self) -> (&mut [u32; L], &mut [u16], &mut usize) {
        (&mut self.states, &mut self.words, &mut self.pos)
    }

    /// Bytes [`Self::finish`] appends.
    pub fn coded_len(&self) -> usize {
        4 * L + 4 + 2 * (self.words.len() - self.pos)
    }

    /// Appends `L × u32` initial decoder states, `u32` word count and the words.
    pub fn finish(self, out: &mut Vec<u8>) {
        for s in self.states {
            out.extend_from_slice(&s.to_le_bytes());
        }
        let words = &self.words[self.pos..];
        out.extend_from_slice(&(words.len() as u32).to_le_bytes());
        out.reserve(2 * words.len());
        for w in words {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
}

/// Decodes symbols front to back. Reading past the end of the words yields zeros and is
/// counted, so hostile input cannot read out of bounds; [`Self::finish`] then fails.
pub struct RansDecoder<const L: usize> {
    states: [u32; L],
    /// The words, then `L + 1` zero words: reads past the end land on them (the scalar
    /// reads clamped to the first; a vector decoder's reads of up to `L` words from a
    /// position up to the end, so that it can take a chunk's groups to the last whole
    /// one).
    words: Vec<u16>,
    /// Words in the stream (`words.len() - L - 1`).
    n_words: usize,
    /// Words consumed; above `n_words` after an overrun.
    pos: usize,
}

/// The slot of state `x`: its position in the table's `PROB_SCALE` slots.
#[inline(always)]
pub(crate) fn slot_of(x: u32) -> usize {
    (x & (PROB_SCALE - 1)) as usize
}

/// The state after decoding from state `x` the symbol of slot entry `e` (frequency − 1 in
/// bits 0..12, slot − start in 12..24, symbol in 24..32), before renormalisation:
/// freq · (x >> PROB_BITS) + slot − start, below 2^32 since slot − start < freq.
#[inline(always)]
pub(crate) fn advance(x: u32, e: u32) -> u32 {
    let freq = (e & 0xFFF) + 1;
    freq.wrapping_mul(x >> PROB_BITS)
        .wrapping_add((e >> 12) & 0xFFF)
}

/// The renormalised state of `y` from [`advance`], with `w` the next word of the stream
/// (consumed only when `y` is below [`RANS_L`]: the caller advances its position by
/// [`needs_word`]).
#[inline(always)]
pub(crate) fn refill(y: u32, w: u16) -> u32 {
    if needs_word(y) {
        (y << 16) | u32::from(w)
    } else {
        y
    }
}

/// Whether state `y` from [`advance`] takes the next word.
#[inline(always)]
pub(crate) fn needs_word(y: u32) -> bool {
    y < RANS_L
}

impl<const L: usize> RansDecoder<L> {
    /// Parses the states and the word count at the start of `bytes`; returns the decoder
    /// and the bytes after its words.
    pub fn new(bytes: &[u8]) -> Result<(Self, &[u8]), CoderError> {
        let head_len = 4 * L + 4;
        let head = bytes.get(..head_len).ok_or(CoderError::Truncated {
            what: "rANS states",
            needed: head_len,
            have: bytes.len(),
        })?;
        let mut states = [0u32; L];
        for (lane, (s, b)) in states.iter_mut().zip(head.chunks_exact(4)).enumerate() {
            *s = u32::from_le_bytes(b.try_into().expect("4 bytes"));
            if *s < RANS_L {
                return Err(CoderError::BadState { lane, state: *s });
            }
        }
        let n_words = u32::from_le_bytes(head[4 * L..].try_into().expect("4 bytes")) as usize;
        let rest = &bytes[head_len..];
        let words_len =
            n_words
                .checked_mul(2)
                .filter(|&l| l <= rest.len())
                .ok_or(CoderError::Truncated {
                    what: "rANS words",
                    needed: n_words.saturating_mul(2),
                    have: rest.len(),
                })?;
        let (word_bytes, tail) = rest.split_at(words_len);
        // Sized by bytes present, not by the claimed count.
        let mut words = Vec::with_capacity(n_words + L + 1);
        words.extend(
            word_bytes
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]])),
        );
        words.resize(n_words + L + 1, 0);
        Ok((
            Self {
                states,
                words,
                n_words,
                pos: 0,
            },
            tail,
        ))
    }

    /// Decodes the next symbol of lane `lane` (symbol `i` is on lane `i % L`; call in
    /// symbol order) with the table at `offset` in `tables` ([`SlotTables::offset`]).
    #[inline(always)]
    pub fn get(&mut self, lane: usize, tables: &SlotTables, offset: usize) -> u32 {
        let x = self.states[lane % L];
        let e = tables.slots[offset + slot_of(x)];
        let y = advance(x, e);
        // Renormalisation is taken at random: select instead of branching. The next word
        // is read either way (the zero word past the end) and only consumed when needed.
        let need = needs_word(y);
        let w = self.words[self.pos.min(self.n_words)];
        self.states[lane % L] = refill(y, w);
        self.pos += usize::from(need);
        e >> 24
    }

    /// What a vector decoder works on: the states, the words (with the `L + 1` zero
    /// words after them) and the read position, which it advances.
    pub fn parts(&mut self) -> (&mut [u32; L], &[u16], &mut usize) {
        (&mut self.states, &self.words, &mut self.pos)
    }

    /// Checks that the stream ended exactly where the encoder began.
    pub fn finish(self) -> Result<(), CoderError> {
        let words_left = self.n_words.saturating_sub(self.pos);
        let overrun = self.pos.saturating_sub(self.n_words);
        if words_left > 0 || overrun > 0 || self.states.iter().any(|&s| s != RANS_L) {
            return Err(CoderError::BadEnd {
                words_left,
                overrun,
                states: self.states.to_vec(),
            });
        }
        Ok(())
    }
}

/// Builds the encoder tables.
pub fn enc_tables(tables: &[FreqTable], symbol_bits: u32) -> Vec<EncTable> {
    tables
        .iter()
        .map(|t| EncTable::new(t, symbol_bits))
        .collect()
}

/// Decoder tables of a list of [`FreqTable`]s with symbols below 256, one word per
/// probability slot: `freq − 1` (12 bits), `slot − start` (12 bits) and the symbol (8
/// bits), so that a decode step is one load. 16 KiB per table, built once per delta.
pub struct SlotTables {
    slots: Vec<u32>,
}

thread_local! {
    /// The memory of the last [`SlotTables`] dropped on this thread (up to
    /// [`KEPT_SLOT_WORDS`]), for the next one: a store `get` builds ~10 tables (~160 KiB)
    /// per delta tensor, each from memory the allocator zeroed first (BENCHMARKS.md,
    /// twenty-first session).
    static SLOT_MEMORY: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
}

/// The most slot words a thread keeps between tables: 64 tables, 1 MiB.
const KEPT_SLOT_WORDS: usize = 64 * PROB_SCALE as usize;

impl SlotTables {
    /// Builds the tables. Every symbol must be below 256.
    pub fn new(tables: &[FreqTable]) -> Self {
        let n = PROB_SCALE as usize;
        let mut slots = SLOT_MEMORY.try_with(Cell::take).unwrap_or_default();
        slots.clear();
        slots.reserve(tables.len() * n);
        for table in tables {
            let start = slots.len();
            // A FreqTable's frequencies (1..=PROB_SCALE) sum to PROB_SCALE, so the
            // ranges tile the slots and `freq − 1`, `slot − start` fit 12 bits each.
            // Written in order, each slot once (no zeroing pass first).
            for (&s, &f) in table.symbols().iter().zip(table.freqs()) {
                assert!(s < 256, "symbol {s} does not fit a slot table");
                let head = (u32::from(f) - 1) | (u32::from(s) << 24);
                slots.extend((0..u32::from(f)).map(|offset| head | (offset << 12)));
            }
            // Exactly `n` (what the sum guarantees): the next table starts at its offset.
            slots.resize(start + n, 0);
        }
        Self { slots }
    }

    /// Where table `t` starts, for [`RansDecoder::get`].
    pub fn offset(t: usize) -> usize {
        t * PROB_SCALE as usize
    }

    /// The slot words of every table, table `t` at [`Self::offset`]`(t)`.
    pub fn slots(&self) -> &[u32] {
        &self.slots
    }
}

impl Drop for SlotTables {
    /// Leaves the memory to the thread's next tables (the larger of the two kept).
    fn drop(&mut self) {
        let mine = std::mem::take(&mut self.slots);
        if mine.capacity() > KEPT_SLOT_WORDS {
            return;
        }
        // `try_with`: a drop during the thread's teardown just frees the memory.
        let _ = SLOT_MEMORY.try_with(|kept| {
            let other = kept.take();
            kept.set(if mine.capacity() >= other.capacity() {
                mine
            } else {
                other
            });
        });
    }
}

/// Appends raw bit fields, least significant bit first, to a byte vector.
pub struct BitWriter {
    /// The bytes written are `bytes[..len]`; the rest is room that a field's 4-byte store
    /// lands in before it is counted.
    bytes: Vec<u8>,
    len: usize,
    acc: u64,
    /// Bits in `acc`, below 32 between calls.
    filled: u32,
}

impl BitWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self {
            bytes: Vec::new(),
            len: 0,
            acc: 0,
            filled: 0,
        }
    }

    /// Appends the low `n` bits of `value` (`n ≤ 64`).
    #[inline(always)]
    pub fn put(&mut self, value: u64, n: u32) {
        if n > 32 {
            self.put32(value as u32 as u64, 32);
            self.put32(value >> 32, n - 32);
        } else {
            self.put32(value, n);
        }
    }

    /// Appends the low `n ≤ 32` bits of `value`. Without branches on the data: whether
    /// 32 bits are full is taken at random in a delta's loop, which a branch mispredicts,
    /// so the low word is stored every time and only counted when full.
    #[inline(always)]
    pub(crate) fn put32(&mut self, value: u64, n: u32) {
        debug_assert!(n <= 32);
        let value = value & ((1u64 << n) - 1);
        // filled < 32 and value < 2^32: fits.
        self.acc |= value << self.filled;
        self.filled += n;
        if self.len + 4 > self.bytes.len() {
            self.grow();
        }
        self.bytes[self.len..self.len + 4].copy_from_slice(&(self.acc as u32).to_le_bytes());
        let full = self.filled >= 32;
        self.len += 4 * usize::from(full);
        self.acc = if full { self.acc >> 32 } else { self.acc };
        self.filled -= 32 * u32::from(full);
    }

    /// Appends the low `counts[i] ≤ 32` bits of each `values[i]`, in order: what
    /// [`Self::put32`] does per field, with the writer's state in locals for the whole run.
    /// Through `&mut self` the compiler reloads that state after every byte store (which
    /// might alias it), so a loop of `put32` chains each field to the last through memory
    /// (12 % of a delta's first pass on its own, `perf annotate`).
    /// Used by the vector encoders only.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn put_fields(&mut self, values: &[u32], counts: &[u32]) {
        debug_assert_eq!(values.len(), counts.len());
        // Each field moves the length by at most 4 bytes and stores 4 bytes at it.
        let room = self.len + 4 * values.len() + 4;
        while room > self.bytes.len() {
            self.grow();
        }
        let (mut acc, mut filled, mut len) = (self.acc, self.filled, self.len);
        let bytes = &mut self.bytes[..room];
        for (&value, &n) in values.iter().zip(counts) {
            debug_assert!(n <= 32);
            // filled < 32 and the field < 2^32: fits.
            acc |= (u64::from(value) & ((1u64 << n) - 1)) << filled;
            filled += n;
            bytes[len..len + 4].copy_from_slice(&(acc as u32).to_le_bytes());
            let full = filled >= 32;
            len += 4 * usize::from(full);
            acc = if full { acc >> 32 } else { acc };
            filled -= 32 * u32::from(full);
        }
        (self.acc, self.filled, self.len) = (acc, filled, len);
    }

    #[cold]
    fn grow(&mut self) {
        let room = (2 * self.bytes.len()).max(1 << 12);
        self.bytes.resize(room, 0);
    }

    /// The bytes, the last one zero-padded.
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes.truncate(self.len);
        while self.filled > 0 {
            self.bytes.push(self.acc as u8);
            self.acc >>= 8;
            self.filled = self.filled.saturating_sub(8);
        }
        self.bytes
    }
}

impl Default for BitWriter {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads what [`BitWriter`] wrote. Past the end it reads zeros; [`Self::finish`] checks
/// that exactly the stream's bytes were used and that the padding bits are zero.
pub struct BitReader {
    /// The stream, then at least 8 zero bytes, so that every read is one unaligned 64-bit
    /// load.
    bytes: Vec<u8>,
    /// Stream length in bytes (the rest of `bytes` is padding).
    len: usize,
    /// Bits consumed so far.
    pos: u64,
}

impl BitReader {
    /// A reader over a copy of `bytes`.
    pub fn new(bytes: &[u8]) -> Self {
        Self::with_padding(bytes, 8)
    }

    /// A reader over a copy of `bytes` followed by `padding ≥ 8` zero bytes (a vector
    /// decoder reads ahead of the position by up to its padding).
    pub fn with_padding(bytes: &[u8], padding: usize) -> Self {
        assert!(padding >= 8, "a 64-bit load needs 8 bytes of padding");
        let mut padded = Vec::with_capacity(bytes.len() + padding);
        padded.extend_from_slice(bytes);
        padded.resize(bytes.len() + padding, 0);
        Self {
            bytes: padded,
            len: bytes.len(),
            pos: 0,
        }
    }

    /// What a vector decoder works on: the padded bytes and the bit position, which it
    /// advances.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // read by the x86-64 vector code only
    pub fn parts(&mut self) -> (&[u8], &mut u64) {
        (&self.bytes, &mut self.pos)
    }

    /// Reads `n ≤ 64` bits (0 bits reads 0, without a branch).
    #[inline]
    pub fn get(&mut self, n: u32) -> u64 {
        if n > 32 {
            let lo = self.get32(32);
            lo | (self.get32(n - 32) << 32)
        } else {
            self.get32(n)
        }
    }

    /// Reads `n ≤ 32` bits.
    #[inline(always)]
    pub fn get32(&mut self, n: u32) -> u64 {
        debug_assert!(n <= 32);
        // n + shift ≤ 39 bits lie in the 5 bytes from `byte`; a 64-bit load covers them.
        // Past the end the load lands on the zero padding (clamped: no branch, no
        // out-of-bounds read); `finish` reports the overrun.
        let byte = ((self.pos / 8) as usize).min(self.len);
        let shift = (self.pos % 8) as u32;
        let word = u64::from_le_bytes(
            self.bytes[byte..byte + 8]
                .try_into()
                .expect("8 bytes of padding"),
        );
        self.pos += u64::from(n);
        (word >> shift) & ((1u64 << n) - 1)
    }

    /// Checks that the bits read fill the stream exactly, up to zero padding in its last
    /// byte.
    pub fn finish(self) -> Result<(), CoderError> {
        let needed_bytes = self.pos.div_ceil(8);
        let bad = || CoderError::BadBits {
            have: self.len,
            needed_bits: self.pos,
        };
        if needed_bytes != self.len as u64 {
            return Err(bad());
        }
        let used_in_last = (self.pos % 8) as u32;
        if used_in_last > 0 && self.bytes[self.len - 1] >> used_in_last != 0 {
            return Err(bad());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tables built in memory an earlier (larger) set left to the thread are the ones
    /// built fresh: every slot of every table, and nothing past the last.
    #[test]
    fn slot_tables_in_kept_memory_are_built_whole() {
        let a = FreqTable::from_counts(&[90, 5, 5]).unwrap();
        let b = FreqTable::from_counts(&[1, 1, 1, 97]).unwrap();
        let fresh = |tables: &[FreqTable]| -> Vec<u32> {
            let mut slots = Vec::new();
            for t in tables {
                for (&s, &f) in t.symbols().iter().zip(t.freqs()) {
                    let f = u32::from(f);
                    slots.extend((0..f).map(|o| (f - 1) | (o << 12) | (u32::from(s) << 24)));
                }
            }
            slots
        };
        drop(SlotTables::new(&[b.clone(), a.clone(), b.clone()]));
        let small = SlotTables::new(std::slice::from_ref(&a));
        assert_eq!(small.slots(), fresh(std::slice::from_ref(&a)));
        drop(small);
        let two = SlotTables::new(&[b.clone(), a.clone()]);
        assert_eq!(two.slots(), fresh(&[b, a]));
        assert_eq!(two.slots().len(), 2 * SlotTables::offset(1));
    }

    #[test]
    fn rans_round_trip_with_a_table_per_symbol() {
        let a = FreqTable::from_counts(&[90, 5, 5]).unwrap();
        let b = FreqTable::from_counts(&[1, 1, 1, 97]).unwrap();
        let tables = [a, b];
        let enc = enc_tables(&tables, 2);
        let dec = SlotTables::new(&tables);
        let symbols: Vec<(u16, usize)> = (0..1003)
            .map(|i| {
                if i % 3 == 0 {
                    ((i % 4) as u16, 1)
                } else {
                    ((i % 3) as u16, 0)
                }
            })
            .collect();
        let mut e = RansEncoder::<LANES>::new(symbols.len());
        for (i, &(s, t)) in symbols.iter().enumerate().rev() {
            e.put(i, s, &enc[t]);
        }
        let mut bytes = Vec::new();
        e.finish(&mut bytes);
        let (mut d, rest) = RansDecoder::<LANES>::new(&bytes).unwrap();
        assert!(rest.is_empty());
        for (i, &(s, t)) in symbols.iter().enumerate() {
            assert_eq!(
                d.get(i % LANES, &dec, SlotTables::offset(t)),
                u32::from(s),
                "symbol {i}"
            );
        }
        d.finish().unwrap();

        // One symbol short, or a flipped word: the end check fails.
        let (mut d, _) = RansDecoder::<LANES>::new(&bytes).unwrap();
        for (i, &(_, t)) in symbols.iter().enumerate().skip(1) {
            d.get((i - 1) % LANES, &dec, SlotTables::offset(t));
        }
        assert!(d.finish().is_err());
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        let (mut d, _) = RansDecoder::<LANES>::new(&bad).unwrap();
        for (i, &(_, t)) in symbols.iter().enumerate() {
            d.get(i % LANES, &dec, SlotTables::offset(t));
        }
        assert!(d.finish().is_err());
        assert!(RansDecoder::<LANES>::new(&bytes[..10]).is_err());
    }

    #[test]
    fn bits_round_trip_and_reject_wrong_lengths() {
        let fields: Vec<(u64, u32)> = (0..200u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15), (i % 65) as u32))
            .collect();
        let mut w = BitWriter::new();
        for &(v, n) in &fields {
            w.put(v, n);
        }
        let bytes = w.finish();
        let mut r = BitReader::new(&bytes);
        for &(v, n) in &fields {
            let mask = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
            assert_eq!(r.get(n), v & mask);
        }
        r.finish().unwrap();

        let mut longer = bytes.clone();
        longer.push(0);
        let mut r = BitReader::new(&longer);
        for &(_, n) in &fields {
            r.get(n);
        }
        assert!(r.finish().is_err());
        let mut r = BitReader::new(&bytes[..bytes.len() - 1]);
        for &(_, n) in &fields {
            r.get(n);
        }
        assert!(r.finish().is_err());
    }
}
