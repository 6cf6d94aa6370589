//! The AVX-512 and AVX2 group decoders.

use super::super::{Symbol, WordReader, WriteAhead, LANES, RANS_L};
use crate::entropy::model::{DecTable, PROB_BITS};
use std::arch::x86_64::*;

/// Two 16-lane state vectors per chunk and step, `N` chunks interleaved: gather the
/// slot entries, update all states, and refill the lanes that fell below `RANS_L`
/// with the next words in lane order (the order the scalar decoder reads them).
/// With `INLINE` tables the symbol comes from the slot entry itself; otherwise a
/// second gather maps the entry's index to its symbol.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi2,popcnt")]
pub(super) unsafe fn decode_groups_avx512<S: Symbol, const N: usize, const INLINE: bool>(
    states: [&mut [u32; LANES]; N],
    readers: [&mut WordReader; N],
    tables: [&[&DecTable]; N],
    group_shift: u32,
    outs: [&mut [S]; N],
) -> usize {
    let groups = outs.iter().map(|o| o.len() / LANES).min().unwrap_or(0);
    debug_assert!((0..N).all(|j| groups == 0 || (groups - 1) >> group_shift < tables[j].len()));
    let n_words: [usize; N] = std::array::from_fn(|j| readers[j].words.len());
    let words: [*const u8; N] = std::array::from_fn(|j| readers[j].words.as_ptr() as *const u8);
    let mut pos: [usize; N] = std::array::from_fn(|j| readers[j].pos);
    let mut x = [[_mm512_setzero_si512(); 2]; N];
    for j in 0..N {
        let lanes = states[j].as_ptr() as *const __m512i;
        // SAFETY: `states[j]` is 32 u32s, exactly two 512-bit vectors.
        x[j] = unsafe { [_mm512_loadu_si512(lanes), _mm512_loadu_si512(lanes.add(1))] };
    }
    let slot_mask = _mm512_set1_epi32((1 << PROB_BITS) - 1);
    let low12 = _mm512_set1_epi32(0xFFF);
    let low11 = _mm512_set1_epi32(0x7FF);
    let one = _mm512_set1_epi32(1);
    let lower = _mm512_set1_epi32(RANS_L as i32);
    let low9 = _mm512_set1_epi32(0x1FF);
    let mut g = 0;
    let mut ahead = WriteAhead::take();
    // A step reads at most LANES words per chunk: stay where that cannot pass an end.
    while g < groups && (0..N).all(|j| pos[j] + LANES <= n_words[j]) {
        let mut e = [[_mm512_setzero_si512(); 2]; N];
        let mut y = [[_mm512_setzero_si512(); 2]; N];
        // SAFETY (both): the caller gives a table for every block of `1 << group_shift`
        // groups up to `groups` (`decode_groups` checks it).
        let table: [&DecTable; N] =
            std::array::from_fn(|j| unsafe { *tables[j].get_unchecked(g >> group_shift) });
        for j in 0..N {
            let slots = table[j].slots.as_ptr() as *const i32;
            for v in 0..2 {
                let slot = _mm512_and_si512(x[j][v], slot_mask);
                // SAFETY: slot < 4096 = table.slots.len(), scaled by 4 bytes.
                e[j][v] = unsafe { _mm512_i32gather_epi32::<4>(slot, slots) };
                // The inline layout keeps the frequency one shift from the gather
                // (the state's dependency chain); see `DecTable`.
                let (freq, offset) = if INLINE {
                    (
                        _mm512_srli_epi32::<20>(e[j][v]),
                        _mm512_and_si512(_mm512_srli_epi32::<9>(e[j][v]), low11),
                    )
                } else {
                    (
                        _mm512_add_epi32(
                            _mm512_and_si512(_mm512_srli_epi32::<12>(e[j][v]), low12),
                            one,
                        ),
                        _mm512_and_si512(e[j][v], low12),
                    )
                };
                y[j][v] = _mm512_add_epi32(
                    _mm512_mullo_epi32(freq, _mm512_srli_epi32::<PROB_BITS>(x[j][v])),
                    offset,
                );
            }
        }
        for j in 0..N {
            let symbols = table[j].symbols32.as_ptr() as *const i32;
            for v in 0..2 {
                let need = _mm512_cmplt_epu32_mask(y[j][v], lower);
                // SAFETY: pos + 32 ≤ n_words at the step's start and pos advanced by
                // at most 16 since, so 16 words from pos are in bounds. (Load, then
                // expand in registers: expand-loads from memory are slow on some
                // cores.)
                let next =
                    unsafe { _mm256_loadu_si256(words[j].add(2 * pos[j]) as *const __m256i) };
                let w = _mm512_cvtepu16_epi32(_mm256_maskz_expand_epi16(need, next));
                x[j][v] = _mm512_mask_or_epi32(y[j][v], need, _mm512_slli_epi32::<16>(y[j][v]), w);
                pos[j] += need.count_ones() as usize;
                let sym = if INLINE {
                    _mm512_and_si512(e[j][v], low9)
                } else {
                    let idx = _mm512_srli_epi32::<24>(e[j][v]);
                    // SAFETY: idx < 256 = table.symbols32.len(), scaled by 4 bytes.
                    unsafe { _mm512_i32gather_epi32::<4>(idx, symbols) }
                };
                let at = outs[j].as_mut_ptr().wrapping_add(g * LANES + 16 * v);
                // SAFETY: group g covers out[32g..32g+32], in bounds since g < groups;
                // 16 symbols of `S` are 16 bytes (`u8`) or 32 (`u16`), what is stored.
                unsafe {
                    if size_of::<S>() == 1 {
                        // Symbols of u8 streams are below 2^8: truncation is exact.
                        _mm_storeu_si128(at as *mut __m128i, _mm512_cvtepi32_epi8(sym))
                    } else {
                        _mm256_storeu_si256(at as *mut __m256i, _mm512_cvtepi32_epi16(sym))
                    }
                };
            }
        }
        for _ in 0..N {
            ahead.group();
        }
        g += 1;
    }
    ahead.put();
    for j in 0..N {
        let lanes = states[j].as_mut_ptr() as *mut __m512i;
        // SAFETY: as for the loads above.
        unsafe {
            _mm512_storeu_si512(lanes, x[j][0]);
            _mm512_storeu_si512(lanes.add(1), x[j][1]);
        }
        readers[j].pos = pos[j];
    }
    g * LANES
}

