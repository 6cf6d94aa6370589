//! The vector encoder of layout 3 (FORMAT.md §9.3), both passes: tokenizing and counting
//! 16 elements at once (AVX-512) or 8 (AVX2), and the rANS step of [`WIDE_LANES`] = 32
//! lanes at once, two 16-lane AVX-512 vectors or four 8-lane AVX2 vectors per group. Lane
//! `l` of a group only depends on lane `l` of the groups after it (the encoder runs
//! backwards), so the 32 state updates are independent; each lane's table comes from its
//! base element's exponent and the symbol 32 places back, as in the scalar loop. Output is
//! byte for byte the scalar encoder's (`layout3_vector_encoders_match_scalar`).

use crate::cpu::SimdLevel;
use crate::delta::coder::{BitWriter, RansEncoder, WIDE_LANES};

use super::Layout;

/// The tables of a delta as the vector encoder reads them.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // read by the x86-64 vector code only
pub(super) struct PackedTables<'a> {
    /// Exponent → table for context bit 0, plus that for bit 1 shifted up by 16.
    pub(super) pairs: &'a [u32],
    /// `freq << 16 | start` of table `t`, symbol `s` at `t << symbol_bits | s`.
    pub(super) packed: &'a [u32],
    /// Bits of a symbol index (every table has `1 << symbol_bits` entries).
    pub(super) symbol_bits: u32,
}

/// Whether `level` has the vector encoder for elements of `W` bytes: both its passes, the
/// first ([`count_elements`]) and the rANS step ([`encode_groups`]), exist for the same
/// paths and widths.
pub(super) fn supports<const W: usize>(level: SimdLevel) -> bool {
    cfg!(target_arch = "x86_64")
        && W <= 4
        && matches!(level, SimdLevel::Avx512 | SimdLevel::Avx2)
        && level.is_supported()
}

