//! The ULP delta: the difference of the fine-tune and base elements counted in units in
//! the last place, entropy coded with tables chosen by the base element's exponent
//! (FORMAT.md §9.3).
//!
//! Why the exponent: a fine-tune moves weights by amounts of similar absolute size, and
//! one ULP of a weight is `2^(exponent - mantissa bits)`, so the same move is many ULPs
//! for a small weight and few for a large one. Tables per exponent group follow that
//! shift; which exponents share a table is chosen per tensor by the encoder, trading
//! table bytes against coded bytes. A second context bit — was the difference of the
//! element [`LANES`] places back zero — catches runs of untouched weights (embedding rows
//! a fine-tune never saw). It looks back a whole lane round rather than one element so
//! that the rANS lanes stay independent chains and decode in parallel.
//!
//! This module is the model (element keys, tokens, contexts, table choice, layout); the
//! rANS loop and the raw bit stream live in [`super::coder`].

use rayon::prelude::*;

mod wide;
mod wide_encode;
use wide::decode_stream_wide;
use wide_encode::PackedTables;

use super::coder::{
    self, BitReader, BitWriter, CoderError, RansDecoder, RansEncoder, SlotTables, LANES, WIDE_LANES,
};
use super::{Base, DeltaError, DeltaMethod};
use crate::cpu::{self, SimdLevel};
use crate::dtype::Dtype;
use crate::entropy::model::{EncTable, FreqTable, PROB_SCALE};

/// Most exponent groups (tables per context bit) a delta may declare.
pub const MAX_GROUPS: usize = 64;
/// Flag bit: tables are chosen by (exponent group, token `LANES` elements back was zero).
const FLAG_PREV_ZERO: u8 = 1;
/// Flag bit: the coded elements are split into independent chunks (layout 2, FORMAT.md
/// §9.3), which decode and encode in parallel. Without it, one stream (layout 1).
const FLAG_CHUNKED: u8 = 2;
/// Flag bit (with [`FLAG_CHUNKED`]): each chunk's stream has [`WIDE_LANES`] rANS lanes and
/// the context bit looks that many elements back (layout 3), so that a vector decoder
/// steps 32 independent chains at once.
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

/// The tables of a delta: which exponents share a group, and one table per context.
struct Plan {
    /// Group of every exponent value.
    group_of: Vec<u8>,
    /// Last exponent value of each group (strictly increasing, the last is the largest
    /// exponent value).
    group_last: Vec<usize>,
    prev_zero: bool,
    /// `group · K + prev_zero` → table (`K` = 2 with the previous-zero bit, else 1);
    /// `None` for a context no element uses.
    tables: Vec<Option<FreqTable>>,
}

impl Plan {
    fn contexts_per_group(&self) -> usize {
        if self.prev_zero {
            2
        } else {
            1
        }
    }
}

/// Histograms of symbols per (base exponent, context bit: the symbol `LANES` elements
/// back was zero).
struct Stats {
    /// `[exponent][context bit][symbol]`, flattened.
    hist: Vec<u32>,
    alphabet: usize,
}

impl Stats {
    fn at(&self, exp: usize, prev_zero: usize) -> &[u32] {
        let start = (exp * 2 + prev_zero) * self.alphabet;
        &self.hist[start..start + self.alphabet]
    }
}

/// Codes `target` against `base` (same length) in layout 3 with the default chunk
/// length. Non-float dtypes are not supported.
pub(super) fn encode(dtype: &Dtype, base: &[u8], target: &[u8]) -> Result<Vec<u8>, DeltaError> {
    encode_chunked(dtype, base, target, CHUNK_ELEMS)
}

/// [`encode`] with `chunk_elems` elements per chunk (a positive multiple of
/// [`WIDE_LANES`]).
pub(crate) fn encode_chunked(
    dtype: &Dtype,
    base: &[u8],
    target: &[u8],
    chunk_elems: usize,
) -> Result<Vec<u8>, DeltaError> {
    encode_chunked_on(cpu::simd_level(), dtype, base, target, chunk_elems)
}

/// [`encode_chunked`] on the code path `level` (scalar where the CPU lacks it); every
/// path gives the same bytes.
pub(crate) fn encode_chunked_on(
    level: SimdLevel,
    dtype: &Dtype,
    base: &[u8],
    target: &[u8],
    chunk_elems: usize,
) -> Result<Vec<u8>, DeltaError> {
    encode_lanes::<WIDE_LANES>(level, dtype, base, target, chunk_elems)
}

/// Whether path `level` codes layout 3's groups of `W`-byte elements with a vector encoder
/// (tests check that the path they compare with the scalar one is really taken).
#[cfg(test)]
pub(crate) fn has_vector_encoder<const W: usize>(level: SimdLevel) -> bool {
    wide_encode::supports::<W>(level)
}

/// Layout 2 (4 lanes), which the writer no longer emits: for tests of the decoder's
/// older path.
#[cfg(test)]
pub(crate) fn encode_layout2(
    dtype: &Dtype,
    base: &[u8],
    target: &[u8],
    chunk_elems: usize,
) -> Result<Vec<u8>, DeltaError> {
    encode_lanes::<LANES>(SimdLevel::Scalar, dtype, base, target, chunk_elems)
}

