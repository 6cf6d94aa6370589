//! Element types as named in safetensors headers.

/// A tensor element type. Unknown names are kept as [`Dtype::Other`] and coded as bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// `BOOL`, one byte.
    Bool,
    /// `U8`.
    U8,
    /// `I8`.
    I8,
    /// `U16`.
    U16,
    /// `I16`.
    I16,
    /// `U32`.
    U32,
    /// `I32`.
    I32,
    /// `U64`.
    U64,
    /// `I64`.
    I64,
    /// `F16`: IEEE half precision.
    F16,
    /// `BF16`: bfloat16.
    BF16,
    /// `F32`.
    F32,
    /// `F64`.
    F64,
    /// `F8_E4M3`: FP8 with 4 exponent and 3 mantissa bits.
    F8E4M3,
    /// `F8_E5M2`: FP8 with 5 exponent and 2 mantissa bits.
    F8E5M2,
    /// Any other name; its element size is unknown, so it is coded as opaque bytes.
    Other(String),
}

impl Dtype {
    /// Parses a safetensors dtype name.
    pub fn parse(name: &str) -> Self {
        match name {
            "BOOL" => Self::Bool,
            "U8" => Self::U8,
            "I8" => Self::I8,
            "U16" => Self::U16,
            "I16" => Self::I16,
            "U32" => Self::U32,
            "I32" => Self::I32,
            "U64" => Self::U64,
            "I64" => Self::I64,
            "F16" => Self::F16,
            "BF16" => Self::BF16,
            "F32" => Self::F32,
            "F64" => Self::F64,
            "F8_E4M3" => Self::F8E4M3,
            "F8_E5M2" => Self::F8E5M2,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The safetensors name.
    pub fn name(&self) -> &str {
        match self {
            Self::Bool => "BOOL",
            Self::U8 => "U8",
            Self::I8 => "I8",
            Self::U16 => "U16",
            Self::I16 => "I16",
            Self::U32 => "U32",
            Self::I32 => "I32",
            Self::U64 => "U64",
            Self::I64 => "I64",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::F32 => "F32",
            Self::F64 => "F64",
            Self::F8E4M3 => "F8_E4M3",
            Self::F8E5M2 => "F8_E5M2",
            Self::Other(name) => name,
        }
    }

    /// Bytes per element, if known.
    pub fn element_size(&self) -> Option<usize> {
        Some(match self {
            Self::Bool | Self::U8 | Self::I8 | Self::F8E4M3 | Self::F8E5M2 => 1,
            Self::U16 | Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
            Self::Other(_) => return None,
        })
    }

    /// Checks that a tensor of this dtype and `shape` is `len` bytes: the one shape × size
    /// check of every reader (safetensors headers, `.mcz` indexes, store objects and
    /// manifests). Dtypes of unknown element size accept any length.
    pub fn check_shape(&self, shape: &[u64], len: u64) -> Result<(), ShapeError> {
        if let Some(size) = self.element_size() {
            let bytes = shape
                .iter()
                .try_fold(size as u64, |acc, &d| acc.checked_mul(d));
            if bytes != Some(len) {
                return Err(ShapeError {
                    shape: shape.to_vec(),
                    dtype: self.clone(),
                    len,
                    needs: bytes,
                });
            }
        }
        Ok(())
    }
}

/// A shape whose elements do not make a tensor's byte length.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("shape {shape:?} of {dtype} does not make {len} bytes")]
pub struct ShapeError {
    /// The shape.
    pub shape: Vec<u64>,
    /// The dtype.
    pub dtype: Dtype,
    /// The byte length given.
    pub len: u64,
    /// The bytes the shape needs (`None` when that overflows 64 bits).
    pub needs: Option<u64>,
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
