//! Float splitting (FORMAT.md §4): each float element is cut into fields, each field
//! becomes one symbol stream. The first field holds the exponent (with the top mantissa
//! bits that measurably depend on it); the others hold sign and low mantissa bits.
//!
//! | layout | element | fields (bits)                                           |
//! |--------|---------|---------------------------------------------------------|
//! | BF16   | 16 bit  | exp8+m1 (9), sign+m6 (7)                               |
//! | F16    | 16 bit  | exp5+m3 (8), sign+m7 (8)                               |
//! | F32    | 32 bit  | exp8+m1 (9), sign+m6 (7), mantissa bits 8..16, 0..8 (8, 8)|
//! | F8     | 8 bit   | the whole byte (8)                                     |
//!
//! BF16 is exactly the top half of F32, so both share their first two fields.
//!
//! The *joint* layouts (format 1.1) code the sign with the exponent instead: the sign
//! takes the place of the lowest mantissa bit of the first field, which moves to the top
//! of the second. Same field widths, so every decoder table and vector path stays; only
//! where two bits land differs. A writer picks them per tensor where the signs are skewed
//! or depend on the exponent (the first field then codes that skew; in the residual the
//! sign is stored raw).
//!
//! | layout    | fields (bits)                                                |
//! |-----------|--------------------------------------------------------------|
//! | BF16 joint| exp8+sign (9), m7 (7)                                        |
//! | F16 joint | exp5+m2+sign (8), m8 (8)                                     |
//! | F32 joint | exp8+sign (9), m7 of the top half (7), mantissa bytes (8, 8) |

use crate::cpu::SimdLevel;
use crate::dtype::Dtype;

/// How a float dtype is cut into fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
    /// IEEE single.
    F32,
    /// Both FP8 formats: one 8-bit field.
    F8,
    /// bfloat16, sign coded with the exponent.
    Bf16Joint,
    /// IEEE half, sign coded with the exponent.
    F16Joint,
    /// IEEE single, sign coded with the exponent.
    F32Joint,
}

