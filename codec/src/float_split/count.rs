//! Histograms of a layout's fields, dense and sparse, for the encoder's sampling,
//! planning and tables.

use super::window_count;
use super::{
    bf16_fields, bf16_joint_fields, f16_fields, f16_joint_fields, f32_fields, FieldHists, Layout,
    MAX_FIELDS,
};
#[cfg(target_arch = "x86_64")]
use crate::cpu::SimdLevel;

/// Calls `$func::<E, F>(args..., fields)` for `$layout`: `E` bytes per element, `F` fields,
/// and `fields` the closure that splits one element's bytes into its field values. The
/// one place that maps each layout to its element width and splitter for the counting
/// paths, which are generic over both so that each layout gets its own inlined loop.
macro_rules! with_word_fields {
    ($layout:expr, $func:ident($($arg:expr),*)) => {
        match $layout {
            Layout::Bf16 => $func::<2, 2>($($arg,)* |b| {
                bf16_fields(u16::from_le_bytes([b[0], b[1]]))
            }),
            Layout::F16 => $func::<2, 2>($($arg,)* |b| {
                f16_fields(u16::from_le_bytes([b[0], b[1]]))
            }),
            Layout::F32 => $func::<4, 4>($($arg,)* |b| {
                f32_fields::<false>(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }),
            Layout::Bf16Joint => $func::<2, 2>($($arg,)* |b| {
                bf16_joint_fields(u16::from_le_bytes([b[0], b[1]]))
            }),
            Layout::F16Joint => $func::<2, 2>($($arg,)* |b| {
                f16_joint_fields(u16::from_le_bytes([b[0], b[1]]))
            }),
            Layout::F32Joint => $func::<4, 4>($($arg,)* |b| {
                f32_fields::<true>(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }),
            Layout::F8 => $func::<1, 1>($($arg,)* |b| [u16::from(b[0])]),
        }
    };
}

impl Layout {
    /// Adds the field values of the elements in `src` to `hists` (one histogram per field,
    /// each `1 << bits` long, or empty to skip that field) without materialising the
    /// fields.
    pub fn count(self, src: &[u8], hists: &mut [Vec<u32>]) {
        if let (Self::Bf16 | Self::Bf16Joint, [first, second, ..]) = (self, &mut *hists) {
            if second.is_empty() && src.len() >= SHORT_COUNT * 2 {
                if let Ok(first) = <&mut [u32; 512]>::try_from(first.as_mut_slice()) {
                    let level = crate::cpu::simd_level();
                    if window_count::count_bf16_first(self.is_joint(), level, src, first) {
                        return;
                    }
                }
            }
        }
        with_word_fields!(self, count_fields(src, hists))
    }

    /// [`Self::count`] of one block, for the fields marked in `fields`, in sparse form:
    /// per field its present values with their counts, in increasing value order (empty
    /// for unmarked fields). Counted into this thread's scratch histograms, which are left
    /// zeroed again, so a block costs no dense histogram of its own: the encoder keeps
    /// one of these per block of a tensor until its tables are planned. `fields` has one
    /// flag per field of the layout (missing flags read as unmarked).
    pub fn count_sparse(self, src: &[u8], fields: &[bool]) -> Vec<Vec<(u16, u32)>> {
        let bits = self.field_bits();
        COUNT_SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let hists = &mut scratch[..bits.len()];
            for (f, (h, &b)) in hists.iter_mut().zip(bits).enumerate() {
                let len = if fields.get(f) == Some(&true) {
                    1 << b
                } else {
                    0
                };
                if h.len() != len {
                    h.clear();
                    h.resize(len, 0);
                }
            }
            self.count(src, hists);
            hists
                .iter_mut()
                .map(|h| {
                    let mut sparse = Vec::with_capacity(h.iter().filter(|&&c| c > 0).count());
                    for (s, c) in h.iter_mut().enumerate() {
                        if *c > 0 {
                            sparse.push((s as u16, *c));
                            *c = 0;
                        }
                    }
                    sparse
                })
                .collect()
        })
    }

    /// [`Self::count_sparse`] of field `field` alone, for every block of `block_len`
    /// elements of `src` in turn (the last one may be shorter): the encoder's short
    /// refinement blocks, where clearing and scanning a dense histogram per block would
    /// cost more than the counting. Each block marks the values it sees in a 512-bit set
    /// and reads its counts back in value order from there. `field` must be a field of the
    /// layout.
    pub(crate) fn count_sparse_blocks(
        self,
        src: &[u8],
        field: usize,
        block_len: usize,
    ) -> Vec<Vec<(u16, u32)>> {
        debug_assert!(field < self.field_bits().len() && block_len > 0);
        // Only the words of the 512-bit set that the field's values can reach are
        // scanned (half of it for a byte).
        let words = self
            .field_bits()
            .get(field)
            .map_or(8, |&b| (1usize << b).div_ceil(64).min(8));
        if matches!(self, Self::Bf16 | Self::Bf16Joint)
            && field == 0
            && block_len >= QUAD_COPY_BLOCK
        {
            if let Some(blocks) = bf16_first_blocks(self.is_joint(), src, block_len, words) {
                return blocks;
            }
        }
        with_word_fields!(self, sparse_field_blocks(src, field, block_len, words))
    }

    /// The encoder's layout sample of one block, for a layout with a joint variant
    /// ([`Self::joint`]; `None` for the others): `[every field of self, the first two
    /// fields of the joint layout]`, each as [`Self::count_sparse`] gives it (the joint
    /// layout's other fields empty), from one pass that counts two histograms of the top
    /// and the bottom bits of each 16-bit word instead of four: every first and second
    /// field of both layouts is a function of those bits (F32: of its top half; its two
    /// mantissa bytes are counted besides).
    pub fn count_sparse_with_joint(self, src: &[u8]) -> Option<[FieldHists; 2]> {
        // The word's bits from `shift` up (sign, exponent, the mantissa bit or bits of
        // the first fields), and sign plus low byte (the second fields). The top bits
        // come in runs of equal values (exponents), and increments of one counter wait on
        // each other: consecutive elements go to four copies of each histogram, summed
        // after the block (as `count_quads` does).
        let mut tops = [[0u32; 1024]; 4];
        let mut bottoms = [[0u32; 512]; 4];
        let shift = match self {
            Self::Bf16 | Self::F32 => 6,
            Self::F16 => 7,
            _ => return None,
        };
        // Element `k` of four counts into copy `k`.
        let tally =
            |w: u16, k: usize, tops: &mut [[u32; 1024]; 4], bottoms: &mut [[u32; 512]; 4]| {
                tops[k][usize::from(w >> shift) & 1023] += 1;
                bottoms[k][usize::from(((w >> 15) << 8) | (w & 0xFF))] += 1;
            };
        let mut bytes = [[0u32; 256]; 2];
        if self == Self::F32 {
            let (quads, rest) = src.as_chunks::<4>().0.as_chunks::<4>();
            for quad in quads {
                for (k, e) in quad.iter().enumerate() {
                    let x = u32::from_le_bytes(*e);
                    tally((x >> 16) as u16, k, &mut tops, &mut bottoms);
                    bytes[0][(x >> 8) as usize & 0xFF] += 1;
                    bytes[1][x as usize & 0xFF] += 1;
                }
            }
            for e in rest {
                let x = u32::from_le_bytes(*e);
                tally((x >> 16) as u16, 0, &mut tops, &mut bottoms);
                bytes[0][(x >> 8) as usize & 0xFF] += 1;
                bytes[1][x as usize & 0xFF] += 1;
            }
        } else {
            // One 8-byte load per four elements.
            let (quads, rest) = src.as_chunks::<8>();
            for quad in quads {
                let w = u64::from_le_bytes(*quad);
                for k in 0..4 {
                    tally((w >> (16 * k)) as u16, k, &mut tops, &mut bottoms);
                }
            }
            for e in rest.as_chunks::<2>().0 {
                tally(u16::from_le_bytes(*e), 0, &mut tops, &mut bottoms);
            }
        }
        let mut top = [0u32; 1024];
        sum_copies(&tops, &mut top);
        let mut bottom = [0u32; 512];
        sum_copies(&bottoms, &mut bottom);
        // Each layout's fields as functions (inlined, not called through pointers:
        // the second fields read back most of 512 present values per block).
        let [b0, b1, j0, j1] = match self {
            Self::F16 => first_two_fields(&top, &bottom, shift, f16_fields, f16_joint_fields),
            _ => first_two_fields(&top, &bottom, shift, bf16_fields, bf16_joint_fields),
        };
        let mut base_fields = vec![b0, b1];
        let mut joint_fields = vec![j0, j1];
        if self == Self::F32 {
            base_fields.extend(bytes.iter().map(|b| sparse_of(b)));
            joint_fields.extend([Vec::new(), Vec::new()]);
        }
        Some([base_fields, joint_fields])
    }
}