/// The chunked layout with `L` lanes per stream: layout 2 for [`LANES`], 3 for
/// [`WIDE_LANES`].
fn encode_lanes<const L: usize>(
    level: SimdLevel,
    dtype: &Dtype,
    base: &[u8],
    target: &[u8],
    chunk_elems: usize,
) -> Result<Vec<u8>, DeltaError> {
    assert!(
        chunk_elems > 0 && chunk_elems.is_multiple_of(L) && chunk_elems as u64 <= MAX_CHUNK_ELEMS,
        "chunk length {chunk_elems} is not a positive multiple of {L}"
    );
    let layout = Layout::of(dtype).ok_or_else(|| DeltaError::Unsupported {
        method: DeltaMethod::Ulp.name(),
        dtype: dtype.to_string(),
    })?;
    Ok(match layout.width() {
        1 => encode_w::<1, L>(level, layout, base, target, chunk_elems),
        2 => encode_w::<2, L>(level, layout, base, target, chunk_elems),
        4 => encode_w::<4, L>(level, layout, base, target, chunk_elems),
        _ => encode_w::<8, L>(level, layout, base, target, chunk_elems),
    })
}

/// The difference of two elements, as FORMAT.md §9.3 defines it.
#[inline]
fn difference(layout: Layout, base: u64, target: u64) -> u64 {
    layout.key(target).wrapping_sub(layout.key(base)) & layout.mask()
}

/// Tokenizes one chunk's elements into `symbols`, counts them into `hist`
/// (`[exponent][context bit][symbol]`) and returns the chunk's raw extra bits (one pass
/// over the elements). The context bit looks `L` elements back; that of a chunk's first
/// `L` elements is "was zero": chunks are independent.
fn count_chunk<const W: usize, const L: usize>(
    level: SimdLevel,
    layout: Layout,
    base: &[u8],
    target: &[u8],
    symbols: &mut [u8],
    hist: &mut [u32],
) -> Vec<u8> {
    let alphabet = layout.alphabet();
    let mut bits = BitWriter::new();
    let done = if L == WIDE_LANES && wide_encode::supports::<W>(level) {
        wide_encode::count_elements::<W>(level, layout, base, target, symbols, hist, &mut bits)
    } else {
        0
    };
    for i in done..symbols.len() {
        let (b, t) = (load::<W>(&base[i * W..]), load::<W>(&target[i * W..]));
        let token = tokenize_fast(layout, difference(layout, b, t));
        let back_zero = usize::from(i < L || symbols[i - L] == 0);
        hist[(layout.exponent(b) * 2 + back_zero) * alphabet + usize::from(token.symbol)] += 1;
        // Below the alphabet, at most 255 (`Layout::alphabet`).
        symbols[i] = token.symbol as u8;
        bits.put(token.extra, token.extra_bits);
    }
    bits.finish()
}

fn encode_w<const W: usize, const L: usize>(
    level: SimdLevel,
    layout: Layout,
    base: &[u8],
    target: &[u8],
    chunk: usize,
) -> Vec<u8> {
    let n = base.len() / W;
    let body = n * W;
    let alphabet = layout.alphabet();
    let hist_len = layout.exponents() * 2 * alphabet;
    // A byte per symbol (alphabets have at most 255): half the fresh pages of 16-bit
    // symbols, which a tensor-sized buffer costs (~2 µs per 4 KiB here).
    let mut symbols = vec![0u8; n];
    // Chunks are counted in parallel, each thread into its own histogram; each chunk's
    // extra bits come back with its index.
    let (hist, mut extra) = symbols
        .par_chunks_mut(chunk)
        .zip(base[..body].par_chunks(chunk * W))
        .zip(target[..body].par_chunks(chunk * W))
        .enumerate()
        .fold(
            || (vec![0u32; hist_len], Vec::new()),
            |(mut hist, mut extra), (i, ((s, b), t))| {
                extra.push((i, count_chunk::<W, L>(level, layout, b, t, s, &mut hist)));
                (hist, extra)
            },
        )
        .reduce_with(|(mut a, mut ea), (b, eb)| {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
            ea.extend(eb);
            (a, ea)
        })
        .unwrap_or_else(|| (vec![0; hist_len], Vec::new()));
    extra.sort_unstable_by_key(|(i, _)| *i);
    let stats = Stats { hist, alphabet };
    let plan = [false, true]
        .into_iter()
        .map(|prev| plan(layout, &stats, prev))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .expect("two candidate plans")
        .1;

    let wide = if L == WIDE_LANES { FLAG_WIDE } else { 0 };
    let mut out = vec![
        DeltaMethod::Ulp.id(),
        (u8::from(plan.prev_zero) * FLAG_PREV_ZERO) | FLAG_CHUNKED | wide,
    ];
    write_varint(&mut out, plan.group_last.len() as u64);
    for &last in &plan.group_last {
        write_varint(&mut out, last as u64);
    }
    for t in &plan.tables {
        write_table(&mut out, t.as_ref(), alphabet);
    }
    out.extend(base[body..].iter().zip(&target[body..]).map(|(b, t)| b ^ t));

    let symbol_bits = usize::BITS - (alphabet - 1).leading_zeros();
    let dummy = FreqTable::from_counts(&[1]).expect("one symbol");
    let enc = coder::enc_tables(
        &plan
            .tables
            .iter()
            .map(|t| t.clone().unwrap_or_else(|| dummy.clone()))
            .collect::<Vec<_>>(),
        symbol_bits,
    );
    let pairs = table_pairs(&plan.group_of, plan.prev_zero);
    let packed: Vec<u32> = enc.iter().flat_map(|t| t.packed.iter().copied()).collect();
    let packed = PackedTables {
        pairs: &pairs,
        packed: &packed,
        symbol_bits,
    };
    let chunks: Vec<Vec<u8>> = symbols
        .par_chunks(chunk)
        .zip(base[..body].par_chunks(chunk * W))
        .zip(extra)
        .map(|((s, b), (_, bits))| {
            encode_chunk::<W, L>(level, layout, &plan, &enc, &packed, s, b, &bits)
        })
        .collect();
    write_varint(&mut out, chunk as u64);
    for c in &chunks {
        write_varint(&mut out, c.len() as u64);
    }
    out.reserve(chunks.iter().map(Vec::len).sum());
    for c in chunks {
        out.extend_from_slice(&c);
    }
    out
}

