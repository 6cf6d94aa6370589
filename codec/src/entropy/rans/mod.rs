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

    /// `bytes` (8-bit symbols of a raw block) as this type, into `out` (as long).
    fn from_bytes(bytes: &[u8], out: &mut [Self]);
}

impl Symbol for u16 {
    #[inline(always)]
    fn from_symbol(symbol: u16) -> Self {
        symbol
    }

    fn from_bytes(bytes: &[u8], out: &mut [Self]) {
        for (o, &b) in out.iter_mut().zip(bytes) {
            *o = u16::from(b);
        }
    }
}

impl Symbol for u8 {
    #[inline(always)]
    fn from_symbol(symbol: u16) -> Self {
        symbol as u8
    }

    fn from_bytes(bytes: &[u8], out: &mut [Self]) {
        out.copy_from_slice(bytes);
    }
}

/// An F16 merge done by a vector rANS kernel as it decodes a chunk's first field (8-bit
/// symbols): each group's 32 elements are written to the output (two bytes each) from
/// the symbols and the second field's bytes, instead of the symbols to the symbol buffer
/// for a merge pass to read back. As many whole groups as both fields' lengths hold;
/// `NONE` merges nothing. It holds `dst` mutably borrowed while it lives.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct F16Merge<'a> {
    /// The second field, one byte per element (bit-packed 8-bit symbols, in place).
    low: *const u8,
    /// The output, two bytes per element.
    dst: *mut u8,
    /// Elements readable at `low` and writable at `dst`.
    len: usize,
    /// The fields of the joint F16 layout instead of the plain one.
    joint: bool,
    _borrow: std::marker::PhantomData<&'a [u8]>,
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl<'a> F16Merge<'a> {
    /// No merge.
    pub(crate) const NONE: Self = Self {
        low: std::ptr::null(),
        dst: std::ptr::null_mut(),
        len: 0,
        joint: false,
        _borrow: std::marker::PhantomData,
    };

    /// A merge of the elements whose second field is `low` into `dst` (two bytes each):
    /// `min(low.len(), dst.len() / 2)` of them at most. `joint`: the fields of the joint
    /// F16 layout.
    pub(crate) fn new(low: &'a [u8], dst: &'a mut [u8], joint: bool) -> Self {
        Self {
            low: low.as_ptr(),
            dst: dst.as_mut_ptr(),
            len: low.len().min(dst.len() / 2),
            joint,
            _borrow: std::marker::PhantomData,
        }
    }
}

mod decode;
mod encode;
mod simd;
#[cfg(test)]
mod tests;

pub use decode::{decode_chunk, decode_chunk_pair};
pub(crate) use decode::{
    decode_chunk_as, decode_chunk_pair_as, decode_chunk_raw, pairs_interleaved, raw_area_len,
    raw_symbols, RawSpan,
};
pub use encode::encode_chunk;
#[cfg(target_arch = "x86_64")]
pub(crate) use simd::{gather8_by_loads, refill8_shuffle};

thread_local! {
    /// This thread's write-ahead window (see [`write_ahead`]): next byte, end, bytes per
    /// group of [`LANES`] symbols; empty when `next >= end`.
    static WRITE_AHEAD: std::cell::Cell<(usize, usize, usize)> =
        const { std::cell::Cell::new((0, 0, 0)) };
    /// This thread's read-ahead window (see [`write_ahead`]), in the same form.
    static READ_AHEAD: std::cell::Cell<(usize, usize, usize)> =
        const { std::cell::Cell::new((0, 0, 0)) };
}

