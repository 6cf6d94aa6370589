//! Elements into fields: the BF16 split with its residual packed on the fly.

use super::simd;
use super::{
    bf16_fields, bf16_fields_of, bf16_joint_fields, f16_fields, f16_joint_fields, f32_fields,
    Layout,
};
use crate::cpu::SimdLevel;

impl Layout {
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
}

/// [`split_bf16_packed_into`] appending to a vector (the tests' form).
#[cfg(test)]
pub(super) fn split_bf16_packed_on<const JOINT: bool>(
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
pub(super) fn split_bf16_packed_into_on<const JOINT: bool>(
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