/// One chunk's rANS states, words and extra bits (a layout-1 stream over its elements).
/// With 32 lanes and a vector encoder on path `level`, the scalar loop codes the elements
/// after the last whole group and the vector loop the groups (the encoder runs backwards).
#[allow(clippy::too_many_arguments)]
fn encode_chunk<const W: usize, const L: usize>(
    level: SimdLevel,
    layout: Layout,
    plan: &Plan,
    enc: &[EncTable],
    packed: &PackedTables<'_>,
    symbols: &[u8],
    base: &[u8],
    extra_bits: &[u8],
) -> Vec<u8> {
    let k = plan.contexts_per_group();
    let mut rans = RansEncoder::<L>::new(symbols.len());
    let vector = L == WIDE_LANES && wide_encode::supports::<W>(level);
    let groups = if vector { symbols.len() / L } else { 0 };
    for i in (groups * L..symbols.len()).rev() {
        let exp = layout.exponent(load::<W>(&base[i * W..]));
        let prev_zero = if plan.prev_zero {
            usize::from(i < L || symbols[i - L] == 0)
        } else {
            0
        };
        let table = &enc[usize::from(plan.group_of[exp]) * k + prev_zero];
        rans.put(i, u16::from(symbols[i]), table);
    }
    if vector {
        wide_encode::encode_groups::<W, L>(level, layout, packed, &mut rans, symbols, base, groups);
        cpu::note_run(level);
    }
    let mut out = Vec::with_capacity(rans.coded_len() + extra_bits.len());
    rans.finish(&mut out);
    out.extend_from_slice(extra_bits);
    out
}

/// Estimated cost in bits of coding `hist` with its own table, table included.
fn table_cost_bits(hist: &[u32]) -> f64 {
    let n: f64 = hist.iter().map(|&c| f64::from(c)).sum();
    if n == 0.0 {
        return 8.0; // an "unused" table entry
    }
    let mut bits = 0.0;
    let (mut first, mut last) = (usize::MAX, 0);
    let mut table_bytes = 0.0;
    for (s, &c) in hist.iter().enumerate() {
        if c > 0 {
            let c = f64::from(c);
            bits += c * (n / c).log2();
            first = first.min(s);
            last = s;
            table_bytes += if c * f64::from(PROB_SCALE) / n >= 128.0 {
                2.0
            } else {
                1.0
            };
        }
    }
    table_bytes +=
        (last - first + 1) as f64 - hist[first..=last].iter().filter(|&&c| c > 0).count() as f64;
    bits + 8.0 * (2.0 + table_bytes)
}

/// Chooses exponent groups (contiguous ranges of exponent values) minimising the
/// estimated size, by dynamic programming over buckets of the exponents that occur.
/// Returns the estimated bits and the plan with quantised tables.
fn plan(layout: Layout, stats: &Stats, prev_zero: bool) -> (f64, Plan) {
    let alphabet = stats.alphabet;
    let k = if prev_zero { 2 } else { 1 };
    // Histogram of one exponent for each context bit (merged when the bit is off).
    let context_hists = |exp: usize| -> Vec<Vec<u32>> {
        let (a, b) = (stats.at(exp, 0), stats.at(exp, 1));
        if prev_zero {
            vec![a.to_vec(), b.to_vec()]
        } else {
            vec![a.iter().zip(b).map(|(x, y)| x + y).collect()]
        }
    };
    let used: Vec<usize> = (0..layout.exponents())
        .filter(|&e| stats.at(e, 0).iter().chain(stats.at(e, 1)).any(|&c| c > 0))
        .collect();
    // Buckets of consecutive used exponents, at most MAX_PLAN_BUCKETS, each holding its
    // last exponent and merged histograms.
    let per_bucket = used.len().div_ceil(MAX_PLAN_BUCKETS).max(1);
    let buckets: Vec<(usize, Vec<Vec<u32>>)> = used
        .chunks(per_bucket)
        .map(|exps| {
            let mut h = vec![vec![0u32; alphabet]; k];
            for &e in exps {
                for (acc, part) in h.iter_mut().zip(context_hists(e)) {
                    for (a, p) in acc.iter_mut().zip(part) {
                        *a += p;
                    }
                }
            }
            (*exps.last().expect("chunks are not empty"), h)
        })
        .collect();
    let nb = buckets.len();
    // best[j]: cheapest cost of buckets[..j]; from[j]: where its last group starts.
    let mut best = vec![0.0f64; nb + 1];
    let mut from = vec![0usize; nb + 1];
    for j in 1..=nb {
        best[j] = f64::INFINITY;
        let mut merged = vec![vec![0u32; alphabet]; k];
        for i in (0..j).rev() {
            for (acc, part) in merged.iter_mut().zip(&buckets[i].1) {
                for (a, p) in acc.iter_mut().zip(part) {
                    *a += p;
                }
            }
            let cost = best[i] + merged.iter().map(|h| table_cost_bits(h)).sum::<f64>() + 8.0;
            if cost < best[j] {
                best[j] = cost;
                from[j] = i;
            }
        }
    }
    let mut cuts = vec![nb];
    while let Some(&j) = cuts.last() {
        if j == 0 {
            break;
        }
        cuts.push(from[j]);
    }
    cuts.reverse(); // 0 = c0 < c1 < … < nb: group g holds buckets[c_g..c_{g+1}]
    let mut group_last = Vec::new();
    let mut tables = Vec::new();
    for w in cuts.windows(2) {
        let mut merged = vec![vec![0u32; alphabet]; k];
        for (_, h) in &buckets[w[0]..w[1]] {
            for (acc, part) in merged.iter_mut().zip(h) {
                for (a, p) in acc.iter_mut().zip(part) {
                    *a += p;
                }
            }
        }
        group_last.push(buckets[w[1] - 1].0);
        tables.extend(merged.iter().map(|h| FreqTable::from_counts(h)));
    }
    debug_assert!(
        group_last.len() <= MAX_GROUPS,
        "at most one group per bucket"
    );
    if group_last.is_empty() {
        // No elements: one group, unused tables.
        group_last.push(layout.exponents() - 1);
        tables = vec![None; k];
    }
    *group_last.last_mut().expect("at least one group") = layout.exponents() - 1;
    let group_of = group_map(&group_last, layout.exponents());
    let est = best[nb];
    (
        est,
        Plan {
            group_of,
            group_last,
            prev_zero,
            tables,
        },
    )
}

