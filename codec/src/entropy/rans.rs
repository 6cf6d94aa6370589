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

use super::model::{DecTable, EncTable, PROB_BITS};
use super::EntropyError;

/// Independent rANS states per chunk.
pub const LANES: usize = 16;
/// Lower bound of the normalised state interval, and the encoder's initial state.
pub const RANS_L: u32 = 1 << 16;
/// Bytes of the state header at the start of a chunk payload.
pub const STATE_BYTES: usize = 4 * LANES;

/// Encodes `symbols` with `table` and appends the chunk payload to `out`.
///
/// Every symbol must have a non-zero frequency in `table`; the caller builds the table
/// from these very symbols.
pub fn encode_chunk(symbols: &[u16], table: &EncTable, out: &mut Vec<u8>) {
    let mut states = [RANS_L; LANES];
    // Words come out in reverse decode order; collect and flip them once.
    let mut words: Vec<u16> = Vec::with_capacity(symbols.len() / 4 + 16);
    for (i, &sym) in symbols.iter().enumerate().rev() {
        let lane = i % LANES;
        let (freq, start) = table.entries[usize::from(sym)];
        debug_assert!(freq > 0, "symbol {sym} missing from table");
        let mut x = states[lane];
        // x must end below 2^32 after coding: renormalise while x ≥ freq · 2^(32 - PROB_BITS).
        let x_max = u64::from(freq) << (32 - PROB_BITS);
        if u64::from(x) >= x_max {
            words.push(x as u16);
            x >>= 16;
        }
        states[lane] = ((x / freq) << PROB_BITS) + (x % freq) + start;
    }
    out.reserve(STATE_BYTES + 2 * words.len());
    for s in states {
        out.extend_from_slice(&s.to_le_bytes());
    }
    for w in words.iter().rev() {
        out.extend_from_slice(&w.to_le_bytes());
    }
}

/// Decodes `out.len()` symbols from one chunk payload.
///
/// Corrupt input cannot read out of bounds or loop: past the end of the words the
/// decoder reads zeros and counts the overrun, which fails the chunk once at the end.
pub fn decode_chunk(payload: &[u8], table: &DecTable, out: &mut [u16]) -> Result<(), EntropyError> {
    if payload.len() < STATE_BYTES || (payload.len() - STATE_BYTES) % 2 != 0 {
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
    let mut reader = WordReader {
        bytes: word_bytes,
        pos: 0,
    };
    let mask = (1u32 << PROB_BITS) - 1;
    let step = |x: &mut u32, out: &mut u16, reader: &mut WordReader| {
        let entry = table.slots[(*x & mask) as usize];
        *out = table.symbols[(entry >> 24) as usize];
        let freq = ((entry >> 12) & 0xFFF) + 1;
        *x = freq * (*x >> PROB_BITS) + (entry & 0xFFF);
        if *x < RANS_L {
            *x = (*x << 16) | u32::from(reader.next());
        }
    };
    let mut groups = out.chunks_exact_mut(LANES);
    for group in &mut groups {
        for (x, o) in states.iter_mut().zip(group.iter_mut()) {
            step(x, o, &mut reader);
        }
    }
    for (x, o) in states.iter_mut().zip(groups.into_remainder()) {
        step(x, o, &mut reader);
    }
    let words = word_bytes.len() / 2;
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

/// Reads 16-bit words; past the end it yields zeros and keeps counting, so the overrun
/// shows up as a position beyond the word count.
struct WordReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl WordReader<'_> {
    #[inline(always)]
    fn next(&mut self) -> u16 {
        let at = 2 * self.pos;
        self.pos += 1;
        match self.bytes.get(at..at + 2) {
            Some(b) => u16::from_le_bytes([b[0], b[1]]),
            None => 0,
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
        encode_chunk(symbols, &EncTable::new(&table, bits), &mut payload);
        let mut back = vec![0u16; symbols.len()];
        decode_chunk(&payload, &DecTable::new(&table), &mut back).unwrap();
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
    fn corrupt_payloads_fail_cleanly() {
        let symbols: Vec<u16> = (0..4000u32).map(|i| ((i * 7919) % 13) as u16).collect();
        let table = FreqTable::from_counts(&histogram(&symbols, 4)).unwrap();
        let mut payload = Vec::new();
        encode_chunk(&symbols, &EncTable::new(&table, 4), &mut payload);
        let dec = DecTable::new(&table);
        let mut out = vec![0u16; symbols.len()];
        for cut in [0, 10, STATE_BYTES, payload.len() - 2] {
            assert!(
                decode_chunk(&payload[..cut], &dec, &mut out).is_err(),
                "cut at {cut}"
            );
        }
        let mut flipped = payload.clone();
        flipped[STATE_BYTES + 100] ^= 0x10;
        assert!(decode_chunk(&flipped, &dec, &mut out).is_err());
    }
}
