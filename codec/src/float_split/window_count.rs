use super::bf16_fields_of;
use crate::cpu::SimdLevel;

/// Values counted by compares, from the window's start.
pub(super) const WINDOW: usize = 32;

/// Adds the first field of every BF16 element of `src` (its whole 2-byte elements) to
/// `hist` where `level` is the AVX-512 path (and the CPU has it); returns false,
/// counting nothing, elsewhere.
pub(super) fn count_bf16_first(
    joint: bool,
    level: SimdLevel,
    src: &[u8],
    hist: &mut [u32; 512],
) -> bool {
    if joint {
        count_on::<true>(level, src, hist)
    } else {
        count_on::<false>(level, src, hist)
    }
}

/// Whether [`count_bf16_first`] counts on `level`.
pub(super) fn counts_on(level: SimdLevel) -> bool {
    cfg!(target_arch = "x86_64") && level == SimdLevel::Avx512 && level.is_supported()
}

fn count_on<const JOINT: bool>(level: SimdLevel, src: &[u8], hist: &mut [u32; 512]) -> bool {
    if !counts_on(level) {
        return false;
    }
    let elements = src.as_chunks::<2>().0;
    let field = |e: &[u8; 2]| usize::from(bf16_fields_of::<JOINT>(u16::from_le_bytes(*e))[0]);
    // The window ends a few values (two binades) above the largest of the first
    // elements: weights rarely grow past that, and below it sixteen binades follow.
    let top = elements.iter().take(32).map(field).max().unwrap_or(0);
    let lo = top.saturating_sub(WINDOW - 5) as u16;
    #[cfg(target_arch = "x86_64")]
    let (done, window) = {
        let mut window = [0u32; WINDOW];
        // SAFETY: `counts_on` checked that the CPU has the AVX-512 path's features.
        let done = unsafe { x86::count_avx512::<JOINT>(elements, lo, &mut window, hist) };
        (done, window)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let (done, window) = (0, [0u32; WINDOW]);
    for (h, &c) in hist[usize::from(lo)..].iter_mut().zip(&window) {
        *h += c;
    }
    for e in &elements[done..] {
        hist[field(e) & 511] += 1;
    }
    true
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::bf16_fields_of;
    use super::WINDOW;
    use std::arch::x86_64::*;

    /// Counts the elements outside the window of one step (`outside`: their bytes,
    /// in `_mm512_packus_epi16` order: per 16-byte lane 8 values of the first 32
    /// elements, then 8 of the next 32) one by one.
    #[cold]
    #[inline(never)]
    fn count_outside<const JOINT: bool>(
        step: &[[u8; 2]; 64],
        mut outside: u64,
        hist: &mut [u32; 512],
    ) {
        while outside != 0 {
            let i = outside.trailing_zeros() as usize;
            let (lane, j) = (i / 16, i % 16);
            let k = if j < 8 {
                lane * 8 + j
            } else {
                32 + lane * 8 + j - 8
            };
            let f = bf16_fields_of::<JOINT>(u16::from_le_bytes(step[k]))[0];
            hist[usize::from(f) & 511] += 1;
            outside &= outside - 1;
        }
    }

    /// 64 elements per step into `window` (values `lo..lo + WINDOW`) and, outside
    /// it, `hist`; returns the elements counted. (Variants measured slower, in the
    /// pack: byte counters per value, added to by compares and summed every 255
    /// steps; four values' popcounts packed in one register; the window's loop
    /// written out value by value, which LLVM turned into vector popcounts of the
    /// moved masks, also with an `asm!` popcount.)
    #[target_feature(enable = "avx512f,avx512bw,popcnt")]
    pub(super) unsafe fn count_avx512<const JOINT: bool>(
        elements: &[[u8; 2]],
        lo: u16,
        window: &mut [u32; WINDOW],
        hist: &mut [u32; 512],
    ) -> usize {
        let steps = elements.len() / 64;
        let lo = _mm512_set1_epi16(lo as i16);
        let cap = _mm512_set1_epi16(WINDOW as i16);
        let cap8 = _mm512_set1_epi8(WINDOW as i8);
        let (x1ff, x1fe) = (_mm512_set1_epi16(0x1FF), _mm512_set1_epi16(0x1FE));
        let field = |w: __m512i| {
            if JOINT {
                _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<6>(w), x1fe),
                    _mm512_srli_epi16::<15>(w),
                )
            } else {
                _mm512_and_si512(_mm512_srli_epi16::<6>(w), x1ff)
            }
        };
        for step in elements[..64 * steps].as_chunks::<64>().0 {
            let p = step.as_ptr() as *const __m512i;
            // SAFETY: a step is 128 bytes, two 512-bit vectors; unaligned loads.
            let (a, b) = unsafe { (_mm512_loadu_si512(p), _mm512_loadu_si512(p.add(1))) };
            // Offsets in the window; below it they wrap to large values. Clamped to
            // WINDOW, so the signed saturation of the pack keeps them.
            let ka = _mm512_min_epu16(_mm512_sub_epi16(field(a), lo), cap);
            let kb = _mm512_min_epu16(_mm512_sub_epi16(field(b), lo), cap);
            let bytes = _mm512_packus_epi16(ka, kb);
            for (c, count) in window.iter_mut().enumerate() {
                let hits = _mm512_cmpeq_epi8_mask(bytes, _mm512_set1_epi8(c as i8));
                *count += hits.count_ones();
            }
            let outside = _mm512_cmpeq_epi8_mask(bytes, cap8);
            if outside != 0 {
                count_outside::<JOINT>(step, outside, hist);
            }
        }
        64 * steps
    }
}