/// Exponent → group, from each group's last exponent.
fn group_map(group_last: &[usize], exponents: usize) -> Vec<u8> {
    let mut map = vec![0u8; exponents];
    let mut g = 0;
    for (e, slot) in map.iter_mut().enumerate() {
        while e > group_last[g] {
            g += 1;
        }
        *slot = g as u8;
    }
    map
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 value of at most `max`; rejects overlong or oversized encodings.
fn read_varint(bytes: &mut &[u8], what: &str, max: u64) -> Result<u64, DeltaError> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = bytes
            .split_first()
            .ok_or_else(|| DeltaError::Corrupt(format!("ulp: truncated {what}")))?;
        *bytes = rest;
        let part = u64::from(b & 0x7F);
        if i == 9 && part > 1 {
            break;
        }
        v |= part << (7 * i);
        if b & 0x80 == 0 {
            if (i > 0 && b == 0) || v > max {
                break;
            }
            return Ok(v);
        }
    }
    Err(DeltaError::Corrupt(format!(
        "ulp: bad {what} (at most {max})"
    )))
}

/// Table: varint first symbol, varint symbol count (0: unused context), then a varint
/// frequency per symbol from the first (0 = absent).
fn write_table(out: &mut Vec<u8>, table: Option<&FreqTable>, alphabet: usize) {
    let Some(table) = table else {
        out.extend_from_slice(&[0, 0]);
        return;
    };
    let symbols = table.symbols();
    let first = usize::from(symbols[0]);
    let last = usize::from(*symbols.last().expect("tables are not empty"));
    write_varint(out, first as u64);
    write_varint(out, (last - first + 1) as u64);
    for f in &table.dense_freqs(alphabet)[first..=last] {
        write_varint(out, u64::from(*f));
    }
}

fn read_table(bytes: &mut &[u8], alphabet: usize) -> Result<Option<FreqTable>, DeltaError> {
    let first = read_varint(bytes, "table start", alphabet as u64 - 1)? as usize;
    let count = read_varint(bytes, "table length", (alphabet - first) as u64)? as usize;
    if count == 0 {
        return Ok(None);
    }
    let mut freqs = vec![0u16; first + count];
    for f in &mut freqs[first..] {
        *f = read_varint(bytes, "frequency", u64::from(PROB_SCALE))? as u16;
    }
    FreqTable::from_freqs(&freqs)
        .map(Some)
        .map_err(|e| DeltaError::Corrupt(format!("ulp: {e}")))
}

/// Decodes a ULP payload (after the method byte) into `out` on the code path `level`
/// (scalar where the CPU lacks it); every path gives the same result.
pub(crate) fn decode_on(
    level: SimdLevel,
    dtype: &Dtype,
    base: Base<'_>,
    payload: &[u8],
    out: &mut [u8],
) -> Result<(), DeltaError> {
    let layout = Layout::of(dtype).ok_or_else(|| DeltaError::Unsupported {
        method: DeltaMethod::Ulp.name(),
        dtype: dtype.to_string(),
    })?;
    let level = if level.is_supported() {
        level
    } else {
        SimdLevel::Scalar
    };
    match layout.width() {
        1 => decode_w::<1>(level, layout, base, payload, out),
        2 => decode_w::<2>(level, layout, base, payload, out),
        4 => decode_w::<4>(level, layout, base, payload, out),
        _ => decode_w::<8>(level, layout, base, payload, out),
    }
}

/// What a symbol stands for, looked up instead of computed in the decode loop.
#[derive(Clone, Copy, Default)]
struct SymbolMeaning {
    /// Magnitude without its extra bits.
    magnitude: u64,
    /// Raw extra bits that follow.
    extra_bits: u32,
    /// All ones when the difference is negative, else 0.
    negative: u64,
}