/// Refill shuffles for four 32-bit lanes, indexed by the lanes' need mask: lane `i`
/// with its bit set takes 16-bit word `k` of the source (`k` = set bits below `i`),
/// the others zero.
const REFILL4: [[u8; 16]; 16] = {
    let mut t = [[0x80u8; 16]; 16];
    let mut mask = 0;
    while mask < 16 {
        let (mut lane, mut k) = (0, 0u8);
        while lane < 4 {
            if mask >> lane & 1 == 1 {
                t[mask][4 * lane] = 2 * k;
                t[mask][4 * lane + 1] = 2 * k + 1;
                k += 1;
            }
            lane += 1;
        }
        mask += 1;
    }
    t
};

/// `vpgatherdd` done by hand: eight scalar loads of `table[idx[k]]`, packed into a
/// vector by inserts. On Zen 4 a 256-bit gather costs more than that (the AVX2
/// decoder spent ~14 % less CPU time with this in place: BENCHMARKS.md, 2026-12-02
/// fifth session); the AVX-512 decoder keeps its gathers, which measured no slower.
///
/// # Safety
///
/// Every lane of `idx`, read as unsigned, must index an element of the `i32` array
/// at `table`; the caller must have AVX2 (this is inlined into such functions).
#[inline(always)]
unsafe fn gather8_by_loads(table: *const i32, idx: __m256i) -> __m256i {
    let (lo, hi) = (
        _mm256_castsi256_si128(idx),
        _mm256_extracti128_si256::<1>(idx),
    );
    // Two indices per 64-bit extract: four extracts instead of eight.
    let pairs = [
        _mm_cvtsi128_si64(lo),
        _mm_extract_epi64::<1>(lo),
        _mm_cvtsi128_si64(hi),
        _mm_extract_epi64::<1>(hi),
    ]
    .map(|p| p as u64);
    // SAFETY: the caller guarantees every index is in bounds.
    let at = |k: u64| unsafe { *table.add(k as u32 as usize) };
    _mm256_setr_epi32(
        at(pairs[0]),
        at(pairs[0] >> 32),
        at(pairs[1]),
        at(pairs[1] >> 32),
        at(pairs[2]),
        at(pairs[2] >> 32),
        at(pairs[3]),
        at(pairs[3] >> 32),
    )
}

