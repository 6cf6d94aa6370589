//! The ULP delta: the difference of the fine-tune and base elements counted in units in
//! the last place, entropy coded with tables chosen by the base element's exponent
//! (FORMAT.md §9.3).
//!
//! Why the exponent: a fine-tune moves weights by amounts of similar absolute size, and
//! one ULP of a weight is `2^(exponent - mantissa bits)`, so the same move is many ULPs
//! for a small weight and few for a large one. Tables per exponent group follow that
//! shift; which exponents share a table is chosen per tensor by the encoder, trading
//! table bytes against coded bytes. A second context bit — was the difference of the
//! element [`LANES`](super::coder::LANES) places back zero — catches runs of untouched
//! weights (embedding rows a fine-tune never saw). It looks back a whole lane round rather
//! than one element so that the rANS lanes stay independent chains and decode in parallel.
//!
//! This module is the model (element keys, tokens, contexts, table choice, layout); the
//! rANS loop and the raw bit stream live in [`super::coder`].

mod decode;
mod encode;
mod plan;
mod stream;
#[cfg(test)]
mod tests;
mod wide;
mod wide_encode;
mod wire;

pub(crate) use decode::{decode_on, parse, Parsed};
pub(super) use encode::encode;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use encode::encode_chunked;
#[cfg(test)]
pub(crate) use encode::{encode_chunked_on, encode_layout2, has_vector_encoder};

use crate::dtype::Dtype;

/// Most exponent groups (tables per context bit) a delta may declare.
pub const MAX_GROUPS: usize = 64;
/// Flag bit: tables are chosen by (exponent group, token `LANES` elements back was zero).
const FLAG_PREV_ZERO: u8 = 1;
/// Flag bit: the coded elements are split into independent chunks (layout 2, FORMAT.md
/// §9.3), which decode and encode in parallel. Without it, one stream (layout 1).
const FLAG_CHUNKED: u8 = 2;
/// Flag bit (with [`FLAG_CHUNKED`]): each chunk's stream has
/// [`WIDE_LANES`](super::coder::WIDE_LANES) rANS lanes and the context bit looks that many
/// elements back (layout 3), so that a vector decoder steps 32 independent chains at once.
const FLAG_WIDE: u8 = 4;
/// Zero bytes after a layout-3 chunk's extra bits (the decoder's copy; not in the
/// format): a group of 32 elements reads at most 32 × 30 bits plus a 64-bit load ahead of
/// the position, and the AVX2 loop checks room for two groups (see `wide`).
const WIDE_BIT_PADDING: usize = 256;
/// Elements per chunk the encoder writes: large enough that a chunk's fixed bytes
/// (32 states, word count, length, bit padding: ~136 bytes) are noise, small enough that a
/// large tensor splits into pieces of work for the threads. Measured on the real MiniLM
/// fine-tune (BENCHMARKS.md): 2^16 cost 0.14 % of the file more than layout 2, 2^18 0.08 %.
pub(crate) const CHUNK_ELEMS: usize = 1 << 18;
/// Largest chunk length a decoder accepts (it allocates nothing by it).
const MAX_CHUNK_ELEMS: u64 = 1 << 30;
/// Differences of magnitude below this are tokens of their own; above, a token names the
/// binade and the bit after the leading one, and the lower bits are stored raw.
const DIRECT: u64 = 4;
/// Exponent groups are planned on at most this many buckets of exponent values.
const MAX_PLAN_BUCKETS: usize = 64;

/// Bit layout of a float element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Bits per element.
    bits: u32,
    /// Exponent bits.
    exp_bits: u32,
    /// Mantissa bits.
    mant_bits: u32,
}

impl Layout {
    /// The layout of a float dtype; `None` for any other dtype.
    pub(crate) fn of(dtype: &Dtype) -> Option<Self> {
        let (bits, exp_bits, mant_bits) = match dtype {
            Dtype::BF16 => (16, 8, 7),
            Dtype::F16 => (16, 5, 10),
            Dtype::F32 => (32, 8, 23),
            Dtype::F64 => (64, 11, 52),
            Dtype::F8E4M3 => (8, 4, 3),
            Dtype::F8E5M2 => (8, 5, 2),
            _ => return None,
        };
        Some(Self {
            bits,
            exp_bits,
            mant_bits,
        })
    }

    fn width(self) -> usize {
        self.bits as usize / 8
    }

    fn sign(self) -> u64 {
        1 << (self.bits - 1)
    }

    fn mask(self) -> u64 {
        u64::MAX >> (64 - self.bits)
    }

    fn exponents(self) -> usize {
        1 << self.exp_bits
    }