/// Meaning of every symbol below the alphabet size (and of nothing above it: the slot
/// tables hold symbols below 256, so a symbol indexes this array without a check).
fn meanings(layout: Layout) -> Box<[SymbolMeaning; 256]> {
    let mut all = Box::new([SymbolMeaning::default(); 256]);
    for (s, m) in all.iter_mut().enumerate().take(layout.alphabet()) {
        let s = s as u16;
        let extra_bits = extra_bits_of(s);
        let negative = s != 0 && s & 1 == 0;
        let magnitude = if negative {
            untokenize(layout, s, 0).wrapping_neg() & layout.mask()
        } else {
            untokenize(layout, s, 0)
        };
        *m = SymbolMeaning {
            magnitude,
            extra_bits,
            negative: if negative { u64::MAX } else { 0 },
        };
    }
    all
}

/// Exponent → index of its table for context bit 0, plus that for bit 1 shifted up by 16
/// (the same table twice without the context bit): what the vector paths gather.
fn table_pairs(group_of: &[u8], prev_zero: bool) -> Vec<u32> {
    let k = if prev_zero { 2 } else { 1 };
    // At most 2 · MAX_GROUPS tables: indices fit 16 bits.
    group_of
        .iter()
        .map(|&g| {
            let first = u32::from(g) * k;
            first | ((first + k - 1) << 16)
        })
        .collect()
}

/// What picks an element's table when decoding, and what its symbol means.
struct Contexts<'a> {
    layout: Layout,
    /// `(exponent, context bit)` → offset of its table in `tables` (the context bit is
    /// always 0 without [`FLAG_PREV_ZERO`]).
    table_at: Vec<usize>,
    /// Exponent → index of its table for context bit 0, plus that for bit 1 shifted up by
    /// 16 (layout 3: one lookup per element, off the rANS chain, then a select by the bit).
    table_pairs: Vec<u32>,
    tables: &'a SlotTables,
    meanings: &'a [SymbolMeaning; 256],
}

impl<'a> Contexts<'a> {
    fn new(
        layout: Layout,
        group_of: &[u8],
        prev_zero: bool,
        tables: &'a SlotTables,
        meanings: &'a [SymbolMeaning; 256],
    ) -> Self {
        let k = if prev_zero { 2 } else { 1 };
        let table_at = group_of
            .iter()
            .flat_map(|&g| {
                let first = usize::from(g) * k;
                [first, first + k - 1].map(SlotTables::offset)
            })
            .collect();
        let table_pairs = table_pairs(group_of, prev_zero);
        Self {
            layout,
            table_at,
            table_pairs,
            tables,
            meanings,
        }
    }
}

/// Decodes one element of lane `lane` from base bytes `b` into `o`. Lane `l` decodes
/// elements `l, l + LANES, …` and its context bit is its own previous symbol, so the
/// lanes are independent chains; the caller unrolls by LANES so that the lane indices are
/// constants and the rANS states stay in registers.
#[inline(always)]
fn decode_one<const W: usize>(
    ctx: &Contexts<'_>,
    rans: &mut RansDecoder<LANES>,
    bits: &mut BitReader,
    back_zero: &mut bool,
    lane: usize,
    b: &[u8],
    o: &mut [u8],
) {
    let layout = ctx.layout;
    let b = load::<W>(b);
    let table = ctx.table_at[layout.exponent(b) * 2 + usize::from(*back_zero)];
    let symbol = rans.get(lane, ctx.tables, table);
    *back_zero = symbol == 0;
    store::<W>(target_of::<W>(ctx, symbol as u8, b, bits), o);
}

/// The target element of base element `b` whose difference is `symbol` and the extra bits
/// it reads from `bits`.
#[inline(always)]
fn target_of<const W: usize>(ctx: &Contexts<'_>, symbol: u8, b: u64, bits: &mut BitReader) -> u64 {
    let layout = ctx.layout;
    // Branch-free for symbol 0 too: no extra bits, magnitude 0.
    let m = ctx.meanings[usize::from(symbol)];
    let extra = if W == 8 {
        bits.get(m.extra_bits)
    } else {
        // At most 30 extra bits below 64-bit elements.
        bits.get32(m.extra_bits)
    };
    let magnitude = m.magnitude.wrapping_add(extra);
    // Two's complement negation where negative: (x ^ -1) - (-1) = -x.
    let diff = (magnitude ^ m.negative).wrapping_sub(m.negative);
    layout.unkey(layout.key(b).wrapping_add(diff) & layout.mask())
}

/// A ULP payload's flags, tables and chunk directory, parsed once for an output of a known
/// length: [`decode_w`] decodes it whole, [`Parsed::decode_range`] a run of its chunks.
pub(crate) struct Parsed<'a> {
    layout: Layout,
    prev_zero: bool,
    /// Layout 3 (32 lanes) rather than 2; only with `chunked`.
    wide: bool,
    /// Layouts 2 and 3 (independent chunks); else layout 1 (one stream).
    chunked: bool,
    group_of: Vec<u8>,
    dec: SlotTables,
    meanings: Box<[SymbolMeaning; 256]>,
    /// XOR of the bytes after the last whole element.
    tail_xor: &'a [u8],
    /// Layout 1: the one stream; chunked layouts: empty.
    stream: &'a [u8],
    /// Elements per chunk (chunked layouts; 0 for layout 1).
    chunk: usize,
    /// Each chunk's stream (chunked layouts).
    pieces: Vec<&'a [u8]>,
    /// Output length in bytes.
    len: usize,
}