/// `sum[v]` = the sum of `copies[k][v]`.
#[inline(always)]
fn sum_copies<const N: usize>(copies: &[[u32; N]; 4], sum: &mut [u32; N]) {
    let [c0, c1, c2, c3] = copies;
    for ((((s, &a), &b), &c), &d) in sum.iter_mut().zip(c0).zip(c1).zip(c2).zip(c3) {
        *s = a + b + c + d;
    }
}

/// [`Layout::count_sparse_with_joint`]'s first and second fields of the base layout
/// (`base`) and of the joint one (`joint`), from the histograms of the word's bits from
/// `shift` up (`top`) and of its sign and low byte (`bottom`).
#[inline(always)]
fn first_two_fields(
    top: &[u32; 1024],
    bottom: &[u32; 512],
    shift: u32,
    base: impl Fn(u16) -> [u16; 2],
    joint: impl Fn(u16) -> [u16; 2],
) -> [Vec<(u16, u32)>; 4] {
    let from_top = |v: usize| (v << shift) as u16;
    let from_bottom = |v: usize| (((v >> 8) << 15) | (v & 0xFF)) as u16;
    // The present values of each histogram, found once for both layouts.
    let top_seen = [present_set(&top[..512]), present_set(&top[512..])];
    [
        field_of_present(top, &top_seen, |v| base(from_top(v))[0]),
        field_of_all(bottom, |v| base(from_bottom(v))[1]),
        field_of_present(top, &top_seen, |v| joint(from_top(v))[0]),
        field_of_all(bottom, |v| joint(from_bottom(v))[1]),
    ]
}

