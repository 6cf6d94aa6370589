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

use super::model::{
    DecTable, EncEntry, EncTable, PortableEntry, ScalarSlots, MAX_SYMBOL_BITS, PORTABLE_ENTRIES,
    PROB_BITS, PROB_SCALE, RCP_SHIFT,
};
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

mod decode;
mod encode;
mod simd;
#[cfg(test)]
mod tests;

pub use decode::{decode_chunk, decode_chunk_pair};
pub(crate) use decode::{decode_chunk_as, decode_chunk_pair_as};
pub use encode::encode_chunk;

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
