//! BitX, the published baseline (ZipLLM): XOR with the base, the bytes grouped by their
//! position in the element, each group compressed with zstd -3.

use super::{Base, DeltaError, DeltaMethod};
use crate::dtype::Dtype;

/// Byte groups of BitX: one per byte position of the element (2 for BF16, 4 for F32).
fn group_count(dtype: &Dtype, len: usize) -> usize {
    let width = dtype.element_size().unwrap_or(1).max(1);
    if len.is_multiple_of(width) {
        width
    } else {
        1
    }
}

/// BitX payload: u8 group count, then per group u64 LE frame length and a zstd -3 frame.
pub(super) fn encode(dtype: &Dtype, base: &[u8], target: &[u8]) -> Vec<u8> {
    let groups = group_count(dtype, base.len());
    let mut planes = vec![Vec::with_capacity(base.len() / groups); groups];
    for (i, (b, t)) in base.iter().zip(target).enumerate() {
        planes[i % groups].push(b ^ t);
    }
    let mut out = vec![DeltaMethod::BitX.id(), groups as u8];
    for plane in planes {
        let frame = zstd::bulk::compress(&plane, 3).expect("zstd compress to memory cannot fail");
        out.extend_from_slice(&(frame.len() as u64).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    out
}

pub(super) fn decode(
    dtype: &Dtype,
    base: Base<'_>,
    payload: &[u8],
    out: &mut [u8],
) -> Result<(), DeltaError> {
    let groups = group_count(dtype, out.len());
    let (&declared, mut rest) = payload
        .split_first()
        .ok_or_else(|| DeltaError::Corrupt("no group count".into()))?;
    if usize::from(declared) != groups {
        return Err(DeltaError::Corrupt(format!(
            "{declared} byte groups, expected {groups}"
        )));
    }
    let plane_len = out.len() / groups;
    for g in 0..groups {
        if rest.len() < 8 {
            return Err(DeltaError::Corrupt(format!("group {g}: truncated length")));
        }
        let (len_bytes, tail) = rest.split_at(8);
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= tail.len())
            .ok_or_else(|| {
                DeltaError::Corrupt(format!(
                    "group {g}: frame of {len} bytes, {} left",
                    tail.len()
                ))
            })?;
        let (frame, tail) = tail.split_at(len);
        rest = tail;
        let mut plane = vec![0u8; plane_len];
        let n = zstd::bulk::decompress_to_buffer(frame, &mut plane)
            .map_err(|e| DeltaError::Corrupt(format!("group {g}: zstd: {e}")))?;
        if n != plane_len {
            return Err(DeltaError::Corrupt(format!(
                "group {g}: {n} bytes decoded, expected {plane_len}"
            )));
        }
        match base {
            Base::Separate(base) => {
                for (k, x) in plane.iter().enumerate() {
                    let i = k * groups + g;
                    out[i] = base[i] ^ x;
                }
            }
            Base::InOut => {
                for (k, x) in plane.iter().enumerate() {
                    out[k * groups + g] ^= x;
                }
            }
        }
    }
    if !rest.is_empty() {
        return Err(DeltaError::Corrupt(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(())
}