/// [`field_of_present`] of a histogram where most values are present (a second field's
/// sign and low byte): every counter added to its field value's, without a branch per
/// value, the present field values then read back in order.
#[inline(always)]
fn field_of_all(hist: &[u32; 512], field: impl Fn(usize) -> u16) -> Vec<(u16, u32)> {
    let mut dense = [0u32; 512];
    for (v, &c) in hist.iter().enumerate() {
        dense[usize::from(field(v)) & 511] += c;
    }
    let seen = present_set(&dense);
    let mut sparse = Vec::with_capacity(seen.iter().map(|t| t.count_ones() as usize).sum());
    for (w, mut bits) in seen.into_iter().enumerate() {
        while bits != 0 {
            let d = 64 * w + bits.trailing_zeros() as usize;
            sparse.push((d as u16, dense[d]));
            bits &= bits - 1;
        }
    }
    sparse
}

/// [`nonzero_set`] of 512 counts, eight per compare where the CPU has AVX2.
#[inline(always)]
fn present_set(counts: &[u32]) -> [u64; 8] {
    let counts: &[u32; 512] = counts.try_into().expect("512 counts");
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::simd_level() != SimdLevel::Scalar && SimdLevel::Avx2.is_supported() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { nonzero_set_avx2(std::slice::from_ref(counts), 8) };
    }
    nonzero_set(counts)
}

/// The sparse histogram of `field(v)` over the values `v` counted in `hist` (whose
/// length is a multiple of 512), from the values present alone (a few dozen of 1024
/// for a first field: a branch per counter, taken at random, cost as much as the
/// count), read back in value order from the set of field values touched. `seen` holds
/// the nonzero counters of each 512 of `hist` ([`present_set`]).
#[inline(always)]
fn field_of_present(
    hist: &[u32],
    seen: &[[u64; 8]],
    field: impl Fn(usize) -> u16,
) -> Vec<(u16, u32)> {
    let mut dense = [0u32; 512];
    let mut touched = [0u64; 8];
    for (half, (counts, set)) in hist.as_chunks::<512>().0.iter().zip(seen).enumerate() {
        for (w, &word) in set.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let v = 64 * w + bits.trailing_zeros() as usize;
                let d = usize::from(field(512 * half + v)) & 511;
                dense[d] += counts[v & 511];
                touched[d / 64] |= 1 << (d % 64);
                bits &= bits - 1;
            }
        }
    }
    let mut sparse = Vec::with_capacity(touched.iter().map(|t| t.count_ones() as usize).sum());
    for (w, mut bits) in touched.into_iter().enumerate() {
        while bits != 0 {
            let d = 64 * w + bits.trailing_zeros() as usize;
            sparse.push((d as u16, dense[d]));
            bits &= bits - 1;
        }
    }
    sparse
}