/// Parses a ULP payload (after the method byte) for an output of `len` bytes.
pub(crate) fn parse(layout: Layout, payload: &[u8], len: usize) -> Result<Parsed<'_>, DeltaError> {
    let alphabet = layout.alphabet();
    let mut rest = payload;
    let (&flags, after_flags) = rest
        .split_first()
        .ok_or_else(|| DeltaError::Corrupt("ulp: truncated flags".into()))?;
    if flags & !(FLAG_PREV_ZERO | FLAG_CHUNKED | FLAG_WIDE) != 0 {
        return Err(DeltaError::Corrupt(format!(
            "ulp: unknown flags {flags:#04x}"
        )));
    }
    let wide = flags & FLAG_WIDE != 0;
    if wide && flags & FLAG_CHUNKED == 0 {
        return Err(DeltaError::Corrupt(
            "ulp: 32-lane flag without the chunked flag".into(),
        ));
    }
    rest = after_flags;
    let prev_zero = flags & FLAG_PREV_ZERO != 0;
    let k = if prev_zero { 2 } else { 1 };
    let groups = read_varint(&mut rest, "group count", MAX_GROUPS as u64)? as usize;
    if groups == 0 {
        return Err(DeltaError::Corrupt("ulp: no exponent group".into()));
    }
    let mut group_last = Vec::with_capacity(groups);
    for g in 0..groups {
        let last = read_varint(&mut rest, "group end", layout.exponents() as u64 - 1)? as usize;
        if group_last.last().is_some_and(|&prev| prev >= last) {
            return Err(DeltaError::Corrupt(format!(
                "ulp: group {g} ends at exponent {last}, not after the previous group"
            )));
        }
        group_last.push(last);
    }
    if group_last.last() != Some(&(layout.exponents() - 1)) {
        return Err(DeltaError::Corrupt(format!(
            "ulp: last group ends at exponent {:?}, expected {}",
            group_last.last(),
            layout.exponents() - 1
        )));
    }
    let group_of = group_map(&group_last, layout.exponents());
    let mut tables = Vec::with_capacity(groups * k);
    for _ in 0..groups * k {
        // An unused context gets a one-symbol table: reachable only with a wrong base,
        // which the caller's checksum catches.
        tables.push(
            read_table(&mut rest, alphabet)?
                .unwrap_or_else(|| FreqTable::from_counts(&[1]).expect("one symbol")),
        );
    }
    let dec = SlotTables::new(&tables);

    let w = layout.width();
    let n = len / w;
    let tail_len = len - n * w;
    if rest.len() < tail_len {
        return Err(DeltaError::Corrupt(format!(
            "ulp: {tail_len} tail bytes, {} left",
            rest.len()
        )));
    }
    let (tail_xor, after) = rest.split_at(tail_len);
    let mut parsed = Parsed {
        layout,
        prev_zero,
        wide,
        chunked: flags & FLAG_CHUNKED != 0,
        group_of,
        dec,
        meanings: meanings(layout),
        tail_xor,
        stream: &[],
        chunk: 0,
        pieces: Vec::new(),
        len,
    };
    if !parsed.chunked {
        parsed.stream = after;
        return Ok(parsed);
    }
    let mut rest = after;
    let chunk = read_varint(&mut rest, "chunk length", MAX_CHUNK_ELEMS)? as usize;
    let lanes = if wide { WIDE_LANES } else { LANES };
    if chunk == 0 || !chunk.is_multiple_of(lanes) {
        return Err(DeltaError::Corrupt(format!(
            "ulp: chunk length {chunk} is not a positive multiple of {lanes}"
        )));
    }
    // At most n / LANES + 1 chunks: bounded by the base, which the caller holds.
    let count = n.div_ceil(chunk);
    let mut lens = Vec::with_capacity(count);
    let mut claimed = 0u64;
    for _ in 0..count {
        let left = rest.len() as u64;
        let len = read_varint(&mut rest, "chunk size", left)?;
        claimed += len;
        lens.push(len as usize);
    }
    if claimed != rest.len() as u64 {
        return Err(DeltaError::Corrupt(format!(
            "ulp: {count} chunks claim {claimed} bytes, {} follow",
            rest.len()
        )));
    }
    parsed.pieces = lens
        .into_iter()
        .map(|len| {
            let (piece, after) = rest.split_at(len);
            rest = after;
            piece
        })
        .collect();
    parsed.chunk = chunk;
    Ok(parsed)
}

