use crate::cpu::SimdLevel;

/// The path that actually splits for `level` (AVX2 has no split of its own).
fn split_level(level: SimdLevel) -> SimdLevel {
    match level {
        SimdLevel::Avx512 | SimdLevel::Avx2 if level.is_supported() => level,
        _ => SimdLevel::Scalar,
    }
}

/// Splits as many leading whole vector steps (64 elements on AVX-512, 16 on AVX2) as
/// the vector path can; returns how many elements it consumed.
pub(super) fn split_bf16_packed<const JOINT: bool>(
    level: SimdLevel,
    src: &[u8],
    exp: &mut [u16],
    packed: &mut [u8],
) -> usize {
    let level = split_level(level);
    crate::cpu::note_run(level);
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY (both calls): `split_level` checked that the CPU supports every
        // feature the called function enables.
        match level {
            SimdLevel::Avx512 => {
                return unsafe { x86::split_bf16_packed::<JOINT>(src, exp, packed) }
            }
            SimdLevel::Avx2 => {
                return unsafe { x86::split_bf16_packed_avx2::<JOINT>(src, exp, packed) }
            }
            SimdLevel::Scalar => {}
        }
    }
    let _ = (level, src, exp, packed);
    0
}

/// Merges as many leading whole vector steps (64 elements on AVX-512, 16 on AVX2) as
/// the vector path can; returns how many elements it wrote.
pub(super) fn merge_bf16_packed<const JOINT: bool>(
    level: SimdLevel,
    exp: &[u16],
    packed: &[u8],
    dst: &mut [u8],
) -> usize {
    let level = merge_level(level);
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY (both calls): the CPU supports every feature the function enables
        // (`merge_level` checked).
        match level {
            SimdLevel::Avx512 => {
                return unsafe { x86::merge_bf16_packed::<JOINT>(exp, packed, dst) }
            }
            SimdLevel::Avx2 => {
                return unsafe { x86::merge_bf16_packed_avx2::<JOINT>(exp, packed, dst) }
            }
            SimdLevel::Scalar => {}
        }
    }
    let _ = (level, exp, packed, dst);
    0
}

/// The path that merges for `level`: `level` itself where the CPU has it (every level
/// has a merge), else the scalar one; the run is counted.
fn merge_level(level: SimdLevel) -> SimdLevel {
    debug_assert!(
        level.is_supported(),
        "{level} requested on a CPU without it"
    );
    let level = if level.is_supported() {
        level
    } else {
        SimdLevel::Scalar
    };
    crate::cpu::note_run(level);
    level
}

/// F32 merge from the first field, the packed residual and the two mantissa bytes as
/// bytes, in one pass: as many leading whole vector steps (64 elements on AVX-512, 16
/// on AVX2) as the vector path can; returns how many elements it wrote.
pub(super) fn merge_f32_bytes<const JOINT: bool>(
    level: SimdLevel,
    exp: &[u16],
    packed: &[u8],
    mid: &[u8],
    low: &[u8],
    dst: &mut [u8],
) -> usize {
    let level = merge_level(level);
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY (both calls): the CPU supports every feature the function enables
        // (`merge_level` checked).
        match level {
            SimdLevel::Avx512 => {
                return unsafe { x86::merge_f32_bytes::<JOINT>(exp, packed, mid, low, dst) }
            }
            SimdLevel::Avx2 => {
                return unsafe { x86::merge_f32_bytes_avx2::<JOINT>(exp, packed, mid, low, dst) }
            }
            SimdLevel::Scalar => {}
        }
    }
    let _ = (level, exp, packed, mid, low, dst);
    0
}