/// The AVX2 twin of [`decode_groups_avx512`]: four 8-lane state vectors per chunk
/// and step. Refills take the lanes in halves of four: the need mask of a half picks
/// a byte shuffle that spreads the next words, in lane order, over the lanes that
/// need one. `N` chunks are interleaved to hide the latency of the gathers.
#[target_feature(enable = "avx2,bmi1,popcnt")]
pub(super) unsafe fn decode_groups_avx2<S: Symbol, const N: usize, const INLINE: bool>(
    states: [&mut [u32; LANES]; N],
    readers: [&mut WordReader; N],
    tables: [&[&DecTable]; N],
    group_shift: u32,
    outs: [&mut [S]; N],
) -> usize {
    let groups = outs.iter().map(|o| o.len() / LANES).min().unwrap_or(0);
    debug_assert!((0..N).all(|j| groups == 0 || (groups - 1) >> group_shift < tables[j].len()));
    let n_words: [usize; N] = std::array::from_fn(|j| readers[j].words.len());
    let words: [*const u8; N] = std::array::from_fn(|j| readers[j].words.as_ptr() as *const u8);
    let mut pos: [usize; N] = std::array::from_fn(|j| readers[j].pos);
    let mut x = [[_mm256_setzero_si256(); 4]; N];
    for j in 0..N {
        let lanes = states[j].as_ptr() as *const __m256i;
        for (v, xv) in x[j].iter_mut().enumerate() {
            // SAFETY: `states[j]` is 32 u32s, exactly four 256-bit vectors.
            *xv = unsafe { _mm256_loadu_si256(lanes.add(v)) };
        }
    }
    let low12 = _mm256_set1_epi32(0xFFF);
    let low11 = _mm256_set1_epi32(0x7FF);
    let low9 = _mm256_set1_epi32(0x1FF);
    let one = _mm256_set1_epi32(1);
    let zero = _mm256_setzero_si256();
    let refill = REFILL4.as_ptr() as *const __m128i;
    let mut g = 0;
    let mut ahead = WriteAhead::take();
    // A step reads at most LANES words per chunk: stay where that cannot pass an end.
    while g < groups && (0..N).all(|j| pos[j] + LANES <= n_words[j]) {
        // SAFETY: as in `decode_groups_avx512`.
        let table: [&DecTable; N] =
            std::array::from_fn(|j| unsafe { *tables[j].get_unchecked(g >> group_shift) });
        for j in 0..N {
            let slots = table[j].slots.as_ptr() as *const i32;
            let symbols = table[j].symbols32.as_ptr() as *const i32;
            let mut sym = [zero; 4];
            let mut y = [zero; 4];
            let mut need = [zero; 4];
            let mut mask = 0usize;
            for v in 0..4 {
                let slot = _mm256_and_si256(x[j][v], low12);
                // SAFETY: slot < 4096 = table.slots.len().
                let e = unsafe { gather8_by_loads(slots, slot) };
                // The inline layout keeps the frequency one shift from the gather
                // (the state's dependency chain); see `DecTable`.
                let (freq, offset) = if INLINE {
                    (
                        _mm256_srli_epi32::<20>(e),
                        _mm256_and_si256(_mm256_srli_epi32::<9>(e), low11),
                    )
                } else {
                    (
                        _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32::<12>(e), low12), one),
                        _mm256_and_si256(e, low12),
                    )
                };
                y[v] = _mm256_add_epi32(
                    _mm256_mullo_epi32(freq, _mm256_srli_epi32::<{ PROB_BITS as i32 }>(x[j][v])),
                    offset,
                );
                // y < RANS_L = 2^16 exactly when its high half is zero.
                need[v] = _mm256_cmpeq_epi32(_mm256_srli_epi32::<16>(y[v]), zero);
                mask |= (_mm256_movemask_ps(_mm256_castsi256_ps(need[v])) as usize) << (8 * v);
                sym[v] = if INLINE {
                    _mm256_and_si256(e, low9)
                } else {
                    let idx = _mm256_srli_epi32::<24>(e);
                    // SAFETY: idx < 256 = table.symbols32.len().
                    unsafe { gather8_by_loads(symbols, idx) }
                };
            }
            // Each half-vector's first word is found from the step's mask by one
            // popcount, not by a chain of them through the halves before it.
            for v in 0..4 {
                let (lo, hi) = ((mask >> (8 * v)) & 15, (mask >> (8 * v + 4)) & 15);
                let at_lo = pos[j] + (mask & ((1 << (8 * v)) - 1)).count_ones() as usize;
                let at_hi = at_lo + lo.count_ones() as usize;
                // SAFETY: at the step's start pos + 32 ≤ n_words, and at most 8v + 4
                // words are taken before `at_hi`, so the 4 words (8 bytes) at `at_lo`
                // and at `at_hi` are in bounds; `lo` and `hi` are below 16, REFILL4's
                // length.
                let w = unsafe {
                    let words_lo = _mm_loadl_epi64(words[j].add(2 * at_lo) as *const _);
                    let words_hi = _mm_loadl_epi64(words[j].add(2 * at_hi) as *const _);
                    _mm256_set_m128i(
                        _mm_shuffle_epi8(words_hi, _mm_loadu_si128(refill.add(hi))),
                        _mm_shuffle_epi8(words_lo, _mm_loadu_si128(refill.add(lo))),
                    )
                };
                x[j][v] = _mm256_blendv_epi8(
                    y[v],
                    _mm256_or_si256(_mm256_slli_epi32::<16>(y[v]), w),
                    need[v],
                );
            }
            pos[j] += mask.count_ones() as usize;
            // Symbols are below 2^16 (2^8 for `u8`), so the saturating packs are
            // exact; they work per 128-bit lane, and the permutes restore lane order.
            let halves = [
                _mm256_permute4x64_epi64::<0xD8>(_mm256_packus_epi32(sym[0], sym[1])),
                _mm256_permute4x64_epi64::<0xD8>(_mm256_packus_epi32(sym[2], sym[3])),
            ];
            let at = outs[j].as_mut_ptr().wrapping_add(g * LANES);
            // SAFETY: group g covers out[32g..32g+32], in bounds since g < groups;
            // 32 symbols of `S` are 32 bytes (`u8`) or 64 (`u16`), what is stored.
            unsafe {
                if size_of::<S>() == 1 {
                    let bytes =
                        _mm256_permute4x64_epi64::<0xD8>(_mm256_packus_epi16(halves[0], halves[1]));
                    _mm256_storeu_si256(at as *mut __m256i, bytes);
                } else {
                    _mm256_storeu_si256(at as *mut __m256i, halves[0]);
                    _mm256_storeu_si256((at as *mut __m256i).add(1), halves[1]);
                }
            }
        }
        for _ in 0..N {
            ahead.group();
        }
        g += 1;
    }
    ahead.put();
    for j in 0..N {
        let lanes = states[j].as_mut_ptr() as *mut __m256i;
        for (v, &xv) in x[j].iter().enumerate() {
            // SAFETY: as for the loads above.
            unsafe { _mm256_storeu_si256(lanes.add(v), xv) };
        }
        readers[j].pos = pos[j];
    }
    g * LANES
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-made gather returns what `vpgatherdd` returns, for indices across
    /// the whole table (the last element included).
    #[test]
    fn gather_by_loads_matches_the_gather_instruction() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("skipped: this CPU has no AVX2");
            return;
        }
        let table: Vec<i32> = (0..4096)
            .map(|i| (i * 2_654_435_761u32 as i64) as i32)
            .collect();
        let mut seed = 5u32;
        for round in 0..200 {
            let idx: [i32; 8] = std::array::from_fn(|k| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                match (round + k) % 5 {
                    0 => 4095,
                    1 => 0,
                    _ => (seed >> 20) as i32,
                }
            });
            // SAFETY: AVX2 was detected above; every index is below 4096 =
            // table.len(), and both vectors are 8 i32s.
            let (by_loads, by_gather) = unsafe {
                let v = _mm256_loadu_si256(idx.as_ptr() as *const __m256i);
                (
                    gather8_by_loads(table.as_ptr(), v),
                    _mm256_i32gather_epi32::<4>(table.as_ptr(), v),
                )
            };
            let (mut a, mut b) = ([0i32; 8], [0i32; 8]);
            // SAFETY: AVX2 was detected; a and b hold 8 i32s each.
            unsafe {
                _mm256_storeu_si256(a.as_mut_ptr() as *mut __m256i, by_loads);
                _mm256_storeu_si256(b.as_mut_ptr() as *mut __m256i, by_gather);
            }
            assert_eq!(a, b, "indices {idx:?}");
            assert_eq!(a, idx.map(|i| table[i as usize]));
        }
    }
}