impl Parsed<'_> {
    /// Bytes of the coded elements (the output less its tail of XORed bytes).
    fn body(&self) -> usize {
        self.len / self.layout.width() * self.layout.width()
    }

    fn contexts(&self) -> Contexts<'_> {
        Contexts::new(
            self.layout,
            &self.group_of,
            self.prev_zero,
            &self.dec,
            &self.meanings,
        )
    }

    /// Bytes per chunk of a chunked layout (`None` for layout 1, whose one stream decodes
    /// only whole).
    pub(crate) fn chunk_bytes(&self) -> Option<usize> {
        self.chunked.then(|| self.chunk * self.layout.width())
    }

    /// Bytes per element.
    pub(crate) fn width(&self) -> usize {
        self.layout.width()
    }

    /// The output length the payload was parsed for.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Decodes the bytes `offset..offset + out.len()` of the output from the same bytes
    /// of the base, on this thread, on path `level`: `offset` a multiple of
    /// [`Self::chunk_bytes`], `out` whole chunks or reaching the end of the output.
    pub(crate) fn decode_range<const W: usize>(
        &self,
        level: SimdLevel,
        offset: usize,
        base: &[u8],
        out: &mut [u8],
    ) -> Result<(), DeltaError> {
        if base.len() != out.len() {
            return Err(DeltaError::LengthMismatch {
                base: base.len(),
                target: out.len(),
            });
        }
        self.decode_range_io::<W>(level, offset, BaseOut::separate(base, out))
    }

    /// [`Self::decode_range`] with the base's bytes in `buf`, overwritten with the
    /// output's (on an error, `buf` holds some of each).
    pub(crate) fn decode_range_in_place<const W: usize>(
        &self,
        level: SimdLevel,
        offset: usize,
        buf: &mut [u8],
    ) -> Result<(), DeltaError> {
        self.decode_range_io::<W>(level, offset, BaseOut::in_place(buf))
    }

    /// [`Self::decode_range`] from and to `io`.
    fn decode_range_io<const W: usize>(
        &self,
        level: SimdLevel,
        offset: usize,
        mut io: BaseOut<'_>,
    ) -> Result<(), DeltaError> {
        let len = io.len();
        let range_err = || DeltaError::Range {
            offset,
            len,
            total: self.len,
        };
        let unit = self.chunk_bytes().ok_or_else(range_err)?;
        let end = offset.checked_add(len).ok_or_else(range_err)?;
        if !offset.is_multiple_of(unit)
            || end > self.len
            || (end != self.len && !len.is_multiple_of(unit))
        {
            return Err(range_err());
        }
        let level = if level.is_supported() {
            level
        } else {
            SimdLevel::Scalar
        };
        let body = self.body();
        let coded = end.min(body).saturating_sub(offset);
        let ctx = self.contexts();
        let first = offset / unit;
        for k in 0..coded.div_ceil(unit) {
            let i = first + k;
            let bytes = self.pieces[i];
            let mut piece = io.sub(k * unit, unit.min(coded - k * unit));
            let decoded = if self.wide {
                decode_stream_wide::<W>(level, &ctx, piece, bytes)
            } else {
                // Layout 2 (older stores): in place on a copy of the chunk's base.
                piece.with_slices(|b, o| decode_stream::<W>(&ctx, b, o, bytes))
            };
            decoded.map_err(|e| chunk_err(i, e))?;
        }
        for j in body.max(offset)..end {
            let x = io.load::<1>(j - offset) ^ u64::from(self.tail_xor[j - body]);
            io.store::<1>(j - offset, x);
        }
        Ok(())
    }
}

/// An error of chunk `i`, named so.
fn chunk_err(i: usize, e: DeltaError) -> DeltaError {
    match e {
        DeltaError::Corrupt(m) => DeltaError::Corrupt(format!("chunk {i}: {m}")),
        e => e,
    }
}

fn decode_w<const W: usize>(
    level: SimdLevel,
    layout: Layout,
    base: Base<'_>,
    payload: &[u8],
    out: &mut [u8],
) -> Result<(), DeltaError> {
    let p = parse(layout, payload, out.len())?;
    let body = p.body();
    if let Base::Separate(base) = base {
        out[body..].copy_from_slice(&base[body..]);
    }
    for (o, x) in out[body..].iter_mut().zip(p.tail_xor) {
        *o ^= x;
    }
    let ctx = p.contexts();
    let out = &mut out[..body];
    if !p.chunked {
        // Layout 1 (older files only): one stream, so in place takes a copy of it all.
        let copy;
        let base = match base {
            Base::Separate(base) => &base[..body],
            Base::InOut => {
                copy = out.to_vec();
                &copy[..]
            }
        };
        return decode_stream::<W>(&ctx, base, out, p.stream);
    }
    let (chunk, wide) = (p.chunk, p.wide);
    out.par_chunks_mut(chunk * W)
        .zip(&p.pieces)
        .enumerate()
        // In place, a layout-3 chunk decodes over its base; a layout-2 chunk's base is
        // copied to a buffer of the thread's first (one chunk: in the cache, unlike a
        // second tensor-sized buffer).
        .map_init(Vec::new, |scratch, (i, (o, bytes))| {
            let decoded = match base {
                Base::Separate(base) => {
                    let b = &base[i * chunk * W..][..o.len()];
                    if wide {
                        decode_stream_wide::<W>(level, &ctx, BaseOut::separate(b, o), bytes)
                    } else {
                        decode_stream::<W>(&ctx, b, o, bytes)
                    }
                }
                Base::InOut if wide => {
                    decode_stream_wide::<W>(level, &ctx, BaseOut::in_place(o), bytes)
                }
                Base::InOut => {
                    scratch.clear();
                    scratch.extend_from_slice(o);
                    decode_stream::<W>(&ctx, scratch, o, bytes)
                }
            };
            decoded.map_err(|e| chunk_err(i, e)).err()
        })
        // The first damaged chunk in file order is the one reported, whichever thread
        // fails first: the same input always gives the same error (the fuzz target
        // `delta_decode` found two damaged chunks reported by turns).
        .find_map_first(|e| e)
        .map_or(Ok(()), Err)
}

