//! The decoder of layout 3 (FORMAT.md §9.3): [`WIDE_LANES`] = 32 rANS lanes per chunk, the
//! context bit looking 32 elements back, so that element `i` of a group of 32 depends only
//! on element `i` of the group before. A group is two 16-lane vectors on the AVX-512 path
//! (for 16-bit elements, whatever is per element rather than per state in 32 16-bit
//! lanes); the portable path takes a group in two passes (the 32 rANS steps, then the 32 extra-bit
//! reads and reconstructions), so that neither the word position nor the bit position
//! chains the lanes' state updates together.

use super::stream::{target_of, Contexts};
use super::BaseOut;
use crate::cpu::{self, SimdLevel};
use crate::delta::coder::{self, BitReader, CoderError, RansDecoder, SlotTables, WIDE_LANES};
use crate::delta::DeltaError;

/// Decodes one layout-3 chunk's stream of `io.len() / W` elements on path `level`.
pub(super) fn decode_stream_wide<const W: usize>(
    level: SimdLevel,
    ctx: &Contexts<'_>,
    mut io: BaseOut<'_>,
    bytes: &[u8],
) -> Result<(), DeltaError> {
    let coder_err = |e: CoderError| DeltaError::Corrupt(format!("ulp: {e}"));
    let (mut rans, bit_bytes) = RansDecoder::<WIDE_LANES>::new(bytes).map_err(coder_err)?;
    let mut bits = BitReader::with_padding(bit_bytes, super::WIDE_BIT_PADDING);
    // Bit l: the last symbol of lane l was 0 (a chunk starts as if it were).
    let mut back_zero = u32::MAX;
    let mut done = 0;
    if level != SimdLevel::Scalar && W <= 4 {
        done =
            vector::decode_groups::<W>(level, ctx, &mut rans, &mut bits, &mut back_zero, &mut io);
    }
    // The level counts where its vector loop decoded groups (tests assert that it ran).
    cpu::note_run(if done > 0 { level } else { SimdLevel::Scalar });
    let rest = io.len() - done * W;
    decode_portable::<W>(ctx, &mut rans, &mut bits, back_zero, io.sub(done * W, rest));
    rans.finish().map_err(coder_err)?;
    bits.finish().map_err(coder_err)?;
    Ok(())
}

