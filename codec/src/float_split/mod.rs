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
//!
//! Files: `count.rs` histograms of the fields (the encoder's sampling and tables),
//! `split.rs` elements into fields, `merge.rs` fields back into elements, `simd.rs` and
//! `window_count.rs` their vector kernels.

use crate::dtype::Dtype;

mod count;
mod merge;
/// Vector split and merge on the path the caller chose.
mod simd;
mod split;
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
mod window_count;

#[cfg(test)]
mod tests;

pub use merge::{merge_bf16_packed, merge_f16_fields, merge_f32_packed, ByteField};
pub(crate) use split::split_bf16_packed_into;

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

/// Sparse histograms of a layout's fields, one per field (present values with their
/// counts, in increasing value order).
pub type FieldHists = Vec<Vec<(u16, u32)>>;

/// Most fields any layout has.
pub const MAX_FIELDS: usize = 4;

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
