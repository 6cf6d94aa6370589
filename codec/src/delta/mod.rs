//! Deltas of a tensor against a base tensor of the same dtype and shape (hub store).
//!
//! A delta is self-describing: its first byte names the [`DeltaMethod`]. [`encode`] tries
//! every method that applies to the dtype and keeps the smallest; [`decode`] needs the same
//! base bytes back. Byte layouts: FORMAT.md §9.
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
    /// A piece asked of [`DeltaPieces::decode_at`] is not whole chunks of the delta.
    #[error("bytes {offset}+{len} of {total} are not whole chunks of the delta")]
    Range {
        /// First byte asked for.
        offset: usize,
        /// Bytes asked for.
        len: usize,
        /// The output's length.
        total: usize,
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

/// Tensors up to this many bytes are coded with every method, whatever the ULP delta's
/// size (BitX can win on a few hundred bytes, where its lack of tables pays).
const ALWAYS_TRY_ALL_BYTES: usize = 64 << 10;

/// Codes `target` against `base` and returns the smallest coding among the methods that
/// support `dtype`. On a float tensor above 64 KiB (`ALWAYS_TRY_ALL_BYTES`), BitX is tried only
/// when the ULP delta is larger than a quarter of the tensor: on real fine-tunes ULP wins
/// on every such tensor (BENCHMARKS.md), and skipping BitX there saves about a third of the
/// encode time.
pub fn encode(dtype: &Dtype, base: &[u8], target: &[u8]) -> Result<Vec<u8>, DeltaError> {
    if DeltaMethod::Ulp.supports(dtype) && base.len() > ALWAYS_TRY_ALL_BYTES {
        let ulp = encode_with(DeltaMethod::Ulp, dtype, base, target)?;
        if ulp.len() <= base.len() / 4 {
            return Ok(ulp);
        }
        let bitx = encode_with(DeltaMethod::BitX, dtype, base, target)?;
        return Ok(if bitx.len() < ulp.len() { bitx } else { ulp });
    }
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

/// [`encode_with`] ULP in chunks of `chunk_elems` elements (a positive multiple of 32) instead
/// of the default 2^16: for fuzz seeds and tests, which need deltas of several chunks
/// without megabytes of tensor. Only with the hidden `fuzzing` feature.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn encode_ulp_chunked(
    dtype: &Dtype,
    base: &[u8],
    target: &[u8],
    chunk_elems: usize,
) -> Result<Vec<u8>, DeltaError> {
    if base.len() != target.len() {
        return Err(DeltaError::LengthMismatch {
            base: base.len(),
            target: target.len(),
        });
    }
    ulp::encode_chunked(dtype, base, target, chunk_elems)
}

/// [`decode`] on the code path `level` instead of the process's (the scalar path where the
/// CPU lacks it): for fuzz targets and tests that hold every path to the scalar one. Only
/// with the hidden `fuzzing` feature.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn decode_on(
    level: crate::cpu::SimdLevel,
    dtype: &Dtype,
    base: &[u8],
    delta: &[u8],
    out: &mut [u8],
) -> Result<(), DeltaError> {
    decode_at_level(level, dtype, Base::Separate(base), delta, out)
}

/// Where a decoder finds the base elements.
#[derive(Clone, Copy)]
pub(crate) enum Base<'a> {
    /// In their own slice, as long as the output.
    Separate(&'a [u8]),
    /// In the output itself, which the decoder overwrites with the target.
    InOut,
}

/// [`decode`] on the code path `level`.
fn decode_at_level(
    level: crate::cpu::SimdLevel,
    dtype: &Dtype,
    base: Base<'_>,
    delta: &[u8],
    out: &mut [u8],
) -> Result<(), DeltaError> {
    if let Base::Separate(base) = base {
        if base.len() != out.len() {
            return Err(DeltaError::LengthMismatch {
                base: base.len(),
                target: out.len(),
            });
        }
    }
    match method_of(delta)? {
        DeltaMethod::BitX => bitx::decode(dtype, base, &delta[1..], out),
        DeltaMethod::Ulp => ulp::decode_on(level, dtype, base, &delta[1..], out),
    }
}

/// A delta parsed once and decoded a piece at a time, each piece from the same bytes of
/// the base: a caller decodes a large tensor's base and delta piece by piece while both are
/// in cache, pieces on any threads. Only chunked ULP deltas (FORMAT.md §9.3, layouts 2
/// and 3) decode in pieces; [`DeltaPieces::new`] gives `None` for the others.
pub struct DeltaPieces<'a> {
    parsed: ulp::Parsed<'a>,
    level: crate::cpu::SimdLevel,
}