/// The portable decoder: from a group boundary to the end of the chunk. `back_zero` is
/// the vector path's context mask (bit `l`: lane `l`'s last symbol was 0).
///
/// A group goes in three passes, as the vector paths do: the 32 rANS steps (independent
/// chains, nothing shared between lanes), then the refills in lane order (the one serial
/// chain: the word position), then the extra bits and the targets (serial in the bit
/// position). Interleaving the three per lane put the word and bit positions on every
/// lane's chain (12.0 ns per element against 9.3 for layout 2's 4-lane loop, delta_loop).
fn decode_portable<const W: usize>(
    ctx: &Contexts<'_>,
    rans: &mut RansDecoder<WIDE_LANES>,
    bits: &mut BitReader,
    back_zero: u32,
    mut io: BaseOut<'_>,
) {
    let layout = ctx.layout;
    // One context bit per lane in its own word: in one word, every step would wait on the
    // previous lane's update of it.
    let mut back_zero: [u32; WIDE_LANES] = std::array::from_fn(|l| (back_zero >> l) & 1);
    let group = W * WIDE_LANES;
    let groups = io.len() / group;
    {
        let slots = ctx.tables.slots();
        let (states, words, pos) = rans.parts();
        // A zero word past the stream (the last of the padding): what a read past the end
        // gets (`finish` reports the overrun).
        let last_word = words.len() - 1;
        for g in 0..groups {
            let at = g * group;
            // The group's base elements are all read before any of its outputs is
            // written (in place, they are the same bytes).
            let elems: [u64; WIDE_LANES] = std::array::from_fn(|l| io.load::<W>(at + l * W));
            let mut ys = [0u32; WIDE_LANES];
            let mut symbols = [0u8; WIDE_LANES];
            for l in 0..WIDE_LANES {
                let pair = ctx.table_pairs[layout.exponent(elems[l])];
                let table = (pair >> (16 * back_zero[l])) & 0xFFFF;
                let x = states[l];
                let e = slots[SlotTables::offset(table as usize) + coder::slot_of(x)];
                ys[l] = coder::advance(x, e);
                symbols[l] = (e >> 24) as u8;
                back_zero[l] = u32::from(symbols[l] == 0);
            }
            for (state, &y) in states.iter_mut().zip(&ys) {
                *state = coder::refill(y, words[(*pos).min(last_word)]);
                *pos += usize::from(coder::needs_word(y));
            }
            for (l, (&s, &b)) in symbols.iter().zip(&elems).enumerate() {
                io.store::<W>(at + l * W, target_of::<W>(ctx, s, b, bits));
            }
        }
    }
    let tail = groups * group;
    let lanes = (io.len() - tail) / W;
    for (lane, &zero) in back_zero.iter().enumerate().take(lanes) {
        let b = io.load::<W>(tail + lane * W);
        let pair = ctx.table_pairs[layout.exponent(b)];
        let table = (pair >> (16 * zero)) & 0xFFFF;
        let s = rans.get(lane, ctx.tables, SlotTables::offset(table as usize)) as u8;
        io.store::<W>(tail + lane * W, target_of::<W>(ctx, s, b, bits));
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod vector {
    use super::super::stream::Contexts;
    use super::super::BaseOut;
    use crate::cpu::SimdLevel;
    use crate::delta::coder::{BitReader, RansDecoder, SlotTables, WIDE_LANES};
    use crate::entropy::rans::{gather8_by_loads, refill8_shuffle};
    use std::arch::x86_64::*;

    /// Decodes whole groups from the start of `io` with the vector path `level` (AVX-512
    /// or AVX2, which the CPU has) while the words and bits a group may read are in bounds;
    /// returns the elements decoded (a multiple of [`WIDE_LANES`]). `W ≤ 4`. The words
    /// end with [`WIDE_LANES`] + 1 zero words and the bits with `WIDE_BIT_PADDING` zero
    /// bytes (`RansDecoder`, `BitReader::with_padding`), so on a valid stream that is every
    /// whole group: a group starting at the stream's end reads its 32 words at most and
    /// its bits within the padding (a vector loop needs `pos + 32 ≤ words.len() − 1`
    /// — `word_end` — at a group's start). Reads past the stream's end land on zeros, as the
    /// scalar decoder's do.
    pub(super) fn decode_groups<const W: usize>(
        level: SimdLevel,
        ctx: &Contexts<'_>,
        rans: &mut RansDecoder<WIDE_LANES>,
        bits: &mut BitReader,
        back_zero: &mut u32,
        io: &mut BaseOut<'_>,
    ) -> usize {
        assert!(W <= 4 && level.is_supported());
        let (len, base, out) = (io.len(), io.base_ptr(), io.out_ptr());
        let (states, words, pos) = rans.parts();
        let (bit_bytes, bit_pos) = bits.parts();
        // SAFETY (all): the CPU has the level's features (asserted above); the slices'
        // bounds are checked inside as documented there.
        match level {
            SimdLevel::Avx512 if W == 2 => unsafe {
                decode_groups_avx512_words(
                    ctx, states, words, pos, bit_bytes, bit_pos, back_zero, base, out, len,
                )
            },
            SimdLevel::Avx512 => unsafe {
                decode_groups_avx512::<W>(
                    ctx, states, words, pos, bit_bytes, bit_pos, back_zero, base, out, len,
                )
            },
            SimdLevel::Avx2 => unsafe {
                decode_groups_avx2::<W>(
                    ctx, states, words, pos, bit_bytes, bit_pos, back_zero, base, out, len,
                )
            },
            SimdLevel::Scalar => 0,
        }
    }

    /// `_mm512_permutex2var_epi8(a, idx, b)` as one `vpermt2b`, in inline assembly: with
    /// a constant `idx` the compiler lowers the intrinsic to two `vpshufb`, an OR and a
    /// lane permute (four vector instructions, five with a zero mask), and the words loop
    /// is short of vector issue slots: its two such permutes as `vpermt2b` took it from
    /// 1.207 to 1.166 ns per element (BENCHMARKS.md, twenty-sixth session).
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    #[inline]
    fn permute2_bytes(a: __m512i, idx: __m512i, b: __m512i) -> __m512i {
        let mut out = a;
        // SAFETY: this function has the features; the instruction only reads and writes
        // the named registers.
        unsafe {
            std::arch::asm!(
                "vpermt2b {a}, {idx}, {b}",
                a = inout(zmm_reg) out,
                idx = in(zmm_reg) idx,
                b = in(zmm_reg) b,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        out
    }

    /// `_mm512_maskz_permutex2var_epi8(k, a, idx, b)` as one `vpermt2b` (see
    /// [`permute2_bytes`]).
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    #[inline]
    fn maskz_permute2_bytes(k: __mmask64, a: __m512i, idx: __m512i, b: __m512i) -> __m512i {
        let mut out = a;
        // SAFETY: as in permute2_bytes.
        unsafe {
            std::arch::asm!(
                "vpermt2b {a}{{{k}}}{{z}}, {idx}, {b}",
                a = inout(zmm_reg) out,
                k = in(kreg) k,
                idx = in(zmm_reg) idx,
                b = in(zmm_reg) b,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        out
    }

    /// Bytes of bit stream (from the position's byte) a group may touch: the last of 32
    /// fields of at most 30 bits starts at most 7 + 31 · 30 bits in, and a 64-bit load
    /// reads from there.
    const GROUP_BIT_BYTES: usize = (7 + 31 * 30 + 64usize).div_ceil(8);
    // The AVX2 loop checks room for two groups' bits (it finishes a group one iteration
    // after its rANS steps); with this padding it still takes every whole group.
    const _: () = assert!(2 * GROUP_BIT_BYTES <= super::super::WIDE_BIT_PADDING);

    /// Loads 16 elements of `W` bytes, zero-extended to 32 bits (the encoder's vector
    /// passes use it too).
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    pub(in crate::delta::ulp) unsafe fn load16<const W: usize>(p: *const u8) -> __m512i {
        // SAFETY (all three): the caller guarantees 16·W readable bytes at `p`.
        unsafe {
            match W {
                1 => _mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i)),
                2 => _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i)),
                _ => _mm512_loadu_si512(p as *const __m512i),
            }
        }
    }

    /// Stores the low `W` bytes of 16 lanes.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn store16<const W: usize>(p: *mut u8, v: __m512i) {
        // SAFETY (all three): the caller guarantees 16·W writable bytes at `p`.
        unsafe {
            match W {
                1 => _mm_storeu_si128(p as *mut __m128i, _mm512_cvtepi32_epi8(v)),
                2 => _mm256_storeu_si256(p as *mut __m256i, _mm512_cvtepi32_epi16(v)),
                _ => _mm512_storeu_si512(p as *mut __m512i, v),
            }
        }
    }

    /// Eight bit fields: `n` bits (< 64 − 7) from bit `shift` of the 8 bytes at byte
    /// `offset` from `src`, as 32-bit lanes.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn bit_fields(src: *const i64, offset: __m256i, shift: __m256i, n: __m256i) -> __m256i {
        // SAFETY: the caller guarantees 8 readable bytes at every `src + offset`.
        let raw = unsafe { _mm512_i32gather_epi64::<1>(offset, src) };
        let field = _mm512_srlv_epi64(raw, _mm512_cvtepu32_epi64(shift));
        let keep = _mm512_sllv_epi64(_mm512_set1_epi64(-1), _mm512_cvtepu32_epi64(n));
        _mm512_cvtepi64_epi32(_mm512_andnot_si512(keep, field))
    }

    /// `0x0101…01`: a 64-bit multiply by it sums each byte with every byte below it (the
    /// prefix sums of eight byte-sized counts, when none exceeds a byte).
    const BYTES: u64 = 0x0101_0101_0101_0101;

    /// The exclusive prefix sums of the 16 extra-bit counts of a vector below 32-bit
    /// elements (bytes of `lo`, lanes 0–7, and `hi`, lanes 8–15; each at most 14), plus
    /// `off` (< 8): per lane, its field's bit offset from the group's current byte, as
    /// bytes `(lo, hi)`; and the 16 counts' total. On general registers: the vector units
    /// are the loop's bottleneck, a multiply by [`BYTES`] sums eight bytes at once, and no
    /// byte overflows (7 + 15 · 14 = 217).
    #[inline(always)]
    fn byte_offsets(lo: u64, hi: u64, off: u64) -> (u64, u64, u64) {
        let lo_sum = lo.wrapping_mul(BYTES) >> 56;
        let excl_lo = (lo << 8).wrapping_mul(BYTES).wrapping_add(off * BYTES);
        let excl_hi = (hi << 8)
            .wrapping_mul(BYTES)
            .wrapping_add((off + lo_sum) * BYTES);
        (excl_lo, excl_hi, lo_sum + (hi.wrapping_mul(BYTES) >> 56))
    }

    /// Below 32-bit elements (alphabets of at most 63 symbols): what each symbol stands
    /// for, as 64-entry tables looked up in registers — the magnitude without its extra
    /// bits and the mask of its extra bits (16-bit words, two vectors each, one `vpermi2w`
    /// each) and the extra-bit count (bytes, one `vpermb`). Symbol 0 maps to 0 in all
    /// three, so a lane's upper index bytes, which are 0, look up 0.
    struct SymbolTables {
        magnitude: [__m512i; 2],
        keep: [__m512i; 2],
        n_bits: __m512i,
    }

    impl SymbolTables {
        #[target_feature(enable = "avx512f")]
        fn new(ctx: &Contexts<'_>) -> Self {
            let (mut magnitude, mut keep, mut n_bits) = ([0u16; 64], [0u16; 64], [0u8; 64]);
            for (s, m) in ctx.meanings.iter().enumerate().take(64) {
                // Below 32-bit elements every symbol of the alphabet (< 64) has a
                // magnitude below 2^16 and at most 14 extra bits; the rest are 0. (For
                // 32-bit elements the tables are built but not used.)
                debug_assert!(
                    ctx.layout.bits > 16 || (m.magnitude < 1 << 16 && m.extra_bits <= 14)
                );
                magnitude[s] = m.magnitude as u16;
                keep[s] = ((1u32 << m.extra_bits) - 1) as u16;
                n_bits[s] = m.extra_bits as u8;
            }
            let (m, k) = (
                magnitude.as_ptr() as *const __m512i,
                keep.as_ptr() as *const __m512i,
            );
            // SAFETY (all): each array is 128 or 64 bytes, two vectors or one.
            unsafe {
                Self {
                    magnitude: [_mm512_loadu_si512(m), _mm512_loadu_si512(m.add(1))],
                    keep: [_mm512_loadu_si512(k), _mm512_loadu_si512(k.add(1))],
                    n_bits: _mm512_loadu_si512(n_bits.as_ptr() as *const __m512i),
                }
            }
        }
    }

    /// Per lane, all ones below the element's sign bit where it is set, else zeros there
    /// (bits above the element's width: anything).
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    fn sign_spread<const W: usize>(v: __m512i) -> __m512i {
        match W {
            1 => _mm512_srai_epi32::<31>(_mm512_slli_epi32::<24>(v)),
            2 => _mm512_srai_epi16::<15>(v),
            _ => _mm512_srai_epi32::<31>(v),
        }
    }

    /// Exponent → its context-bit-0 table, one byte each (at most 2 · MAX_GROUPS − 1
    /// tables), as four vectors for two 128-byte permutes (instead of a gather), and
    /// `step`: the context-bit-1 table is `step` further (0 or 1, the same for every
    /// exponent). Indexed by the low byte of `element >> mantissa bits`, which is the
    /// exponent for 8-bit exponents and sign · 2^E + exponent for narrower ones: so the
    /// entries repeat every 2^E, and no mask is needed.
    #[target_feature(enable = "avx512f")]
    fn exponent_tables(ctx: &Contexts<'_>) -> ([__m512i; 4], u32) {
        let mut firsts = [0u8; 256];
        for (i, f) in firsts.iter_mut().enumerate() {
            let p = ctx.table_pairs[i & (ctx.layout.exponents() - 1)];
            debug_assert!(p & 0xFFFF < 256);
            *f = p as u8;
        }
        let step = ctx
            .table_pairs
            .first()
            .map_or(0, |&p| (p >> 16).wrapping_sub(p & 0xFFFF));
        // SAFETY: `firsts` is 256 bytes, four 512-bit vectors.
        let tables = unsafe {
            let p = firsts.as_ptr() as *const __m512i;
            [
                _mm512_loadu_si512(p),
                _mm512_loadu_si512(p.add(1)),
                _mm512_loadu_si512(p.add(2)),
                _mm512_loadu_si512(p.add(3)),
            ]
        };
        (tables, step)
    }

    /// One rANS step of 16 lanes: gathers the slot words at `slot` (table · 4096 + the
    /// state's low 12 bits) of the lanes in `gather` (the others' are `known`), advances
    /// the states `x` and refills the lanes below 2^16 with the next words from
    /// `word_pos` in lane order (expanded in registers), which it moves on; returns the
    /// slot words.
    ///
    /// # Safety
    /// Every lane of `slot` is below the length of the slot tables at `slots`, and 16
    /// words from `words[word_pos]` are in bounds.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi2,popcnt")]
    #[inline]
    unsafe fn rans_step16(
        x: &mut __m512i,
        slot: __m512i,
        known: __m512i,
        gather: __mmask16,
        slots: *const i32,
        words: &[u16],
        word_pos: &mut usize,
    ) -> __m512i {
        let low12 = _mm512_set1_epi32(0xFFF);
        // SAFETY: the caller's (slots in bounds), scaled by 4 bytes.
        let e = unsafe { _mm512_mask_i32gather_epi32::<4>(known, gather, slot, slots) };
        let freq = _mm512_add_epi32(_mm512_and_si512(e, low12), _mm512_set1_epi32(1));
        let offset = _mm512_and_si512(_mm512_srli_epi32::<12>(e), low12);
        let y = _mm512_add_epi32(
            _mm512_mullo_epi32(freq, _mm512_srli_epi32::<12>(*x)),
            offset,
        );
        let need = _mm512_cmplt_epu32_mask(y, _mm512_set1_epi32(1 << 16));
        // SAFETY: the caller's (16 words from word_pos in bounds).
        let next = unsafe { _mm256_loadu_si256(words.as_ptr().add(*word_pos) as *const __m256i) };
        let w = _mm512_cvtepu16_epi32(_mm256_maskz_expand_epi16(need, next));
        *x = _mm512_mask_or_epi32(y, need, _mm512_slli_epi32::<16>(y), w);
        *word_pos += need.count_ones() as usize;
        e
    }

    /// Per 16-lane vector of a group: look each element's table up by its base exponent
    /// in registers (off the state chain), select by the lane's context bit, gather the
    /// slot word, update the states and refill the lanes below 2^16 with the next words in
    /// lane order (expanded in registers); then, below 32-bit elements, look the symbols'
    /// magnitudes, extra-bit masks and counts up in registers ([`SymbolTables`]), find each
    /// lane's bit position by a prefix sum on general registers ([`byte_offsets`]) and
    /// fetch its bits by a byte permute of one 64-byte window (32-bit elements: the
    /// magnitudes and counts computed, a prefix sum in the vector, 64-bit gathers); and
    /// rebuild the target from the base's key, key and inverse each one ternary-logic
    /// step on the sign spread. The context bits stay in mask registers and the positions
    /// in locals for the whole loop. 8- and 32-bit elements; 16-bit ones go to
    /// [`decode_groups_avx512_words`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2,popcnt")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn decode_groups_avx512<const W: usize>(
        ctx: &Contexts<'_>,
        states: &mut [u32; WIDE_LANES],
        words: &[u16],
        pos: &mut usize,
        bit_bytes: &[u8],
        bit_pos: &mut u64,
        back_zero: &mut u32,
        base: *const u8,
        out: *mut u8,
        len: usize,
    ) -> usize {
        let layout = ctx.layout;
        let groups = len / (W * WIDE_LANES);
        let word_end = words.len() - 1;
        let slots = ctx.tables.slots().as_ptr() as *const i32;
        let width_bits = 8 * W as u32;
        // The bits of an element below its sign bit.
        let below_sign = _mm512_set1_epi32((u64::MAX >> (65 - width_bits)) as u32 as i32);
        let mant = _mm512_set1_epi32(layout.mant_bits as i32);
        let low12 = _mm512_set1_epi32(0xFFF);
        let one = _mm512_set1_epi32(1);
        let two = _mm512_set1_epi32(2);
        let four = _mm512_set1_epi32(4);
        let zero = _mm512_setzero_si512();
        let (first_tab, step) = exponent_tables(ctx);
        let step12 = _mm512_set1_epi32((step << 12) as i32);
        // Byte 0 of every 32-bit lane.
        const LOW_BYTES: u64 = 0x1111_1111_1111_1111;
        let top_bit = _mm512_set1_epi32(0x80);
        let symbols = SymbolTables::new(ctx);
        // Byte 3 of each 32-bit lane (its slot word's symbol), packed into bytes 0–15.
        let symbol_bytes = _mm512_castsi128_si512(_mm_setr_epi8(
            3, 7, 11, 15, 19, 23, 27, 31, 35, 39, 43, 47, 51, 55, 59, 63,
        ));
        // Per 32-bit lane, its low byte repeated (the byte offset of the lane's field),
        // then plus 0, 1, 2, 3: the indices of the field's four bytes for `vpermb`.
        let repeat_low = _mm512_broadcast_i32x4(_mm_setr_epi8(
            0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12,
        ));
        let byte_steps = _mm512_set1_epi32(0x0302_0100);
        let seven = _mm512_set1_epi32(7);
        // SAFETY: `states` is 32 u32s, exactly two 512-bit vectors.
        let mut x = unsafe {
            let p = states.as_ptr() as *const __m512i;
            [_mm512_loadu_si512(p), _mm512_loadu_si512(p.add(1))]
        };
        let mut g = 0;
        let (mut word_pos, mut bits_at) = (*pos, *bit_pos);
        let mut zero_mask = [*back_zero as u16, (*back_zero >> 16) as u16];
        // A group reads at most 32 words and GROUP_BIT_BYTES bytes of bits.
        while g < groups
            && word_pos + WIDE_LANES <= word_end
            && (bits_at / 8) as usize + GROUP_BIT_BYTES <= bit_bytes.len()
        {
            for (v, xv) in x.iter_mut().enumerate() {
                let at = (g * WIDE_LANES + 16 * v) * W;
                // SAFETY: group g < groups covers bytes 32gW..32(g+1)W of the `len`
                // readable at `base`. In place (`base` = `out`), these 16 elements are
                // read here before they are written below, and not read again.
                let b = unsafe { load16::<W>(base.add(at)) };
                let exp = _mm512_srlv_epi32(b, mant);
                let z = zero_mask[v];
                // Byte `exp & 127` of the low or high 128 bytes of `firsts`; the lanes'
                // upper bytes are zeroed.
                let low_half =
                    _mm512_maskz_permutex2var_epi8(LOW_BYTES, first_tab[0], exp, first_tab[1]);
                let high_half =
                    _mm512_maskz_permutex2var_epi8(LOW_BYTES, first_tab[2], exp, first_tab[3]);
                let upper = _mm512_test_epi32_mask(exp, top_bit);
                let first = _mm512_mask_blend_epi32(upper, low_half, high_half);
                let table = _mm512_slli_epi32::<12>(first);
                let table = _mm512_mask_add_epi32(table, z, table, step12);
                // table · 4096 | (x & 4095): a | (b & c).
                let slot = _mm512_ternarylogic_epi32::<0xF8>(table, *xv, low12);
                // SAFETY: every table index of a pair is below the table count, so
                // slot < tables · 4096 = slots.len(); pos + 32 ≤ word_end at the group's
                // start and pos advanced by at most 16 since, so 16 words from pos are in
                // bounds.
                let e = unsafe { rans_step16(xv, slot, zero, !0, slots, words, &mut word_pos) };
                let sym = _mm512_srli_epi32::<24>(e);
                let is_zero = _mm512_cmpeq_epi32_mask(sym, zero);
                zero_mask[v] = is_zero;
                // Negative: even non-zero symbols.
                let negative = _mm512_mask_testn_epi32_mask(!is_zero, sym, one);

                // SAFETY: bit_pos / 8 + GROUP_BIT_BYTES ≤ bit_bytes.len() at the group's
                // start; this vector starts at most 16 · 30 bits further and its lanes
                // read 8 bytes at most (7 + 15 · 30) / 8 bytes on.
                let src = unsafe { bit_bytes.as_ptr().add((bits_at / 8) as usize) };
                let magnitude = if W <= 2 {
                    // The counts as bytes: the symbols packed, then looked up.
                    let counts = _mm512_castsi512_si128(_mm512_permutexvar_epi8(
                        _mm512_permutexvar_epi8(symbol_bytes, e),
                        symbols.n_bits,
                    ));
                    let (lo, hi, total) = byte_offsets(
                        _mm_cvtsi128_si64(counts) as u64,
                        _mm_extract_epi64::<1>(counts) as u64,
                        bits_at % 8,
                    );
                    bits_at += total;
                    let rel = _mm512_cvtepu8_epi32(_mm_set_epi64x(hi as i64, lo as i64));
                    let byte_off = _mm512_srli_epi32::<3>(rel);
                    let shift = _mm512_and_si512(rel, seven);
                    // At most 14 extra bits per element below 32-bit elements (symbols
                    // below the alphabet), so lane 15's field starts at most
                    // 7 + 15 · 14 bits = 27 bytes in and, shifted by at most 7, ends in
                    // its 4th byte: all 16 fields lie in 64 bytes from `src`, and one
                    // byte permute gathers each lane's four bytes.
                    // SAFETY: 64 ≤ GROUP_BIT_BYTES − 28 bytes from this vector's start
                    // (the group's first vector starts at most 16 · 14 bits, 28 bytes,
                    // before the second's).
                    let window = unsafe { _mm512_loadu_si512(src as *const __m512i) };
                    let idx =
                        _mm512_add_epi8(_mm512_shuffle_epi8(byte_off, repeat_low), byte_steps);
                    let field = _mm512_srlv_epi32(_mm512_permutexvar_epi8(idx, window), shift);
                    let m0 =
                        _mm512_permutex2var_epi16(symbols.magnitude[0], sym, symbols.magnitude[1]);
                    let keep = _mm512_permutex2var_epi16(symbols.keep[0], sym, symbols.keep[1]);
                    // The magnitude's bits below its extra bits are 0: m0 | (field & keep).
                    _mm512_ternarylogic_epi32::<0xF8>(m0, field, keep)
                } else {
                    // Symbol → class c = ⌈sym / 2⌉; class ≥ 4: e = (c − 4) / 2 + 2,
                    // magnitude 2^e + h·2^(e−1) + (e − 1 extra bits).
                    let class = _mm512_srli_epi32::<1>(_mm512_add_epi32(sym, one));
                    let big = _mm512_cmpge_epu32_mask(class, four);
                    let k = _mm512_sub_epi32(_mm512_max_epu32(class, four), four);
                    let e2 = _mm512_add_epi32(_mm512_srli_epi32::<1>(k), two);
                    let half = _mm512_and_si512(k, one);
                    let e1 = _mm512_sub_epi32(e2, one);
                    let binade =
                        _mm512_or_si512(_mm512_sllv_epi32(one, e2), _mm512_sllv_epi32(half, e1));
                    let magnitude0 = _mm512_mask_blend_epi32(big, class, binade);
                    let n_bits = _mm512_maskz_mov_epi32(big, e1);
                    // Exclusive prefix sum of the bit counts: each lane's offset from
                    // bit_pos.
                    let mut incl = n_bits;
                    incl = _mm512_add_epi32(incl, _mm512_alignr_epi32::<15>(incl, zero));
                    incl = _mm512_add_epi32(incl, _mm512_alignr_epi32::<14>(incl, zero));
                    incl = _mm512_add_epi32(incl, _mm512_alignr_epi32::<12>(incl, zero));
                    incl = _mm512_add_epi32(incl, _mm512_alignr_epi32::<8>(incl, zero));
                    let total = _mm_extract_epi32::<3>(_mm512_extracti32x4_epi32::<3>(incl)) as u64;
                    let rel = _mm512_add_epi32(
                        _mm512_sub_epi32(incl, n_bits),
                        _mm512_set1_epi32((bits_at % 8) as i32),
                    );
                    bits_at += total;
                    let byte_off = _mm512_srli_epi32::<3>(rel);
                    let shift = _mm512_and_si512(rel, seven);
                    let src = src as *const i64;
                    // SAFETY (both): as above.
                    let lo = unsafe {
                        bit_fields(
                            src,
                            _mm512_castsi512_si256(byte_off),
                            _mm512_castsi512_si256(shift),
                            _mm512_castsi512_si256(n_bits),
                        )
                    };
                    let hi = unsafe {
                        bit_fields(
                            src,
                            _mm512_extracti64x4_epi64::<1>(byte_off),
                            _mm512_extracti64x4_epi64::<1>(shift),
                            _mm512_extracti64x4_epi64::<1>(n_bits),
                        )
                    };
                    let extra = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
                    _mm512_add_epi32(magnitude0, extra)
                };

                // key(b) = b with the sign bit flipped, the bits below it also where it
                // was set; key ± magnitude; key⁻¹ = the sign bit flipped, the bits below
                // it also where it is clear. Bits above the element's width are junk,
                // which the narrowing store drops.
                // below_sign ? b ^ spread : !b
                let key = _mm512_ternarylogic_epi32::<0x2D>(b, sign_spread::<W>(b), below_sign);
                let r = _mm512_mask_sub_epi32(
                    _mm512_add_epi32(key, magnitude),
                    negative,
                    key,
                    magnitude,
                );
                // below_sign ? !(r ^ spread) : !r
                let t = _mm512_ternarylogic_epi32::<0x87>(r, sign_spread::<W>(r), below_sign);
                // SAFETY: as for the load of `b`.
                unsafe { store16::<W>(out.add(at), t) };
            }
            g += 1;
        }
        (*pos, *bit_pos) = (word_pos, bits_at);
        *back_zero = u32::from(zero_mask[0]) | (u32::from(zero_mask[1]) << 16);
        // SAFETY: as for the loads.
        unsafe {
            let p = states.as_mut_ptr() as *mut __m512i;
            _mm512_storeu_si512(p, x[0]);
            _mm512_storeu_si512(p.add(1), x[1]);
        }
        g * WIDE_LANES
    }

    /// Byte-index vectors of [`decode_groups_avx512_words`], built at compile time.
    mod words16 {
        use std::arch::x86_64::__m512i;

        /// 64 bytes, byte `$i` being `$e`.
        macro_rules! bytes {
            ($i:ident => $e:expr) => {{
                let mut t = [0u8; 64];
                let mut $i = 0;
                while $i < 64 {
                    t[$i] = $e;
                    $i += 1;
                }
                t
            }};
        }

        const fn vector(t: [u8; 64]) -> __m512i {
            // SAFETY: 64 bytes, any bit pattern is a valid vector.
            unsafe { std::mem::transmute(t) }
        }

        /// Vector `v`'s lanes (words `16v..16v + 16` of a 32-word vector) into bytes 1–2
        /// of its 32-bit lanes (with mask [`PLACE_MASK`]): a word shifted left by 8.
        pub(super) const PLACE: [__m512i; 2] = [
            vector(bytes!(i => if i % 4 == 1 || i % 4 == 2 { (i / 2) as u8 } else { 0 })),
            vector(bytes!(i => if i % 4 == 1 || i % 4 == 2 { (32 + i / 2) as u8 } else { 0 })),
        ];
        /// Bytes 1 and 2 of every 32-bit lane.
        pub(super) const PLACE_MASK: u64 = 0x6666_6666_6666_6666;
        /// The even bytes: the low byte of every 16-bit lane.
        pub(super) const EVEN_BYTES: u64 = 0x5555_5555_5555_5555;
        /// For two vectors of 16 slot words: byte 3 of each (its symbol) into the low byte
        /// of word `i` of 32 (with mask [`EVEN_BYTES`]).
        pub(super) const SYMBOL_WORDS: __m512i = vector(bytes!(i => ((2 * i + 3) & 127) as u8));
        /// The same symbols as 32 bytes, in bytes 0–31.
        pub(super) const SYMBOL_BYTES: __m512i = vector(bytes!(i => ((4 * i + 3) & 127) as u8));
        /// The low words of two vectors of 16 32-bit lanes as 32 words (`vpermt2w`: word
        /// `i` takes word `2i` of the pair).
        pub(super) const LOW_WORDS: __m512i =
            vector(bytes!(i => if i % 2 == 0 { i as u8 } else { 0 }));
        /// Byte `i` of a 16-byte vector into bytes `4i..4i + 4`.
        pub(super) const REPEAT4: __m512i = vector(bytes!(i => (i / 4) as u8));
    }

    /// Per table (words, in two vectors for `vpermt2w`): the last slot of symbol 0 when
    /// its range starts the table (as `SlotTables` lays them out when the table has
    /// symbol 0), else −1; all −1 beyond 64 tables (a permute's index would wrap).
    #[target_feature(enable = "avx512f")]
    fn zero_slots(ctx: &Contexts<'_>) -> [__m512i; 2] {
        let slots = ctx.tables.slots();
        let n = slots.len() / SlotTables::offset(1);
        let mut last = [-1i16; 64];
        if n <= 64 {
            for (t, l) in last.iter_mut().enumerate().take(n) {
                let e = slots[SlotTables::offset(t)];
                if e >> 24 == 0 {
                    *l = (e & 0xFFF) as i16;
                }
            }
        }
        // SAFETY: 128 bytes, two vectors.
        unsafe {
            let p = last.as_ptr() as *const __m512i;
            [_mm512_loadu_si512(p), _mm512_loadu_si512(p.add(1))]
        }
    }

    /// Sixteen bit fields (below 32-bit elements: at most 14 bits each) at the bit
    /// offsets `(lo, hi)` from `src` (bytes: lanes 0–7 and 8–15, each at most
    /// 7 + 15 · 14 = 217), as 32-bit lanes with junk above each field (the caller masks
    /// it): each offset's byte and the three after it taken from one 64-byte window by a
    /// byte permute, then shifted right by the offset's low 3 bits. The offsets' bytes
    /// and shifts are split as bytes in 128 bits, then spread once.
    ///
    /// # Safety
    /// 64 bytes from `src` are readable.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    #[inline]
    unsafe fn bit_fields16(src: *const u8, lo: u64, hi: u64) -> __m512i {
        let rel = _mm_set_epi64x(hi as i64, lo as i64);
        // rel >> 3 per byte (at most 27): a 16-bit shift moves the upper byte's low bits
        // into bits 5–7 of the lower, which the mask clears.
        let byte_off = _mm_and_si128(_mm_srli_epi16::<3>(rel), _mm_set1_epi8(0x1F));
        let shift = _mm512_cvtepu8_epi32(_mm_and_si128(rel, _mm_set1_epi8(7)));
        let idx = _mm512_add_epi8(
            _mm512_permutexvar_epi8(words16::REPEAT4, _mm512_castsi128_si512(byte_off)),
            _mm512_set1_epi32(0x0302_0100),
        );
        // SAFETY: the caller's.
        let window = unsafe { _mm512_loadu_si512(src as *const __m512i) };
        _mm512_srlv_epi32(_mm512_permutexvar_epi8(idx, window), shift)
    }

    /// [`decode_groups_avx512`] for 16-bit elements (BF16, F16): what is done per
    /// element rather than per rANS state is done once per group of 32 in 16-bit lanes —
    /// the 32 elements loaded as one vector, their tables looked up by exponent (two
    /// byte permutes for 32 lanes, not 16), their symbols packed into words, the
    /// magnitudes and extra-bit masks looked up there, the key, its sum and its inverse
    /// computed and the group stored whole (one plain store, not two narrowing ones).
    /// Only the state steps and the bit-field fetches stay per 16 lanes (the fields are
    /// packed into words after). The gathers are what the loop waits on (about 40 % of
    /// its samples land right after them), so the lanes whose slot lies in symbol 0's
    /// range (unchanged elements: 64 % of the MiniLM fine-tune's) get their slot word made
    /// from the state instead, and only the others are gathered ([`zero_slots`]).
    /// Measured (BENCHMARKS.md, twelfth session): the 16-bit lanes −5 %, the masked
    /// gather −7 % more; skipping the gather by a branch when no lane needs it, or
    /// compressing the lanes into one 8-lane gather, was slower; so were 16 scalar loads
    /// in place of each gather, in every form tried (+3 to +5 % by register extracts and
    /// inserts, +33 % through a stack array: store forwarding; twenty-sixth session).
    /// Same bounds and arguments as [`decode_groups_avx512`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2,popcnt")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn decode_groups_avx512_words(
        ctx: &Contexts<'_>,
        states: &mut [u32; WIDE_LANES],
        words: &[u16],
        pos: &mut usize,
        bit_bytes: &[u8],
        bit_pos: &mut u64,
        back_zero: &mut u32,
        base: *const u8,
        out: *mut u8,
        len: usize,
    ) -> usize {
        use words16::*;
        const GROUP_BYTES: usize = 2 * WIDE_LANES;
        let groups = len / GROUP_BYTES;
        let word_end = words.len() - 1;
        let slots = ctx.tables.slots().as_ptr() as *const i32;
        let mant = _mm_cvtsi32_si128(ctx.layout.mant_bits as i32);
        let below_sign = _mm512_set1_epi16(0x7FFF);
        let low12 = _mm512_set1_epi32(0xFFF);
        let one = _mm512_set1_epi16(1);
        let top_bit = _mm512_set1_epi16(0x80);
        let (first_tab, step) = exponent_tables(ctx);
        let step1 = _mm512_set1_epi16(step as i16);
        let zero_tables = zero_slots(ctx);
        let symbol_one = _mm512_set1_epi32(1 << 24);
        let offset_bits = _mm512_set1_epi32(0xFFF000);
        let symbols = SymbolTables::new(ctx);
        // SAFETY: `states` is 32 u32s, exactly two 512-bit vectors.
        let mut x = unsafe {
            let p = states.as_ptr() as *const __m512i;
            [_mm512_loadu_si512(p), _mm512_loadu_si512(p.add(1))]
        };
        let (mut word_pos, mut bits_at) = (*pos, *bit_pos);
        let mut zero_mask: __mmask32 = *back_zero;
        let mut g = 0;
        // A group reads at most 32 words and GROUP_BIT_BYTES bytes of bits.
        while g < groups
            && word_pos + WIDE_LANES <= word_end
            && (bits_at / 8) as usize + GROUP_BIT_BYTES <= bit_bytes.len()
        {
            let at = g * GROUP_BYTES;
            // SAFETY: group g < groups covers bytes at..at + 64 of the `len` readable at
            // `base`. In place (`base` = `out`), they are read here before the group's
            // one store below, and not read again.
            let b = unsafe { _mm512_loadu_si512(base.add(at) as *const __m512i) };
            // Low byte of each word: its exponent's index into `first_tab` (bit 7 picks
            // the upper 128 bytes); the upper bytes are zeroed.
            let exp = _mm512_srl_epi16(b, mant);
            let low_half =
                _mm512_maskz_permutex2var_epi8(EVEN_BYTES, first_tab[0], exp, first_tab[1]);
            let high_half =
                _mm512_maskz_permutex2var_epi8(EVEN_BYTES, first_tab[2], exp, first_tab[3]);
            let first =
                _mm512_mask_blend_epi16(_mm512_test_epi16_mask(exp, top_bit), low_half, high_half);
            let table = _mm512_mask_add_epi16(first, zero_mask, first, step1);
            // Per table, the last slot of symbol 0 (−1: none). Lanes whose slot is symbol
            // 0's (`slot & 4095 ≤ zero_last`) get their slot word made here rather than
            // gathered.
            let zero_last = _mm512_permutex2var_epi16(zero_tables[0], table, zero_tables[1]);
            // At most 127 tables, so table · 16 fits a word.
            let table = _mm512_slli_epi16::<4>(table);
            let mut e = [_mm512_setzero_si512(); 2];
            let mut zero16 = [0 as __mmask16; 2];
            for (v, ((xv, ev), z)) in x.iter_mut().zip(&mut e).zip(&mut zero16).enumerate() {
                // Table · 4096 in each 32-bit lane, | (x & 4095).
                let table12 = _mm512_maskz_permutexvar_epi8(PLACE_MASK, PLACE[v], table);
                let at_slot = _mm512_and_si512(*xv, low12);
                let slot = _mm512_or_si512(table12, at_slot);
                // This vector's lanes of `zero_last`, sign-extended (−1 stays below every
                // slot). Compared per vector in 32-bit lanes, each vector's gather waits
                // only on its own states, not on the other vector's refill.
                let last = _mm512_cvtepi16_epi32(if v == 0 {
                    _mm512_castsi512_si256(zero_last)
                } else {
                    _mm512_extracti64x4_epi64::<1>(zero_last)
                });
                let gather = !_mm512_cmple_epi32_mask(at_slot, last);
                // Symbol 0's slot word: its frequency − 1 | (x & 4095) << 12 (its range
                // starts at slot 0); junk in the lanes gathered (`last` is below 4096 and
                // not negative in the others).
                let known = _mm512_ternarylogic_epi32::<0xEA>(
                    _mm512_slli_epi32::<12>(*xv),
                    offset_bits,
                    last,
                );
                // SAFETY: every table index of a pair is below the table count, so
                // slot < tables · 4096 = slots.len(); pos + 32 ≤ word_end at the group's
                // start and pos advanced by at most 16 since, so 16 words from pos are
                // in bounds.
                *ev = unsafe { rans_step16(xv, slot, known, gather, slots, words, &mut word_pos) };
                // Symbol 0 (the slot word's top byte): straight from the slot words, not
                // through the packed symbols below (the next group's tables wait on it).
                *z = _mm512_cmplt_epu32_mask(*ev, symbol_one);
            }
            let sym = maskz_permute2_bytes(EVEN_BYTES, e[0], SYMBOL_WORDS, e[1]);
            let is_zero = u32::from(zero16[0]) | (u32::from(zero16[1]) << 16);
            zero_mask = is_zero;
            // Negative: even non-zero symbols.
            let negative = _mm512_mask_testn_epi16_mask(!is_zero, sym, one);
            // Extra-bit counts as 32 bytes, lane order.
            let counts =
                _mm512_permutexvar_epi8(permute2_bytes(e[0], SYMBOL_BYTES, e[1]), symbols.n_bits);
            let mut fields = [_mm512_setzero_si512(); 2];
            for (v, f) in fields.iter_mut().enumerate() {
                let c = if v == 0 {
                    _mm512_castsi512_si128(counts)
                } else {
                    _mm512_extracti32x4_epi32::<1>(counts)
                };
                let (lo, hi, total) = byte_offsets(
                    _mm_cvtsi128_si64(c) as u64,
                    _mm_extract_epi64::<1>(c) as u64,
                    bits_at % 8,
                );
                // SAFETY: bits_at / 8 + GROUP_BIT_BYTES ≤ bit_bytes.len() at the group's
                // start, and the second vector starts at most 16 · 14 bits (28 bytes)
                // further: 64 bytes from here are within GROUP_BIT_BYTES. (At most 14
                // extra bits per element below 32-bit elements, so lane 15's field
                // starts at most 27 bytes in and ends in its 4th byte.)
                *f =
                    unsafe { bit_fields16(bit_bytes.as_ptr().add((bits_at / 8) as usize), lo, hi) };
                bits_at += total;
            }
            let field = _mm512_permutex2var_epi16(fields[0], LOW_WORDS, fields[1]);
            let m0 = _mm512_permutex2var_epi16(symbols.magnitude[0], sym, symbols.magnitude[1]);
            let keep = _mm512_permutex2var_epi16(symbols.keep[0], sym, symbols.keep[1]);
            // The magnitude's bits below its extra bits are 0: m0 | (field & keep).
            let magnitude = _mm512_ternarylogic_epi32::<0xF8>(m0, field, keep);
            // As in decode_groups_avx512, in 16-bit lanes: key(b) = below_sign ? b ^
            // spread : !b; key ± magnitude; key⁻¹(r) = below_sign ? !(r ^ spread) : !r.
            let key = _mm512_ternarylogic_epi32::<0x2D>(b, _mm512_srai_epi16::<15>(b), below_sign);
            let r =
                _mm512_mask_sub_epi16(_mm512_add_epi16(key, magnitude), negative, key, magnitude);
            let t = _mm512_ternarylogic_epi32::<0x87>(r, _mm512_srai_epi16::<15>(r), below_sign);
            // SAFETY: as for the load of `b`.
            unsafe { _mm512_storeu_si512(out.add(at) as *mut __m512i, t) };
            g += 1;
        }
        (*pos, *bit_pos) = (word_pos, bits_at);
        *back_zero = zero_mask;
        // SAFETY: as for the loads.
        unsafe {
            let p = states.as_mut_ptr() as *mut __m512i;
            _mm512_storeu_si512(p, x[0]);
            _mm512_storeu_si512(p.add(1), x[1]);
        }
        g * WIDE_LANES
    }

    /// Loads 8 elements of `W` bytes, zero-extended to 32 bits (the encoder's AVX2 pass
    /// uses it too).
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(in crate::delta::ulp) unsafe fn load8<const W: usize>(p: *const u8) -> __m256i {
        // SAFETY (all three): the caller guarantees 8·W readable bytes at `p`.
        unsafe {
            match W {
                1 => _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i)),
                2 => _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)),
                _ => _mm256_loadu_si256(p as *const __m256i),
            }
        }
    }

    /// Stores the low `W` bytes of 8 lanes (the bytes above them are dropped, whatever
    /// they hold; the encoder's AVX2 pass stores its symbols with it).
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(in crate::delta::ulp) unsafe fn store8<const W: usize>(p: *mut u8, v: __m256i) {
        // SAFETY (all three): the caller guarantees 8·W writable bytes at `p`.
        unsafe {
            match W {
                1 => {
                    // Byte 0 of each lane into bytes 0–3 of its half, then the halves'
                    // first 32 bits side by side.
                    let b = _mm256_shuffle_epi8(
                        v,
                        _mm256_broadcastsi128_si256(_mm_setr_epi8(
                            0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                        )),
                    );
                    let b =
                        _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0));
                    _mm_storel_epi64(p as *mut __m128i, _mm256_castsi256_si128(b))
                }
                2 => {
                    // Bytes 0–1 of each lane into bytes 0–7 of its half, then the
                    // halves' first 64 bits side by side.
                    let w = _mm256_shuffle_epi8(
                        v,
                        _mm256_broadcastsi128_si256(_mm_setr_epi8(
                            0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1,
                        )),
                    );
                    let w = _mm256_permute4x64_epi64::<0x08>(w);
                    _mm_storeu_si128(p as *mut __m128i, _mm256_castsi256_si128(w))
                }
                _ => _mm256_storeu_si256(p as *mut __m256i, v),
            }
        }
    }

    /// `v` with the bits below its `W`-byte element's sign bit inverted where the sign
    /// bit is set (bits above the element: anything). An involution; `flip(v) ^ sign` is
    /// FORMAT.md §9.3's key.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn flip<const W: usize>(v: __m256i) -> __m256i {
        let below = match W {
            1 => _mm256_srli_epi32::<25>(_mm256_srai_epi32::<31>(_mm256_slli_epi32::<24>(v))),
            2 => _mm256_srli_epi16::<1>(_mm256_srai_epi16::<15>(v)),
            _ => _mm256_srli_epi32::<1>(_mm256_srai_epi32::<31>(v)),
        };
        _mm256_xor_si256(v, below)
    }

    /// Four bit fields: `n` bits from bit `shift` of the 8 bytes at byte `offset` from
    /// `src`, as 32-bit lanes.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn bit_fields4(src: *const i64, offset: __m128i, shift: __m128i, n: __m128i) -> __m128i {
        // SAFETY: the caller guarantees 8 readable bytes at every `src + offset`.
        let raw = unsafe { _mm256_i32gather_epi64::<1>(src, offset) };
        let field = _mm256_srlv_epi64(raw, _mm256_cvtepu32_epi64(shift));
        let keep = _mm256_sllv_epi64(_mm256_set1_epi64x(-1), _mm256_cvtepu32_epi64(n));
        let v = _mm256_andnot_si256(keep, field);
        _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(
            v,
            _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6),
        ))
    }

    /// Exponent → context-bit-0 table without a lookup: the exponent groups are runs of
    /// consecutive exponents, so an exponent's first table is `k` · (the number of
    /// groups' last exponents below it), `k` = 2 tables per group with the context bit,
    /// else 1. Counted for a whole group of 32 elements in bytes, one signed compare and
    /// one subtraction per boundary (at most 63), where the lookup by eight scalar loads
    /// per 8-lane vector (`gather8_by_loads`: five extracts, eight loads, seven inserts)
    /// took about 140 instructions per group: 3.47 → 2.94 ns per element on Zen 3
    /// (BENCHMARKS.md, twenty-eighth session).
    pub(in crate::delta::ulp) struct ExponentGroups {
        /// Each boundary `j` (the first table changes from exponent `j` to `j + 1`) as
        /// 32 bytes of `j ^ 0x80` (biased for a signed compare).
        boundaries: [__m256i; super::super::MAX_GROUPS],
        count: usize,
        /// Tables per group: 1 or 2.
        k: u32,
        /// The context-bit-1 table's distance from the context-bit-0 one (0 or 1).
        pub(in crate::delta::ulp) step: u32,
    }

    impl ExponentGroups {
        /// The groups of `table_pairs` (exponent → bit-0 table, plus the bit-1 table
        /// shifted up by 16), or `None` (the decoder leaves the chunk to the portable
        /// loop, the encoder looks the tables up) where the tables by exponent are not
        /// `k` · group for runs of exponents: never, by construction (`table_pairs`), but
        /// checked, since the count must give exactly what the lookup would.
        #[target_feature(enable = "avx2")]
        pub(in crate::delta::ulp) fn new(table_pairs: &[u32]) -> Option<Self> {
            let first = |e: usize| table_pairs[e] & 0xFFFF;
            let step = (table_pairs[0] >> 16).wrapping_sub(first(0));
            let k = step + 1;
            let mut groups = Self {
                boundaries: [_mm256_setzero_si256(); super::super::MAX_GROUPS],
                count: 0,
                k,
                step,
            };
            if table_pairs.len() > 256 || step > 1 {
                return None;
            }
            let mut below = 0;
            for (e, &pair) in table_pairs.iter().enumerate() {
                if e > 0 && first(e) != first(e - 1) {
                    if groups.count == groups.boundaries.len() {
                        return None;
                    }
                    groups.boundaries[groups.count] = _mm256_set1_epi8(((e - 1) ^ 0x80) as i8);
                    groups.count += 1;
                    below += 1;
                }
                if pair != (k * below) | ((k * below + step) << 16) {
                    return None;
                }
            }
            Some(groups)
        }

        /// The first tables of a group's 32 elements from their exponents (four vectors
        /// of eight, each below 256), in the same four vectors, times `1 << SHIFT` (the
        /// decoder's 4096: each table's offset in slots, the shift off the state chain).
        #[target_feature(enable = "avx2")]
        #[inline]
        pub(in crate::delta::ulp) fn firsts<const SHIFT: i32>(
            &self,
            exps: [__m256i; 4],
        ) -> [__m256i; 4] {
            // Saturating packs are exact below 256; they interleave the vectors per
            // 128-bit half, and the unpacks below undo it (no lane crossing).
            let bytes = _mm256_packus_epi16(
                _mm256_packus_epi32(exps[0], exps[1]),
                _mm256_packus_epi32(exps[2], exps[3]),
            );
            let biased = _mm256_xor_si256(bytes, _mm256_set1_epi8(-128));
            let mut count = _mm256_setzero_si256();
            for &boundary in &self.boundaries[..self.count] {
                // −1 where the exponent is above the boundary.
                count = _mm256_sub_epi8(count, _mm256_cmpgt_epi8(biased, boundary));
            }
            if self.k == 2 {
                count = _mm256_add_epi8(count, count);
            }
            let zero = _mm256_setzero_si256();
            let (lo, hi) = (
                _mm256_unpacklo_epi8(count, zero),
                _mm256_unpackhi_epi8(count, zero),
            );
            [
                _mm256_slli_epi32::<SHIFT>(_mm256_unpacklo_epi16(lo, zero)),
                _mm256_slli_epi32::<SHIFT>(_mm256_unpackhi_epi16(lo, zero)),
                _mm256_slli_epi32::<SHIFT>(_mm256_unpacklo_epi16(hi, zero)),
                _mm256_slli_epi32::<SHIFT>(_mm256_unpackhi_epi16(hi, zero)),
            ]
        }
    }

    /// The AVX2 twin of [`decode_groups_avx512`], four 8-lane vectors per group. The tables by
    /// exponent are counted from the exponent groups' bounds ([`ExponentGroups`]); the slot words
    /// are fetched by eight scalar loads ([`gather8_by_loads`]), not `vpgatherdd`: 11 % less CPU
    /// time on Zen 4 (BENCHMARKS.md, twenty-sixth session), no better on Zen 3 (the headline).
    /// Refills shuffle the next 8 words, broadcast to both 128-bit halves, by the need mask's (a
    /// `movemask`) row of the main decoder's table ([`refill8_shuffle`]; a `vpermd` by the lanes'
    /// ranks measured 2.8 % slower on Zen 3); the context bits stay lane masks from one group to
    /// the next; the magnitudes and counts are computed, the bit offsets summed as bytes on a
    /// general register, and below 32-bit elements the fields fetched by a byte shuffle of two
    /// 16-byte windows (64-bit gathers for 32-bit elements); the target is [`flip`]`(flip(b) +
    /// diff)`. Software-pipelined: each iteration runs one group's rANS steps (four vectors
    /// unrolled), then the extra bits and targets of the group before, so that the slot loads,
    /// which wait on L2 (the tables are ~300 KiB per tensor on the MiniLM fine-tune), are issued
    /// ahead of the long work that waits on the previous group's; on Zen 3 −13 % (3.08 → 2.69
    /// ns per element, medians of 7 alternated runs), the unrolling −5 % more (2.47 → 2.35;
    /// BENCHMARKS.md, twenty-eighth session).
    #[target_feature(enable = "avx2,bmi1,popcnt")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn decode_groups_avx2<const W: usize>(
        ctx: &Contexts<'_>,
        states: &mut [u32; WIDE_LANES],
        words: &[u16],
        pos: &mut usize,
        bit_bytes: &[u8],
        bit_pos: &mut u64,
        back_zero: &mut u32,
        base: *const u8,
        out: *mut u8,
        len: usize,
    ) -> usize {
        let layout = ctx.layout;
        let groups = len / (W * WIDE_LANES);
        let word_end = words.len() - 1;
        let slots = ctx.tables.slots().as_ptr() as *const i32;
        let mant = _mm256_set1_epi32(layout.mant_bits as i32);
        let exp_mask = _mm256_set1_epi32((layout.exponents() - 1) as i32);
        let low12 = _mm256_set1_epi32(0xFFF);
        let one = _mm256_set1_epi32(1);
        let two = _mm256_set1_epi32(2);
        let seven = _mm256_set1_epi32(7);
        let ones = _mm256_set1_epi32(-1);
        // Byte 0 of each 32-bit lane of a 128-bit half into its bytes 0–3.
        let count_bytes = _mm256_broadcastsi128_si256(_mm_setr_epi8(
            0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        ));
        // Per 32-bit lane, its low byte repeated (the byte offset of the lane's field),
        // then plus 0, 1, 2, 3: the indices of the field's four bytes for the shuffle.
        let repeat_low = _mm256_broadcastsi128_si256(_mm_setr_epi8(
            0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12,
        ));
        let byte_steps = _mm256_set1_epi32(0x0302_0100);
        let zero = _mm256_setzero_si256();
        let lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        let Some(groups_of) = ExponentGroups::new(&ctx.table_pairs) else {
            return 0;
        };
        // The context-bit-1 table's offset from the bit-0 one, in slots.
        let step12 = _mm256_set1_epi32((groups_of.step << 12) as i32);
        let mut x = [zero; 4];
        for (v, xv) in x.iter_mut().enumerate() {
            // SAFETY: `states` is 32 u32s, exactly four 256-bit vectors.
            *xv = unsafe { _mm256_loadu_si256((states.as_ptr() as *const __m256i).add(v)) };
        }
        // Per vector, its lanes' context bits as lane masks (all ones: the lane's last
        // symbol was 0): those of the group before, which is where they come from.
        let mut zv = [zero; 4];
        for (v, z) in zv.iter_mut().enumerate() {
            let z_bits = _mm256_set1_epi32(((*back_zero >> (8 * v)) & 0xFF) as i32);
            *z = _mm256_cmpeq_epi32(_mm256_and_si256(z_bits, lane_bit), lane_bit);
        }
        // Software-pipelined: iteration g runs group g's rANS steps (the loop-carried
        // chain: states, context bits, word position), then turns group g − 1's slot
        // words into targets (extra bits, stores: long, but off that chain), so that the
        // slot loads of group g are issued before the work that waits on group g − 1's.
        let mut g = 0;
        // Group g − 1's slot words, when g > 0.
        let mut e_prev = [zero; 4];
        loop {
            // Group g's rANS steps read at most 32 words; group g − 1's targets read
            // at most GROUP_BIT_BYTES bytes of bits from the current position, and, where
            // the loop stops after this iteration, group g's read at most GROUP_BIT_BYTES
            // from at most 32 · 30 / 8 = 120 bytes further.
            let more = g < groups
                && *pos + WIDE_LANES <= word_end
                && (*bit_pos / 8) as usize + 2 * GROUP_BIT_BYTES <= bit_bytes.len();
            let mut e_next = [zero; 4];
            if more {
                let mut exps = [zero; 4];
                for (v, exp) in exps.iter_mut().enumerate() {
                    // SAFETY: group g < groups covers bytes 32gW..32(g+1)W of the `len`
                    // readable at `base`. In place (`base` = `out`), they are written
                    // in the next iteration, after this.
                    let b = unsafe { load8::<W>(base.add((g * WIDE_LANES + 8 * v) * W)) };
                    *exp = _mm256_and_si256(_mm256_srlv_epi32(b, mant), exp_mask);
                }
                let firsts = groups_of.firsts::<12>(exps);
                // Unrolled (a macro, not a loop over the vectors), so that the states and
                // context bits stay in registers rather than going through the stack.
                macro_rules! rans_step {
                    ($v:expr) => {{
                        // table · 4096 | (x & 4095); the bit-0 table is even where the
                        // step is 1, so adding the step is an OR.
                        let table12 = _mm256_or_si256(firsts[$v], _mm256_and_si256(zv[$v], step12));
                        let slot = _mm256_or_si256(table12, _mm256_and_si256(x[$v], low12));
                        // SAFETY: every table index of a pair is below the table count, so
                        // slot < tables · 4096 = slots.len().
                        e_next[$v] = unsafe { gather8_by_loads(slots, slot) };
                        let e = e_next[$v];
                        let freq = _mm256_add_epi32(_mm256_and_si256(e, low12), one);
                        let offset =
                            _mm256_and_si256(_mm256_srli_epi32::<12>(e), low12);
                        let y = _mm256_add_epi32(
                            _mm256_mullo_epi32(freq, _mm256_srli_epi32::<12>(x[$v])),
                            offset,
                        );
                        // y < 2^16 exactly when its high half is zero.
                        let need = _mm256_cmpeq_epi32(_mm256_srli_epi32::<16>(y), zero);
                        let need_bits =
                            _mm256_movemask_ps(_mm256_castsi256_ps(need)) as usize;
                        // SAFETY: pos + 32 ≤ word_end at the group's start and pos
                        // advanced by at most 24 since, so 8 words from pos are in
                        // bounds; need_bits < 256.
                        let w = unsafe {
                            let next = _mm256_broadcastsi128_si256(_mm_loadu_si128(
                                words.as_ptr().add(*pos) as *const __m128i,
                            ));
                            _mm256_shuffle_epi8(next, refill8_shuffle(need_bits))
                        };
                        let refilled = _mm256_or_si256(_mm256_slli_epi32::<16>(y), w);
                        x[$v] = _mm256_blendv_epi8(y, refilled, need);
                        *pos += need_bits.count_ones() as usize;
                        zv[$v] = _mm256_cmpeq_epi32(_mm256_srli_epi32::<24>(e), zero);
                    }};
                }
                rans_step!(0);
                rans_step!(1);
                rans_step!(2);
                rans_step!(3);
            }
            if g > 0 {
                let gp = g - 1;
                for (v, &e) in e_prev.iter().enumerate() {
                    let at = (gp * WIDE_LANES + 8 * v) * W;
                    // SAFETY: group g − 1 < groups covers bytes at..at + 8W of the `len`
                    // readable at `base`. In place, these 8 elements are read here before
                    // the store below writes them, and not read again.
                    let b = unsafe { load8::<W>(base.add(at)) };
                    let sym = _mm256_srli_epi32::<24>(e);
                    let is_zero = _mm256_cmpeq_epi32(sym, zero);
                    let negative = _mm256_andnot_si256(
                        is_zero,
                        _mm256_cmpeq_epi32(_mm256_and_si256(sym, one), zero),
                    );
                    // Class c = ⌈sym / 2⌉; n = max(c − 2, 0) / 2 extra bits (0 below
                    // class 4); magnitude without them (2 + (c & 1)) · 2^n from class 2
                    // on, c below: ((min(c, 2) & 2) | (c & 1)) << n.
                    let class = _mm256_srli_epi32::<1>(_mm256_add_epi32(sym, one));
                    let n_bits = _mm256_srli_epi32::<1>(_mm256_subs_epu16(class, two));
                    let magnitude0 = _mm256_sllv_epi32(
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_min_epu32(class, two), two),
                            _mm256_and_si256(class, one),
                        ),
                        n_bits,
                    );

                    // Each lane's bit offset from the current byte: an exclusive prefix sum of
                    // the counts as bytes on general registers (8 counts of at most 30 bits
                    // plus 7: at most 217, a byte each).
                    let counts = _mm256_permutevar8x32_epi32(
                        _mm256_shuffle_epi8(n_bits, count_bytes),
                        _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0),
                    );
                    let counts = _mm_cvtsi128_si64(_mm256_castsi256_si128(counts)) as u64;
                    let off = *bit_pos % 8;
                    let total = counts.wrapping_mul(BYTES) >> 56;
                    let excl = (counts << 8).wrapping_mul(BYTES).wrapping_add(off * BYTES);
                    // SAFETY: group g − 1's bits start at most 32 · 30 bits (120
                    // bytes) after the position `more` last found 2 · GROUP_BIT_BYTES
                    // from the end, so bit_pos / 8 + GROUP_BIT_BYTES ≤ bit_bytes.len()
                    // at its start; this vector starts at most 24 · 30 bits further
                    // and its lanes read 8 bytes at most (7 + 7 · 30) / 8 bytes on.
                    let src = unsafe { bit_bytes.as_ptr().add((*bit_pos / 8) as usize) };
                    let extra = if W <= 2 {
                        // At most 14 bits per field: lanes 0–3's fields lie in the 16 bytes
                        // from `src` (the 4 bytes from byte (7 + 3 · 14) / 8 = 6 at most),
                        // lanes 4–7's in the 16 bytes from lane 4's byte `k` (the 4 bytes
                        // from (7 + 3 · 14) / 8 = 6 further at most): one window per 128-bit
                        // half, one byte shuffle each, offsets of the upper lanes from `k`.
                        let k = (excl >> 35) & 0x1F;
                        let excl = excl - ((8 * k) << 32).wrapping_mul(0x0101_0101);
                        let rel = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(excl as i64));
                        // SAFETY: k ≤ (7 + 4 · 14) / 8 = 7, so both 16-byte loads end within
                        // 7 + 16 bytes of this vector's start (see above).
                        let window = unsafe {
                            _mm256_loadu2_m128i(
                                src.add(k as usize) as *const __m128i,
                                src as *const __m128i,
                            )
                        };
                        let idx = _mm256_add_epi8(
                            _mm256_shuffle_epi8(_mm256_srli_epi32::<3>(rel), repeat_low),
                            byte_steps,
                        );
                        let field = _mm256_srlv_epi32(
                            _mm256_shuffle_epi8(window, idx),
                            _mm256_and_si256(rel, seven),
                        );
                        _mm256_andnot_si256(_mm256_sllv_epi32(ones, n_bits), field)
                    } else {
                        let rel = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(excl as i64));
                        let byte_off = _mm256_srli_epi32::<3>(rel);
                        let shift = _mm256_and_si256(rel, seven);
                        let src = src as *const i64;
                        // SAFETY (both): as above.
                        let lo = unsafe {
                            bit_fields4(
                                src,
                                _mm256_castsi256_si128(byte_off),
                                _mm256_castsi256_si128(shift),
                                _mm256_castsi256_si128(n_bits),
                            )
                        };
                        let hi = unsafe {
                            bit_fields4(
                                src,
                                _mm256_extracti128_si256::<1>(byte_off),
                                _mm256_extracti128_si256::<1>(shift),
                                _mm256_extracti128_si256::<1>(n_bits),
                            )
                        };
                        _mm256_set_m128i(hi, lo)
                    };
                    *bit_pos += total;
                    // The magnitude's bits below its extra bits are 0.
                    let magnitude = _mm256_or_si256(magnitude0, extra);
                    // ±magnitude: (m ^ −1) − (−1) = −m where negative.
                    let diff = _mm256_sub_epi32(_mm256_xor_si256(magnitude, negative), negative);
                    // key(v) = flip(v) ^ sign with flip(v) = v ^ (the bits below the sign bit
                    // where it is set); key⁻¹(r) = flip(r ^ sign). The sign flips cancel
                    // modulo 2^w, so target = flip(flip(b) + diff). Bits above the
                    // element's width are junk, which the narrowing store drops.
                    let t = flip::<W>(_mm256_add_epi32(flip::<W>(b), diff));
                    // SAFETY: as for the load of `b`.
                    unsafe { store8::<W>(out.add(at), t) };
                }
            }
            if !more {
                break;
            }
            e_prev = e_next;
            g += 1;
        }
        *back_zero = 0;
        for (v, (xv, z)) in x.iter().zip(&zv).enumerate() {
            // SAFETY: as for the loads.
            unsafe { _mm256_storeu_si256((states.as_mut_ptr() as *mut __m256i).add(v), *xv) };
            *back_zero |= (_mm256_movemask_ps(_mm256_castsi256_ps(*z)) as u32) << (8 * v);
        }
        g * WIDE_LANES
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod vector {
    use super::super::stream::Contexts;
    use super::super::BaseOut;
    use crate::cpu::SimdLevel;
    use crate::delta::coder::{BitReader, RansDecoder, WIDE_LANES};

    /// No vector path off x86-64 (no level but scalar is supported there).
    pub(super) fn decode_groups<const W: usize>(
        _: SimdLevel,
        _: &Contexts<'_>,
        _: &mut RansDecoder<WIDE_LANES>,
        _: &mut BitReader,
        _: &mut u32,
        _: &mut BaseOut<'_>,
    ) -> usize {
        0
    }
}
