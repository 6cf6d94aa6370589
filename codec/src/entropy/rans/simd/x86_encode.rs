//! The AVX-512 and AVX2 group encoders.

use super::super::LANES;
use crate::entropy::model::{EncTable, ENC_WINDOW, NARROW_WINDOW, PROB_BITS, PROB_SCALE};
use std::arch::x86_64::*;

/// Encodes groups `g-1` down to 0 (each of LANES symbols, all in `symbols`): per
/// 16-lane vector, gather `freq << 16 | start`, renormalise the lanes at or above
/// `freq · 2^20` (their low words compressed into lane order in registers, then
/// stored under a length mask), and compute `x / freq` as an f32 product with
/// `1 / freq` (divided off the state's dependency chain) rounded toward zero, which
/// one compare corrects to the exact quotient.
///
/// The table entries of the next group are gathered while the current one is
/// coded: a group is a few hundred instructions, so the out-of-order window would
/// otherwise not reach the next group's gathers before the states need them, and
/// their latency would add to every group's.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi2,popcnt")]
pub(super) unsafe fn encode_groups_avx512(
    states: &mut [u32; LANES],
    symbols: &[u16],
    tables: &[&EncTable],
    block_len: usize,
    g: usize,
    words: &mut [[u8; 2]],
    start: &mut usize,
) -> (usize, bool) {
    assert!(g * LANES <= symbols.len() && words.len() >= symbols.len() + LANES);
    if g == 0 {
        return (0, true);
    }
    let groups_per_block = block_len / LANES;
    let lanes = states.as_mut_ptr() as *mut __m512i;
    // SAFETY: `states` is 32 u32s, exactly two 512-bit vectors.
    let mut x = unsafe { [_mm512_loadu_si512(lanes), _mm512_loadu_si512(lanes.add(1))] };
    let low16 = _mm512_set1_epi32(0xFFFF);
    let scale = _mm512_set1_epi32(PROB_SCALE as i32);
    let one_f = _mm512_set1_ps(1.0);
    const RZ: i32 = _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC;
    let mut wp = *start;
    let mut absent = 0u16;
    // The block of group g - 1 and its first group: one division per call.
    let mut block = (g - 1) / groups_per_block;
    let mut block_first = block * groups_per_block;
    let mut next = gather_entries_avx512(symbols, g - 1, tables[block], &mut absent);
    for group in (0..g).rev() {
        let entries = next;
        if group > 0 {
            if group - 1 < block_first {
                block -= 1;
                block_first -= groups_per_block;
            }
            next = gather_entries_avx512(symbols, group - 1, tables[block], &mut absent);
        }
        let mut words16 = [_mm256_setzero_si256(); 2];
        let mut masks = [0u16; 2];
        for v in 0..2 {
            let e = entries[v];
            let freq = _mm512_srli_epi32::<16>(e);
            let cum = _mm512_and_si512(e, low16);
            // The state's step when the quotient below is one short: q + 1 and r − freq
            // move x by PROB_SCALE − freq.
            let cmpl = _mm512_sub_epi32(scale, freq);
            // q ≈ y · (1/freq) in f32, every operation rounded toward zero: the
            // reciprocal depends on the symbol alone, so its division runs off the
            // state's dependency chain, which then holds a multiply instead of a
            // division. All three roundings (y, 1/freq, the product) only shrink a
            // positive value, each by under 2^-23 relative, and y / freq < 2^20 (what
            // renormalisation leaves), so the product lies in (y / freq − 3/8, y / freq]:
            // the truncated quotient is exact or one short, and one compare corrects
            // it. (An absent symbol's frequency 0 gives garbage, no fault.)
            let inv = _mm512_div_round_ps::<RZ>(one_f, _mm512_cvtepu32_ps(freq));
            let m = _mm512_cmpge_epu32_mask(_mm512_srli_epi32::<{ 32 - PROB_BITS }>(x[v]), freq);
            words16[v] = _mm512_cvtepi32_epi16(x[v]);
            masks[v] = m;
            let y = _mm512_mask_srli_epi32(x[v], m, x[v], 16);
            let qf = _mm512_mul_round_ps::<RZ>(_mm512_cvt_roundepu32_ps::<RZ>(y), inv);
            let q = _mm512_cvttps_epu32(qf);
            // r = y − q · freq is in [0, 2 · freq).
            let r = _mm512_sub_epi32(y, _mm512_mullo_epi32(q, freq));
            let short = _mm512_cmpge_epu32_mask(r, freq);
            let x_q = _mm512_add_epi32(_mm512_add_epi32(_mm512_slli_epi32::<PROB_BITS>(q), r), cum);
            x[v] = _mm512_mask_add_epi32(x_q, short, x_q, cmpl);
        }
        let (c0, c1) = (
            masks[0].count_ones() as usize,
            masks[1].count_ones() as usize,
        );
        wp -= c0 + c1;
        // Compress in registers and store with a length mask: a compress-store
        // straight to memory is microcoded and very slow on some cores (Zen 4).
        let packed0 = _mm256_maskz_compress_epi16(masks[0], words16[0]);
        let packed1 = _mm256_maskz_compress_epi16(masks[1], words16[1]);
        // SAFETY: each group emits at most LANES words and the buffer holds one per
        // symbol plus LANES, so [wp, wp + c0 + c1) lies within words; the masks
        // write exactly c0 and c1 words.
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
    *start = wp;
    (g, absent == 0)
}

/// The packed entries `freq << 16 | start` of group `group`'s symbols in `table`,
/// as two 16-lane vectors. Symbols in the table's [`EncTable::windows`] are looked up
/// in registers (per window two two-register permutes and a blend per vector; the
/// second only for tables where it holds enough to pay); the others, rare, are gathered (a gather of 16 lanes costs a Zen 4 more than the whole
/// lookup). Symbols past the table are clamped into it and flagged in `absent`, as are
/// symbols of frequency 0 (the chunk is then dropped).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi2,popcnt")]
fn gather_entries_avx512(
    symbols: &[u16],
    group: usize,
    table: &EncTable,
    absent: &mut u16,
) -> [__m512i; 2] {
    const _: () = assert!(ENC_WINDOW == 64);
    let group_symbols: &[u16; LANES] = symbols[group * LANES..][..LANES]
        .try_into()
        .expect("a whole group");
    let span = _mm512_set1_epi32(ENC_WINDOW as i32);
    let upper = _mm512_set1_epi32(32);
    // Entries of the symbols `s` in window `w` (garbage elsewhere), and the mask of
    // those outside it.
    let look_up = |s: __m512i, w: usize| -> (__m512i, __mmask16) {
        let window = table.windows[w].as_ptr() as *const __m512i;
        // SAFETY: a window is 64 u32s, exactly four 512-bit vectors.
        let t = unsafe {
            [
                _mm512_loadu_si512(window),
                _mm512_loadu_si512(window.add(1)),
                _mm512_loadu_si512(window.add(2)),
                _mm512_loadu_si512(window.add(3)),
            ]
        };
        // Window offsets; below the window they wrap to large values.
        let k = _mm512_sub_epi32(s, _mm512_set1_epi32(table.window_lo[w] as i32));
        // The permutes read the low five bits of k, the blend bit 5.
        let e = _mm512_mask_blend_epi32(
            _mm512_test_epi32_mask(k, upper),
            _mm512_permutex2var_epi32(t[0], k, t[1]),
            _mm512_permutex2var_epi32(t[2], k, t[3]),
        );
        (e, _mm512_cmpge_epu32_mask(k, span))
    };
    std::array::from_fn(|v| {
        // SAFETY: the 16 symbols at 16v lie within `group_symbols`.
        let s = unsafe { _mm256_loadu_si256(group_symbols.as_ptr().add(16 * v) as *const __m256i) };
        let s = _mm512_cvtepu16_epi32(s);
        let (mut e, mut outside) = look_up(s, 0);
        if table.second_window {
            let (e2, outside2) = look_up(s, 1);
            e = _mm512_mask_blend_epi32(outside, e, e2);
            outside &= outside2;
        }
        if outside != 0 {
            e = gather_outside_avx512(s, outside, e, table, absent);
        }
        let freq = _mm512_srli_epi32::<16>(e);
        *absent |= _mm512_cmpeq_epi32_mask(freq, _mm512_setzero_si512());
        e
    })
}

/// `e` with the lanes in `outside` gathered from `table`'s packed entries; symbols
/// past the table are clamped into it and flagged in `absent`.
#[cold]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi2,popcnt")]
fn gather_outside_avx512(
    s: __m512i,
    outside: __mmask16,
    e: __m512i,
    table: &EncTable,
    absent: &mut u16,
) -> __m512i {
    let packed = table.packed.as_ptr() as *const i32;
    let last = _mm512_set1_epi32(table.packed.len() as i32 - 1);
    *absent |= _mm512_cmpgt_epu32_mask(s, last);
    let s = _mm512_min_epu32(s, last);
    // SAFETY: s ≤ table.packed.len() - 1, scaled by 4 bytes.
    unsafe { _mm512_mask_i32gather_epi32::<4>(e, outside, s, packed) }
}

/// Word compaction for the AVX2 encoder, indexed by the renormalise mask of four
/// 32-bit lanes: the low 16 bits of the set lanes, in lane order, end up as the
/// *last* `count` of four 16-bit words (the others zero), so a store that ends at
/// the write position leaves its unused words below it, where nothing is yet.
const COMPACT4_HIGH: [[u8; 16]; 16] = {
    let mut t = [[0x80u8; 16]; 16];
    let mut mask = 0;
    while mask < 16 {
        let count = (mask as u32).count_ones() as usize;
        let (mut lane, mut k) = (0, 0);
        while lane < 4 {
            if mask >> lane & 1 == 1 {
                let at = 2 * (4 - count + k);
                t[mask][at] = 4 * lane as u8;
                t[mask][at + 1] = 4 * lane as u8 + 1;
                k += 1;
            }
            lane += 1;
        }
        mask += 1;
    }
    t
};

/// The AVX2 twin of [`encode_groups_avx512`]: four 8-lane vectors per group,
/// taken from the last lane down. Each half-vector's emitted words are compacted
/// by a byte shuffle and stored in one 8-byte store that ends at the write
/// position; `x / freq` is an f32 product with `1 / freq` (looked up with the entry,
/// see [`look_up_avx2`]), corrected to the exact quotient in one step (AVX2 converts
/// only signed integers, so `y` is converted in two 16-bit halves).
#[target_feature(enable = "avx2,bmi1,popcnt")]
pub(super) unsafe fn encode_groups_avx2(
    states: &mut [u32; LANES],
    symbols: &[u16],
    tables: &[&EncTable],
    block_len: usize,
    g: usize,
    words: &mut [[u8; 2]],
    start: &mut usize,
) -> (usize, bool) {
    assert!(g * LANES <= symbols.len() && words.len() >= symbols.len() + LANES);
    if g == 0 {
        return (0, true);
    }
    let lanes = states.as_mut_ptr() as *mut __m256i;
    let mut x = [_mm256_setzero_si256(); 4];
    for (v, xv) in x.iter_mut().enumerate() {
        // SAFETY: `states` is 32 u32s, exactly four 256-bit vectors.
        *xv = unsafe { _mm256_loadu_si256(lanes.add(v)) };
    }
    let low16 = _mm256_set1_epi32(0xFFFF);
    let ones = _mm256_set1_epi32(-1);
    let one = _mm256_set1_epi32(1);
    let scale = _mm256_set1_epi32(PROB_SCALE as i32);
    let zero = _mm256_setzero_si256();
    let two16 = _mm256_set1_ps(65536.0);
    let compact = COMPACT4_HIGH.as_ptr() as *const __m128i;
    let out = words.as_mut_ptr() as *mut u8;
    let mut wp = *start;
    let mut absent = zero;
    // The least entry looked up in a window: a frequency of 0 (an absent symbol)
    // leaves it below 2^16.
    let mut least = ones;
    // The block of group g - 1 and its first group: one division per call. The
    // next group's entries are looked up while this one is coded (see
    // `encode_groups_avx512`).
    let groups_per_block = block_len / LANES;
    let mut block = (g - 1) / groups_per_block;
    let mut block_first = block * groups_per_block;
    let mut next = ([zero; 4], [_mm256_setzero_ps(); 4]);
    // Step `group + 1` looks group `group` up and codes group `group + 1`: one call
    // site, which the compiler inlines (the last step looks group 0 up again).
    for step in (0..=g).rev() {
        let group = step.saturating_sub(1);
        if group < block_first {
            block -= 1;
            block_first -= groups_per_block;
        }
        let (entries, invs) = std::mem::replace(
            &mut next,
            look_up_avx2(symbols, group, tables[block], &mut absent, &mut least),
        );
        if step == g {
            continue;
        }
        for v in (0..4).rev() {
            let e = entries[v];
            let inv = invs[v];
            let freq = _mm256_srli_epi32::<16>(e);
            let cum = _mm256_and_si256(e, low16);
            // Renormalise where x ≥ freq · 2^20, i.e. keep x where freq > x >> 20;
            // both sides are below 2^13, so the signed compare is exact.
            let keep =
                _mm256_cmpgt_epi32(freq, _mm256_srli_epi32::<{ 32 - PROB_BITS as i32 }>(x[v]));
            let mask = _mm256_movemask_ps(_mm256_castsi256_ps(keep)) as usize ^ 0xFF;
            let halves = [
                (mask & 15, _mm256_castsi256_si128(x[v])),
                (mask >> 4, _mm256_extracti128_si256::<1>(x[v])),
            ];
            for &(m, half) in halves.iter().rev() {
                // SAFETY: m < 16 = COMPACT4_HIGH's length. Each symbol emits at
                // most one word and the buffer holds one per symbol plus LANES, so
                // wp ≥ LANES ≥ 4 here and the 8 bytes at wp - 4 are in bounds; the
                // words below wp - count are not written yet (the encoder fills
                // the buffer downwards), so overwriting them is harmless.
                unsafe {
                    let packed_words = _mm_shuffle_epi8(half, _mm_loadu_si128(compact.add(m)));
                    _mm_storel_epi64(out.add(2 * (wp - 4)) as *mut __m128i, packed_words);
                }
                wp -= m.count_ones() as usize;
            }
            // y = x or x >> 16, and y in f32: x < 2^32 is converted exactly in 16-bit
            // halves, then one rounding; x >> 16 exactly. Both are converted while
            // the compare runs, off the state's dependency chain. y < freq · 2^20,
            // y / freq < 2^20 and the three roundings (y, 1/freq, the product) are
            // each within 2^-24 relative, so the f32 quotient is within
            // 2^20 · 3 · 2^-24 < 1/5 of y / freq: the truncated quotient is off by
            // at most one either way.
            let hi = _mm256_srli_epi32::<16>(x[v]);
            let hi_f = _mm256_cvtepi32_ps(hi);
            let x_f = _mm256_add_ps(
                _mm256_mul_ps(hi_f, two16),
                _mm256_cvtepi32_ps(_mm256_and_si256(x[v], low16)),
            );
            let y = _mm256_blendv_epi8(hi, x[v], keep);
            let y_f = _mm256_blendv_ps(hi_f, x_f, _mm256_castsi256_ps(keep));
            let q = _mm256_cvttps_epi32(_mm256_mul_ps(y_f, inv));
            let r = _mm256_sub_epi32(y, _mm256_mullo_epi32(q, freq));
            // r is in (-freq, 2·freq): where it is out, q is one over (r < 0) or one
            // short (r ≥ freq), never both, so both compares read the same r, and a
            // step of q moves x by PROB_SCALE − freq. (Signed compares: |r| < 2^14.)
            let over = _mm256_cmpgt_epi32(zero, r);
            let short = _mm256_cmpgt_epi32(r, _mm256_sub_epi32(freq, one));
            let cmpl = _mm256_sub_epi32(scale, freq);
            let x_q = _mm256_add_epi32(
                _mm256_add_epi32(_mm256_slli_epi32::<{ PROB_BITS as i32 }>(q), r),
                cum,
            );
            // over − short: +1 where q is short, −1 where it is over, else 0.
            x[v] = _mm256_add_epi32(x_q, _mm256_sign_epi32(cmpl, _mm256_sub_epi32(over, short)));
        }
    }
    for (v, &xv) in x.iter().enumerate() {
        // SAFETY: as for the loads above.
        unsafe { _mm256_storeu_si256(lanes.add(v), xv) };
    }
    *start = wp;
    let absent = _mm256_or_si256(
        absent,
        _mm256_cmpeq_epi32(_mm256_srli_epi32::<16>(least), zero),
    );
    (g, _mm256_testz_si256(absent, absent) == 1)
}

/// The packed entries `freq << 16 | start` of group `group`'s symbols in `table`,
/// as four 8-lane vectors, and their reciprocals `1 / freq` in f32 (divided here,
/// off the state's dependency chain). Where the table keeps nearly all its frequency
/// in its [`EncTable::narrow`] window (BF16 and F32 exponents), the entries come from
/// registers: per vector four 8-entry permutes and three blends (a gather of 8 lanes
/// costs more on AMD cores); the rare vectors with a symbol outside the window gather
/// those lanes besides. Other tables (F32 mantissa bytes, F16, FP8) gather every
/// entry. (Looking the reciprocals up in a window too, instead of dividing, was
/// slower on Zen 4: 4 more permutes and 3 blends per vector cost more than a division.)
/// Symbols absent from the table lower `least` below 2^16 (frequency 0) or set lanes
/// of `absent` (past the table), and the chunk is dropped.
#[inline]
#[target_feature(enable = "avx2,bmi1,popcnt")]
fn look_up_avx2(
    symbols: &[u16],
    group: usize,
    table: &EncTable,
    absent: &mut __m256i,
    least: &mut __m256i,
) -> ([__m256i; 4], [__m256; 4]) {
    const _: () = assert!(NARROW_WINDOW == 32);
    let w = &table.narrow;
    let mut e = if w.used {
        let group_symbols: &[u16; LANES] = symbols[group * LANES..][..LANES]
            .try_into()
            .expect("a whole group");
        let packed = w.packed.as_ptr() as *const __m256i;
        // SAFETY: the window holds 32 values, four 256-bit vectors.
        let t =
            [0, 1, 2, 3].map(|k| unsafe { _mm256_castsi256_ps(_mm256_loadu_si256(packed.add(k))) });
        let lo = _mm256_set1_epi32(w.lo as i32);
        let mut spread = _mm256_setzero_si256();
        let mut e = [_mm256_setzero_si256(); 4];
        for (v, e) in e.iter_mut().enumerate() {
            // SAFETY: the 8 symbols at 8v lie within `group_symbols`.
            let s = unsafe { _mm_loadu_si128(group_symbols.as_ptr().add(8 * v) as *const __m128i) };
            // Window offsets; below the window they wrap to large values.
            let k = _mm256_sub_epi32(_mm256_cvtepu16_epi32(s), lo);
            spread = _mm256_or_si256(spread, k);
            // The permutes read the low three bits of k, the blends bits 3 and 4.
            let bit3 = _mm256_castsi256_ps(_mm256_slli_epi32::<28>(k));
            let bit4 = _mm256_castsi256_ps(_mm256_slli_epi32::<27>(k));
            let half = |a: __m256, b: __m256| {
                _mm256_blendv_ps(
                    _mm256_permutevar8x32_ps(a, k),
                    _mm256_permutevar8x32_ps(b, k),
                    bit3,
                )
            };
            *e = _mm256_castps_si256(_mm256_blendv_ps(half(t[0], t[1]), half(t[2], t[3]), bit4));
        }
        let outside_bits = _mm256_set1_epi32(!(NARROW_WINDOW as i32 - 1));
        if _mm256_testz_si256(spread, outside_bits) == 0 {
            gather_outside_avx2(group_symbols, table, &mut e, absent);
        }
        e
    } else {
        gather_entries_avx2(symbols, group, table, absent)
    };
    // After the gathers: a lane outside the window read some window entry first.
    for e in &mut e {
        *least = _mm256_min_epu32(*least, *e);
    }
    let one_f = _mm256_set1_ps(1.0);
    let inv = e.map(|e| _mm256_div_ps(one_f, _mm256_cvtepi32_ps(_mm256_srli_epi32::<16>(e))));
    (e, inv)
}

/// [`look_up_avx2`]'s entries with the lanes whose symbols lie outside the window
/// gathered from `table`'s packed entries; symbols past the table are clamped into it
/// and flagged in `absent`.
#[cold]
#[target_feature(enable = "avx2,bmi1,popcnt")]
fn gather_outside_avx2(
    group_symbols: &[u16; LANES],
    table: &EncTable,
    e: &mut [__m256i; 4],
    absent: &mut __m256i,
) {
    let packed = table.packed.as_ptr() as *const i32;
    let last = _mm256_set1_epi32(table.packed.len() as i32 - 1);
    let lo = _mm256_set1_epi32(table.narrow.lo as i32);
    let outside_bits = _mm256_set1_epi32(!(NARROW_WINDOW as i32 - 1));
    let zero = _mm256_setzero_si256();
    for (v, e) in e.iter_mut().enumerate() {
        // SAFETY: the 8 symbols at 8v lie within `group_symbols`.
        let s = unsafe { _mm_loadu_si128(group_symbols.as_ptr().add(8 * v) as *const __m128i) };
        let s = _mm256_cvtepu16_epi32(s);
        let k = _mm256_sub_epi32(s, lo);
        let outside = _mm256_xor_si256(
            _mm256_cmpeq_epi32(_mm256_and_si256(k, outside_bits), zero),
            _mm256_set1_epi32(-1),
        );
        // Both sides of the compare are below 2^16, so the signed compare is exact.
        *absent = _mm256_or_si256(*absent, _mm256_cmpgt_epi32(s, last));
        let s = _mm256_min_epi32(s, last);
        // SAFETY: s ≤ table.packed.len() - 1, scaled by 4 bytes.
        *e = unsafe { _mm256_mask_i32gather_epi32::<4>(*e, packed, s, outside) };
    }
}

/// The packed entries `freq << 16 | start` of group `group`'s symbols in `table`,
/// as four 8-lane vectors. Symbols past the table are clamped into it and flagged
/// in `absent` (all ones), as are symbols of frequency 0 (the chunk is then
/// dropped).
#[target_feature(enable = "avx2,bmi1,popcnt")]
fn gather_entries_avx2(
    symbols: &[u16],
    group: usize,
    table: &EncTable,
    absent: &mut __m256i,
) -> [__m256i; 4] {
    let group_symbols: &[u16; LANES] = symbols[group * LANES..][..LANES]
        .try_into()
        .expect("a whole group");
    let packed = table.packed.as_ptr() as *const i32;
    let last = _mm256_set1_epi32(table.packed.len() as i32 - 1);
    std::array::from_fn(|v| {
        // SAFETY: the 8 symbols at 8v lie within `group_symbols`.
        let s = unsafe { _mm_loadu_si128(group_symbols.as_ptr().add(8 * v) as *const __m128i) };
        // Both sides of the compare are below 2^16, so the signed compare is exact.
        let s = _mm256_cvtepu16_epi32(s);
        let beyond = _mm256_cmpgt_epi32(s, last);
        let s = _mm256_min_epi32(s, last);
        // SAFETY: s ≤ table.packed.len() - 1, scaled by 4 bytes.
        let e = unsafe { _mm256_i32gather_epi32::<4>(packed, s) };
        let freq = _mm256_srli_epi32::<16>(e);
        let zero_freq = _mm256_cmpeq_epi32(freq, _mm256_setzero_si256());
        *absent = _mm256_or_si256(*absent, _mm256_or_si256(beyond, zero_freq));
        e
    })
}

/// A mask of the low `n` (≤ 16) bits.
#[inline(always)]
fn low_mask(n: usize) -> u16 {
    ((1u32 << n) - 1) as u16
}
