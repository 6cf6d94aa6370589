//! The coder of the ULP delta: rANS with a table chosen per symbol, plus a raw bit stream.
//!
//! It knows nothing about tokens or contexts: the model hands it, per symbol, the table to
//! use. Tables are the entropy layer's ([`FreqTable`], [`EncTable`], probabilities in
//! 1/[`PROB_SCALE`]); the coding loop is its own because the entropy layer's chunk coder
//! changes tables only per block, not per symbol. The decoder table is its own too: a
//! delta uses many tables (one per context), so it keeps them small — a byte per slot
//! (4 KiB, filled by `memset`) instead of the entropy layer's 16 KiB of packed words —
//! which keeps more of them in L1 and makes them cheap to build for small tensors.
//!
//! [`LANES`] rANS states are interleaved, symbol `i` on state `i % LANES`. States are
//! 32-bit in `[RANS_L, 2^32)` and renormalise by 16-bit words. The encoder runs from the
//! last symbol to the first and its words are reversed, so the decoder reads them front to
//! back. Every state starts at `RANS_L`, so a correct decode ends with every state back
//! at `RANS_L` and every word consumed, which the decoder checks.

use crate::entropy::model::{
    EncTable, FreqTable, MAX_TABLE_SYMBOLS, PROB_BITS, PROB_SCALE, RCP_SHIFT,
};

/// Interleaved rANS states.
pub const LANES: usize = 4;
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
        states: [u32; LANES],
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
pub struct RansEncoder {
    states: [u32; LANES],
    /// Words in the order emitted (reverse of the decoder's order).
    words: Vec<u16>,
}

impl RansEncoder {
    /// An encoder for about `n` symbols.
    pub fn new(n: usize) -> Self {
        Self {
            states: [RANS_L; LANES],
            words: Vec::with_capacity(n / 4),
        }
    }

    /// Codes symbol number `i` (call with decreasing `i`, from the last symbol to 0).
    /// The symbol must have a non-zero frequency in `table`.
    #[inline]
    pub fn put(&mut self, i: usize, symbol: u16, table: &EncTable) {
        let e = &table.entries[usize::from(symbol)];
        debug_assert!(e.freq > 0, "symbol {symbol} missing from its table");
        let x = &mut self.states[i % LANES];
        if u64::from(*x) >= e.x_max {
            self.words.push(*x as u16);
            *x >>= 16;
        }
        // q = x / freq via the table's 45-bit reciprocal (exact for x < 2^32, freq ≤ 2^12).
        let q = ((u128::from(*x) * u128::from(e.rcp)) >> RCP_SHIFT) as u32;
        *x = (q << PROB_BITS) + (*x - q * e.freq) + e.start;
    }

    /// Appends `LANES × u32` initial decoder states, `u32` word count and the words.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        for s in self.states {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out.extend_from_slice(&(self.words.len() as u32).to_le_bytes());
        self.words.reverse();
        out.reserve(2 * self.words.len());
        for w in self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
}

/// Decodes symbols front to back. Reading past the end of the words yields zeros and is
/// counted, so hostile input cannot read out of bounds; [`Self::finish`] then fails.
pub struct RansDecoder<'a> {
    states: [u32; LANES],
    words: &'a [u8],
    pos: usize,
    overrun: usize,
}

impl<'a> RansDecoder<'a> {
    /// Parses the states and the word count at the start of `bytes`; returns the decoder
    /// and the bytes after its words.
    pub fn new(bytes: &'a [u8]) -> Result<(Self, &'a [u8]), CoderError> {
        const HEAD: usize = 4 * LANES + 4;
        let head = bytes.get(..HEAD).ok_or(CoderError::Truncated {
            what: "rANS states",
            needed: HEAD,
            have: bytes.len(),
        })?;
        let mut states = [0u32; LANES];
        for (lane, (s, b)) in states.iter_mut().zip(head.chunks_exact(4)).enumerate() {
            *s = u32::from_le_bytes(b.try_into().expect("4 bytes"));
            if *s < RANS_L {
                return Err(CoderError::BadState { lane, state: *s });
            }
        }
        let n_words = u32::from_le_bytes(head[4 * LANES..].try_into().expect("4 bytes")) as usize;
        let rest = &bytes[HEAD..];
        let words_len =
            n_words
                .checked_mul(2)
                .filter(|&l| l <= rest.len())
                .ok_or(CoderError::Truncated {
                    what: "rANS words",
                    needed: n_words.saturating_mul(2),
                    have: rest.len(),
                })?;
        let (words, tail) = rest.split_at(words_len);
        Ok((
            Self {
                states,
                words,
                pos: 0,
                overrun: 0,
            },
            tail,
        ))
    }

