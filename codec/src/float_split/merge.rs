//! Fields back into elements, from decoded symbols or straight from packed streams.

use super::simd;
use super::{bf16_joint_merge, f16_joint_merge, f16_merge, Layout};
use crate::cpu::SimdLevel;

impl Layout {
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
pub(super) fn merge_bf16_packed_on<const JOINT: bool>(
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
pub(super) fn merge_f16_bytes_on(
    level: SimdLevel,
    joint: bool,
    exp: &[u16],
    low: &[u8],
    dst: &mut [u8],
) {
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
pub(super) fn merge_f16_fields_on(
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
pub(super) fn merge_f32_packed_on<const JOINT: bool>(
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
pub(super) fn merge_bf16_packed_scalar<const JOINT: bool>(
    exp: &[u16],
    packed: &[u8],
    dst: &mut [u8],
) {
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