/// The first pass over a chunk's leading elements, a vector (16 or 8) at a time: the
/// tokens of the differences (as `tokenize_fast`), stored to `symbols`, counted into
/// `hist` (`[exponent][context bit][symbol]`, the context bit looking `WIDE_LANES` back)
/// and their extra bits appended to `bits`. Returns the elements done (a multiple of the
/// vector; the scalar loop takes the rest). `level` must pass [`supports`].
pub(super) fn count_elements<const W: usize>(
    level: SimdLevel,
    layout: Layout,
    base: &[u8],
    target: &[u8],
    symbols: &mut [u8],
    hist: &mut [u32],
    bits: &mut BitWriter,
) -> usize {
    assert!(
        supports::<W>(level),
        "no vector first pass for {level} and {W}-byte elements"
    );
    let n = symbols.len();
    assert!(base.len() >= n * W && target.len() >= n * W);
    assert!(hist.len() == layout.exponents() * 2 * layout.alphabet());
    // The AVX-512 loop packs a slot into 16 bits (W ≤ 4: at most 2^8 · 2 · 127 slots).
    assert!(hist.len() <= 1 << 16);
    let step = if level == SimdLevel::Avx512 { 16 } else { 8 };
    let vectors = n / step;
    // SAFETY (both): the CPU has the level's features (`supports`); the slices hold
    // `vectors · step` elements (asserted above).
    #[cfg(target_arch = "x86_64")]
    match level {
        SimdLevel::Avx512 => unsafe {
            x86::count_avx512::<W>(layout, base, target, symbols, hist, bits, vectors)
        },
        SimdLevel::Avx2 => unsafe {
            x86::count_avx2::<W>(layout, base, target, symbols, hist, bits, vectors)
        },
        SimdLevel::Scalar => unreachable!("asserted above"),
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (layout, base, target, hist, bits);
    vectors * step
}

/// Codes the first `groups` groups of `WIDE_LANES` symbols of a chunk (`symbols`, its base
/// elements `base`), from the last group down, into `rans`; the scalar loop has already
/// coded every symbol after them. `level` must pass [`supports`].
pub(super) fn encode_groups<const W: usize, const L: usize>(
    level: SimdLevel,
    layout: Layout,
    tables: &PackedTables<'_>,
    rans: &mut RansEncoder<L>,
    symbols: &[u8],
    base: &[u8],
    groups: usize,
) {
    assert!(
        supports::<W>(level),
        "no vector encoder for {level} and {W}-byte elements"
    );
    assert_eq!(L, WIDE_LANES, "the vector encoder steps 32 lanes");
    assert!(groups * WIDE_LANES <= symbols.len() && groups * WIDE_LANES * W <= base.len());
    #[cfg(target_arch = "x86_64")]
    {
        let (states, words, pos) = rans.parts();
        let states: &mut [u32; WIDE_LANES] = states.as_mut_slice().try_into().expect("32 lanes");
        // At most one word per symbol: the position leaves room for every word of these
        // groups below it (the buffer has one word per symbol plus one).
        assert!(*pos > groups * WIDE_LANES && *pos <= words.len());
        assert!(tables.symbol_bits <= 8);
        let table_count = tables.packed.len() >> tables.symbol_bits;
        assert!(
            tables.pairs.len() == layout.exponents()
                && tables
                    .pairs
                    .iter()
                    .all(|&p| ((p & 0xFFFF) as usize) < table_count
                        && ((p >> 16) as usize) < table_count),
            "every table a pair names exists"
        );
        // SAFETY (both): the CPU has the level's features (`supports`); the bounds
        // the functions rely on are asserted above.
        match level {
            SimdLevel::Avx512 => unsafe {
                x86::encode_groups_avx512::<W>(
                    layout, tables, states, words, pos, symbols, base, groups,
                )
            },
            SimdLevel::Avx2 => unsafe {
                x86::encode_groups_avx2::<W>(
                    layout, tables, states, words, pos, symbols, base, groups,
                )
            },
            SimdLevel::Scalar => unreachable!("asserted above"),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (layout, tables, rans, symbols, base);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::wide::vector::{load16, load8, store8, ExponentGroups};
    use super::super::Layout;
    use super::PackedTables;
    use crate::delta::coder::{BitWriter, WIDE_LANES};
    use crate::entropy::model::PROB_BITS;
    use crate::entropy::rans::gather8_by_loads;
    use std::arch::x86_64::*;

    /// Loads 16 symbols (a byte each), zero-extended to 32 bits.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn symbols16(p: *const u8) -> __m512i {
        // SAFETY: the caller guarantees 16 readable symbols at `p`.
        _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(p as *const __m128i) })
    }

    /// Tokenizes `vectors` · 16 elements from the start (W ≤ 4: every lane fits 32 bits),
    /// the arithmetic of `tokenize_fast` per lane, then counts each token and appends its
    /// extra bits in element order (the histogram and the bit position are serial: both
    /// are done a block of vectors at a time, from what the vectors left in arrays).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512cd,popcnt")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn count_avx512<const W: usize>(
        layout: Layout,
        base: &[u8],
        target: &[u8],
        symbols: &mut [u8],
        hist: &mut [u32],
        bits: &mut BitWriter,
        vectors: usize,
    ) {
        let width_bits = 8 * W as u32;
        let sign = _mm512_set1_epi32((1u32 << (width_bits - 1)) as i32);
        let mask = _mm512_set1_epi32((u64::MAX >> (64 - width_bits)) as u32 as i32);
        let mant = _mm512_set1_epi32(layout.mant_bits as i32);
        let exp_mask = _mm512_set1_epi32((layout.exponents() - 1) as i32);
        let alphabet = _mm512_set1_epi32(layout.alphabet() as i32);
        let one = _mm512_set1_epi32(1);
        let four = _mm512_set1_epi32(4);
        let thirty_one = _mm512_set1_epi32(31);
        let zero = _mm512_setzero_si512();
        let key = |x: __m512i| {
            // Negative: the complement in the width; else the sign bit set.
            let negative = _mm512_test_epi32_mask(x, sign);
            _mm512_mask_blend_epi32(
                negative,
                _mm512_or_si512(x, sign),
                _mm512_xor_si512(x, mask),
            )
        };
        // Counts and extra bits of up to BLOCK vectors, applied after the block: read back
        // long after they were stored (a store of a whole vector read back at once as
        // single lanes stalls on store forwarding).
        const BLOCK: usize = 64;
        // Per slot a vector counts: the slot (below 2^16, asserted by the caller) and, in
        // the upper half, its earlier equal lanes (their number plus one is its count).
        let mut counts = [0u32; 16 * BLOCK];
        let mut extra = [0u32; 16 * BLOCK];
        let mut extra_bits = [0u32; 16 * BLOCK];
        for first in (0..vectors).step_by(BLOCK) {
            let (mut n_counts, mut n_extra) = (0usize, 0usize);
            for v in first..vectors.min(first + BLOCK) {
                let at = 16 * v;
                // SAFETY: at + 16 ≤ vectors · 16, which the slices hold (the caller's assert).
                let (b, t) = unsafe {
                    (
                        load16::<W>(base.as_ptr().add(at * W)),
                        load16::<W>(target.as_ptr().add(at * W)),
                    )
                };
                let diff = _mm512_and_si512(_mm512_sub_epi32(key(t), key(b)), mask);
                let negative = _mm512_test_epi32_mask(diff, sign);
                let magnitude =
                    _mm512_mask_and_epi32(diff, negative, _mm512_sub_epi32(zero, diff), mask);
                // ⌊log2⌋ of the magnitude (0 for 0 and 1).
                let e = _mm512_sub_epi32(
                    thirty_one,
                    _mm512_lzcnt_epi32(_mm512_or_si512(magnitude, one)),
                );
                let big = _mm512_cmpge_epu32_mask(magnitude, four);
                let n_bits = _mm512_maskz_sub_epi32(big, e, one);
                let half = _mm512_and_si512(_mm512_srlv_epi32(magnitude, n_bits), one);
                let class = _mm512_mask_add_epi32(magnitude, big, _mm512_add_epi32(e, e), half);
                // 2·class − 1 + negative, and 0 for class 0 (where negative is 0).
                let twice = _mm512_mask_add_epi32(
                    _mm512_add_epi32(class, class),
                    negative,
                    _mm512_add_epi32(class, class),
                    one,
                );
                let symbol = _mm512_sub_epi32(_mm512_max_epu32(twice, one), one);
                let low = _mm512_and_si512(
                    magnitude,
                    _mm512_sub_epi32(_mm512_sllv_epi32(one, n_bits), one),
                );
                let exp = _mm512_and_si512(_mm512_srlv_epi32(b, mant), exp_mask);
                let back_zero = if at < WIDE_LANES {
                    one
                } else {
                    // SAFETY: at ≥ 32: the 16 symbols 32 back are stored already.
                    let back = unsafe { symbols16(symbols.as_ptr().add(at - WIDE_LANES)) };
                    _mm512_maskz_mov_epi32(_mm512_cmpeq_epi32_mask(back, zero), one)
                };
                let context = _mm512_add_epi32(_mm512_add_epi32(exp, exp), back_zero);
                let slot = _mm512_add_epi32(_mm512_mullo_epi32(context, alphabet), symbol);
                // Each slot counted once per vector, by its last lane, with the number of
                // its lanes: most of a vector's 16 lanes share a few slots, and 16
                // increments one after another chain on the same counters through memory.
                // A lane that a later lane names as an equal is not the last of its slot.
                let equals = _mm512_conflict_epi32(slot);
                let last = !(_mm512_reduce_or_epi32(equals) as u16);
                let count = _mm512_or_si512(_mm512_slli_epi32::<16>(equals), slot);
                // Only the lanes with extra bits append any (most have none).
                let with_bits = _mm512_test_epi32_mask(n_bits, n_bits);
                let (k, e) = (last.count_ones() as usize, with_bits.count_ones() as usize);
                // SAFETY: at + 16 ≤ symbols.len(); each array holds 16 entries per vector
                // of the block, and each vector adds at most 16 (exactly `k` and `e`
                // lanes stored, compressed in registers into lane order).
                unsafe {
                    _mm_storeu_si128(
                        symbols.as_mut_ptr().add(at) as *mut __m128i,
                        _mm512_cvtepi32_epi8(symbol),
                    );
                    _mm512_mask_storeu_epi32(
                        counts.as_mut_ptr().add(n_counts) as *mut i32,
                        low_mask(k),
                        _mm512_maskz_compress_epi32(last, count),
                    );
                    _mm512_mask_storeu_epi32(
                        extra.as_mut_ptr().add(n_extra) as *mut i32,
                        low_mask(e),
                        _mm512_maskz_compress_epi32(with_bits, low),
                    );
                    _mm512_mask_storeu_epi32(
                        extra_bits.as_mut_ptr().add(n_extra) as *mut i32,
                        low_mask(e),
                        _mm512_maskz_compress_epi32(with_bits, n_bits),
                    );
                }
                n_counts += k;
                n_extra += k;
            }
            for &c in &counts[..n_counts] {
                // Below exponents · 2 · alphabet = hist.len() (checked, never taken).
                hist[(c & 0xFFFF) as usize] += (c >> 16).count_ones() + 1;
            }
            bits.put_fields(&extra[..n_extra], &extra_bits[..n_extra]);
        }
    }

    /// Per 16-lane vector of a group, from the last group down: gather each lane's table
    /// pair by its base exponent and select by whether the symbol 32 back was 0 (always,
    /// in the first group); gather `freq << 16 | start`; renormalise the lanes at or above
    /// `freq · 2^20` (their low words compressed into lane order in registers, then
    /// stored under a length mask, below the position); and compute `x / freq` by f32
    /// division corrected to the exact quotient, as the main codec's encoder does.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi2,popcnt")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn encode_groups_avx512<const W: usize>(
        layout: Layout,
        tables: &PackedTables<'_>,
        states: &mut [u32; WIDE_LANES],
        words: &mut [u16],
        pos: &mut usize,
        symbols: &[u8],
        base: &[u8],
        groups: usize,
    ) {
        let lanes = states.as_mut_ptr() as *mut __m512i;
        // SAFETY: `states` is 32 u32s, exactly two 512-bit vectors.
        let mut x = unsafe { [_mm512_loadu_si512(lanes), _mm512_loadu_si512(lanes.add(1))] };
        let pairs = tables.pairs.as_ptr() as *const i32;
        let packed = tables.packed.as_ptr() as *const i32;
        let symbol_bits = _mm_cvtsi32_si128(tables.symbol_bits as i32);
        let last_symbol = _mm512_set1_epi32((1i32 << tables.symbol_bits) - 1);
        let mant = _mm512_set1_epi32(layout.mant_bits as i32);
        let exp_mask = _mm512_set1_epi32((layout.exponents() - 1) as i32);
        let low16 = _mm512_set1_epi32(0xFFFF);
        let one = _mm512_set1_epi32(1);
        let zero = _mm512_setzero_si512();
        let mut wp = *pos;
        for group in (0..groups).rev() {
            let mut words16 = [_mm256_setzero_si256(); 2];
            let mut masks = [0u16; 2];
            for v in 0..2 {
                let at = group * WIDE_LANES + 16 * v;
                // SAFETY: at + 16 ≤ groups · 32 ≤ symbols.len(), and the base holds W
                // bytes per symbol of those groups (asserted by the caller).
                let (s, b) = unsafe {
                    (
                        symbols16(symbols.as_ptr().add(at)),
                        load16::<W>(base.as_ptr().add(at * W)),
                    )
                };
                let back_zero = if group == 0 {
                    u16::MAX
                } else {
                    // SAFETY: at ≥ 32, so the 16 symbols 32 back are in the chunk.
                    let back = unsafe { symbols16(symbols.as_ptr().add(at - WIDE_LANES)) };
                    _mm512_cmpeq_epi32_mask(back, zero)
                };
                let exp = _mm512_and_si512(_mm512_srlv_epi32(b, mant), exp_mask);
                // SAFETY: exp < 2^E = pairs.len() (asserted by the caller), scaled by 4.
                let pair = unsafe { _mm512_i32gather_epi32::<4>(exp, pairs) };
                let table =
                    _mm512_mask_srli_epi32::<16>(_mm512_and_si512(pair, low16), back_zero, pair);
                // Symbols are below the alphabet; the clamp keeps the gather in bounds
                // whatever they are.
                let index = _mm512_or_si512(
                    _mm512_sll_epi32(table, symbol_bits),
                    _mm512_min_epu32(s, last_symbol),
                );
                // SAFETY: every table a pair names exists (asserted by the caller), so the
                // index is below packed.len(), scaled by 4 bytes.
                let e = unsafe { _mm512_i32gather_epi32::<4>(index, packed) };
                let freq = _mm512_srli_epi32::<16>(e);
                let cum = _mm512_and_si512(e, low16);
                let m =
                    _mm512_cmpge_epu32_mask(_mm512_srli_epi32::<{ 32 - PROB_BITS }>(x[v]), freq);
                words16[v] = _mm512_cvtepi32_epi16(x[v]);
                masks[v] = m;
                let y = _mm512_mask_srli_epi32(x[v], m, x[v], 16);
                // y < 2^32 and freq ≤ 2^12: the f32 quotient is within 1/8 of y / freq, so
                // the truncated quotient is off by at most one either way. (A symbol the
                // table lacks, freq 0, gives some state; the encoder never codes one.)
                let qf = _mm512_div_ps(_mm512_cvtepu32_ps(y), _mm512_cvtepu32_ps(freq));
                let mut q = _mm512_cvttps_epu32(qf);
                let mut r = _mm512_sub_epi32(y, _mm512_mullo_epi32(q, freq));
                let low = _mm512_cmplt_epi32_mask(r, zero);
                q = _mm512_mask_sub_epi32(q, low, q, one);
                r = _mm512_mask_add_epi32(r, low, r, freq);
                let high = _mm512_cmpge_epi32_mask(r, freq);
                q = _mm512_mask_add_epi32(q, high, q, one);
                r = _mm512_mask_sub_epi32(r, high, r, freq);
                x[v] =
                    _mm512_add_epi32(_mm512_add_epi32(_mm512_slli_epi32::<PROB_BITS>(q), r), cum);
            }
            let (c0, c1) = (
                masks[0].count_ones() as usize,
                masks[1].count_ones() as usize,
            );
            wp -= c0 + c1;
            // Compress in registers and store with a length mask: a compress-store straight
            // to memory is microcoded and very slow on Zen 4.
            let packed0 = _mm256_maskz_compress_epi16(masks[0], words16[0]);
            let packed1 = _mm256_maskz_compress_epi16(masks[1], words16[1]);
            // SAFETY: the position started above groups · 32 and each group lowers it by
            // at most 32, so [wp, wp + c0 + c1) lies within words; the masks write exactly
            // c0 and c1 words.
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
        *pos = wp;
    }

    /// For each 8-bit lane mask, the lanes to permute into lanes 0, 1, …: the set lanes in
    /// order (the lanes after them: lane 0, don't care).
    const PACK_LOW8: [[u8; 8]; 256] = {
        let mut t = [[0u8; 8]; 256];
        let mut mask = 0;
        while mask < 256 {
            let (mut lane, mut k) = (0, 0);
            while lane < 8 {
                if mask >> lane & 1 == 1 {
                    t[mask][k] = lane as u8;
                    k += 1;
                }
                lane += 1;
            }
            mask += 1;
        }
        t
    };

    /// The AVX2 twin of [`count_avx512`], `vectors` · 8 elements from the start. With no
    /// lzcnt of lanes, ⌊log2⌋ of a magnitude is the exponent of its f32 conversion (of it
    /// shifted down 8 from 2^24 on, where the conversion would round); with no conflict
    /// detection each element's histogram slot is stored and counted one by one after its
    /// block; and with no compress the lanes with extra bits are left-packed by a lane
    /// permute ([`PACK_LOW8`]) and stored whole.
    #[target_feature(enable = "avx2,bmi1,popcnt")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn count_avx2<const W: usize>(
        layout: Layout,
        base: &[u8],
        target: &[u8],
        symbols: &mut [u8],
        hist: &mut [u32],
        bits: &mut BitWriter,
        vectors: usize,
    ) {
        let width_bits = 8 * W as u32;
        let sign = _mm256_set1_epi32((1u32 << (width_bits - 1)) as i32);
        let mask = _mm256_set1_epi32((u64::MAX >> (64 - width_bits)) as u32 as i32);
        let mant = _mm256_set1_epi32(layout.mant_bits as i32);
        let exp_mask = _mm256_set1_epi32((layout.exponents() - 1) as i32);
        let alphabet = _mm256_set1_epi32(layout.alphabet() as i32);
        let one = _mm256_set1_epi32(1);
        let eight = _mm256_set1_epi32(8);
        let bias = _mm256_set1_epi32(127);
        let zero = _mm256_setzero_si256();
        let key = |x: __m256i| {
            // Negative: the complement in the width; else the sign bit set.
            let negative = _mm256_cmpeq_epi32(_mm256_and_si256(x, sign), sign);
            _mm256_blendv_epi8(
                _mm256_or_si256(x, sign),
                _mm256_xor_si256(x, mask),
                negative,
            )
        };
        let pack = PACK_LOW8.as_ptr() as *const u8;
        // Where the chunk pays for them, the slots are counted into four histograms in
        // turn (`hist` and three more, added into it at the end): a vector's lanes mostly
        // share a few slots, and increments of one counter one after another chain through
        // memory (38 % of this function's samples with one histogram, `perf annotate`).
        let len = hist.len();
        let mut more = (vectors * 8 >= 4 * len).then(|| vec![0u32; 3 * len]);
        // Slots and extra bits of up to BLOCK vectors (as many elements as the AVX-512
        // pass's blocks), applied after the block.
        const BLOCK: usize = 128;
        let mut slots = [0u32; 8 * BLOCK];
        let mut extra = [0u32; 8 * BLOCK];
        let mut extra_bits = [0u32; 8 * BLOCK];
        for first in (0..vectors).step_by(BLOCK) {
            let last = vectors.min(first + BLOCK);
            let mut n_extra = 0usize;
            for v in first..last {
                let at = 8 * v;
                // SAFETY: at + 8 ≤ vectors · 8, which the slices hold (the caller's assert).
                let (b, t) = unsafe {
                    (
                        load8::<W>(base.as_ptr().add(at * W)),
                        load8::<W>(target.as_ptr().add(at * W)),
                    )
                };
                let diff = _mm256_and_si256(_mm256_sub_epi32(key(t), key(b)), mask);
                let negative = _mm256_cmpeq_epi32(_mm256_and_si256(diff, sign), sign);
                let magnitude = _mm256_blendv_epi8(
                    diff,
                    _mm256_and_si256(_mm256_sub_epi32(zero, diff), mask),
                    negative,
                );
                // ⌊log2⌋ of the magnitude (0 for 0 and 1). Below 2^24 it converts exactly;
                // 4-byte elements' magnitudes reach 2^31 (and would convert as negative),
                // so from 2^24 on, that of the magnitude shifted down 8 (exact), plus 8.
                let log2 = |m: __m256i| {
                    let f = _mm256_castps_si256(_mm256_cvtepi32_ps(m));
                    _mm256_sub_epi32(_mm256_srli_epi32::<23>(f), bias)
                };
                let mut e = log2(_mm256_or_si256(magnitude, one));
                if W == 4 {
                    let high = _mm256_cmpgt_epi32(_mm256_srli_epi32::<24>(magnitude), zero);
                    let e_high = _mm256_add_epi32(log2(_mm256_srli_epi32::<8>(magnitude)), eight);
                    e = _mm256_blendv_epi8(e, e_high, high);
                }
                // magnitude ≥ 4, unsigned (it may be 2^31).
                let big = _mm256_cmpgt_epi32(_mm256_srli_epi32::<2>(magnitude), zero);
                let n_bits = _mm256_and_si256(big, _mm256_sub_epi32(e, one));
                let half = _mm256_and_si256(_mm256_srlv_epi32(magnitude, n_bits), one);
                let class = _mm256_blendv_epi8(
                    magnitude,
                    _mm256_add_epi32(_mm256_add_epi32(e, e), half),
                    big,
                );
                // 2·class − 1 + negative (the mask is −1), and 0 for class 0 (where negative
                // is 0).
                let twice = _mm256_sub_epi32(_mm256_add_epi32(class, class), negative);
                let symbol = _mm256_sub_epi32(_mm256_max_epi32(twice, one), one);
                let low = _mm256_and_si256(
                    magnitude,
                    _mm256_sub_epi32(_mm256_sllv_epi32(one, n_bits), one),
                );
                let exp = _mm256_and_si256(_mm256_srlv_epi32(b, mant), exp_mask);
                // The context bit: 1 where the symbol 32 back was 0 (all of the chunk's first
                // 32), as −(the compare's mask).
                let back_zero = if at < WIDE_LANES {
                    one
                } else {
                    // SAFETY: at ≥ 32: the 8 symbols 32 back are stored already.
                    let back = unsafe { load8::<1>(symbols.as_ptr().add(at - WIDE_LANES)) };
                    _mm256_sub_epi32(zero, _mm256_cmpeq_epi32(back, zero))
                };
                let context = _mm256_add_epi32(_mm256_add_epi32(exp, exp), back_zero);
                let slot = _mm256_add_epi32(_mm256_mullo_epi32(context, alphabet), symbol);
                // Only the lanes with extra bits append any (most have none).
                let with_bits = _mm256_movemask_ps(_mm256_castsi256_ps(big)) as usize;
                let k = with_bits.count_ones() as usize;
                // SAFETY: at + 8 ≤ symbols.len(); each array holds 8 entries per vector of
                // the block, and this vector stores 8 from 8 · (v − first) and from
                // n_extra ≤ 8 · (v − first); with_bits < 256 = PACK_LOW8's length, 8 bytes
                // per entry.
                unsafe {
                    store8::<1>(symbols.as_mut_ptr().add(at), symbol);
                    _mm256_storeu_si256(
                        slots.as_mut_ptr().add(8 * (v - first)) as *mut __m256i,
                        slot,
                    );
                    let order = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
                        pack.add(8 * with_bits) as *const __m128i
                    ));
                    _mm256_storeu_si256(
                        extra.as_mut_ptr().add(n_extra) as *mut __m256i,
                        _mm256_permutevar8x32_epi32(low, order),
                    );
                    _mm256_storeu_si256(
                        extra_bits.as_mut_ptr().add(n_extra) as *mut __m256i,
                        _mm256_permutevar8x32_epi32(n_bits, order),
                    );
                }
                n_extra += k;
            }
            // Below exponents · 2 · alphabet = hist.len() (checked, never taken).
            let slots = &slots[..8 * (last - first)];
            if let Some(more) = more.as_mut() {
                let (h1, rest) = more.split_at_mut(len);
                let (h2, h3) = rest.split_at_mut(len);
                for s in slots.chunks_exact(4) {
                    hist[s[0] as usize] += 1;
                    h1[s[1] as usize] += 1;
                    h2[s[2] as usize] += 1;
                    h3[s[3] as usize] += 1;
                }
            } else {
                for &s in slots {
                    hist[s as usize] += 1;
                }
            }
            bits.put_fields(&extra[..n_extra], &extra_bits[..n_extra]);
        }
        for part in more.iter().flat_map(|m| m.chunks_exact(len)) {
            hist.iter_mut().zip(part).for_each(|(h, c)| *h += c);
        }
    }

    /// For each 8-bit renormalisation mask, the byte shuffle that right-packs an 8-word
    /// vector's flushed words: the `c` words of the set lanes, in lane order, into words
    /// `8 − c` to 7 (the words below them zero).
    const PACK_HIGH8: [[u8; 16]; 256] = {
        let mut t = [[0x80u8; 16]; 256];
        let mut mask = 0;
        while mask < 256 {
            let (mut lane, mut word) = (0, 8 - (mask as u32).count_ones() as usize);
            while lane < 8 {
                if mask >> lane & 1 == 1 {
                    t[mask][2 * word] = 2 * lane as u8;
                    t[mask][2 * word + 1] = 2 * lane as u8 + 1;
                    word += 1;
                }
                lane += 1;
            }
            mask += 1;
        }
        t
    };

    /// The AVX2 twin of [`encode_groups_avx512`], four 8-lane vectors per group, with the
    /// same arithmetic where AVX2 lacks an instruction: the tables by exponent are counted
    /// from the exponent groups' bounds ([`ExponentGroups`], as the AVX2 decoder does; the
    /// lookup by eight loads per vector it replaces: encode 4.87 → 4.43 ns per element,
    /// `store add` CPU −15 % on Zen 3, BENCHMARKS.md, twenty-eighth session), the
    /// `freq << 16 | start` words fetched by eight scalar loads ([`gather8_by_loads`]:
    /// faster than `vpgatherdd` on Zen 3 and 4); `y`, which may
    /// reach 2^32 and has no unsigned conversion, is converted in two exact halves whose
    /// sum is rounded once; and with no compress nor 16-bit masked store, each vector's
    /// flushed words are right-packed by a byte shuffle ([`PACK_HIGH8`]) and stored whole,
    /// the last vector first, each ending where the vector after it begins: a store's
    /// unused low words fall where the vectors before it or the free space below the
    /// position go, never on the words already written above.
    #[target_feature(enable = "avx2,bmi1,popcnt")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn encode_groups_avx2<const W: usize>(
        layout: Layout,
        tables: &PackedTables<'_>,
        states: &mut [u32; WIDE_LANES],
        words: &mut [u16],
        pos: &mut usize,
        symbols: &[u8],
        base: &[u8],
        groups: usize,
    ) {
        let lanes = states.as_mut_ptr() as *mut __m256i;
        let mut x = [_mm256_setzero_si256(); 4];
        for (v, xv) in x.iter_mut().enumerate() {
            // SAFETY: `states` is 32 u32s, exactly four 256-bit vectors.
            *xv = unsafe { _mm256_loadu_si256(lanes.add(v)) };
        }
        let pairs = tables.pairs.as_ptr() as *const i32;
        let packed = tables.packed.as_ptr() as *const i32;
        let symbol_bits = _mm_cvtsi32_si128(tables.symbol_bits as i32);
        let last_symbol = _mm256_set1_epi32((1i32 << tables.symbol_bits) - 1);
        let mant = _mm256_set1_epi32(layout.mant_bits as i32);
        let exp_mask = _mm256_set1_epi32((layout.exponents() - 1) as i32);
        let low16 = _mm256_set1_epi32(0xFFFF);
        let ones = _mm256_set1_epi32(-1);
        let zero = _mm256_setzero_si256();
        let two16 = _mm256_set1_ps(65536.0);
        // Bytes 0–1 of each lane into bytes 0–7 of its half (then the halves' first 64
        // bits side by side: the 8 lanes' low words).
        let low_words = _mm256_broadcastsi128_si256(_mm_setr_epi8(
            0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1,
        ));
        let pack = PACK_HIGH8.as_ptr();
        // The tables by exponent counted from the exponent groups' bounds, as the AVX2
        // decoder does, where the pairs allow it (always, by construction); else looked up.
        let groups_of = ExponentGroups::new(tables.pairs);
        let step = _mm256_set1_epi32(groups_of.as_ref().map_or(0, |g| g.step) as i32);
        let mut wp = *pos;
        for group in (0..groups).rev() {
            let mut flushed = [_mm_setzero_si128(); 4];
            let mut counts = [0usize; 4];
            let at = |v: usize| group * WIDE_LANES + 8 * v;
            // SAFETY: at(v) + 8 ≤ groups · 32 ≤ symbols.len(), and the base holds W bytes
            // per symbol of those groups (asserted by the caller).
            let bases: [__m256i; 4] =
                std::array::from_fn(|v| unsafe { load8::<W>(base.as_ptr().add(at(v) * W)) });
            let exps = bases.map(|b| _mm256_and_si256(_mm256_srlv_epi32(b, mant), exp_mask));
            let firsts = groups_of.as_ref().map(|g| g.firsts::<0>(exps));
            for (v, xv) in x.iter_mut().enumerate() {
                let at = at(v);
                // SAFETY: as for the base above.
                let s = unsafe { load8::<1>(symbols.as_ptr().add(at)) };
                let back_zero = if group == 0 {
                    ones
                } else {
                    // SAFETY: at ≥ 32, so the 8 symbols 32 back are in the chunk.
                    let back = unsafe { load8::<1>(symbols.as_ptr().add(at - WIDE_LANES)) };
                    _mm256_cmpeq_epi32(back, zero)
                };
                let table = match &firsts {
                    Some(firsts) => _mm256_add_epi32(firsts[v], _mm256_and_si256(back_zero, step)),
                    None => {
                        // SAFETY: exp < 2^E = pairs.len() (asserted by the caller).
                        let pair = unsafe { gather8_by_loads(pairs, exps[v]) };
                        _mm256_blendv_epi8(
                            _mm256_and_si256(pair, low16),
                            _mm256_srli_epi32::<16>(pair),
                            back_zero,
                        )
                    }
                };
                // Symbols are below the alphabet; the clamp keeps the loads in bounds
                // whatever they are.
                let index = _mm256_or_si256(
                    _mm256_sll_epi32(table, symbol_bits),
                    _mm256_min_epu32(s, last_symbol),
                );
                // SAFETY: every table a pair names exists (asserted by the caller), so the
                // index is below packed.len().
                let e = unsafe { gather8_by_loads(packed, index) };
                let freq = _mm256_srli_epi32::<16>(e);
                let cum = _mm256_and_si256(e, low16);
                // The lanes that stay (x < freq · 2^20): both sides are below 2^13, so the
                // signed compare is the unsigned one.
                let stay =
                    _mm256_cmpgt_epi32(freq, _mm256_srli_epi32::<{ (32 - PROB_BITS) as i32 }>(*xv));
                let mask = !_mm256_movemask_ps(_mm256_castsi256_ps(stay)) as usize & 0xFF;
                let w = _mm256_permute4x64_epi64::<0x08>(_mm256_shuffle_epi8(*xv, low_words));
                // SAFETY: mask < 256 = PACK_HIGH8's length, 16 bytes per entry.
                let shuffle = unsafe { _mm_loadu_si128(pack.add(mask) as *const __m128i) };
                flushed[v] = _mm_shuffle_epi8(_mm256_castsi256_si128(w), shuffle);
                counts[v] = mask.count_ones() as usize;
                let y = _mm256_blendv_epi8(_mm256_srli_epi32::<16>(*xv), *xv, stay);
                // Both halves of y convert exactly and 2^16 · hi is exact: the sum is y
                // rounded once, as an unsigned conversion would give.
                let yf = _mm256_add_ps(
                    _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32::<16>(y)), two16),
                    _mm256_cvtepi32_ps(_mm256_and_si256(y, low16)),
                );
                // y < 2^32 and freq ≤ 2^12: the f32 quotient is within 1/8 of y / freq
                // (and below 2^20), so the truncated quotient is off by at most one either
                // way. (A symbol the table lacks, freq 0, gives some state; the encoder
                // never codes one.)
                let qf = _mm256_div_ps(yf, _mm256_cvtepi32_ps(freq));
                let mut q = _mm256_cvttps_epi32(qf);
                let mut r = _mm256_sub_epi32(y, _mm256_mullo_epi32(q, freq));
                // All ones (−1) where q is one too big, then where it is one too small.
                let low = _mm256_cmpgt_epi32(zero, r);
                q = _mm256_add_epi32(q, low);
                r = _mm256_add_epi32(r, _mm256_and_si256(low, freq));
                let high = _mm256_xor_si256(_mm256_cmpgt_epi32(freq, r), ones);
                q = _mm256_sub_epi32(q, high);
                r = _mm256_sub_epi32(r, _mm256_and_si256(high, freq));
                *xv = _mm256_add_epi32(
                    _mm256_add_epi32(_mm256_slli_epi32::<{ PROB_BITS as i32 }>(q), r),
                    cum,
                );
            }
            let mut top = wp;
            for v in (0..4).rev() {
                // SAFETY: the position started above groups · 32 and each group lowers it
                // by at most 32, so wp > 32 at a group's start; top ≥ wp − 24 here, so
                // [top − 8, top) lies within words (top ≤ wp ≤ words.len()). The words at
                // and above wp are untouched; those below top − counts[v] are rewritten
                // by the next vector or lie below the new position.
                unsafe {
                    _mm_storeu_si128(words.as_mut_ptr().add(top - 8) as *mut __m128i, flushed[v])
                };
                top -= counts[v];
            }
            wp = top;
        }
        for (v, xv) in x.iter().enumerate() {
            // SAFETY: as for the loads above.
            unsafe { _mm256_storeu_si256(lanes.add(v), *xv) };
        }
        *pos = wp;
    }

    /// A mask of the low `n` (≤ 16) bits.
    #[inline(always)]
    fn low_mask(n: usize) -> u16 {
        ((1u32 << n) - 1) as u16
    }
}
