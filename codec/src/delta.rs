//! Deltas of a tensor against a base tensor of the same dtype and shape (hub store).
//!
//! A delta is self-describing: its first byte names the [`DeltaMethod`]. [`encode`] tries
//! every method and keeps the smallest; [`decode`] needs the same base bytes back.
//!
//! API contract (the store depends on it; keep it stable):
//! - `encode(dtype, base, target)` → bytes, `decode(dtype, base, delta, out)` fills `out`
//!   (`out.len() == base.len()`) or fails with a typed error; never panics on hostile `delta`.
//! - Deltas carry no checksum of their own: the caller checks the decoded tensor's hash.

use crate::dtype::Dtype;

/// How a delta is coded (its first byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeltaMethod {
    /// ZipLLM's BitX: XOR with the base, bytes grouped by position in the element, zstd -3.
    BitX,
}

impl DeltaMethod {
    /// Every method, in the order [`encode`] tries them.
    pub const ALL: [Self; 1] = [Self::BitX];

    /// The method's byte.
    pub fn id(self) -> u8 {
        match self {
            Self::BitX => 1,
        }
    }

    /// Inverse of [`Self::id`].
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Self::BitX),
            _ => None,
        }
    }

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::BitX => "bitx",
        }
    }
}

/// Errors of delta coding.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeltaError {
    /// Base and target (or output) differ in length.
    #[error("base is {base} bytes but target/output is {target}")]
    LengthMismatch {
        /// Base length.
        base: usize,
        /// Target or output length.
        target: usize,
    },
    /// The delta is empty or names no known method.
    #[error("unknown delta method {0}")]
    UnknownMethod(u8),
    /// The delta bytes do not decode.
    #[error("corrupt delta: {0}")]
    Corrupt(String),
}

/// Codes `target` against `base` with every method and returns the smallest.
pub fn encode(dtype: &Dtype, base: &[u8], target: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let mut best: Option<Vec<u8>> = None;
    for method in DeltaMethod::ALL {
        let coded = encode_with(method, dtype, base, target)?;
        if best.as_ref().is_none_or(|b| coded.len() < b.len()) {
            best = Some(coded);
        }
    }
    Ok(best.unwrap_or_default())
}

/// Codes `target` against `base` with one method.
pub fn encode_with(
    method: DeltaMethod,
    dtype: &Dtype,
    base: &[u8],
    target: &[u8],
) -> Result<Vec<u8>, DeltaError> {
    if base.len() != target.len() {
        return Err(DeltaError::LengthMismatch {
            base: base.len(),
            target: target.len(),
        });
    }
    match method {
        DeltaMethod::BitX => Ok(bitx_encode(dtype, base, target)),
    }
}

/// The method a delta was coded with.
pub fn method_of(delta: &[u8]) -> Result<DeltaMethod, DeltaError> {
    let id = *delta.first().ok_or(DeltaError::UnknownMethod(0))?;
    DeltaMethod::from_id(id).ok_or(DeltaError::UnknownMethod(id))
}

/// Decodes `delta` against `base` into `out` (same length as `base`).
pub fn decode(dtype: &Dtype, base: &[u8], delta: &[u8], out: &mut [u8]) -> Result<(), DeltaError> {
    if base.len() != out.len() {
        return Err(DeltaError::LengthMismatch {
            base: base.len(),
            target: out.len(),
        });
    }
    match method_of(delta)? {
        DeltaMethod::BitX => bitx_decode(dtype, base, &delta[1..], out),
    }
}

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
fn bitx_encode(dtype: &Dtype, base: &[u8], target: &[u8]) -> Vec<u8> {
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

fn bitx_decode(
    dtype: &Dtype,
    base: &[u8],
    payload: &[u8],
    out: &mut [u8],
) -> Result<(), DeltaError> {
    let groups = group_count(dtype, base.len());
    let (&declared, mut rest) = payload
        .split_first()
        .ok_or_else(|| DeltaError::Corrupt("no group count".into()))?;
    if usize::from(declared) != groups {
        return Err(DeltaError::Corrupt(format!(
            "{declared} byte groups, expected {groups}"
        )));
    }
    let plane_len = base.len() / groups;
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
        for (k, x) in plane.iter().enumerate() {
            let i = k * groups + g;
            out[i] = base[i] ^ x;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitx_round_trip_and_rejects_garbage() {
        let base: Vec<u8> = (0..4000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut target = base.clone();
        for i in (0..target.len()).step_by(3) {
            target[i] ^= 1;
        }
        for dtype in [Dtype::BF16, Dtype::F32, Dtype::U8] {
            let d = encode(&dtype, &base, &target).unwrap();
            let mut out = vec![0; base.len()];
            decode(&dtype, &base, &d, &mut out).unwrap();
            assert_eq!(out, target);
            assert!(decode(&dtype, &base, &d[..d.len() - 1], &mut out).is_err());
            assert!(decode(&dtype, &base, &[], &mut out).is_err());
        }
    }
}