/// Decodes one stream (a layout-1 delta's, or a chunk's) of `base.len() / W` elements.
fn decode_stream<const W: usize>(
    ctx: &Contexts<'_>,
    base: &[u8],
    out: &mut [u8],
    bytes: &[u8],
) -> Result<(), DeltaError> {
    let coder_err = |e: CoderError| DeltaError::Corrupt(format!("ulp: {e}"));
    let (mut rans, bit_bytes) = RansDecoder::<LANES>::new(bytes).map_err(coder_err)?;
    let mut bits = BitReader::new(bit_bytes);
    // Lane `l` decodes elements `l, l + LANES, …`; its context bit is its own previous
    // symbol, so the lanes are independent chains. Unrolled by LANES, the lane indices are
    // constants and the states stay in registers.
    let mut back_zero = [true; LANES];
    let n = base.len() / W;
    let rounds = n / LANES;
    const _: () = assert!(LANES == 4, "the decode loop below is unrolled for 4 lanes");
    for (bq, oq) in base
        .chunks_exact(W * LANES)
        .zip(out.chunks_exact_mut(W * LANES))
    {
        let (b, o) = (bq.split_at(2 * W), oq.split_at_mut(2 * W));
        let [z0, z1, z2, z3] = &mut back_zero;
        decode_one::<W>(ctx, &mut rans, &mut bits, z0, 0, b.0, &mut o.0[..W]);
        decode_one::<W>(ctx, &mut rans, &mut bits, z1, 1, &b.0[W..], &mut o.0[W..]);
        decode_one::<W>(ctx, &mut rans, &mut bits, z2, 2, b.1, &mut o.1[..W]);
        decode_one::<W>(ctx, &mut rans, &mut bits, z3, 3, &b.1[W..], &mut o.1[W..]);
    }
    for i in rounds * LANES..n {
        let lane = i % LANES;
        decode_one::<W>(
            ctx,
            &mut rans,
            &mut bits,
            &mut back_zero[lane],
            lane,
            &base[i * W..],
            &mut out[i * W..],
        );
    }
    rans.finish().map_err(coder_err)?;
    bits.finish().map_err(coder_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_orders_values_and_inverts() {
        let layout = Layout::of(&Dtype::F32).unwrap();
        let values = [
            f32::NEG_INFINITY,
            -1e30,
            -1.5,
            -1e-40,
            -0.0,
            0.0,
            1e-45,
            1.0,
            1.0000001,
            f32::INFINITY,
        ];
        let keys: Vec<u64> = values
            .iter()
            .map(|v| layout.key(u64::from(v.to_bits())))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert_eq!(keys[5] - keys[4], 1, "-0 and +0 are one step apart");
        assert_eq!(keys[8] - keys[7], 1, "one ULP is one step");
        for bits in [0u64, 0x7FC0_0001, 0xFFC0_1234, 0x8000_0000, 0xFFFF_FFFF] {
            assert_eq!(layout.unkey(layout.key(bits)), bits);
        }
        // Every 16-bit pattern against the definition (FORMAT.md §9.3).
        let layout = Layout::of(&Dtype::BF16).unwrap();
        for bits in 0..=0xFFFFu64 {
            let key = if bits & 0x8000 != 0 {
                !bits & 0xFFFF
            } else {
                bits | 0x8000
            };
            assert_eq!(layout.key(bits), key, "{bits:#x}");
            assert_eq!(layout.unkey(key), bits, "{bits:#x}");
        }
    }

    #[test]
    fn tokens_round_trip_for_every_width() {
        for dtype in [Dtype::F8E4M3, Dtype::BF16, Dtype::F32, Dtype::F64] {
            let layout = Layout::of(&dtype).unwrap();
            let mut diffs = vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 100, layout.sign(), layout.mask()];
            diffs.extend((1..layout.bits).map(|s| (1u64 << s) - 1));
            diffs.extend((1..layout.bits).map(|s| (1u64 << s) + 1));
            diffs.extend((1..layout.bits).map(|s| layout.mask() - (1u64 << s)));
            for d in diffs {
                let d = d & layout.mask();
                let t = tokenize(layout, d);
                assert!(usize::from(t.symbol) < layout.alphabet(), "{dtype}: {d}");
                let expected_bits = if t.symbol == 0 {
                    0
                } else {
                    extra_bits_of(t.symbol)
                };
                assert_eq!(t.extra_bits, expected_bits, "{dtype}: {d}");
                assert_eq!(untokenize(layout, t.symbol, t.extra), d, "{dtype}: {d}");
            }
        }
    }

    #[test]
    fn tokenize_fast_matches_tokenize() {
        for dtype in [
            Dtype::F8E4M3,
            Dtype::BF16,
            Dtype::F16,
            Dtype::F32,
            Dtype::F64,
        ] {
            let layout = Layout::of(&dtype).unwrap();
            let mut diffs: Vec<u64> = (0..300).collect();
            for s in 0..layout.bits {
                let p = 1u64 << s;
                diffs.extend([p - 1, p, p + 1, p | (p >> 1), layout.mask() - p + 1]);
            }
            let mut r = 0x9E37_79B9_7F4A_7C15u64;
            for _ in 0..10_000 {
                r ^= r << 13;
                r ^= r >> 7;
                r ^= r << 17;
                diffs.push(r >> (r % 64));
            }
            for d in diffs {
                let d = d & layout.mask();
                assert_eq!(
                    tokenize_fast(layout, d),
                    tokenize(layout, d),
                    "{dtype}: {d:#x}"
                );
            }
        }
    }

    #[test]
    fn varints_reject_overlong_and_oversized() {
        let mut buf = Vec::new();
        write_varint(&mut buf, 300);
        assert_eq!(read_varint(&mut &buf[..], "x", 300), Ok(300));
        assert!(read_varint(&mut &buf[..], "x", 299).is_err());
        assert!(read_varint(&mut &[0x80u8, 0x00][..], "x", 10).is_err());
        assert!(read_varint(&mut &[0x80u8][..], "x", 10).is_err());
        assert!(read_varint(&mut &[0xFFu8; 11][..], "x", u64::MAX).is_err());
    }
}