    #[inline]
    fn exponent(self, bits: u64) -> usize {
        ((bits >> self.mant_bits) as usize) & (self.exponents() - 1)
    }

    /// Maps sign-magnitude bit patterns to unsigned integers in the order of the values
    /// they encode (−NaN < −Inf < … < −0 < +0 < … < +Inf < +NaN). A bijection, so every
    /// bit pattern, NaN payloads included, survives the round trip.
    #[inline]
    fn key(self, bits: u64) -> u64 {
        if bits & self.sign() != 0 {
            !bits & self.mask()
        } else {
            bits | self.sign()
        }
    }

    #[inline]
    fn unkey(self, key: u64) -> u64 {
        if key & self.sign() != 0 {
            key & !self.sign()
        } else {
            !key & self.mask()
        }
    }

    /// Number of token values: 0, then two signs for each magnitude class.
    fn alphabet(self) -> usize {
        4 * self.bits as usize - 1
    }
}

/// A difference split into its rANS token and raw extra bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Token {
    symbol: u16,
    extra: u64,
    extra_bits: u32,
}

/// Token of a difference (`diff` is `key(target) - key(base)` modulo `2^bits`, read as
/// two's complement). Token 0 is "no change"; otherwise `2·class − 1 + negative`, where
/// classes 1..=3 are the magnitudes 1..=3 and class `4 + 2(e − 2) + h` (`e ≥ 2`) holds
/// magnitudes `2^e + h·2^(e−1) + r` with `r` the `e − 1` raw extra bits. The reference
/// for [`tokenize_fast`], which the encoder uses.
#[cfg(test)]
#[inline]
fn tokenize(layout: Layout, diff: u64) -> Token {
    if diff == 0 {
        return Token {
            symbol: 0,
            extra: 0,
            extra_bits: 0,
        };
    }
    let negative = diff & layout.sign() != 0;
    let magnitude = if negative {
        diff.wrapping_neg() & layout.mask()
    } else {
        diff
    };
    let (class, extra, extra_bits) = if magnitude < DIRECT {
        (magnitude as u32, 0, 0)
    } else {
        let e = 63 - magnitude.leading_zeros();
        let half = (magnitude >> (e - 1)) & 1;
        (
            4 + 2 * (e - 2) + half as u32,
            magnitude & ((1 << (e - 1)) - 1),
            e - 1,
        )
    };
    Token {
        symbol: (2 * class - 1 + u32::from(negative)) as u16,
        extra,
        extra_bits,
    }
}

/// [`tokenize`] without branches on the difference: the encoder's loop, where most
/// differences are 0 or small at random, which branches mispredict. Same result
/// (`tokenize_fast_matches_tokenize`).
#[inline(always)]
fn tokenize_fast(layout: Layout, diff: u64) -> Token {
    let negative = (diff >> (layout.bits - 1)) & 1;
    let magnitude = if negative != 0 {
        diff.wrapping_neg() & layout.mask()
    } else {
        diff
    };
    // ⌊log2⌋ of the magnitude (0 for 0 and 1); only used when it is at least DIRECT.
    let e = 63 - (magnitude | 1).leading_zeros();
    let big = magnitude >= DIRECT;
    let extra_bits = if big { e - 1 } else { 0 };
    let half = ((magnitude >> extra_bits) & 1) as u32;
    let class = if big { 2 * e + half } else { magnitude as u32 };
    Token {
        // 2·class − 1 + negative, and 0 for class 0 (where negative is 0).
        symbol: (2 * class + negative as u32).saturating_sub(1) as u16,
        extra: magnitude & ((1u64 << extra_bits) - 1),
        extra_bits,
    }
}

/// Raw bits that follow `symbol` (below the alphabet size; 0 for symbol 0).
#[inline]
fn extra_bits_of(symbol: u16) -> u32 {
    let class = u32::from(symbol).div_ceil(2);
    if u64::from(class) < DIRECT {
        0
    } else {
        (class - 4) / 2 + 1
    }
}

/// Inverse of [`tokenize`], given the extra bits. Symbols are bounded by the alphabet, so
/// shifts stay below 64; a non-canonical magnitude still yields some bit pattern, which
/// the caller's checksum rejects.
#[inline]
fn untokenize(layout: Layout, symbol: u16, extra: u64) -> u64 {
    let class = u32::from(symbol).div_ceil(2);
    let negative = symbol & 1 == 0;
    // Both cases computed and selected, so that decoding does not branch on the class.
    let big = u64::from(class) >= DIRECT;
    let k = class.saturating_sub(4);
    let e = k / 2 + 2;
    let binade = (1u64 << e) | (u64::from(k & 1) << (e - 1)) | extra;
    let magnitude = if big { binade } else { u64::from(class) };
    if negative {
        magnitude.wrapping_neg() & layout.mask()
    } else {
        magnitude & layout.mask()
    }
}

