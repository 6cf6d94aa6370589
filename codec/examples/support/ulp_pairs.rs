//! The tensors the ULP delta examples code, included with
//! `#[path = "support/ulp_pairs.rs"] mod ulp_pairs;`.

use std::ops::Range;

use mcodec::delta::DeltaMethod;
use mcodec::safetensors::{self, HeaderError};
use mcodec::Dtype;

/// A fine-tune's tensor and its base tensor: the dtype, the base's bytes in the base file
/// and the fine-tune's bytes in the fine-tune's file.
pub type Pair = (Dtype, Range<usize>, Range<usize>);

/// The tensors of the safetensors file `ft`, in its order, that the ULP method codes and
/// that `base` has a tensor of the same name, dtype and shape for.
pub fn ulp_pairs(base: &[u8], ft: &[u8]) -> Result<Vec<Pair>, HeaderError> {
    let bh = safetensors::parse(base, base.len() as u64)?;
    let fh = safetensors::parse(ft, ft.len() as u64)?;
    let r = |r: &Range<u64>| r.start as usize..r.end as usize;
    let mut pairs = Vec::new();
    for t in &fh.tensors {
        if let Some(b) = bh
            .tensors
            .iter()
            .find(|b| b.name == t.name && b.dtype == t.dtype && b.shape == t.shape)
        {
            if DeltaMethod::Ulp.supports(&t.dtype) {
                pairs.push((t.dtype.clone(), r(&b.range), r(&t.range)));
            }
        }
    }
    Ok(pairs)
}
