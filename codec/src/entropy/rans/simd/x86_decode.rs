//! The AVX2 group decoder and its AVX-512VL twin (256-bit vectors both).

use super::super::{F16Merge, Symbol, WordReader, WriteAhead, LANES, RANS_L};
use crate::entropy::model::{DecTable, PROB_BITS};
use std::arch::x86_64::*;

/// Refill shuffles for eight 32-bit lanes, indexed by the lanes' need mask, for a
/// source of the same eight 16-bit words in both 128-bit halves: lane `i` with its bit
/// set takes word `k` (`k` = set bits below `i`), the others zero. 8 KiB, aligned to 32
/// for one aligned load per vector.
#[repr(align(32))]
struct Refill8([[u8; 32]; 256]);

static REFILL8: Refill8 = Refill8({
    let mut t = [[0x80u8; 32]; 256];
    let mut mask = 0;
    while mask < 256 {
        let (mut lane, mut k) = (0, 0u8);
        while lane < 8 {
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
});

/// The refill shuffle for need mask `mask` (< 256; lane `i` needs a word where bit `i`
/// is set): a byte shuffle of eight 16-bit words broadcast to both 128-bit halves that
/// puts the `k`-th of them in the `k`-th needing lane's low half and zeros elsewhere
/// (the ULP delta's AVX2 decoder uses it too).
///
/// # Safety
///
/// `mask` < 256; the caller must have AVX2 (this is inlined into such functions).
#[inline(always)]
pub(crate) unsafe fn refill8_shuffle(mask: usize) -> __m256i {
    debug_assert!(mask < 256);
    // SAFETY: the caller's (`mask` indexes REFILL8's rows, which are aligned).
    unsafe { _mm256_load_si256(REFILL8.0.as_ptr().add(mask) as *const __m256i) }
}

/// The lanes of `y` below `lower` (unsigned), as a mask.
///
/// # Safety
///
/// The CPU must have AVX-512F/VL (it inlines into the callers that have them).
#[target_feature(enable = "avx512f,avx512vl")]
#[inline]
unsafe fn below(y: __m256i, lower: __m256i) -> u8 {
    _mm256_cmplt_epu32_mask(y, lower)
}

/// `_mm_maskz_expand_epi16` kept in registers: word `k` of `words` goes to the `k`-th
/// lane set in `need`, the other lanes are zero. Written as one instruction of inline
/// assembly because the compiler folds the intrinsic's preceding load into a
/// memory-source `vpexpandw`, which is microcoded and slow on Zen 4 (the one-chunk
/// loop measured 0.568 ns per symbol so against 0.543 with the register form).
///
/// # Safety
///
/// The CPU must have AVX-512F/BW/VL/VBMI2 (it inlines into the callers that have them).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi2")]
#[inline]
unsafe fn expand_words(need: u8, words: __m128i) -> __m128i {
    let out: __m128i;
    // SAFETY: this function has the features; the instruction only reads and writes
    // the named registers.
    unsafe {
        std::arch::asm!(
            "vpexpandw {out}{{{k}}}{{z}}, {src}",
            out = lateout(xmm_reg) out,
            k = in(kreg) u32::from(need),
            src = in(xmm_reg) words,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    out
}

/// Calls `f` with 0, 1, 2 and 3: a loop over a step's four vectors unrolled for sure,
/// so that their arrays stay in registers (the compiler kept one such loop rolled, its
/// states and products in memory).
#[inline(always)]
fn each4(mut f: impl FnMut(usize)) {
    f(0);
    f(1);
    f(2);
    f(3);
}

/// `vpgatherdd` done by hand: eight scalar loads of `table[idx[k]]`, packed into a
/// vector by inserts. On Zen 4 a 256-bit gather costs more than that (the AVX2
/// decoder spent ~14 % less CPU time with this in place: BENCHMARKS.md, 2026-12-02
/// fifth session; the ULP delta's AVX2 loop ~11 %, twenty-sixth session); the AVX-512
/// decoders keep their gathers, which measured no slower (the ULP loop's 16-lane
/// gathers: 3–5 % faster than loads, twenty-sixth session).
///
/// # Safety
///
/// Every lane of `idx`, read as unsigned, must index an element of the `i32` array
/// at `table`; the caller must have AVX2 (this is inlined into such functions).
#[inline(always)]
pub(crate) unsafe fn gather8_by_loads(table: *const i32, idx: __m256i) -> __m256i {
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

/// The AVX2 group decoder: four 8-lane state vectors per chunk and step, gathers by
/// eight loads ([`gather8_by_loads`]), `N` chunks interleaved to hide the gathers'
/// latency. Group `g` of chunk `j` is decoded with `tables[j][g >> group_shift]`, the
/// lanes that fall below `RANS_L` take the next words in lane order (the order the
/// scalar decoder reads them). A vector's refill loads the next eight words into both
/// 128-bit halves (one broadcast load), and its 8-bit need mask picks a byte shuffle
/// ([`REFILL8`]) that spreads them over the lanes that need one. With `INLINE` tables
/// the symbol comes from the slot entry itself; otherwise a second gather maps the
/// entry's index to its symbol. With `MERGE` 1 or 2 (8-bit symbols; plain or joint F16
/// fields; called so on the AVX-512 path only), each group's symbols are not stored but
/// merged with the second field into F16 elements as `merges[j]` says ([`F16Merge`]),
/// and the groups stop where a merge does. Returns the symbols decoded in each chunk (the
/// same number in each).
#[target_feature(enable = "avx2,bmi1,popcnt")]
pub(super) unsafe fn decode_groups_avx2<
    S: Symbol,
    const N: usize,
    const INLINE: bool,
    const MERGE: u8,
>(
    states: [&mut [u32; LANES]; N],
    readers: [&mut WordReader; N],
    tables: [&[&DecTable]; N],
    group_shift: u32,
    outs: [&mut [S]; N],
    merges: [F16Merge; N],
) -> usize {
    decode_groups_256!(false, states, readers, tables, group_shift, outs, merges)
}

/// [`decode_groups_avx2`] with AVX-512VL refills: the lanes' need mask is a mask
/// register, and `vpexpandw` spreads the next words over the lanes that need one, where
/// the AVX2 loop needs a compare, a move of the mask, a table lookup and a byte shuffle
/// per vector; with 32 vector registers a step's vectors stay in registers.
/// The AVX-512 path's rANS decoder, one chunk at a time (see `decode_groups`).
#[target_feature(enable = "avx2,bmi1,popcnt,avx512f,avx512bw,avx512vl,avx512vbmi2")]
pub(super) unsafe fn decode_groups_avx512_256<
    S: Symbol,
    const N: usize,
    const INLINE: bool,
    const MERGE: u8,
>(
    states: [&mut [u32; LANES]; N],
    readers: [&mut WordReader; N],
    tables: [&[&DecTable]; N],
    group_shift: u32,
    outs: [&mut [S]; N],
    merges: [F16Merge; N],
) -> usize {
    decode_groups_256!(true, states, readers, tables, group_shift, outs, merges)
}

/// The body of the two 256-bit group decoders, with `VL` (a `bool` literal) for the
/// AVX-512VL refills. A macro, not an inlined generic function, so that each kernel is
/// compiled as a function with its own target features, as before the VL kernel came:
/// the AVX2 kernel compiled through an `#[inline(always)]` body measured 6–7 % slower
/// for one chunk (register allocation and layout, not instructions).
macro_rules! decode_groups_256 {
    ($vl:literal, $states:ident, $readers:ident, $tables:ident, $group_shift:ident, $outs:ident, $merges:ident) => {{
        const VL: bool = $vl;
        let (states, readers, tables, group_shift, outs, merges) =
            ($states, $readers, $tables, $group_shift, $outs, $merges);
        let mut groups = outs.iter().map(|o| o.len() / LANES).min().unwrap_or(0);
        if MERGE != 0 {
            // A merged group writes its elements where `merges` says, not its symbols.
            debug_assert_eq!(size_of::<S>(), 1);
            groups = merges
                .iter()
                .map(|m| m.len / LANES)
                .fold(groups, usize::min);
        }
        let top = _mm256_set1_epi8(0x80u8 as i8);
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
        let lower = _mm256_set1_epi32(RANS_L as i32);
        let mut g = 0;
        let mut ahead = WriteAhead::take();
        // A step reads at most LANES words per chunk: stay where that cannot pass an end.
        while g < groups && (0..N).all(|j| pos[j] + LANES <= n_words[j]) {
            // SAFETY (both): the caller gives a table for every block of `1 << group_shift`
            // groups up to `groups` (`decode_groups` checks it).
            let table: [&DecTable; N] =
                std::array::from_fn(|j| unsafe { *tables[j].get_unchecked(g >> group_shift) });
            for j in 0..N {
                let slots = table[j].slots.as_ptr() as *const i32;
                let symbols = table[j].symbols32.as_ptr() as *const i32;
                let mut sym = [zero; 4];
                let mut y = [zero; 4];
                let mut need = [zero; 4];
                let mut need_k = [0u8; 4];
                // Each vector's need mask (bit `i` for lane `i`).
                let mut masks = [0u32; 4];
                let mut step = |v: usize| {
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
                            _mm256_add_epi32(
                                _mm256_and_si256(_mm256_srli_epi32::<12>(e), low12),
                                one,
                            ),
                            _mm256_and_si256(e, low12),
                        )
                    };
                    y[v] = _mm256_add_epi32(
                        _mm256_mullo_epi32(
                            freq,
                            _mm256_srli_epi32::<{ PROB_BITS as i32 }>(x[j][v]),
                        ),
                        offset,
                    );
                    if VL {
                        // SAFETY: with `VL` the caller has AVX-512F/VL.
                        need_k[v] = unsafe { below(y[v], lower) };
                        masks[v] = u32::from(need_k[v]);
                    } else {
                        // y < RANS_L = 2^16 exactly when its high half is zero.
                        need[v] = _mm256_cmpeq_epi32(_mm256_srli_epi32::<16>(y[v]), zero);
                        masks[v] = _mm256_movemask_ps(_mm256_castsi256_ps(need[v])) as u32;
                    }
                    sym[v] = if INLINE {
                        _mm256_and_si256(e, low9)
                    } else {
                        let idx = _mm256_srli_epi32::<24>(e);
                        // SAFETY: idx < 256 = table.symbols32.len().
                        unsafe { gather8_by_loads(symbols, idx) }
                    };
                };
                // Unrolled, a step's vectors stay in the VL kernel's 32 registers; the
                // AVX2 kernel (16 registers) measured 5 % slower so (FP8, whole decode).
                if VL {
                    each4(&mut step);
                } else {
                    for v in 0..4 {
                        step(v);
                    }
                }
                // Each vector's first word is where the one before it left off: one
                // popcount and one add per vector. (The four masks shifted and or-ed into
                // one step mask, with a popcount of its low bits per vector, took about
                // twice the scalar instructions: a whole AVX2 FP8 decode runs 5.9 % fewer
                // instructions so, +1–3 % by CPU time; BENCHMARKS.md, twenty-fourth
                // session, fp824.)
                let mut word = pos[j];
                for v in 0..4 {
                    // SAFETY: at the step's start pos + 32 ≤ n_words, and at most 8v words
                    // are taken before `word`, so the 8 words (16 bytes) at `word` are in
                    // bounds.
                    let next = unsafe { _mm_loadu_si128(words[j].add(2 * word) as *const __m128i) };
                    if VL {
                        // SAFETY: with `VL` the caller has AVX-512BW/VL/VBMI2.
                        x[j][v] = unsafe {
                            let w = _mm256_cvtepu16_epi32(expand_words(need_k[v], next));
                            _mm256_mask_or_epi32(y[v], need_k[v], _mm256_slli_epi32::<16>(y[v]), w)
                        };
                        word += masks[v].count_ones() as usize;
                        continue;
                    }
                    // One shuffle from an 8 KiB table for the vector's eight lanes, where
                    // two 16-entry tables for its halves took two word loads, two shuffles
                    // and an insert (one-thread decode by CPU time: BF16 +6 %, FP8 +1 %; fp822).
                    let m8 = masks[v] as usize;
                    // SAFETY: `m8` is below 256, REFILL8's length; its rows are aligned.
                    let w = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(next), unsafe {
                        _mm256_load_si256(REFILL8.0.as_ptr().add(m8) as *const __m256i)
                    });
                    x[j][v] = _mm256_blendv_epi8(
                        y[v],
                        _mm256_or_si256(_mm256_slli_epi32::<16>(y[v]), w),
                        need[v],
                    );
                    word += masks[v].count_ones() as usize;
                }
                pos[j] = word;
                // Symbols are below 2^16 (2^8 for `u8`), so the saturating packs are
                // exact; they work per 128-bit lane, and the permutes restore lane order.
                let at = outs[j].as_mut_ptr().wrapping_add(g * LANES);
                let pairs = [
                    _mm256_packus_epi32(sym[0], sym[1]),
                    _mm256_packus_epi32(sym[2], sym[3]),
                ];
                // SAFETY: group g covers out[32g..32g+32], in bounds since g < groups;
                // 32 symbols of `S` are 32 bytes (`u8`) or 64 (`u16`), what is stored.
                unsafe {
                    if size_of::<S>() == 1 {
                        // 128-bit lane h of the packed bytes holds lanes 4h..4h+4 of each
                        // vector, four bytes per vector: one dword permute puts them in
                        // order (four shuffles per step where two more permutes made six).
                        let bytes = _mm256_permutevar8x32_epi32(
                            _mm256_packus_epi16(pairs[0], pairs[1]),
                            _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
                        );
                        if MERGE != 0 {
                            // F16 elements from the first field's bytes `e` and the
                            // second field's `l` (see `merge_f16_bytes_avx2`): high bytes
                            // exponent and top mantissa bits under the sign, low bytes
                            // the rest; interleaved into words. In the AVX-512 path's
                            // loop this costs less than the symbols' store and a merge
                            // pass reading them back (one-thread MiniLM F16 decode by
                            // CPU time +1 to +4 %; BENCHMARKS.md, twenty-sixth session,
                            // dec26); the AVX2 path does not merge (see `merging`).
                            let m = &merges[j];
                            // SAFETY: g < groups ≤ m.len / LANES: the 32 bytes of `low`
                            // and the 64 of `dst` at the group's elements are in bounds.
                            let l = _mm256_loadu_si256(m.low.add(g * LANES) as *const __m256i);
                            let e = bytes;
                            let down = _mm256_srli_epi16::<1>(e);
                            let up = _mm256_slli_epi16::<7>(e);
                            let select = |rest: __m256i, sign: __m256i| {
                                _mm256_or_si256(
                                    _mm256_and_si256(sign, top),
                                    _mm256_andnot_si256(top, rest),
                                )
                            };
                            let (hi, lo) = if MERGE == 2 {
                                (select(down, up), l)
                            } else {
                                (select(down, l), select(l, up))
                            };
                            let a = _mm256_unpacklo_epi8(lo, hi);
                            let b = _mm256_unpackhi_epi8(lo, hi);
                            let to = m.dst.add(2 * g * LANES) as *mut __m256i;
                            _mm256_storeu_si256(to, _mm256_permute2x128_si256::<0x20>(a, b));
                            _mm256_storeu_si256(to.add(1), _mm256_permute2x128_si256::<0x31>(a, b));
                        } else {
                            _mm256_storeu_si256(at as *mut __m256i, bytes);
                        }
                    } else {
                        let halves = pairs.map(|p| _mm256_permute4x64_epi64::<0xD8>(p));
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
    }};
}
use decode_groups_256;

#[cfg(test)]
mod tests {
    use super::*;

    /// Each REFILL8 row spreads word `k` of a broadcast 8-word source to the `k`-th
    /// lane of its mask, zero elsewhere.
    #[test]
    fn refill8_spreads_words_over_the_needy_lanes() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("skipped: this CPU has no AVX2");
            return;
        }
        let words: [u16; 8] = std::array::from_fn(|k| 0xA100 + 17 * k as u16);
        for mask in 0..256usize {
            let mut out = [0u32; 8];
            // SAFETY: AVX2 was detected; `words` is 16 bytes, the row 32 aligned bytes,
            // `out` 32 bytes.
            unsafe {
                let src = _mm_loadu_si128(words.as_ptr() as *const __m128i);
                let w = _mm256_shuffle_epi8(
                    _mm256_broadcastsi128_si256(src),
                    _mm256_load_si256(REFILL8.0.as_ptr().add(mask) as *const __m256i),
                );
                _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, w);
            }
            let mut k = 0;
            let want: [u32; 8] = std::array::from_fn(|lane| {
                if mask >> lane & 1 == 1 {
                    k += 1;
                    u32::from(words[k - 1])
                } else {
                    0
                }
            });
            assert_eq!(out, want, "mask {mask:#010b}");
        }
    }

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