#[inline]
fn load<const W: usize>(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf[..W].copy_from_slice(&bytes[..W]);
    u64::from_le_bytes(buf)
}

#[inline]
fn store<const W: usize>(value: u64, bytes: &mut [u8]) {
    bytes[..W].copy_from_slice(&value.to_le_bytes()[..W]);
}

/// The base elements a layout-3 chunk decoder reads and the output it writes: two slices
/// of one length, or one slice holding the base that the output overwrites (`get`
/// decodes a piece of the base into the buffer it then decodes the delta in, so that the
/// piece is in cache once, not twice). The decoders read every element before they write
/// it and never read an element they have written: each group's (or vector's) elements
/// are loaded before its results are stored, and groups go forward.
pub(super) struct BaseOut<'a> {
    base: *const u8,
    out: *mut u8,
    len: usize,
    in_place: bool,
    _buffers: std::marker::PhantomData<(&'a [u8], &'a mut [u8])>,
}

impl<'a> BaseOut<'a> {
    /// Reads `base`, writes `out` (the same length: panics otherwise).
    pub(super) fn separate(base: &'a [u8], out: &'a mut [u8]) -> Self {
        assert_eq!(base.len(), out.len());
        Self {
            base: base.as_ptr(),
            out: out.as_mut_ptr(),
            len: out.len(),
            in_place: false,
            _buffers: std::marker::PhantomData,
        }
    }

    /// Reads the base from `buf` and overwrites it with the output.
    pub(super) fn in_place(buf: &'a mut [u8]) -> Self {
        let p = buf.as_mut_ptr();
        Self {
            base: p,
            out: p,
            len: buf.len(),
            in_place: true,
            _buffers: std::marker::PhantomData,
        }
    }

    /// Bytes of base (and of output).
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Where the base's bytes are read (`len` of them).
    #[cfg(target_arch = "x86_64")]
    pub(super) fn base_ptr(&self) -> *const u8 {
        self.base
    }

    /// Where the output's bytes are written (`len` of them; the base's bytes, in place).
    #[cfg(target_arch = "x86_64")]
    pub(super) fn out_ptr(&mut self) -> *mut u8 {
        self.out
    }

    /// Bytes `at..at + n`, borrowed from this one (panics past the end).
    pub(super) fn sub(&mut self, at: usize, n: usize) -> BaseOut<'_> {
        assert!(at <= self.len && n <= self.len - at);
        // SAFETY: at + n <= len, so both pointers stay within their buffers.
        let (base, out) = unsafe { (self.base.add(at), self.out.add(at)) };
        BaseOut {
            base,
            out,
            len: n,
            in_place: self.in_place,
            _buffers: std::marker::PhantomData,
        }
    }

    /// The base element of `W` bytes at byte `at` (panics past the end).
    #[inline]
    pub(super) fn load<const W: usize>(&self, at: usize) -> u64 {
        assert!(at <= self.len && W <= self.len - at);
        let mut buf = [0u8; 8];
        // SAFETY: the `W` bytes at `at` are within the base (asserted); `buf` is a local.
        unsafe { std::ptr::copy_nonoverlapping(self.base.add(at), buf.as_mut_ptr(), W) };
        u64::from_le_bytes(buf)
    }

    /// Writes the low `W` bytes of `value` as the output element at byte `at` (panics past
    /// the end).
    #[inline]
    pub(super) fn store<const W: usize>(&mut self, at: usize, value: u64) {
        assert!(at <= self.len && W <= self.len - at);
        let bytes = value.to_le_bytes();
        // SAFETY: the `W` bytes at `at` are within the output (asserted); `bytes` is a
        // local.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.out.add(at), W) };
    }

    /// Runs `f` on the base and the output as slices; in place, on a copy of the base.
    fn with_slices<R>(&mut self, f: impl FnOnce(&[u8], &mut [u8]) -> R) -> R {
        // SAFETY: `out` is `len` writable bytes borrowed mutably for `'a` by this value,
        // and `self` is borrowed mutably while the slice lives.
        let out = unsafe { std::slice::from_raw_parts_mut(self.out, self.len) };
        if self.in_place {
            let base = out.to_vec();
            f(&base, out)
        } else {
            // SAFETY: separate: `base` is `len` readable bytes borrowed for `'a`, apart
            // from `out`.
            let base = unsafe { std::slice::from_raw_parts(self.base, self.len) };
            f(base, out)
        }
    }
}