/// Most fields any layout has.
pub const MAX_FIELDS: usize = 4;

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
    /// The layout for a dtype, if it is a float type that splitting helps.
    pub fn for_dtype(dtype: &Dtype) -> Option<Self> {
        match dtype {
            Dtype::BF16 => Some(Self::Bf16),
            Dtype::F16 => Some(Self::F16),
            Dtype::F32 => Some(Self::F32),
            Dtype::F8E4M3 | Dtype::F8E5M2 => Some(Self::F8),
            _ => None,
        }
    }

    /// The layout of the same dtype with the sign coded with the exponent (FP8 has one
    /// field, which holds the sign already).
    pub fn joint(self) -> Option<Self> {
        match self {
            Self::Bf16 => Some(Self::Bf16Joint),
            Self::F16 => Some(Self::F16Joint),
            Self::F32 => Some(Self::F32Joint),
            _ => None,
        }
    }

    /// Whether the sign is coded in the first field (the joint layouts).
    pub fn is_joint(self) -> bool {
        matches!(self, Self::Bf16Joint | Self::F16Joint | Self::F32Joint)
    }

    /// Symbol width in bits of each field, in stream order.
    pub fn field_bits(self) -> &'static [u32] {
        match self {
            Self::Bf16 | Self::Bf16Joint => &[9, 7],
            Self::F16 | Self::F16Joint => &[8, 8],
            Self::F32 | Self::F32Joint => &[9, 7, 8, 8],
            Self::F8 => &[8],
        }
    }

    /// Bytes per element.
    pub fn element_size(self) -> usize {
        match self {
            Self::Bf16 | Self::F16 | Self::Bf16Joint | Self::F16Joint => 2,
            Self::F32 | Self::F32Joint => 4,
            Self::F8 => 1,
        }
    }

    /// Splits little-endian elements `src` into `fields` (one slice per field, each as long
    /// as the element count).
    pub fn split(self, src: &[u8], fields: &mut [&mut [u16]]) {
        debug_assert!(fields
            .iter()
            .all(|f| f.len() == src.len() / self.element_size()));
        let split16 = |f0: &mut [u16], f1: &mut [u16], fields: fn(u16) -> [u16; 2]| {
            for ((b, s0), s1) in src.chunks_exact(2).zip(f0.iter_mut()).zip(f1.iter_mut()) {
                [*s0, *s1] = fields(u16::from_le_bytes([b[0], b[1]]));
            }
        };
        let split32 = |f: [&mut [u16]; 4], fields: fn(u32) -> [u16; 4]| {
            let [f0, f1, f2, f3] = f;
            // Zipped, not indexed: no bounds check per field, and the loop vectorises.
            for ((b, (s0, s1)), (s2, s3)) in src
                .as_chunks::<4>()
                .0
                .iter()
                .zip(f0.iter_mut().zip(f1.iter_mut()))
                .zip(f2.iter_mut().zip(f3.iter_mut()))
            {
                [*s0, *s1, *s2, *s3] = fields(u32::from_le_bytes(*b));
            }
        };
        match (self, fields) {
            (Self::Bf16, [f0, f1]) => split16(f0, f1, bf16_fields),
            (Self::Bf16Joint, [f0, f1]) => split16(f0, f1, bf16_joint_fields),
            (Self::F16, [f0, f1]) => split16(f0, f1, f16_fields),
            (Self::F16Joint, [f0, f1]) => split16(f0, f1, f16_joint_fields),
            (Self::F32, [f0, f1, f2, f3]) => split32([f0, f1, f2, f3], f32_fields::<false>),
            (Self::F32Joint, [f0, f1, f2, f3]) => split32([f0, f1, f2, f3], f32_fields::<true>),
            (Self::F8, [f0]) => {
                for (s, &b) in f0.iter_mut().zip(src) {
                    *s = u16::from(b);
                }
            }
            _ => unreachable!("field count does not match layout {self:?}"),
        }
    }

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

    /// Inverse of [`Self::split`]: writes the little-endian elements into `dst`.
    ///
    /// Written as straight loops over whole elements (no indexing), which the compiler
    /// vectorises on every target; compiled for AVX2 too, where the CPU has it.
    pub fn merge(self, fields: &[&[u16]], dst: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::simd_level() != SimdLevel::Scalar && SimdLevel::Avx2.is_supported() {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { self.merge_avx2(fields, dst) };
            return;
        }
        self.merge_fields(fields, dst);
    }

    /// [`Self::merge_fields`] compiled for AVX2 (256-bit vectors).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn merge_avx2(self, fields: &[&[u16]], dst: &mut [u8]) {
        self.merge_fields(fields, dst);
    }

    /// The loops of [`Self::merge`].
    #[inline(always)]
    fn merge_fields(self, fields: &[&[u16]], dst: &mut [u8]) {
        // The same loop for every 16-bit layout, the element formula inlined.
        #[inline(always)]
        fn merge16(f0: &[u16], f1: &[u16], dst: &mut [u8], merge: impl Fn(u16, u16) -> u16) {
            for ((d, &s0), &s1) in dst.as_chunks_mut::<2>().0.iter_mut().zip(f0).zip(f1) {
                *d = merge(s0, s1).to_le_bytes();
            }
        }
        match (self, fields) {
            (Self::Bf16, [f0, f1]) => merge16(f0, f1, dst, |s0, s1| {
                (s0 << 6) | ((s1 & 0x40) << 9) | (s1 & 0x3F)
            }),
            (Self::Bf16Joint, [f0, f1]) => merge16(f0, f1, dst, bf16_joint_merge),
            (Self::F16, [f0, f1]) => merge16(f0, f1, dst, f16_merge),
            (Self::F16Joint, [f0, f1]) => merge16(f0, f1, dst, f16_joint_merge),
            (Self::F32Joint, [f0, f1, f2, f3]) => {
                for ((d, (&s0, &s1)), (&s2, &s3)) in dst
                    .as_chunks_mut::<4>()
                    .0
                    .iter_mut()
                    .zip(f0.iter().zip(*f1))
                    .zip(f2.iter().zip(*f3))
                {
                    let x = (u32::from(bf16_joint_merge(s0, s1)) << 16)
                        | (u32::from(s2 & 0xFF) << 8)
                        | u32::from(s3 & 0xFF);
                    *d = x.to_le_bytes();
                }
            }
            (Self::F32, [f0, f1, f2, f3]) => {
                for ((d, (&s0, &s1)), (&s2, &s3)) in dst
                    .as_chunks_mut::<4>()
                    .0
                    .iter_mut()
                    .zip(f0.iter().zip(*f1))
                    .zip(f2.iter().zip(*f3))
                {
                    let (s0, s1) = (u32::from(s0), u32::from(s1));
                    let x = (s0 << 22)
                        | ((s1 & 0x40) << 25)
                        | ((s1 & 0x3F) << 16)
                        | (u32::from(s2 & 0xFF) << 8)
                        | u32::from(s3 & 0xFF);
                    *d = x.to_le_bytes();
                }
            }
            (Self::F8, [f0]) => {
                for (d, &s) in dst.iter_mut().zip(f0.iter()) {
                    *d = s as u8;
                }
            }
            _ => unreachable!("field count does not match layout {self:?}"),
        }
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

/// Sparse histograms of a layout's fields, one per field (present values with their
/// counts, in increasing value order).
pub type FieldHists = Vec<Vec<(u16, u32)>>;

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
fn sparse_of(dense: &[u32]) -> Vec<(u16, u32)> {
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
fn nonzero_set_of(copies: &[[u32; 512]], words: usize) -> [u64; 8] {
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
fn nonzero_set(counts: &[u32; 512]) -> [u64; 8] {
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
unsafe fn nonzero_set_avx2(copies: &[[u32; 512]], words: usize) -> [u64; 8] {
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

/// The BF16 fields, joint or not.
#[inline(always)]
fn bf16_fields_of<const JOINT: bool>(w: u16) -> [u16; 2] {
    if JOINT {
        bf16_joint_fields(w)
    } else {
        bf16_fields(w)
    }
}

/// [`split_bf16_packed_into`] appending to a vector (the tests' form).
#[cfg(test)]
fn split_bf16_packed_on<const JOINT: bool>(
    level: SimdLevel,
    src: &[u8],
    exp: &mut [u16],
    packed: &mut Vec<u8>,
) {
    let start = packed.len();
    packed.resize(start + (7 * exp.len()).div_ceil(8), 0);
    split_bf16_packed_into_on::<JOINT>(level, src, exp, &mut packed[start..]);
}

/// BF16 split with the residual field packed on the fly (7 bits per element, FORMAT.md
/// §5.1): writes the first field of the `exp.len()` elements of `src` to `exp` and the
/// packed residual to `packed`, as [`Layout::split`] followed by bit packing would,
/// without the intermediate buffer. `joint`: the fields of [`Layout::Bf16Joint`] instead
/// of [`Layout::Bf16`]. `packed` is exactly `(7 · exp.len()).div_ceil(8)` bytes, every
/// one of which is written (whatever they held before): the encoder's pieces come
/// from spare buffers (`crate::recycle::buffer_filled`), which need not be zeroed first
/// (zeroing them was about 3 % of a one-thread BF16 encode at the fast level).
pub(crate) fn split_bf16_packed_into(joint: bool, src: &[u8], exp: &mut [u16], packed: &mut [u8]) {
    let level = crate::cpu::simd_level();
    if joint {
        split_bf16_packed_into_on::<true>(level, src, exp, packed);
    } else {
        split_bf16_packed_into_on::<false>(level, src, exp, packed);
    }
}

/// [`split_bf16_packed_into`] on the given code path (one the CPU supports).
fn split_bf16_packed_into_on<const JOINT: bool>(
    level: SimdLevel,
    src: &[u8],
    exp: &mut [u16],
    packed: &mut [u8],
) {
    let n = exp.len();
    debug_assert_eq!(src.len(), 2 * n);
    assert_eq!(packed.len(), (7 * n).div_ceil(8), "packed residual length");
    let done = simd::split_bf16_packed::<JOINT>(level, src, exp, packed);
    let done = done
        + split_bf16_packed_scalar::<JOINT>(
            &src[2 * done..],
            &mut exp[done..],
            &mut packed[done / 8 * 7..],
        );
    let mut residual = vec![0u16; n - done];
    for ((b, e), r) in src[2 * done..]
        .chunks_exact(2)
        .zip(&mut exp[done..])
        .zip(&mut residual)
    {
        [*e, *r] = bf16_fields_of::<JOINT>(u16::from_le_bytes([b[0], b[1]]));
    }
    let mut tail = Vec::with_capacity((7 * residual.len()).div_ceil(8));
    crate::entropy::bitpack::pack(&residual, 7, &mut tail);
    packed[done / 8 * 7..].copy_from_slice(&tail);
}

/// Splits whole groups of 8 elements, the 8 residuals of a group gathered in a u64 and
/// written as its 7 low bytes (the bit packer's layout: element k at bit 7k); returns how
/// many elements it consumed. Portable SWAR: four elements per u64, each field cut from
/// all four 16-bit lanes by one shift and mask, the four 7-bit residuals brought together
/// by two shift-and-ORs (about half the instructions of a loop over the elements).
fn split_bf16_packed_scalar<const JOINT: bool>(
    src: &[u8],
    exp: &mut [u16],
    packed: &mut [u8],
) -> usize {
    const LANES: u64 = 0x0001_0001_0001_0001;
    // The fields of the four 16-bit lanes of `x` (element k in bits 16k..16k + 16),
    // each in its lane; the same bits as `bf16_fields_of` per element.
    #[inline(always)]
    fn fields<const JOINT: bool>(x: u64) -> (u64, u64) {
        if JOINT {
            (
                ((x >> 6) & (0x1FE * LANES)) | ((x >> 15) & LANES),
                x & (0x7F * LANES),
            )
        } else {
            (
                (x >> 6) & (0x1FF * LANES),
                ((x >> 9) & (0x40 * LANES)) | (x & (0x3F * LANES)),
            )
        }
    }
    // Four 7-bit values, one per 16-bit lane, as 28 bits (lane k at bit 7k).
    #[inline(always)]
    fn pack4(r: u64) -> u64 {
        let pairs = (r | (r >> 9)) & 0x0000_3FFF_0000_3FFF;
        (pairs | (pairs >> 18)) & 0x0FFF_FFFF
    }
    let mut done = 0;
    for ((s, e), p) in src
        .as_chunks::<16>()
        .0
        .iter()
        .zip(exp.as_chunks_mut::<8>().0)
        .zip(packed.chunks_exact_mut(7))
    {
        let (lo, hi) = s.split_at(8);
        let (e0, r0) = fields::<JOINT>(u64::from_le_bytes(lo.try_into().expect("8 bytes")));
        let (e1, r1) = fields::<JOINT>(u64::from_le_bytes(hi.try_into().expect("8 bytes")));
        // Whole arrays, so that the compiler stores each u64's four lanes at once.
        let (ea, eb) = e.split_at_mut(4);
        ea.copy_from_slice(&std::array::from_fn::<u16, 4, _>(|k| {
            (e0 >> (16 * k)) as u16
        }));
        eb.copy_from_slice(&std::array::from_fn::<u16, 4, _>(|k| {
            (e1 >> (16 * k)) as u16
        }));
        let bits = pack4(r0) | (pack4(r1) << 28);
        p.copy_from_slice(&bits.to_le_bytes()[..7]);
        done += 8;
    }
    done
}

/// BF16 merge with the residual field still bit-packed (7 bits per element, FORMAT.md
/// §5.1): `exp` holds the first field, `packed` at least `ceil(7·n/8)` bytes, `dst` 2n
/// bytes. Equivalent to unpacking and [`Layout::merge`], without the intermediate buffer.
/// `joint`: the fields of [`Layout::Bf16Joint`] instead of [`Layout::Bf16`].
pub fn merge_bf16_packed(joint: bool, exp: &[u16], packed: &[u8], dst: &mut [u8]) {
    let level = crate::cpu::simd_level();
    if joint {
        merge_bf16_packed_on::<true>(level, exp, packed, dst);
    } else {
        merge_bf16_packed_on::<false>(level, exp, packed, dst);
    }
}

/// [`merge_bf16_packed`] on the given code path (one the CPU supports).
fn merge_bf16_packed_on<const JOINT: bool>(
    level: SimdLevel,
    exp: &[u16],
    packed: &[u8],
    dst: &mut [u8],
) {
    let n = exp.len();
    debug_assert!(dst.len() == 2 * n && packed.len() >= (7 * n).div_ceil(8));
    let done = simd::merge_bf16_packed::<JOINT>(level, exp, packed, dst);
    merge_bf16_packed_scalar::<JOINT>(&exp[done..], &packed[done / 8 * 7..], &mut dst[2 * done..]);
}

/// F16 merge with the first field as 16-bit symbols and the second (sign and low
/// mantissa, 8 bits) as bytes (decoded, or read in place from its bit-packed stream):
/// `exp` holds the first field, `low` one byte per element, `dst` 2n bytes, on the given
/// code path. Equivalent to unpacking and [`Layout::merge`].
fn merge_f16_bytes_on(level: SimdLevel, joint: bool, exp: &[u16], low: &[u8], dst: &mut [u8]) {
    debug_assert!(low.len() == exp.len() && dst.len() == 2 * exp.len());
    #[cfg(target_arch = "x86_64")]
    if level != SimdLevel::Scalar && SimdLevel::Avx2.is_supported() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { merge_f16_bytes_avx2(joint, exp, low, dst) };
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = level; // one loop for every level off x86-64
    merge_f16_bytes_loop(joint, exp, low, dst);
}

/// [`merge_f16_bytes_loop`] compiled for AVX2 (256-bit vectors).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn merge_f16_bytes_avx2(joint: bool, exp: &[u16], low: &[u8], dst: &mut [u8]) {
    merge_f16_bytes_loop(joint, exp, low, dst);
}

/// The loop of [`merge_f16_bytes_on`]: zipped, no indexing, so it vectorises.
#[inline(always)]
fn merge_f16_bytes_loop(joint: bool, exp: &[u16], low: &[u8], dst: &mut [u8]) {
    #[inline(always)]
    fn run(exp: &[u16], low: &[u8], dst: &mut [u8], merge: impl Fn(u16, u16) -> u16) {
        for ((d, &s0), &b) in dst.as_chunks_mut::<2>().0.iter_mut().zip(exp).zip(low) {
            *d = merge(s0, u16::from(b)).to_le_bytes();
        }
    }
    if joint {
        run(exp, low, dst, f16_joint_merge);
    } else {
        run(exp, low, dst, f16_merge);
    }
}

/// F16 merge from both fields in byte form, whichever each is: decoded bytes (a coded
/// 8-bit field decodes straight into them), the bytes of a packed stream, or 16-bit
/// symbols. `dst` holds 2n bytes for the n elements of each field. With both as bytes
/// (MiniLM's F16 tensors: a coded first field, a packed second one) the vector paths
/// interleave them in one pass, reading a byte instead of a 16-bit symbol per first
/// field. `joint`: the fields of [`Layout::F16Joint`] instead of [`Layout::F16`].
pub fn merge_f16_fields(joint: bool, exp: ByteField<'_>, low: ByteField<'_>, dst: &mut [u8]) {
    merge_f16_fields_on(crate::cpu::simd_level(), joint, exp, low, dst);
}

/// [`merge_f16_fields`] on the given code path (one the CPU supports).
fn merge_f16_fields_on(
    level: SimdLevel,
    joint: bool,
    exp: ByteField<'_>,
    low: ByteField<'_>,
    dst: &mut [u8],
) {
    use ByteField::{Bytes, Symbols};
    match (exp, low) {
        (Bytes(e), Bytes(l)) => {
            debug_assert!(l.len() == e.len() && dst.len() == 2 * e.len());
            let done = simd::merge_f16_bytes(level, joint, e, l, dst);
            let dst = &mut dst[2 * done..];
            if joint {
                merge_f16_generic(&e[done..], &l[done..], dst, f16_joint_merge);
            } else {
                merge_f16_generic(&e[done..], &l[done..], dst, f16_merge);
            }
        }
        (Symbols(e), Bytes(l)) => merge_f16_bytes_on(level, joint, e, l, dst),
        // A coded first field beside a constant second one: rare, one plain loop.
        (Bytes(e), Symbols(l)) if joint => merge_f16_generic(e, l, dst, f16_joint_merge),
        (Bytes(e), Symbols(l)) => merge_f16_generic(e, l, dst, f16_merge),
        (Symbols(e), Symbols(l)) => {
            let layout = if joint { Layout::F16Joint } else { Layout::F16 };
            layout.merge(&[e, l], dst)
        }
    }
}

/// The scalar F16 merge over fields of either form (the tail of the vector paths).
#[inline(always)]
fn merge_f16_generic<E: FieldByte, L: FieldByte>(
    exp: &[E],
    low: &[L],
    dst: &mut [u8],
    merge: impl Fn(u16, u16) -> u16,
) {
    for ((d, &s0), &b) in dst.as_chunks_mut::<2>().0.iter_mut().zip(exp).zip(low) {
        *d = merge(s0.value() as u16, b.value() as u16).to_le_bytes();
    }
}

/// One of the two low mantissa bytes of F32 elements (fields 3 and 4) as the F32 merge
/// reads it: decoded symbols, or the bytes of a bit-packed 8-bit stream, which are the
/// field values themselves, so the merge reads them in place instead of after an
/// unpacking pass into 16-bit symbols (MiniLM's F32 tensors store both bytes packed).
#[derive(Clone, Copy, Debug)]
pub enum ByteField<'a> {
    /// Decoded symbols, each below 256.
    Symbols(&'a [u16]),
    /// The field's bytes, one per element.
    Bytes(&'a [u8]),
}

/// An element of a [`ByteField`]: its low byte is the field value.
trait FieldByte: Copy {
    fn value(self) -> u32;
}

impl FieldByte for u8 {
    #[inline(always)]
    fn value(self) -> u32 {
        u32::from(self)
    }
}

impl FieldByte for u16 {
    #[inline(always)]
    fn value(self) -> u32 {
        u32::from(self & 0xFF)
    }
}

/// F32 merge with the sign+mantissa field still bit-packed (7 bits per element): `exp`
/// holds the first field, `packed` at least `ceil(7·n/8)` bytes, `mid` and `low` the two
/// low mantissa bytes (fields 3 and 4), `dst` 4n bytes: equivalent to unpacking and
/// [`Layout::merge`]. With both bytes as bytes (what decoding gives), the vector paths
/// build the words in one pass; otherwise, and on the scalar path, the top half of an F32,
/// a BF16 word, is merged by the BF16 path into a small buffer that stays in L1, then
/// interleaved with the low bytes. `joint`: the fields of [`Layout::F32Joint`] instead of
/// [`Layout::F32`].
pub fn merge_f32_packed(
    joint: bool,
    exp: &[u16],
    packed: &[u8],
    mid: ByteField<'_>,
    low: ByteField<'_>,
    dst: &mut [u8],
) {
    let level = crate::cpu::simd_level();
    if joint {
        merge_f32_packed_on::<true>(level, exp, packed, mid, low, dst);
    } else {
        merge_f32_packed_on::<false>(level, exp, packed, mid, low, dst);
    }
}

/// Elements per step of [`merge_f32_packed`]: a multiple of 64 (the widest BF16 merge
/// step), so each step's packed bytes start on a byte.
const F32_MERGE_STEP: usize = 1024;

/// [`merge_f32_packed`] on the given code path (one the CPU supports): one loop per
/// combination of field forms, so that each compiles to its own vector loop.
fn merge_f32_packed_on<const JOINT: bool>(
    level: SimdLevel,
    exp: &[u16],
    packed: &[u8],
    mid: ByteField<'_>,
    low: ByteField<'_>,
    dst: &mut [u8],
) {
    use ByteField::{Bytes, Symbols};
    match (mid, low) {
        (Bytes(m), Bytes(l)) => {
            // The vector paths build the words straight from the fields (what decoding
            // gives: coded byte fields are decoded into bytes, packed ones read in place);
            // the rest, and the scalar path, go through the BF16 merge.
            let done = simd::merge_f32_bytes::<JOINT>(level, exp, packed, m, l, dst);
            merge_f32_steps::<JOINT, _, _>(
                level,
                &exp[done..],
                &packed[done / 8 * 7..],
                &m[done..],
                &l[done..],
                &mut dst[4 * done..],
            )
        }
        (Bytes(m), Symbols(l)) => merge_f32_steps::<JOINT, _, _>(level, exp, packed, m, l, dst),
        (Symbols(m), Bytes(l)) => merge_f32_steps::<JOINT, _, _>(level, exp, packed, m, l, dst),
        (Symbols(m), Symbols(l)) => merge_f32_steps::<JOINT, _, _>(level, exp, packed, m, l, dst),
    }
}

/// The loop of [`merge_f32_packed_on`] for one combination of field forms.
fn merge_f32_steps<const JOINT: bool, M: FieldByte, L: FieldByte>(
    level: SimdLevel,
    exp: &[u16],
    packed: &[u8],
    mid: &[M],
    low: &[L],
    dst: &mut [u8],
) {
    let n = exp.len();
    debug_assert!(
        dst.len() == 4 * n
            && mid.len() == n
            && low.len() == n
            && packed.len() >= (7 * n).div_ceil(8)
    );
    let mut high = [0u8; 2 * F32_MERGE_STEP];
    for (k, exp) in exp.chunks(F32_MERGE_STEP).enumerate() {
        let (from, len) = (k * F32_MERGE_STEP, exp.len());
        let bytes = &packed[from / 8 * 7..];
        let high = &mut high[..2 * len];
        merge_bf16_packed_on::<JOINT>(level, exp, &bytes[..(7 * len).div_ceil(8)], high);
        let (mid, low) = (&mid[from..from + len], &low[from..from + len]);
        let dst = &mut dst[4 * from..4 * (from + len)];
        #[cfg(target_arch = "x86_64")]
        if level != SimdLevel::Scalar && SimdLevel::Avx2.is_supported() {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { interleave_f32_avx2(high, mid, low, dst) };
            continue;
        }
        interleave_f32(high, mid, low, dst);
    }
}

/// Joins the high halves of F32 elements (BF16 words) with their two low mantissa bytes.
/// Whole-word arithmetic (not byte stores): the loop vectorises.
#[inline(always)]
fn interleave_f32<M: FieldByte, L: FieldByte>(high: &[u8], mid: &[M], low: &[L], dst: &mut [u8]) {
    for ((d, h), (&m, &l)) in dst
        .as_chunks_mut::<4>()
        .0
        .iter_mut()
        .zip(high.as_chunks::<2>().0)
        .zip(mid.iter().zip(low))
    {
        let x = (u32::from(u16::from_le_bytes(*h)) << 16) | (m.value() << 8) | l.value();
        *d = x.to_le_bytes();
    }
}

/// [`interleave_f32`] compiled for AVX2: 256-bit instead of the baseline's 128-bit vectors
/// (measured at about a tenth of an FP32 decode before).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn interleave_f32_avx2<M: FieldByte, L: FieldByte>(
    high: &[u8],
    mid: &[M],
    low: &[L],
    dst: &mut [u8],
) {
    interleave_f32(high, mid, low, dst);
}

/// Four 7-bit fields (the low 28 bits of `bits`) spread to the low bits of four 16-bit
/// lanes, in a u64: shifts within the word instead of one shift per field.
#[inline(always)]
fn spread_7bit_fields(bits: u64) -> u64 {
    let t = (bits | (bits << 18)) & 0x0000_3FFF_0000_3FFF;
    (t | (t << 9)) & 0x007F_007F_007F_007F
}

/// The portable BF16 merge (what the scalar path runs, ARM among them): SWAR in u64 words
/// of four 16-bit lanes. Sixteen elements per step: their 14 packed bytes are read as two
/// overlapping u64 (bytes 0..8 and 6..14) instead of byte by byte, and the four words of a
/// step go through the same operations, which the compiler pairs into 128-bit vectors
/// (SSE2, NEON).
fn merge_bf16_packed_scalar<const JOINT: bool>(exp: &[u16], packed: &[u8], dst: &mut [u8]) {
    const LOW28: u64 = 0x0FFF_FFFF;
    let mut done = 0;
    for ((e, b), d) in exp
        .as_chunks::<16>()
        .0
        .iter()
        .zip(packed.as_chunks::<14>().0)
        .zip(dst.as_chunks_mut::<32>().0)
    {
        // Whole-word loads (the array forms; `[b[0], .., b[7]]` compiled to byte loads).
        let (Some(first), Some(last)) = (b.first_chunk::<8>(), b.last_chunk::<8>()) else {
            unreachable!("14-byte chunk")
        };
        let (lo, hi) = (u64::from_le_bytes(*first), u64::from_le_bytes(*last) >> 8);
        let fields = [lo & LOW28, (lo >> 28) & LOW28, hi & LOW28, hi >> 28];
        let words: [u64; 4] = std::array::from_fn(|q| {
            let r = spread_7bit_fields(fields[q]);
            // Every lane of the exponent word is below 2^9, so shifting the word shifts
            // each lane without carries.
            let s0 = u64::from(e[4 * q])
                | u64::from(e[4 * q + 1]) << 16
                | u64::from(e[4 * q + 2]) << 32
                | u64::from(e[4 * q + 3]) << 48;
            if JOINT {
                // Lane by lane as `bf16_joint_merge`: the sign (bit 0) masked before its
                // shift, so that no bit crosses into the next lane.
                ((s0 << 6) & 0x7F80_7F80_7F80_7F80) | ((s0 & 0x0001_0001_0001_0001) << 15) | r
            } else {
                (s0 << 6) | ((r & 0x0040_0040_0040_0040) << 9) | (r & 0x003F_003F_003F_003F)
            }
        });
        for (d, w) in d.as_chunks_mut::<8>().0.iter_mut().zip(words) {
            *d = w.to_le_bytes();
        }
        done += 16;
    }
    // The last (up to 15) elements: unpacked into a small buffer, then merged one by one.
    let rest = &exp[done..];
    if !rest.is_empty() {
        let mut residual = [0u16; 16];
        let residual = &mut residual[..rest.len()];
        crate::entropy::bitpack::unpack(&packed[done / 8 * 7..], 7, residual);
        for ((&s0, &r), d) in rest
            .iter()
            .zip(residual.iter())
            .zip(dst[2 * done..].as_chunks_mut::<2>().0)
        {
            *d = if JOINT {
                bf16_joint_merge(s0, r)
            } else {
                (s0 << 6) | ((r & 0x40) << 9) | (r & 0x3F)
            }
            .to_le_bytes();
        }
    }
}

/// The first BF16 field (plain or joint) counted by vector compares, on the AVX-512
/// path: each element's value less a window start `lo`, clamped to
/// [`WINDOW`](window_count::WINDOW), as one byte; per 64 elements one compare to a mask
/// per window value and a popcount of the mask. The scalar count adds one to a counter
/// in memory per element (~1.5 cycles each). Weights keep nearly all their first-field
/// values within 32 consecutive ones (sixteen binades); the few outside the window are
/// counted one by one. The histogram is the scalar count's. MiniLM BF16 `--level fast`
/// pack +5.0 %, default +2.1 % by thread CPU time (BENCHMARKS.md, twenty-fifth session,
/// enc25). (AVX2, with 32 elements per compare and a mask move besides, was 10 % slower
/// per pack than the scalar count.)
mod window_count {
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
}

/// Vector split and merge on the path the caller chose.
mod simd {
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
                    return unsafe {
                        x86::merge_f32_bytes_avx2::<JOINT>(exp, packed, mid, low, dst)
                    }
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
            let compact_idx: [u8; 64] =
                std::array::from_fn(|k| (8 * (k / 7) + k % 7).min(63) as u8);
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
                        let w =
                            _mm512_loadu_si512(src.as_ptr().add(128 * g + 64 * half) as *const _);
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
                    let bytes =
                        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(halves[0]), halves[1]);
                    // Byte pairs → 14 bits in each 16-bit lane.
                    let t16 = _mm512_or_si512(
                        _mm512_and_si512(bytes, _mm512_set1_epi16(0x7F)),
                        _mm512_and_si512(_mm512_srli_epi16::<1>(bytes), _mm512_set1_epi16(0x3F80)),
                    );
                    // 14-bit pairs → 28 bits in each 32-bit lane.
                    let t32 = _mm512_or_si512(
                        _mm512_and_si512(t16, _mm512_set1_epi32(0x3FFF)),
                        _mm512_and_si512(
                            _mm512_srli_epi32::<2>(t16),
                            _mm512_set1_epi32(0x0FFF_C000),
                        ),
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
                let t64 =
                    _mm256_and_si256(_mm256_or_si256(t32, _mm256_srli_epi64::<18>(t32)), low28);
                // Qword 1 of each half onto bits 28..56 of qword 0.
                let t128 =
                    _mm256_or_si256(t64, _mm256_slli_epi64::<28>(_mm256_bsrli_epi128::<8>(t64)));
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
                        let s0 =
                            _mm512_loadu_si512(exp.as_ptr().add(64 * g + 32 * half) as *const _);
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
            let join: [[u8; 64]; 2] = std::array::from_fn(|h| {
                std::array::from_fn(|i| (32 * h + i / 2 + 64 * (i % 2)) as u8)
            });
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
                let shuffle: [u8; 32] =
                    std::array::from_fn(|p| (7 * order(p / 2) / 8 + p % 2) as u8);
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
                        low.as_ptr().add(16 * i) as *const _,
                    ));
                    let mids = _mm256_broadcastsi128_si256(_mm_loadu_si128(
                        mid.as_ptr().add(16 * i) as *const _,
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
            let join: [[u8; 64]; 2] = std::array::from_fn(|h| {
                std::array::from_fn(|i| (32 * h + i / 2 + 64 * (i % 2)) as u8)
            });
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
}

/// BF16 fields: exponent and top mantissa bit; sign and low six mantissa bits.
#[inline(always)]
fn bf16_fields(w: u16) -> [u16; 2] {
    [(w >> 6) & 0x1FF, ((w >> 9) & 0x40) | (w & 0x3F)]
}

/// Joint BF16 fields: exponent and sign (as bit 0); the seven mantissa bits.
#[inline(always)]
fn bf16_joint_fields(w: u16) -> [u16; 2] {
    [((w >> 6) & 0x1FE) | (w >> 15), w & 0x7F]
}

/// Inverse of [`bf16_joint_fields`]: the exponent moves up one bit past the mantissa, the
/// sign (bit 0 of `s0`) to bit 15 (the shift drops every other bit of `s0`).
#[inline(always)]
fn bf16_joint_merge(s0: u16, s1: u16) -> u16 {
    ((s0 << 6) & 0x7F80) | (s0 << 15) | (s1 & 0x7F)
}

/// Inverse of [`f16_fields`].
#[inline(always)]
fn f16_merge(s0: u16, s1: u16) -> u16 {
    (s0 << 7) | ((s1 & 0x80) << 8) | (s1 & 0x7F)
}

/// Inverse of [`f16_joint_fields`].
#[inline(always)]
fn f16_joint_merge(s0: u16, s1: u16) -> u16 {
    ((s0 << 7) & 0x7F00) | (s0 << 15) | (s1 & 0xFF)
}

/// F16 fields: exponent and top three mantissa bits; sign and low seven mantissa bits.
#[inline(always)]
fn f16_fields(w: u16) -> [u16; 2] {
    [(w >> 7) & 0xFF, ((w >> 8) & 0x80) | (w & 0x7F)]
}

/// Joint F16 fields: exponent, top two mantissa bits and sign (as bit 0); the low eight
/// mantissa bits.
#[inline(always)]
fn f16_joint_fields(w: u16) -> [u16; 2] {
    [((w >> 7) & 0xFE) | (w >> 15), w & 0xFF]
}

/// F32 fields: the BF16 fields (joint or not) of the top half, then mantissa bytes 1
/// and 0.
#[inline(always)]
fn f32_fields<const JOINT: bool>(x: u32) -> [u16; 4] {
    let top = (x >> 16) as u16;
    let [a, b] = if JOINT {
        bf16_joint_fields(top)
    } else {
        bf16_fields(top)
    };
    [a, b, ((x >> 8) & 0xFF) as u16, (x & 0xFF) as u16]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(layout: Layout, src: &[u8]) {
        let n = src.len() / layout.element_size();
        let mut bufs: Vec<Vec<u16>> = layout.field_bits().iter().map(|_| vec![0; n]).collect();
        let mut views: Vec<&mut [u16]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
        layout.split(src, &mut views);
        for (buf, &bits) in bufs.iter().zip(layout.field_bits()) {
            assert!(
                buf.iter().all(|&s| u32::from(s) < 1 << bits),
                "{layout:?} field wider than {bits}"
            );
        }
        let views: Vec<&[u16]> = bufs.iter().map(|b| b.as_slice()).collect();
        let mut back = vec![0u8; src.len()];
        layout.merge(&views, &mut back);
        assert_eq!(back, src);
    }

    /// `n` pseudo-random BF16 elements and their two fields of `layout`.
    fn bf16_sample(layout: Layout, n: usize) -> (Vec<u8>, Vec<u16>, Vec<u16>) {
        let src: Vec<u8> = (0..n as u32)
            .flat_map(|i| ((i.wrapping_mul(2654435761) >> 9) as u16).to_le_bytes())
            .collect();
        let (mut f0, mut f1) = (vec![0u16; n], vec![0u16; n]);
        layout.split(&src, &mut [&mut f0, &mut f1]);
        (src, f0, f1)
    }

    /// `count` equals histograms of `split`'s fields, whichever fields are counted (one
    /// field alone takes its own loop) and whatever the remainder of the last quad.
    #[test]
    fn count_matches_histograms_of_split_fields() {
        for layout in [
            Layout::Bf16,
            Layout::Bf16Joint,
            Layout::F16,
            Layout::F16Joint,
            Layout::F32,
            Layout::F32Joint,
            Layout::F8,
        ] {
            let fields = layout.field_bits().len();
            for n in [0usize, 1, 3, 4, 5, 63, 4096, 4099] {
                let src: Vec<u8> = (0..(n * layout.element_size()) as u32)
                    .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                    .collect();
                let mut bufs: Vec<Vec<u16>> = (0..fields).map(|_| vec![0; n]).collect();
                let mut views: Vec<&mut [u16]> =
                    bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
                layout.split(&src, &mut views);
                for mask in 1u32..1 << fields {
                    let mut hists: Vec<Vec<u32>> = layout
                        .field_bits()
                        .iter()
                        .enumerate()
                        .map(|(f, &b)| {
                            if mask >> f & 1 == 1 {
                                vec![1; 1 << b]
                            } else {
                                Vec::new()
                            }
                        })
                        .collect();
                    layout.count(&src, &mut hists);
                    for (f, (h, buf)) in hists.iter().zip(&bufs).enumerate() {
                        if mask >> f & 1 == 0 {
                            assert!(h.is_empty());
                            continue;
                        }
                        // Counts add to what the histogram held (all ones here).
                        let mut expected = vec![1u32; h.len()];
                        for &s in buf {
                            expected[usize::from(s)] += 1;
                        }
                        assert_eq!(h, &expected, "{layout:?} n {n} fields {mask:b} field {f}");
                    }
                }
            }
        }
    }

    /// The sparse counts are the dense ones' present entries, whatever the previous call
    /// on this thread counted (the scratch histograms are left zeroed), for every layout,
    /// field mask and odd length, and a short or empty mask counts nothing.
    /// The one-pass layout sample gives what `count_sparse` gives for the base layout (all
    /// fields) and its joint layout (first two fields), on every layout, for random bits
    /// and for the skewed words of real weights, at odd lengths; `None` without a joint.
    #[test]
    fn count_sparse_with_joint_matches_count_sparse() {
        for layout in [
            Layout::Bf16,
            Layout::F16,
            Layout::F32,
            Layout::F8,
            Layout::Bf16Joint,
        ] {
            let bits = layout.field_bits();
            for n in [0usize, 1, 7, 4096, 4099] {
                for skewed in [false, true] {
                    let src: Vec<u8> = (0..(n * layout.element_size()) as u32)
                        .map(|i| {
                            let r = (i.wrapping_mul(2654435761) >> 13) as u8;
                            // Few distinct high bytes, as weights' exponents have.
                            if skewed && i % 2 == 1 {
                                0x3C | (r & 0x81)
                            } else {
                                r
                            }
                        })
                        .collect();
                    let Some(joint) = layout.joint() else {
                        assert!(layout.count_sparse_with_joint(&src).is_none(), "{layout:?}");
                        continue;
                    };
                    let all = vec![true; bits.len()];
                    let first_two: Vec<bool> = (0..bits.len()).map(|f| f < 2).collect();
                    let expected = [
                        layout.count_sparse(&src, &all),
                        joint.count_sparse(&src, &first_two),
                    ];
                    assert_eq!(
                        layout.count_sparse_with_joint(&src),
                        Some(expected),
                        "{layout:?} n {n} skewed {skewed}"
                    );
                }
            }
        }
    }

    /// BF16 words for the window count's tests: weights of `spread` binades around 1
    /// (most within the window, some far below it), zeros, both signs, and here and
    /// there a word from anywhere.
    fn bf16_words(n: usize, seed: u32, spread: u32) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let w = match x % 97 {
                    0 => 0,
                    1 => (x >> 8) as u16,
                    _ => {
                        let exp = 127 - (x >> 8) % spread.max(1);
                        ((x >> 31) << 15 | exp << 7 | (x >> 20) & 0x7F) as u16
                    }
                };
                w.to_le_bytes()
            })
            .collect()
    }

    /// The first BF16 field's histogram counted element by element.
    fn naive_first(layout: Layout, src: &[u8]) -> Vec<u32> {
        let mut hist = vec![0u32; 512];
        for e in src.chunks_exact(2) {
            let w = u16::from_le_bytes([e[0], e[1]]);
            let f = match layout {
                Layout::Bf16Joint => bf16_joint_fields(w)[0],
                _ => bf16_fields(w)[0],
            };
            hist[usize::from(f)] += 1;
        }
        hist
    }

    /// The AVX-512 window count, `Layout::count` and `count_sparse_blocks` of the first
    /// BF16 field give the element-by-element histogram: values in and out of the window
    /// (narrow and wide spreads, zeros, random words), every length of the tail, a first
    /// vector whose maximum is not the block's.
    #[test]
    fn window_counts_of_bf16_first_fields_are_exact() {
        if !window_count::counts_on(SimdLevel::Avx512) {
            eprintln!("skip: the AVX-512 window count is not checked: this CPU lacks AVX-512");
        }
        for layout in [Layout::Bf16, Layout::Bf16Joint] {
            for (seed, spread) in [(1u32, 6u32), (7, 20), (11, 60), (13, 200)] {
                for n in [0usize, 1, 31, 63, 64, 65, 127, 128, 200, 4097, 9000] {
                    let src = bf16_words(n, seed.wrapping_add(n as u32), spread);
                    let want = naive_first(layout, &src);
                    let level = SimdLevel::Avx512;
                    let mut hist = [0u32; 512];
                    if window_count::count_bf16_first(layout.is_joint(), level, &src, &mut hist) {
                        assert_eq!(&hist[..], &want[..], "{layout:?} {seed} {spread} {n}");
                    }
                    let mut hists = vec![vec![0u32; 512], Vec::new()];
                    layout.count(&src, &mut hists);
                    assert_eq!(hists[0], want, "count {layout:?} {seed} {spread} {n}");
                    for block_len in [1024usize, 2048, 3000] {
                        let blocks: Vec<Vec<(u16, u32)>> = src
                            .chunks(2 * block_len)
                            .map(|b| sparse_of(&naive_first(layout, b)))
                            .collect();
                        assert_eq!(
                            layout.count_sparse_blocks(&src, 0, block_len),
                            blocks,
                            "blocks {layout:?} {seed} {spread} {n} {block_len}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn count_sparse_blocks_match_count_sparse_block_by_block() {
        for layout in [
            Layout::Bf16,
            Layout::Bf16Joint,
            Layout::F16,
            Layout::F16Joint,
            Layout::F32,
            Layout::F32Joint,
            Layout::F8,
        ] {
            let esize = layout.element_size();
            let fields = layout.field_bits().len();
            // Random bytes (most values present) and a few values repeated (runs); blocks
            // short and long (counted into four copies), the last one ragged.
            for skewed in [false, true] {
                let src: Vec<u8> = (0..(4099 * esize) as u32)
                    .map(|i| {
                        let x = (i.wrapping_mul(2654435761) >> 13) as u8;
                        if skewed {
                            x & 0x83
                        } else {
                            x
                        }
                    })
                    .collect();
                for block_len in [1usize, 3, 256, 999, 1000, 1024, 1499, 2048, 5000] {
                    for field in 0..fields {
                        let mut only = vec![false; fields];
                        only[field] = true;
                        let expected: Vec<Vec<(u16, u32)>> = src
                            .chunks(block_len * esize)
                            .map(|block| layout.count_sparse(block, &only).swap_remove(field))
                            .collect();
                        assert_eq!(
                            layout.count_sparse_blocks(&src, field, block_len),
                            expected,
                            "{layout:?} skewed {skewed} blocks of {block_len} field {field}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn nonzero_sets_agree() {
        let mut counts = [0u32; 512];
        for round in 0..64u32 {
            for (i, c) in counts.iter_mut().enumerate() {
                let x = (i as u32 ^ round).wrapping_mul(2654435761) >> 20;
                *c = if x.is_multiple_of(round % 7 + 1) {
                    x
                } else {
                    0
                };
            }
            let set = nonzero_set(&counts);
            for (v, &c) in counts.iter().enumerate() {
                assert_eq!(
                    set[v / 64] >> (v % 64) & 1 == 1,
                    c != 0,
                    "round {round} v {v}"
                );
            }
            // Spread over four copies (each value in one of them, or split between
            // two), the set of their sum is the same.
            let mut copies = [[0u32; 512]; 4];
            for (v, &c) in counts.iter().enumerate() {
                copies[v % 4][v] = c / 2;
                copies[(v / 4) % 4][v] += c - c / 2;
            }
            assert_eq!(nonzero_set_of(&copies, 8), set, "round {round}");
            assert_eq!(nonzero_set_of(std::slice::from_ref(&counts), 8), set);
            #[cfg(target_arch = "x86_64")]
            if SimdLevel::Avx2.is_supported() {
                // SAFETY: the CPU supports AVX2 (checked just above).
                unsafe {
                    assert_eq!(nonzero_set_avx2(std::slice::from_ref(&counts), 8), set);
                    assert_eq!(nonzero_set_avx2(&copies, 8), set, "round {round}");
                }
            }
        }
    }

    #[test]
    fn count_sparse_matches_count() {
        for round in 0..2u32 {
            for layout in [
                Layout::Bf16,
                Layout::Bf16Joint,
                Layout::F16,
                Layout::F16Joint,
                Layout::F32,
                Layout::F32Joint,
                Layout::F8,
            ] {
                let bits = layout.field_bits();
                for n in [0usize, 1, 5, 63, 4096, 4099] {
                    let src: Vec<u8> = (0..(n * layout.element_size()) as u32)
                        .map(|i| ((i + round).wrapping_mul(2654435761) >> 13) as u8)
                        .collect();
                    for mask in 0u32..1 << bits.len() {
                        let on: Vec<bool> = (0..bits.len()).map(|f| mask >> f & 1 == 1).collect();
                        let mut dense: Vec<Vec<u32>> = bits
                            .iter()
                            .zip(&on)
                            .map(|(&b, &o)| if o { vec![0; 1 << b] } else { Vec::new() })
                            .collect();
                        layout.count(&src, &mut dense);
                        let expected: Vec<Vec<(u16, u32)>> = dense
                            .iter()
                            .map(|h| {
                                h.iter()
                                    .enumerate()
                                    .filter(|(_, &c)| c > 0)
                                    .map(|(s, &c)| (s as u16, c))
                                    .collect()
                            })
                            .collect();
                        assert_eq!(
                            layout.count_sparse(&src, &on),
                            expected,
                            "{layout:?} n {n} fields {mask:b}"
                        );
                    }
                    let none = layout.count_sparse(&src, &[]);
                    assert_eq!(none.len(), bits.len());
                    assert!(none.iter().all(Vec::is_empty));
                }
            }
        }
    }

    fn packed_bf16_split_matches<const JOINT: bool>() {
        let layout = if JOINT {
            Layout::Bf16Joint
        } else {
            Layout::Bf16
        };
        for n in [0usize, 1, 7, 8, 63, 64, 65, 200, 1000] {
            let (src, f0, f1) = bf16_sample(layout, n);
            let mut expected = vec![9u8];
            crate::entropy::bitpack::pack(&f1, 7, &mut expected);
            for level in SimdLevel::supported() {
                let mut exp = vec![0xEEEEu16; n];
                let mut packed = vec![9u8];
                split_bf16_packed_on::<JOINT>(level, &src, &mut exp, &mut packed);
                assert_eq!(exp, f0, "{layout:?} n {n} {level}");
                assert_eq!(packed, expected, "{layout:?} n {n} {level}");
                // Into a slice of stale bytes: every byte written.
                for stale in [0x00u8, 0xFF, 0xA5] {
                    let mut exp = vec![0xEEEEu16; n];
                    let mut packed = vec![stale; expected.len() - 1];
                    split_bf16_packed_into_on::<JOINT>(level, &src, &mut exp, &mut packed);
                    assert_eq!(exp, f0, "{layout:?} n {n} {level} stale {stale}");
                    assert_eq!(
                        packed,
                        expected[1..],
                        "{layout:?} n {n} {level} stale {stale}"
                    );
                }
            }
        }
        // Every 16-bit pattern, in an order that puts each in every lane of a group:
        // the lane-parallel (SWAR) scalar split must not leak bits between lanes.
        let src: Vec<u8> = (0..4 * 65536u32)
            .flat_map(|i| ((i >> 2) as u16).rotate_left(4 * (i & 3)).to_le_bytes())
            .collect();
        let n = src.len() / 2;
        let (mut f0, mut f1) = (vec![0u16; n], vec![0u16; n]);
        layout.split(&src, &mut [&mut f0, &mut f1]);
        let mut expected = Vec::new();
        crate::entropy::bitpack::pack(&f1, 7, &mut expected);
        for level in SimdLevel::supported() {
            let mut exp = vec![0u16; n];
            let mut packed = Vec::new();
            split_bf16_packed_on::<JOINT>(level, &src, &mut exp, &mut packed);
            assert!(
                exp == f0 && packed == expected,
                "{layout:?} all patterns {level}"
            );
        }
    }

    #[test]
    fn packed_bf16_split_matches_split_then_pack_on_every_path() {
        packed_bf16_split_matches::<false>();
        packed_bf16_split_matches::<true>();
    }

    fn packed_bf16_merge_matches<const JOINT: bool>() {
        let layout = if JOINT {
            Layout::Bf16Joint
        } else {
            Layout::Bf16
        };
        for n in [
            0usize, 1, 7, 8, 9, 14, 15, 16, 17, 23, 24, 25, 31, 32, 33, 47, 48, 49, 63, 64, 65,
            200, 1000, 4095, 4096, 4097,
        ] {
            let (src, f0, f1) = bf16_sample(layout, n);
            let mut packed = Vec::new();
            crate::entropy::bitpack::pack(&f1, 7, &mut packed);
            for level in SimdLevel::supported() {
                let mut dst = vec![0xEEu8; 2 * n];
                merge_bf16_packed_on::<JOINT>(level, &f0, &packed, &mut dst);
                assert_eq!(dst, src, "{layout:?} n {n} {level}");
            }
            // The portable loop alone, also after a prefix of whole bytes (how the vector
            // paths hand it their rest).
            for skip in [0, 8, 16].into_iter().filter(|&k| k <= n) {
                let mut dst = vec![0xEEu8; 2 * (n - skip)];
                merge_bf16_packed_scalar::<JOINT>(&f0[skip..], &packed[skip / 8 * 7..], &mut dst);
                assert_eq!(dst, src[2 * skip..], "{layout:?} n {n} scalar from {skip}");
            }
        }
        // Every 16-bit pattern, in an order that puts each in every lane of a step: the
        // SWAR merge must not leak bits between lanes or words.
        let src: Vec<u8> = (0..16 * 65536u32)
            .flat_map(|i| ((i >> 4) as u16).rotate_left(i & 15).to_le_bytes())
            .collect();
        let n = src.len() / 2;
        let (mut f0, mut f1) = (vec![0u16; n], vec![0u16; n]);
        layout.split(&src, &mut [&mut f0, &mut f1]);
        let mut packed = Vec::new();
        crate::entropy::bitpack::pack(&f1, 7, &mut packed);
        for level in SimdLevel::supported() {
            let mut dst = vec![0u8; 2 * n];
            merge_bf16_packed_on::<JOINT>(level, &f0, &packed, &mut dst);
            assert!(dst == src, "{layout:?} all patterns {level}");
        }
    }

    /// The F16 merge from the packed field's bytes equals unpacking, then merging, on every
    /// path, for lengths around the vector widths and every 16-bit pattern.
    #[test]
    fn f16_merge_from_bytes_matches_unpack_then_merge_on_every_path() {
        for layout in [Layout::F16, Layout::F16Joint] {
            let patterns: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
            for n in [
                0usize, 1, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000, 65_536,
            ] {
                let src = &patterns[..2 * n];
                let (mut f0, mut f1) = (vec![0u16; n], vec![0u16; n]);
                layout.split(src, &mut [&mut f0, &mut f1]);
                let mut bytes = Vec::new();
                crate::entropy::bitpack::pack(&f1, 8, &mut bytes);
                for level in SimdLevel::supported() {
                    let mut dst = vec![0xEEu8; 2 * n];
                    merge_f16_bytes_on(level, layout.is_joint(), &f0, &bytes, &mut dst);
                    assert!(dst == src, "{layout:?} n {n} {level}");
                }
            }
        }
    }

    /// The F16 merge from fields in any form (bytes or 16-bit symbols each) equals
    /// [`Layout::merge`] on every path, for lengths around the vector widths (64 and 32
    /// elements) and every 16-bit pattern, and the byte-pair vector paths ran.
    #[test]
    fn f16_merge_from_fields_of_any_form_matches_merge_on_every_path() {
        let patterns: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
        for layout in [Layout::F16, Layout::F16Joint] {
            for n in [
                0usize, 1, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000, 65_536,
            ] {
                let src = &patterns[..2 * n];
                let (mut f0, mut f1) = (vec![0u16; n], vec![0u16; n]);
                layout.split(src, &mut [&mut f0, &mut f1]);
                let bytes = |f: &[u16]| f.iter().map(|&v| v as u8).collect::<Vec<u8>>();
                let (b0, b1) = (bytes(&f0), bytes(&f1));
                assert!(f0.iter().chain(&f1).all(|&v| v < 256));
                let forms = [
                    (ByteField::Bytes(&b0), ByteField::Bytes(&b1)),
                    (ByteField::Symbols(&f0), ByteField::Bytes(&b1)),
                    (ByteField::Bytes(&b0), ByteField::Symbols(&f1)),
                    (ByteField::Symbols(&f0), ByteField::Symbols(&f1)),
                ];
                for level in SimdLevel::supported() {
                    for (k, &(e, l)) in forms.iter().enumerate() {
                        let before = crate::cpu::kernel_runs()[level as usize];
                        let mut dst = vec![0xEEu8; 2 * n];
                        merge_f16_fields_on(level, layout.is_joint(), e, l, &mut dst);
                        assert!(dst == src, "{layout:?} n {n} {level} form {k}");
                        if k == 0 {
                            let after = crate::cpu::kernel_runs()[level as usize];
                            assert!(after > before, "{level}: byte-pair merge did not run");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn packed_bf16_merge_matches_unpack_then_merge_on_every_path() {
        packed_bf16_merge_matches::<false>();
        packed_bf16_merge_matches::<true>();
    }

    fn packed_f32_merge_matches<const JOINT: bool>() {
        let layout = if JOINT { Layout::F32Joint } else { Layout::F32 };
        // Around the vector steps (16, 64) and the two-pass path's step (1024); then every
        // 16-bit top half in every lane of a step, beside varying low bytes: no bit may
        // leak between lanes, bytes or words.
        let patterns: Vec<u8> = (0..16 * 65536u32)
            .flat_map(|i| {
                let top = ((i >> 4) as u16).rotate_left(i & 15);
                ((u32::from(top) << 16) | (i.wrapping_mul(2654435761) >> 16)).to_le_bytes()
            })
            .collect();
        let lengths = [
            0usize, 1, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 200, 1023, 1024, 1025,
            2048, 3000,
        ];
        for n in lengths.into_iter().chain([patterns.len() / 4]) {
            let src: Vec<u8> = if n == patterns.len() / 4 {
                patterns.clone()
            } else {
                (0..n as u32)
                    .flat_map(|i| i.wrapping_mul(2654435761).rotate_left(i % 32).to_le_bytes())
                    .collect()
            };
            let mut f: [Vec<u16>; 4] = std::array::from_fn(|_| vec![0u16; n]);
            let [f0, f1, f2, f3] = &mut f;
            layout.split(&src, &mut [f0, f1, f2, f3]);
            let mut packed = Vec::new();
            crate::entropy::bitpack::pack(&f[1], 7, &mut packed);
            let bytes: [Vec<u8>; 2] =
                std::array::from_fn(|k| f[2 + k].iter().map(|&s| s as u8).collect());
            let forms = |k: usize| [ByteField::Symbols(&f[2 + k]), ByteField::Bytes(&bytes[k])];
            for level in SimdLevel::supported() {
                for mid in forms(0) {
                    for low in forms(1) {
                        let mut dst = vec![0xEEu8; 4 * n];
                        merge_f32_packed_on::<JOINT>(level, &f[0], &packed, mid, low, &mut dst);
                        assert!(dst == src, "{layout:?} n {n} {level} {mid:?} {low:?}");
                    }
                }
                // The one-pass vector merge alone: it takes every whole step it can (the
                // AVX2 one leaves the last if the packed bytes end without 2 bytes of
                // slack), and writes what the reference does.
                let mut dst = vec![0xEEu8; 4 * n];
                let done = simd::merge_f32_bytes::<JOINT>(
                    level, &f[0], &packed, &bytes[0], &bytes[1], &mut dst,
                );
                let step = match level {
                    SimdLevel::Avx512 => 64,
                    SimdLevel::Avx2 => 16,
                    SimdLevel::Scalar => usize::MAX,
                };
                let whole = n.checked_div(step).unwrap_or(0) * step;
                assert!(
                    done == whole || (level == SimdLevel::Avx2 && done + 16 == whole),
                    "{layout:?} n {n} {level}: {done} of {n} merged"
                );
                assert!(
                    dst[..4 * done] == src[..4 * done],
                    "{layout:?} n {n} {level} one pass"
                );
            }
        }
    }

    #[test]
    fn packed_f32_merge_matches_unpack_then_merge_on_every_path() {
        packed_f32_merge_matches::<false>();
        packed_f32_merge_matches::<true>();
    }

    #[test]
    fn every_16_bit_pattern_round_trips() {
        let all: Vec<u8> = (0..=u16::MAX).flat_map(|w| w.to_le_bytes()).collect();
        for layout in [
            Layout::Bf16,
            Layout::F16,
            Layout::Bf16Joint,
            Layout::F16Joint,
        ] {
            round_trip(layout, &all);
        }
        let bytes: Vec<u8> = (0..=255u8).collect();
        round_trip(Layout::F8, &bytes);
    }

    #[test]
    fn joint_layouts_put_the_sign_in_the_first_field() {
        // -1.0 and 1.0: the same fields but for the sign, which is bit 0 of field 0.
        for (layout, one) in [
            (Layout::Bf16Joint, 0x3F80u32),
            (Layout::F16Joint, 0x3C00),
            (Layout::F32Joint, 0x3F80_0000),
        ] {
            let esize = layout.element_size();
            let sign = 1u32 << (8 * esize - 1);
            let src: Vec<u8> = [one, one | sign]
                .iter()
                .flat_map(|w| w.to_le_bytes()[..esize].to_vec())
                .collect();
            let mut bufs: Vec<Vec<u16>> = layout.field_bits().iter().map(|_| vec![0; 2]).collect();
            let mut views: Vec<&mut [u16]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
            layout.split(&src, &mut views);
            assert_eq!(bufs[0][1], bufs[0][0] | 1, "{layout:?}");
            assert_eq!(bufs[0][0] & 1, 0, "{layout:?}");
            for f in &bufs[1..] {
                assert_eq!(f[0], f[1], "{layout:?}: the sign left a residual field");
            }
        }
    }

    #[test]
    fn f32_patterns_round_trip_and_share_bf16_fields() {
        let words: Vec<u32> = (0..=u16::MAX as u32)
            .map(|h| (h << 16) | (h.wrapping_mul(40503) & 0xFFFF))
            .collect();
        let src: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        round_trip(Layout::F32, &src);
        round_trip(Layout::F32Joint, &src);
        let n = words.len();
        let mut f = [vec![0u16; n], vec![0u16; n], vec![0u16; n], vec![0u16; n]];
        let [a, b, c, d] = &mut f;
        Layout::F32.split(&src, &mut [a, b, c, d]);
        let top: Vec<u8> = words
            .iter()
            .flat_map(|w| ((w >> 16) as u16).to_le_bytes())
            .collect();
        let (mut g0, mut g1) = (vec![0u16; n], vec![0u16; n]);
        Layout::Bf16.split(&top, &mut [&mut g0, &mut g1]);
        assert_eq!((f[0].clone(), f[1].clone()), (g0, g1));
    }
}