/// F16 merge from both fields as bytes, in one pass: as many leading whole vector
/// steps (64 elements on AVX-512, 32 on AVX2) as the vector path can; returns how
/// many elements it wrote.
pub(super) fn merge_f16_bytes(
    level: SimdLevel,
    joint: bool,
    exp: &[u8],
    low: &[u8],
    dst: &mut [u8],
) -> usize {
    let level = merge_level(level);
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY (every call): the CPU supports every feature the function enables
        // (`merge_level` checked).
        match (level, joint) {
            (SimdLevel::Avx512, false) => {
                return unsafe { x86::merge_f16_bytes::<false>(exp, low, dst) }
            }
            (SimdLevel::Avx512, true) => {
                return unsafe { x86::merge_f16_bytes::<true>(exp, low, dst) }
            }
            (SimdLevel::Avx2, false) => {
                return unsafe { x86::merge_f16_bytes_avx2::<false>(exp, low, dst) }
            }
            (SimdLevel::Avx2, true) => {
                return unsafe { x86::merge_f16_bytes_avx2::<true>(exp, low, dst) }
            }
            (SimdLevel::Scalar, _) => {}
        }
    }
    let _ = (level, joint, exp, low, dst);
    0
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// 64 elements per step: the first field in 16-bit lanes; the residual narrowed to
    /// bytes, joined pairwise into 14-, 28- and 56-bit groups by shifts within 16-, 32-
    /// and 64-bit lanes, then compacted to 56 bytes by a byte permute and stored under
    /// a 56-byte mask.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) unsafe fn split_bf16_packed<const JOINT: bool>(
        src: &[u8],
        exp: &mut [u16],
        packed: &mut [u8],
    ) -> usize {
        let groups = (exp.len() / 64).min(src.len() / 128).min(packed.len() / 56);
        let compact_idx: [u8; 64] = std::array::from_fn(|k| (8 * (k / 7) + k % 7).min(63) as u8);
        // SAFETY: the array is 64 bytes.
        let compact_idx = unsafe { _mm512_loadu_si512(compact_idx.as_ptr() as *const _) };
        let (x1ff, x40, x3f) = (
            _mm512_set1_epi16(0x1FF),
            _mm512_set1_epi16(0x40),
            _mm512_set1_epi16(0x3F),
        );
        let (x1fe, x7f) = (_mm512_set1_epi16(0x1FE), _mm512_set1_epi16(0x7F));
        for g in 0..groups {
            // SAFETY: g < groups, so the 128 bytes at 128g, the 64 u16 at 64g and the 56
            // bytes at 56g are in bounds; the masked store writes exactly 56 bytes.
            unsafe {
                let mut halves = [_mm256_setzero_si256(); 2];
                for (half, r8) in halves.iter_mut().enumerate() {
                    let w = _mm512_loadu_si512(src.as_ptr().add(128 * g + 64 * half) as *const _);
                    let (e, r) = if JOINT {
                        (
                            _mm512_or_si512(
                                _mm512_and_si512(_mm512_srli_epi16::<6>(w), x1fe),
                                _mm512_srli_epi16::<15>(w),
                            ),
                            _mm512_and_si512(w, x7f),
                        )
                    } else {
                        (
                            _mm512_and_si512(_mm512_srli_epi16::<6>(w), x1ff),
                            _mm512_or_si512(
                                _mm512_and_si512(_mm512_srli_epi16::<9>(w), x40),
                                _mm512_and_si512(w, x3f),
                            ),
                        )
                    };
                    _mm512_storeu_si512(exp.as_mut_ptr().add(64 * g + 32 * half) as *mut _, e);
                    *r8 = _mm512_cvtepi16_epi8(r);
                }
                let bytes = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(halves[0]), halves[1]);
                // Byte pairs → 14 bits in each 16-bit lane.
                let t16 = _mm512_or_si512(
                    _mm512_and_si512(bytes, _mm512_set1_epi16(0x7F)),
                    _mm512_and_si512(_mm512_srli_epi16::<1>(bytes), _mm512_set1_epi16(0x3F80)),
                );
                // 14-bit pairs → 28 bits in each 32-bit lane.
                let t32 = _mm512_or_si512(
                    _mm512_and_si512(t16, _mm512_set1_epi32(0x3FFF)),
                    _mm512_and_si512(_mm512_srli_epi32::<2>(t16), _mm512_set1_epi32(0x0FFF_C000)),
                );
                // 28-bit pairs → 56 bits in each 64-bit lane.
                let t64 = _mm512_or_si512(
                    _mm512_and_si512(t32, _mm512_set1_epi64(0x0FFF_FFFF)),
                    _mm512_and_si512(
                        _mm512_srli_epi64::<4>(t32),
                        _mm512_set1_epi64(0x00FF_FFFF_F000_0000),
                    ),
                );
                let out = _mm512_permutexvar_epi8(compact_idx, t64);
                _mm512_mask_storeu_epi8(
                    packed.as_mut_ptr().add(56 * g) as *mut i8,
                    (1u64 << 56) - 1,
                    out,
                );
            }
        }
        groups * 64
    }

    /// 16 elements per step: the first field in 16-bit lanes; the residuals joined
    /// pairwise into 14 bits by a multiply-add, the 14-bit pairs into 28 bits by a
    /// shift within 64-bit lanes, and the two 28-bit groups of each 128-bit half into
    /// its 7 bytes. On CPUs without AVX-512 VBMI this replaces a scalar loop of about
    /// eight instructions per element.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn split_bf16_packed_avx2<const JOINT: bool>(
        src: &[u8],
        exp: &mut [u16],
        packed: &mut [u8],
    ) -> usize {
        let groups = (exp.len() / 16).min(src.len() / 32).min(packed.len() / 14);
        let (x1ff, x40, x3f) = (
            _mm256_set1_epi16(0x1FF),
            _mm256_set1_epi16(0x40),
            _mm256_set1_epi16(0x3F),
        );
        let (x1fe, x7f) = (_mm256_set1_epi16(0x1FE), _mm256_set1_epi16(0x7F));
        // Each 32-bit lane: low element + 128 × high element (both below 128).
        let join_pair = _mm256_set1_epi32(0x0080_0001);
        let low28 = _mm256_set1_epi64x(0x0FFF_FFFF);
        for g in 0..groups {
            // SAFETY: g < groups, so the 32 bytes at 32g and the 16 u16 at 16g are in
            // bounds.
            let r = unsafe {
                let w = _mm256_loadu_si256(src.as_ptr().add(32 * g) as *const __m256i);
                let (e, r) = if JOINT {
                    (
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16::<6>(w), x1fe),
                            _mm256_srli_epi16::<15>(w),
                        ),
                        _mm256_and_si256(w, x7f),
                    )
                } else {
                    (
                        _mm256_and_si256(_mm256_srli_epi16::<6>(w), x1ff),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16::<9>(w), x40),
                            _mm256_and_si256(w, x3f),
                        ),
                    )
                };
                _mm256_storeu_si256(exp.as_mut_ptr().add(16 * g) as *mut __m256i, e);
                r
            };
            let t32 = _mm256_madd_epi16(r, join_pair);
            let t64 = _mm256_and_si256(_mm256_or_si256(t32, _mm256_srli_epi64::<18>(t32)), low28);
            // Qword 1 of each half onto bits 28..56 of qword 0.
            let t128 = _mm256_or_si256(t64, _mm256_slli_epi64::<28>(_mm256_bsrli_epi128::<8>(t64)));
            let lo = (_mm256_extract_epi64::<0>(t128) as u64).to_le_bytes();
            let hi = (_mm256_extract_epi64::<2>(t128) as u64).to_le_bytes();
            let out = &mut packed[14 * g..14 * g + 14];
            out[..7].copy_from_slice(&lo[..7]);
            out[7..].copy_from_slice(&hi[..7]);
        }
        groups * 16
    }

    /// 64 elements per step: one masked 56-byte load, a byte permute that gives each
    /// qword its group's 7 bytes, a multishift that pulls out the eight 7-bit fields
    /// ([`Residual512`]), then the merge in 16-bit lanes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) unsafe fn merge_bf16_packed<const JOINT: bool>(
        exp: &[u16],
        packed: &[u8],
        dst: &mut [u8],
    ) -> usize {
        let groups = (exp.len() / 64).min(packed.len() / 56).min(dst.len() / 128);
        // SAFETY: the CPU has AVX-512 F (this function's features).
        let residual = unsafe { Residual512::new() };
        for g in 0..groups {
            // SAFETY: g < groups, so the 56 bytes at 56g, the 64 u16 at 64g and the 128
            // bytes at 128g are in bounds.
            unsafe {
                let r = residual.load(packed.as_ptr().add(56 * g));
                for half in 0..2 {
                    let r8 = if half == 0 {
                        _mm512_castsi512_si256(r)
                    } else {
                        _mm512_extracti64x4_epi64::<1>(r)
                    };
                    let s0 = _mm512_loadu_si512(exp.as_ptr().add(64 * g + 32 * half) as *const _);
                    let w = bf16_words::<JOINT>(s0, _mm512_cvtepu8_epi16(r8));
                    _mm512_storeu_si512(dst.as_mut_ptr().add(128 * g + 64 * half) as *mut _, w);
                }
            }
        }
        groups * 64
    }

    /// 16 elements per step: the residual of [`Residual256`] in element order, then
    /// the merge.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn merge_bf16_packed_avx2<const JOINT: bool>(
        exp: &[u16],
        packed: &[u8],
        dst: &mut [u8],
    ) -> usize {
        // The load reads 16 bytes for 14: the last step must leave 2 bytes of slack.
        let steps = (exp.len() / 16)
            .min(packed.len().saturating_sub(2) / 14)
            .min(dst.len() / 32);
        // SAFETY: the CPU has AVX2 (this function's feature).
        let residual = unsafe { Residual256::new(|i| i) };
        for i in 0..steps {
            // SAFETY: i < steps, so the 16 bytes at 14i, the 16 u16 at 16i and the 32
            // bytes at 32i are in bounds.
            unsafe {
                let r = residual.load(packed.as_ptr().add(14 * i));
                let s0 = _mm256_loadu_si256(exp.as_ptr().add(16 * i) as *const _);
                let w = bf16_words_avx2::<JOINT>(s0, r);
                _mm256_storeu_si256(dst.as_mut_ptr().add(32 * i) as *mut _, w);
            }
        }
        steps * 16
    }

    /// The 64 7-bit fields of a 56-byte packed group (element k at bit 7k), one per
    /// byte: a byte permute gives each qword its group's 7 bytes, a multishift pulls
    /// out the eight fields of each.
    struct Residual512 {
        spread_idx: __m512i,
        shift_ctrl: __m512i,
    }

    impl Residual512 {
        /// # Safety
        ///
        /// The CPU must have AVX-512 F (the caller enables it).
        #[inline(always)]
        unsafe fn new() -> Self {
            let spread_idx: [u8; 64] =
                std::array::from_fn(|i| (7 * (i / 8) + (i % 8).min(6)) as u8);
            let shift_ctrl: [u8; 64] = std::array::from_fn(|i| (7 * (i % 8)) as u8);
            // SAFETY: both arrays are 64 bytes.
            unsafe {
                Self {
                    spread_idx: _mm512_loadu_si512(spread_idx.as_ptr() as *const _),
                    shift_ctrl: _mm512_loadu_si512(shift_ctrl.as_ptr() as *const _),
                }
            }
        }

        /// # Safety
        ///
        /// The 56 bytes at `at` must be readable (exactly those are read); the CPU must
        /// have AVX-512 BW and VBMI (the caller enables them).
        #[inline(always)]
        unsafe fn load(&self, at: *const u8) -> __m512i {
            // SAFETY: the caller's.
            unsafe {
                let bytes = _mm512_maskz_loadu_epi8((1u64 << 56) - 1, at as *const i8);
                let spread = _mm512_permutexvar_epi8(self.spread_idx, bytes);
                _mm512_and_si512(
                    _mm512_multishift_epi64_epi8(self.shift_ctrl, spread),
                    _mm512_set1_epi8(0x7F),
                )
            }
        }
    }

    /// BF16 words (the top halves of F32 elements) from their first fields `s0` and
    /// residuals `r`, 32 elements in 16-bit lanes.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512 BW (the caller enables it).
    #[inline(always)]
    unsafe fn bf16_words<const JOINT: bool>(s0: __m512i, r: __m512i) -> __m512i {
        if JOINT {
            // The sign from bit 0 of the first field to bit 15, the exponent above
            // the seven mantissa bits of the residual.
            _mm512_or_si512(
                _mm512_or_si512(
                    _mm512_and_si512(_mm512_slli_epi16::<6>(s0), _mm512_set1_epi16(0x7F80)),
                    _mm512_slli_epi16::<15>(s0),
                ),
                r,
            )
        } else {
            _mm512_or_si512(
                _mm512_slli_epi16::<6>(s0),
                _mm512_or_si512(
                    _mm512_slli_epi16::<9>(_mm512_and_si512(r, _mm512_set1_epi16(0x40))),
                    _mm512_and_si512(r, _mm512_set1_epi16(0x3F)),
                ),
            )
        }
    }

    /// 64 elements per step, in one pass: the top halves in 16-bit lanes (as
    /// [`merge_bf16_packed`] computes them), the two mantissa bytes joined into 16-bit
    /// lanes by a two-source byte permute, both interleaved into the F32 words by a
    /// two-source word permute; no BF16 buffer in between.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) unsafe fn merge_f32_bytes<const JOINT: bool>(
        exp: &[u16],
        packed: &[u8],
        mid: &[u8],
        low: &[u8],
        dst: &mut [u8],
    ) -> usize {
        let groups = (exp.len() / 64)
            .min(packed.len() / 56)
            .min(mid.len() / 64)
            .min(low.len() / 64)
            .min(dst.len() / 256);
        // Half h: word k is the low byte of element 32h + k, then its mid byte (index
        // bit 6 picks the second source).
        let join: [[u8; 64]; 2] =
            std::array::from_fn(|h| std::array::from_fn(|i| (32 * h + i / 2 + 64 * (i % 2)) as u8));
        // Output q of a half: elements 16q..16q+16 of its 32, each the word of its two
        // bytes, then its top word (index bit 5 picks the second source).
        let interleave: [[u16; 32]; 2] = std::array::from_fn(|q| {
            std::array::from_fn(|w| (16 * q + w / 2 + 32 * (w % 2)) as u16)
        });
        // SAFETY: the CPU has AVX-512 F, BW and VBMI (this function's features); each
        // array is 64 bytes.
        let (residual, join, interleave) = unsafe {
            (
                Residual512::new(),
                join.map(|j| _mm512_loadu_si512(j.as_ptr() as *const _)),
                interleave.map(|j| _mm512_loadu_si512(j.as_ptr() as *const _)),
            )
        };
        for g in 0..groups {
            // SAFETY: g < groups, so the 56 bytes at 56g, the 64 u16 at 64g, the 64
            // bytes of each byte field at 64g and the 256 bytes at 256g are in bounds.
            unsafe {
                let r = residual.load(packed.as_ptr().add(56 * g));
                let lows = _mm512_loadu_si512(low.as_ptr().add(64 * g) as *const _);
                let mids = _mm512_loadu_si512(mid.as_ptr().add(64 * g) as *const _);
                for (h, join) in join.iter().enumerate() {
                    let r8 = if h == 0 {
                        _mm512_castsi512_si256(r)
                    } else {
                        _mm512_extracti64x4_epi64::<1>(r)
                    };
                    let s0 = _mm512_loadu_si512(exp.as_ptr().add(64 * g + 32 * h) as *const _);
                    let top = bf16_words::<JOINT>(s0, _mm512_cvtepu8_epi16(r8));
                    let bytes = _mm512_permutex2var_epi8(lows, *join, mids);
                    for (q, idx) in interleave.iter().enumerate() {
                        let words = _mm512_permutex2var_epi16(bytes, *idx, top);
                        let at = dst.as_mut_ptr().add(256 * g + 128 * h + 64 * q);
                        _mm512_storeu_si512(at as *mut _, words);
                    }
                }
            }
        }
        groups * 64
    }

    /// The 16 7-bit fields of a 14-byte packed group (element k at bit 7k) in 16-bit
    /// lanes, lane i holding element `order(i)`: one 16-byte load broadcast to both
    /// 128-bit halves; a byte shuffle gives each lane the two bytes that hold its
    /// field, a multiply by `2^(7 - shift)` lines every field up at bit 7 (AVX2 has no
    /// per-lane 16-bit shift).
    struct Residual256 {
        shuffle: __m256i,
        multiplier: __m256i,
    }

    impl Residual256 {
        /// # Safety
        ///
        /// The CPU must have AVX (the caller enables AVX2).
        #[inline(always)]
        unsafe fn new(order: impl Fn(usize) -> usize) -> Self {
            // Field j starts at bit 7j: in byte 7j / 8, at shift 7j % 8.
            let shuffle: [u8; 32] = std::array::from_fn(|p| (7 * order(p / 2) / 8 + p % 2) as u8);
            let multiplier: [u16; 16] = std::array::from_fn(|i| 1 << (7 - 7 * order(i) % 8));
            // SAFETY: both arrays are 32 bytes.
            unsafe {
                Self {
                    shuffle: _mm256_loadu_si256(shuffle.as_ptr() as *const _),
                    multiplier: _mm256_loadu_si256(multiplier.as_ptr() as *const _),
                }
            }
        }

        /// # Safety
        ///
        /// The 16 bytes at `at` must be readable (14 are used); the CPU must have AVX2
        /// (the caller enables it).
        #[inline(always)]
        unsafe fn load(&self, at: *const u8) -> __m256i {
            // SAFETY: the caller's.
            let bytes = unsafe { _mm_loadu_si128(at as *const _) };
            let pairs = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(bytes), self.shuffle);
            _mm256_and_si256(
                _mm256_srli_epi16::<7>(_mm256_mullo_epi16(pairs, self.multiplier)),
                _mm256_set1_epi16(0x7F),
            )
        }
    }

    /// [`bf16_words`] on AVX2: 16 elements.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX2 (the caller enables it).
    #[inline(always)]
    unsafe fn bf16_words_avx2<const JOINT: bool>(s0: __m256i, r: __m256i) -> __m256i {
        if JOINT {
            _mm256_or_si256(
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_slli_epi16::<6>(s0), _mm256_set1_epi16(0x7F80)),
                    _mm256_slli_epi16::<15>(s0),
                ),
                r,
            )
        } else {
            _mm256_or_si256(
                _mm256_slli_epi16::<6>(s0),
                _mm256_or_si256(
                    _mm256_slli_epi16::<9>(_mm256_and_si256(r, _mm256_set1_epi16(0x40))),
                    _mm256_and_si256(r, _mm256_set1_epi16(0x3F)),
                ),
            )
        }
    }

    /// 16 elements per step, in one pass. Every 16-lane vector holds its elements in
    /// the order of the exponent words after a qword permute (0, 2, 1, 3): elements
    /// 0..4 and 8..12 in the low 128-bit half, 4..8 and 12..16 in the high one, so
    /// that the 16-bit unpacks of the byte words with the top words give elements
    /// 0..8 and 8..16 in order. The residual shuffle and the byte shuffles take that
    /// order at no cost.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn merge_f32_bytes_avx2<const JOINT: bool>(
        exp: &[u16],
        packed: &[u8],
        mid: &[u8],
        low: &[u8],
        dst: &mut [u8],
    ) -> usize {
        // The residual load reads 16 bytes for 14: the last step must leave 2 bytes of
        // slack.
        let steps = (exp.len() / 16)
            .min(packed.len().saturating_sub(2) / 14)
            .min(mid.len() / 16)
            .min(low.len() / 16)
            .min(dst.len() / 64);
        let order = |i: usize| 4 * (i / 8) + 8 * (i % 8 / 4) + i % 4;
        // Byte shuffles of the 16 bytes of a field (broadcast to both halves) into the
        // low or the high byte of each lane, zero elsewhere.
        let place = |high: usize| -> [u8; 32] {
            std::array::from_fn(|p| {
                if p % 2 == high {
                    order(p / 2) as u8
                } else {
                    0x80
                }
            })
        };
        let (low_at, mid_at) = (place(0), place(1));
        // SAFETY: the CPU has AVX2 (this function's feature); both arrays are 32 bytes.
        let (residual, low_at, mid_at) = unsafe {
            (
                Residual256::new(order),
                _mm256_loadu_si256(low_at.as_ptr() as *const _),
                _mm256_loadu_si256(mid_at.as_ptr() as *const _),
            )
        };
        for i in 0..steps {
            // SAFETY: i < steps, so the 16 bytes at 14i, the 16 u16 at 16i, the 16
            // bytes of each byte field at 16i and the 64 bytes at 64i are in bounds.
            unsafe {
                let r = residual.load(packed.as_ptr().add(14 * i));
                let s0 = _mm256_loadu_si256(exp.as_ptr().add(16 * i) as *const _);
                let top = bf16_words_avx2::<JOINT>(_mm256_permute4x64_epi64::<0xD8>(s0), r);
                let lows = _mm256_broadcastsi128_si256(_mm_loadu_si128(
                    low.as_ptr().add(16 * i) as *const _
                ));
                let mids = _mm256_broadcastsi128_si256(_mm_loadu_si128(
                    mid.as_ptr().add(16 * i) as *const _
                ));
                let bytes = _mm256_or_si256(
                    _mm256_shuffle_epi8(lows, low_at),
                    _mm256_shuffle_epi8(mids, mid_at),
                );
                let at = dst.as_mut_ptr().add(64 * i) as *mut __m256i;
                _mm256_storeu_si256(at, _mm256_unpacklo_epi16(bytes, top));
                _mm256_storeu_si256(at.add(1), _mm256_unpackhi_epi16(bytes, top));
            }
        }
        steps * 16
    }

    /// The high bytes of 64 F16 elements from their first fields `e` (as bytes):
    /// non-joint, exponent and top mantissa bits (bits 7..1 of the field) under the
    /// sign (bit 7 of the second field `l`); joint, the same seven bits under the sign
    /// (bit 0 of the first field). The low bytes: bit 0 of the first field above the
    /// low seven bits of the second; joint, the second field itself. 16-bit shifts
    /// move bits across byte borders only where the byte masks drop them.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512 F and BW (the caller enables them).
    #[inline(always)]
    unsafe fn f16_bytes<const JOINT: bool>(e: __m512i, l: __m512i) -> (__m512i, __m512i) {
        let top = _mm512_set1_epi8(0x80u8 as i8);
        let down = _mm512_srli_epi16::<1>(e);
        let up = _mm512_slli_epi16::<7>(e);
        // ternlog 0xCA: the bits of the second operand where the first (the mask) is
        // set, of the third elsewhere.
        let hi = _mm512_ternarylogic_epi64::<0xCA>(top, if JOINT { up } else { l }, down);
        let lo = if JOINT {
            l
        } else {
            _mm512_ternarylogic_epi64::<0xCA>(top, up, l)
        };
        (hi, lo)
    }

    /// 64 F16 elements per step from both fields as bytes: high and low bytes in
    /// byte lanes ([`f16_bytes`]), interleaved into words by two-source byte
    /// permutes (no fix-up of the 128-bit lanes that byte unpacks would need).
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) unsafe fn merge_f16_bytes<const JOINT: bool>(
        exp: &[u8],
        low: &[u8],
        dst: &mut [u8],
    ) -> usize {
        let steps = (exp.len() / 64).min(low.len() / 64).min(dst.len() / 128);
        // Output half h: byte 2k the low byte of element 32h + k, byte 2k + 1 its
        // high byte (index bit 6 picks the second source).
        let join: [[u8; 64]; 2] =
            std::array::from_fn(|h| std::array::from_fn(|i| (32 * h + i / 2 + 64 * (i % 2)) as u8));
        // SAFETY: the CPU has AVX-512 F (this function's features); each array is 64
        // bytes.
        let join = join.map(|j| unsafe { _mm512_loadu_si512(j.as_ptr() as *const _) });
        for i in 0..steps {
            // SAFETY: i < steps, so the 64 bytes of each field at 64i and the 128
            // bytes at 128i are in bounds.
            unsafe {
                let e = _mm512_loadu_si512(exp.as_ptr().add(64 * i) as *const _);
                let l = _mm512_loadu_si512(low.as_ptr().add(64 * i) as *const _);
                let (hi, lo) = f16_bytes::<JOINT>(e, l);
                let at = dst.as_mut_ptr().add(128 * i) as *mut __m512i;
                _mm512_storeu_si512(at, _mm512_permutex2var_epi8(lo, join[0], hi));
                _mm512_storeu_si512(at.add(1), _mm512_permutex2var_epi8(lo, join[1], hi));
            }
        }
        steps * 64
    }

    /// [`merge_f16_bytes`] on AVX2: 32 elements per step, the same bytes by shifts
    /// and blends, interleaved by byte unpacks within 128-bit lanes and put in order
    /// by two lane permutes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn merge_f16_bytes_avx2<const JOINT: bool>(
        exp: &[u8],
        low: &[u8],
        dst: &mut [u8],
    ) -> usize {
        let steps = (exp.len() / 32).min(low.len() / 32).min(dst.len() / 64);
        let top = _mm256_set1_epi8(0x80u8 as i8);
        for i in 0..steps {
            // SAFETY: i < steps, so the 32 bytes of each field at 32i and the 64
            // bytes at 64i are in bounds.
            unsafe {
                let e = _mm256_loadu_si256(exp.as_ptr().add(32 * i) as *const _);
                let l = _mm256_loadu_si256(low.as_ptr().add(32 * i) as *const _);
                let down = _mm256_srli_epi16::<1>(e);
                let up = _mm256_slli_epi16::<7>(e);
                // blendv takes the second source where a byte's top bit is set: every
                // byte of `top`, so `select(a, b)` is bit 7 of `b` over bits 6..0 of
                // `a`, by and/or.
                let select = |rest: __m256i, sign: __m256i| {
                    _mm256_or_si256(_mm256_and_si256(sign, top), _mm256_andnot_si256(top, rest))
                };
                let hi = select(down, if JOINT { up } else { l });
                let lo = if JOINT { l } else { select(l, up) };
                let a = _mm256_unpacklo_epi8(lo, hi);
                let b = _mm256_unpackhi_epi8(lo, hi);
                let at = dst.as_mut_ptr().add(64 * i) as *mut __m256i;
                _mm256_storeu_si256(at, _mm256_permute2x128_si256::<0x20>(a, b));
                _mm256_storeu_si256(at.add(1), _mm256_permute2x128_si256::<0x31>(a, b));
            }
        }
        steps * 32
    }
}