/// The present values of a dense histogram with their counts, in increasing value order.
pub(super) fn sparse_of(dense: &[u32]) -> Vec<(u16, u32)> {
    let mut sparse = Vec::with_capacity(dense.iter().filter(|&&c| c > 0).count());
    for (s, &c) in dense.iter().enumerate() {
        if c > 0 {
            sparse.push((s as u16, c));
        }
    }
    sparse
}

thread_local! {
    /// [`Layout::count_sparse`]'s dense histograms, one per field, all zero between calls.
    static COUNT_SCRATCH: std::cell::RefCell<[Vec<u32>; MAX_FIELDS]> =
        const { std::cell::RefCell::new([const { Vec::new() }; MAX_FIELDS]) };
}

/// Histograms of `F` fields of `E`-byte elements, counted into fixed 512-entry arrays
/// (every field is at most 9 bits, so the masked index needs no bounds check). Exponents
/// come in long runs of equal values, and increments of one counter would wait on each
/// other: consecutive elements go to four separate copies that are summed at the end.
///
/// The encoder usually models one field (the exponent; the others are near-uniform and
/// packed): that case has a loop of its own, which computes and counts that field alone.
fn count_fields<const E: usize, const F: usize>(
    src: &[u8],
    hists: &mut [Vec<u32>],
    fields: impl Fn(&[u8]) -> [u16; F],
) {
    let active: [bool; F] = std::array::from_fn(|f| !hists[f].is_empty());
    let mut on = (0..F).filter(|&f| active[f]);
    if let (Some(only), None) = (on.next(), on.next()) {
        let hist = &mut hists[only];
        // A constant field index per loop, so that only that field is computed.
        match only {
            0 => count_one::<E>(src, hist, |b| fields(b)[0]),
            1 => count_one::<E>(src, hist, |b| fields(b)[1.min(F - 1)]),
            2 => count_one::<E>(src, hist, |b| fields(b)[2.min(F - 1)]),
            _ => count_one::<E>(src, hist, |b| fields(b)[3.min(F - 1)]),
        }
        return;
    }
    let mut counts = [[[0u32; 512]; F]; 4];
    let mut elements = src.chunks_exact(4 * E);
    for quad in &mut elements {
        for (copy, element) in counts.iter_mut().zip(quad.chunks_exact(E)) {
            for ((c, s), &on) in copy.iter_mut().zip(fields(element)).zip(&active) {
                if on {
                    c[usize::from(s) & 511] += 1;
                }
            }
        }
    }
    for element in elements.remainder().chunks_exact(E) {
        for ((c, s), &on) in counts[0].iter_mut().zip(fields(element)).zip(&active) {
            if on {
                c[usize::from(s) & 511] += 1;
            }
        }
    }
    for (f, h) in hists.iter_mut().enumerate() {
        for (s, dst) in h.iter_mut().enumerate() {
            *dst += counts.iter().map(|copy| copy[f][s]).sum::<u32>();
        }
    }
}

/// [`Layout::count_sparse_blocks`] of the first BF16 field (plain or joint), each block
/// counted by [`window_count`] into one histogram; `None` where that does not count (on
/// every path but AVX-512).
fn bf16_first_blocks(
    joint: bool,
    src: &[u8],
    block_len: usize,
    words: usize,
) -> Option<Vec<Vec<(u16, u32)>>> {
    let level = crate::cpu::simd_level();
    if !window_count::counts_on(level) {
        return None;
    }
    // All zero between blocks: each block clears the counts it read back.
    let mut counts = [[0u32; 512]; 4];
    let words = words.min(8);
    let blocks = src.chunks(block_len * 2).map(|block| {
        let counted = window_count::count_bf16_first(joint, level, block, &mut counts[0]);
        debug_assert!(counted);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the AVX-512 path is supported, so the CPU has AVX2.
        let seen = unsafe { nonzero_set_avx2(&counts[..1], words) };
        #[cfg(not(target_arch = "x86_64"))]
        let seen = nonzero_set_of(&counts[..1], words);
        read_back::<1>(&seen, &mut counts)
    });
    Some(blocks.collect())
}