    /// Decodes the next symbol of lane `lane` (symbol `i` is on lane `i % LANES`; call in
    /// symbol order) with `table`.
    #[inline]
    pub fn get(&mut self, lane: usize, table: &SymbolTable) -> u16 {
        let x = &mut self.states[lane % LANES];
        let slot = *x & (PROB_SCALE - 1);
        let index = usize::from(table.slot_entry[slot as usize]);
        let entry = table.entries[index];
        // freq · (x >> PROB_BITS) + slot − start: entry is freq << 16 | start.
        let y = (entry >> 16) * (*x >> PROB_BITS) + slot - (entry & 0xFFFF);
        // Renormalisation is taken at random: select instead of branching. The next word is
        // read either way (zero past the end) and only consumed when needed.
        let need = y < RANS_L;
        let (w, missing) = match self.words.get(self.pos..self.pos + 2) {
            Some(b) => (u16::from_le_bytes([b[0], b[1]]), false),
            None => (0, true),
        };
        *x = if need { (y << 16) | u32::from(w) } else { y };
        self.pos += 2 * usize::from(need);
        self.overrun += usize::from(need & missing);
        table.symbols[index]
    }

    /// Checks that the stream ended exactly where the encoder began.
    pub fn finish(self) -> Result<(), CoderError> {
        let words_left = self.words.len().saturating_sub(self.pos) / 2;
        if words_left > 0 || self.overrun > 0 || self.states.iter().any(|&s| s != RANS_L) {
            return Err(CoderError::BadEnd {
                words_left,
                overrun: self.overrun,
                states: self.states,
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

/// Decoder table of one [`FreqTable`].
pub struct SymbolTable {
    /// Table entry owning each probability slot.
    slot_entry: Box<[u8; PROB_SCALE as usize]>,
    /// `freq << 16 | start` of each entry.
    entries: [u32; MAX_TABLE_SYMBOLS],
    /// Symbol value of each entry.
    symbols: [u16; MAX_TABLE_SYMBOLS],
}

impl SymbolTable {
    /// Builds the decoder table.
    pub fn new(table: &FreqTable) -> Self {
        let mut slot_entry = Box::new([0u8; PROB_SCALE as usize]);
        let mut entries = [0u32; MAX_TABLE_SYMBOLS];
        let mut symbols = [0u16; MAX_TABLE_SYMBOLS];
        let mut start = 0usize;
        // A FreqTable holds 1..=MAX_TABLE_SYMBOLS symbols whose frequencies sum to
        // PROB_SCALE, so the ranges tile the slots and every index fits a byte.
        for (index, (&s, &f)) in table.symbols().iter().zip(table.freqs()).enumerate() {
            let f = usize::from(f);
            slot_entry[start..start + f].fill(index as u8);
            entries[index] = ((f as u32) << 16) | start as u32;
            symbols[index] = s;
            start += f;
        }
        Self {
            slot_entry,
            entries,
            symbols,
        }
    }
}

/// Builds the decoder tables.
pub fn dec_tables(tables: &[FreqTable]) -> Vec<SymbolTable> {
    tables.iter().map(SymbolTable::new).collect()
}

/// Appends raw bit fields, least significant bit first, to a byte vector.
pub struct BitWriter {
    bytes: Vec<u8>,
    acc: u64,
    filled: u32,
}

impl BitWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self {
            bytes: Vec::new(),
            acc: 0,
            filled: 0,
        }
    }

    /// Appends the low `n` bits of `value` (`n ≤ 64`).
    #[inline]
    pub fn put(&mut self, value: u64, n: u32) {
        if n > 32 {
            self.put32(value as u32 as u64, 32);
            self.put32(value >> 32, n - 32);
        } else {
            self.put32(value, n);
        }
    }

    #[inline]
    fn put32(&mut self, value: u64, n: u32) {
        if n == 0 {
            return;
        }
        let value = value & (u64::MAX >> (64 - n));
        self.acc |= value << self.filled;
        self.filled += n;
        if self.filled >= 32 {
            self.bytes
                .extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.filled -= 32;
        }
    }

    /// The bytes, the last one zero-padded.
    pub fn finish(mut self) -> Vec<u8> {
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
pub struct BitReader<'a> {
    bytes: &'a [u8],
    /// Bits consumed so far.
    pos: u64,
}

impl<'a> BitReader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
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
    #[inline]
    pub fn get32(&mut self, n: u32) -> u64 {
        debug_assert!(n <= 32);
        let byte = (self.pos / 8) as usize;
        let shift = (self.pos % 8) as u32;
        // n + shift ≤ 39 bits lie in the 5 bytes from `byte`; a 64-bit load covers them.
        let word = match self.bytes.get(byte..byte + 8) {
            Some(b) => u64::from_le_bytes(b.try_into().expect("8 bytes")),
            None => {
                let mut buf = [0u8; 8];
                let tail = self.bytes.get(byte..).unwrap_or(&[]);
                buf[..tail.len()].copy_from_slice(tail);
                u64::from_le_bytes(buf)
            }
        };
        self.pos += u64::from(n);
        (word >> shift) & ((1u64 << n) - 1)
    }

    /// Checks that the bits read fill the stream exactly, up to zero padding in its last
    /// byte.
    pub fn finish(self) -> Result<(), CoderError> {
        let needed_bytes = self.pos.div_ceil(8);
        let bad = || CoderError::BadBits {
            have: self.bytes.len(),
            needed_bits: self.pos,
        };
        if needed_bytes != self.bytes.len() as u64 {
            return Err(bad());
        }
        let used_in_last = (self.pos % 8) as u32;
        if used_in_last > 0 && self.bytes[self.bytes.len() - 1] >> used_in_last != 0 {
            return Err(bad());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rans_round_trip_with_a_table_per_symbol() {
        let a = FreqTable::from_counts(&[90, 5, 5]).unwrap();
        let b = FreqTable::from_counts(&[1, 1, 1, 97]).unwrap();
        let tables = [a, b];
        let enc = enc_tables(&tables, 2);
        let dec = dec_tables(&tables);
        let symbols: Vec<(u16, usize)> = (0..1003)
            .map(|i| {
                if i % 3 == 0 {
                    ((i % 4) as u16, 1)
                } else {
                    ((i % 3) as u16, 0)
                }
            })
            .collect();
        let mut e = RansEncoder::new(symbols.len());
        for (i, &(s, t)) in symbols.iter().enumerate().rev() {
            e.put(i, s, &enc[t]);
        }
        let mut bytes = Vec::new();
        e.finish(&mut bytes);
        let (mut d, rest) = RansDecoder::new(&bytes).unwrap();
        assert!(rest.is_empty());
        for (i, &(s, t)) in symbols.iter().enumerate() {
            assert_eq!(d.get(i % LANES, &dec[t]), s, "symbol {i}");
        }
        d.finish().unwrap();

        // One symbol short, or a flipped word: the end check fails.
        let (mut d, _) = RansDecoder::new(&bytes).unwrap();
        for (i, &(_, t)) in symbols.iter().enumerate().skip(1) {
            d.get((i - 1) % LANES, &dec[t]);
        }
        assert!(d.finish().is_err());
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        let (mut d, _) = RansDecoder::new(&bad).unwrap();
        for (i, &(_, t)) in symbols.iter().enumerate() {
            d.get(i % LANES, &dec[t]);
        }
        assert!(d.finish().is_err());
        assert!(RansDecoder::new(&bytes[..10]).is_err());
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