/// Runs `decode` with `out` announced as the bytes that the caller writes once the decode
/// is done, `bytes_per_symbol` of them per symbol decoded: the vector decoders issue a
/// write prefetch (`prefetchw`) for each group's share of `out` as they go, so that the
/// merge after them finds its output lines in cache, owned, instead of waiting on each
/// line's read from memory (the F32 merge spent most of its ~19 % of a decode on those
/// reads: BENCHMARKS.md, tenth session, dec12). The rANS loop is bound by its own
/// dependency chains, and the prefetches overlap with it. Only addresses are computed:
/// a prefetch never faults, and nothing is read or written through them.
/// (`out` as an address range: the caller holds the bytes mutably borrowed elsewhere.)
///
/// With `read`, a bit-packed field of `read.1` bits per symbol that the merge reads in
/// place (at `read.0`, the symbols in the order decoded), the decoders also prefetch each
/// group's share of it for reading (`prefetcht0`), so that the merge finds those bytes
/// in cache rather than in memory: one-thread decode by CPU time F16 +6–9 %, BF16
/// +2–4 % (its packed residual); level for F32's three such fields, which therefore do
/// not ask for it (BENCHMARKS.md, twenty-fifth session, dec25).
pub(crate) fn write_ahead<R>(
    out: std::ops::Range<*const u8>,
    bytes_per_symbol: usize,
    read: Option<(std::ops::Range<*const u8>, u32)>,
    decode: impl FnOnce() -> R,
) -> R {
    let window = (
        out.start as usize,
        out.end as usize,
        LANES * bytes_per_symbol,
    );
    let read_window = read.map_or((0, 0, 0), |(bytes, bits)| {
        (
            bytes.start as usize,
            bytes.end as usize,
            LANES * bits as usize / 8,
        )
    });
    WRITE_AHEAD.with(|w| w.set(window));
    READ_AHEAD.with(|w| w.set(read_window));
    let result = decode();
    WRITE_AHEAD.with(|w| w.set((0, 0, 0)));
    READ_AHEAD.with(|w| w.set((0, 0, 0)));
    result
}

/// Moves this thread's [`write_ahead`] windows on by `groups` groups of [`LANES`]
/// symbols: for raw blocks, which the decoder copies without walking the windows.
pub(crate) fn skip_ahead(groups: usize) {
    for window in [&WRITE_AHEAD, &READ_AHEAD] {
        window.with(|w| {
            let (next, end, step) = w.get();
            if next < end {
                w.set((next.saturating_add(groups.saturating_mul(step)), end, step));
            }
        });
    }
}

/// The window of [`write_ahead`] as a vector decoder walks it: taken when the decoder
/// starts, one [`WriteAhead::group`] per group decoded, put back when it returns (a
/// chunk decodes in several calls, one per block).
#[cfg(target_arch = "x86_64")]
pub(crate) struct WriteAhead {
    next: usize,
    end: usize,
    step: usize,
    /// The read-ahead window: next byte, end, bytes per group (at most 32, so that a
    /// prefetch per group reaches every line).
    read: (usize, usize, usize),
}

#[cfg(target_arch = "x86_64")]
impl WriteAhead {
    /// This thread's window.
    #[inline(always)]
    pub(crate) fn take() -> Self {
        let (next, end, step) = WRITE_AHEAD.with(|w| w.get());
        let read = READ_AHEAD.with(|w| w.get());
        Self {
            next,
            end,
            step,
            read,
        }
    }

    /// Prefetches, for writing, the next group's share of the window, if any is left, and
    /// for reading the read window's.
    #[inline(always)]
    pub(crate) fn group(&mut self) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0, _MM_HINT_T0};
        if self.next < self.end {
            let mut line = self.next;
            while line < self.next + self.step {
                // SAFETY: SSE is part of the x86-64 baseline; a prefetch is a hint that
                // reads nothing into the program and never faults, whatever the address.
                unsafe { _mm_prefetch::<_MM_HINT_ET0>(line as *const i8) };
                line += 64;
            }
            self.next += self.step;
        }
        let (next, end, step) = self.read;
        if next < end {
            // SAFETY: as above.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(next as *const i8) };
            self.read.0 = next + step;
        }
    }

    /// Hands the rest of the windows back to this thread.
    #[inline(always)]
    pub(crate) fn put(self) {
        WRITE_AHEAD.with(|w| w.set((self.next, self.end, self.step)));
        READ_AHEAD.with(|w| w.set(self.read));
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