impl<'a> DeltaPieces<'a> {
    /// Parses `delta` for a tensor of `dtype` and `len` bytes; `Ok(None)` if the delta is
    /// not one that decodes in pieces (BitX, ULP layout 1), an error if it does not parse
    /// (as [`decode`] would fail on it).
    pub fn new(dtype: &Dtype, delta: &'a [u8], len: usize) -> Result<Option<Self>, DeltaError> {
        Self::on(crate::cpu::simd_level(), dtype, delta, len)
    }

    /// [`Self::new`] decoding on the code path `level` (the scalar path where the CPU
    /// lacks it).
    fn on(
        level: crate::cpu::SimdLevel,
        dtype: &Dtype,
        delta: &'a [u8],
        len: usize,
    ) -> Result<Option<Self>, DeltaError> {
        if method_of(delta)? != DeltaMethod::Ulp {
            return Ok(None);
        }
        let layout = ulp::Layout::of(dtype).ok_or_else(|| DeltaError::Unsupported {
            method: DeltaMethod::Ulp.name(),
            dtype: dtype.to_string(),
        })?;
        let parsed = ulp::parse(layout, &delta[1..], len)?;
        Ok(parsed
            .chunk_bytes()
            .is_some()
            .then_some(Self { parsed, level }))
    }

    /// Bytes per chunk: every piece starts at a multiple of it.
    pub fn chunk_bytes(&self) -> usize {
        self.parsed.chunk_bytes().unwrap_or(1)
    }

    /// The tensor's length in bytes.
    pub fn len(&self) -> usize {
        self.parsed.len()
    }

    /// Whether the tensor is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes bytes `offset..offset + out.len()` of the tensor from `base`, the same
    /// bytes of the base, on this thread: `offset` a multiple of [`Self::chunk_bytes`],
    /// `out` whole chunks or reaching the end of the tensor ([`DeltaError::Range`]
    /// otherwise). The bytes are those [`decode`] gives there, or an error ([`decode`]
    /// reports the first damaged chunk of the whole delta; this, the first of the piece).
    pub fn decode_at(&self, offset: usize, base: &[u8], out: &mut [u8]) -> Result<(), DeltaError> {
        let p = &self.parsed;
        match p.width() {
            1 => p.decode_range::<1>(self.level, offset, base, out),
            2 => p.decode_range::<2>(self.level, offset, base, out),
            4 => p.decode_range::<4>(self.level, offset, base, out),
            _ => p.decode_range::<8>(self.level, offset, base, out),
        }
    }

    /// [`Self::decode_at`] with the base's bytes in `buf`, overwritten with the tensor's:
    /// a caller that decodes a piece of the base into `buf` applies the delta there while
    /// the piece is in cache, with no second buffer. The bytes are those
    /// [`Self::decode_at`] gives, or the same error (after which `buf` holds some base
    /// and some decoded bytes).
    pub fn decode_at_in_place(&self, offset: usize, buf: &mut [u8]) -> Result<(), DeltaError> {
        let p = &self.parsed;
        match p.width() {
            1 => p.decode_range_in_place::<1>(self.level, offset, buf),
            2 => p.decode_range_in_place::<2>(self.level, offset, buf),
            4 => p.decode_range_in_place::<4>(self.level, offset, buf),
            _ => p.decode_range_in_place::<8>(self.level, offset, buf),
        }
    }
}

/// The method a delta was coded with.
pub fn method_of(delta: &[u8]) -> Result<DeltaMethod, DeltaError> {
    let id = *delta.first().ok_or(DeltaError::UnknownMethod(0))?;
    DeltaMethod::from_id(id).ok_or(DeltaError::UnknownMethod(id))
}

/// Decodes `delta` against `base` into `out` (same length as `base`).
pub fn decode(dtype: &Dtype, base: &[u8], delta: &[u8], out: &mut [u8]) -> Result<(), DeltaError> {
    decode_at_level(
        crate::cpu::simd_level(),
        dtype,
        Base::Separate(base),
        delta,
        out,
    )
}

/// [`decode`] with the base in `buf`, which ends holding the target: no second
/// tensor-sized buffer (the store decodes the base straight into the output file). On
/// error the bytes of `buf` are unspecified: the caller discards them.
pub fn decode_in_place(dtype: &Dtype, buf: &mut [u8], delta: &[u8]) -> Result<(), DeltaError> {
    decode_at_level(crate::cpu::simd_level(), dtype, Base::InOut, delta, buf)
}

#[cfg(test)]
mod tests;