/// [`Layout::count_sparse_blocks`] for a layout whose elements are `E` bytes with `F`
/// fields: a constant field index per loop, so that only that field is computed.
fn sparse_field_blocks<const E: usize, const F: usize>(
    src: &[u8],
    field: usize,
    block_len: usize,
    words: usize,
    fields: impl Fn(&[u8]) -> [u16; F],
) -> Vec<Vec<(u16, u32)>> {
    // Runs of equal values are the first field's (the exponent's); the others are near
    // uniform, where copies would only add to the read-back.
    if field == 0 && block_len >= QUAD_COPY_BLOCK {
        return sparse_blocks::<E, 4>(src, block_len, words, |b| fields(b)[0]);
    }
    match field {
        0 => sparse_blocks::<E, 1>(src, block_len, words, |b| fields(b)[0]),
        1 => sparse_blocks::<E, 1>(src, block_len, words, |b| fields(b)[1.min(F - 1)]),
        2 => sparse_blocks::<E, 1>(src, block_len, words, |b| fields(b)[2.min(F - 1)]),
        _ => sparse_blocks::<E, 1>(src, block_len, words, |b| fields(b)[3.min(F - 1)]),
    }
}

/// One sparse histogram of `field` per block of `block_len` `E`-byte elements, counted
/// into `COPIES` (1 or 4) copies of the counters; `field` below `64 · words`.
#[inline(always)]
fn sparse_blocks<const E: usize, const COPIES: usize>(
    src: &[u8],
    block_len: usize,
    words: usize,
    field: impl Fn(&[u8]) -> u16,
) -> Vec<Vec<(u16, u32)>> {
    debug_assert!(COPIES == 1 || COPIES == 4);
    let quad_copies = COPIES == 4;
    #[cfg(target_arch = "x86_64")]
    let avx2 = crate::cpu::simd_level() != SimdLevel::Scalar && SimdLevel::Avx2.is_supported();
    // All zero between blocks: each block clears the counts it read back.
    let mut counts = [[0u32; 512]; 4];
    // Long blocks of exponents count into four copies: exponents come in runs of equal
    // values, and increments of one counter wait on each other (the plan's 2048-element
    // blocks spent most of their count on that wait). The copies are read back, summed,
    // only where one of them is nonzero. Short blocks (the 256-element refinement) count
    // into one, where finding the present values in four would cost more than the wait.
    let copies = COPIES;
    let words = words.min(8);
    src.chunks(block_len * E)
        .map(|block| {
            if quad_copies {
                count_quads::<E>(block, &mut counts, &field);
            } else {
                for element in block.chunks_exact(E) {
                    counts[0][usize::from(field(element)) & 511] += 1;
                }
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `avx2` is set only where the CPU supports AVX2.
            let seen = if avx2 {
                unsafe { nonzero_set_avx2(&counts[..copies], words) }
            } else {
                nonzero_set_of(&counts[..copies], words)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let seen = nonzero_set_of(&counts[..copies], words);
            read_back::<COPIES>(&seen, &mut counts)
        })
        .collect()
}

/// The sparse histogram of the values in `seen` (the nonzero counters of `counts`'
/// first `COPIES` copies), their copies summed; those counters are left zero. Written
/// into the vector's reserved room, one store per value, without a capacity check per
/// value (the read-back was a fifth of the refinement's count).
#[inline(always)]
fn read_back<const COPIES: usize>(
    seen: &[u64; 8],
    counts: &mut [[u32; 512]; 4],
) -> Vec<(u16, u32)> {
    let present = seen.iter().map(|w| w.count_ones() as usize).sum();
    let mut sparse: Vec<(u16, u32)> = Vec::with_capacity(present);
    let room = &mut sparse.spare_capacity_mut()[..present];
    let mut slots = room.iter_mut();
    for (w, &word) in seen.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let v = (w * 64 + bits.trailing_zeros() as usize) & 511;
            let mut c = 0u32;
            for copy in &mut counts[..COPIES] {
                c += std::mem::take(&mut copy[v]);
            }
            if let Some(slot) = slots.next() {
                slot.write((v as u16, c));
            }
            bits &= bits - 1;
        }
    }
    // SAFETY: `seen` has `present` bits set, and the loop wrote one slot per set bit,
    // the first `present` slots of the reserved room in order.
    unsafe { sparse.set_len(present) };
    sparse
}

