//! Deltas of a tensor against a base tensor of the same dtype and shape (hub store).
//!
//! A delta is self-describing: its first byte names the [`DeltaMethod`]. [`encode`] tries
//! every method that applies to the dtype and keeps the smallest; [`decode`] needs the same
//! base bytes back. Byte layouts: FORMAT.md §8.
//!
//! * `bitx`: the published baseline (XOR, byte groups, zstd -3); any dtype.
//! * `ulp`: differences in units in the last place, rANS-coded with tables chosen by the
//!   base element's exponent; float dtypes. Its coder is `coder`.
//!
//! API contract (the store depends on it; keep it stable):
//! - `encode(dtype, base, target)` → bytes, `decode(dtype, base, delta, out)` fills `out`
//!   (`out.len() == base.len()`) or fails with a typed error; never panics on hostile `delta`.
//! - Deltas carry no checksum of their own: the caller checks the decoded tensor's hash.

mod bitx;
mod coder;
mod ulp;

use crate::dtype::Dtype;

/// How a delta is coded (its first byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeltaMethod {
    /// ZipLLM's BitX: XOR with the base, bytes grouped by position in the element, zstd -3.
    BitX,
    /// Difference in units in the last place, entropy coded per base exponent group.
    Ulp,
}

impl DeltaMethod {
    /// Every method, in the order [`encode`] tries them.
    pub const ALL: [Self; 2] = [Self::BitX, Self::Ulp];

    /// The method's byte.
    pub fn id(self) -> u8 {
        match self {
            Self::BitX => 1,
            Self::Ulp => 2,
        }
    }

    /// Inverse of [`Self::id`].
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Self::BitX),
            2 => Some(Self::Ulp),
            _ => None,
        }
    }

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::BitX => "bitx",
            Self::Ulp => "ulp",
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
    /// The method does not apply to the dtype (ULP needs a float dtype).
    #[error("delta method {method} does not support dtype {dtype}")]
    Unsupported {
        /// The method's name.
        method: &'static str,
        /// The dtype's name.
        dtype: String,
    },
}

impl DeltaMethod {
    /// Whether the method can code tensors of `dtype`.
    pub fn supports(self, dtype: &Dtype) -> bool {
        match self {
            Self::BitX => true,
            Self::Ulp => ulp::Layout::of(dtype).is_some(),
        }
    }
}

/// Codes `target` against `base` with every method that supports `dtype` and returns the
/// smallest.
pub fn encode(dtype: &Dtype, base: &[u8], target: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let mut best: Option<Vec<u8>> = None;
    for method in DeltaMethod::ALL.into_iter().filter(|m| m.supports(dtype)) {
        let coded = encode_with(method, dtype, base, target)?;
        if best.as_ref().is_none_or(|b| coded.len() < b.len()) {
            best = Some(coded);
        }
    }
    Ok(best.unwrap_or_default())
}

/// Codes `target` against `base` with one method; [`DeltaError::Unsupported`] if the method
/// does not apply to `dtype`.
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
        DeltaMethod::BitX => Ok(bitx::encode(dtype, base, target)),
        DeltaMethod::Ulp => ulp::encode(dtype, base, target),
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
        DeltaMethod::BitX => bitx::decode(dtype, base, &delta[1..], out),
        DeltaMethod::Ulp => ulp::decode(dtype, base, &delta[1..], out),
    }
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