/// [`nonzero_set`] of the sum of `copies`.
/// (Words from `words` on are left empty: the caller's values are below `64 · words`.)
#[inline(always)]
pub(super) fn nonzero_set_of(copies: &[[u32; 512]], words: usize) -> [u64; 8] {
    let mut set = match copies {
        [one] => nonzero_set(one),
        _ => {
            let any: [u32; 512] = std::array::from_fn(|v| copies.iter().fold(0, |m, c| m | c[v]));
            nonzero_set(&any)
        }
    };
    set[words.min(8)..].fill(0);
    set
}

/// The values with a nonzero count, as a 512-bit set (bit `v % 64` of word `v / 64`).
/// A pass over the counts after a block instead of a set bit per element.
#[inline(always)]
pub(super) fn nonzero_set(counts: &[u32; 512]) -> [u64; 8] {
    std::array::from_fn(|w| {
        counts[w * 64..][..64]
            .iter()
            .enumerate()
            .fold(0u64, |m, (i, &c)| m | (u64::from(c != 0) << i))
    })
}

/// [`nonzero_set_of`] eight counts per compare (AVX2).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn nonzero_set_avx2(copies: &[[u32; 512]], words: usize) -> [u64; 8] {
    use std::arch::x86_64::*;
    let zero = _mm256_setzero_si256();
    std::array::from_fn(|w| {
        let mut word = 0u64;
        if w >= words {
            return word;
        }
        for k in 0..8 {
            let at = w * 64 + 8 * k;
            let v = copies.iter().fold(zero, |m, copy| {
                // SAFETY: at + 8 ≤ 512: the 8 u32 at `at` are in `copy`; unaligned
                // loads are allowed.
                _mm256_or_si256(m, unsafe { _mm256_loadu_si256(copy[at..].as_ptr().cast()) })
            });
            let zeros = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(v, zero)));
            word |= u64::from(!zeros as u8) << (8 * k);
        }
        word
    })
}

/// Blocks of fewer elements than this are counted into one histogram by [`count_one`].
const SHORT_COUNT: usize = 2048;

/// [`count_fields`] for one field: `hist[field(element)] += 1` for every element, four
/// elements at a time into four copies (`hist` at most 512 long).
#[inline(always)]
fn count_one<const E: usize>(src: &[u8], hist: &mut [u32], field: impl Fn(&[u8]) -> u16) {
    if src.len() < SHORT_COUNT * E {
        // A short block (the encoder's 256-element refinement blocks): clearing and
        // summing four 512-entry copies would cost more than the counting they speed up.
        for element in src.chunks_exact(E) {
            if let Some(c) = hist.get_mut(usize::from(field(element)) & 511) {
                *c += 1;
            }
        }
        return;
    }
    let mut counts = [[0u32; 512]; 4];
    count_quads::<E>(src, &mut counts, &field);
    let [c0, c1, c2, c3] = &counts;
    for ((((dst, &a), &b), &c), &d) in hist.iter_mut().zip(c0).zip(c1).zip(c2).zip(c3) {
        *dst += a + b + c + d;
    }
}

/// Blocks of at least this many elements of a first field are counted by
/// [`sparse_blocks`] into four copies of the counters.
const QUAD_COPY_BLOCK: usize = 1024;

/// Adds `field(element)` of the elements of `src` to `counts`, consecutive elements to
/// separate copies.
#[inline(always)]
fn count_quads<const E: usize>(
    src: &[u8],
    counts: &mut [[u32; 512]; 4],
    field: &impl Fn(&[u8]) -> u16,
) {
    let mut quads = src.chunks_exact(4 * E);
    if E == 2 {
        // One 8-byte load per quad instead of four 2-byte ones: loads and counter
        // increments compete for the same load ports.
        for quad in &mut quads {
            let w = u64::from_le_bytes(quad.try_into().expect("quads of 2-byte elements"));
            for (k, copy) in counts.iter_mut().enumerate() {
                let element = ((w >> (16 * k)) as u16).to_le_bytes();
                copy[usize::from(field(&element)) & 511] += 1;
            }
        }
    }
    for quad in &mut quads {
        let (a, rest) = quad.split_at(E);
        let (b, rest) = rest.split_at(E);
        let (c, d) = rest.split_at(E);
        counts[0][usize::from(field(a)) & 511] += 1;
        counts[1][usize::from(field(b)) & 511] += 1;
        counts[2][usize::from(field(c)) & 511] += 1;
        counts[3][usize::from(field(d)) & 511] += 1;
    }
    for element in quads.remainder().chunks_exact(E) {
        counts[0][usize::from(field(element)) & 511] += 1;
    }
}
