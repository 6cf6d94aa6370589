//! Strict safetensors header parsing (FORMAT.md §2).
//!
//! Everything is validated before it is trusted: the header length against a cap and the
//! file size, each tensor's element count with checked arithmetic, and the data offsets,
//! which must tile the data section exactly (sorted, no gap, no overlap, ending at EOF).

use crate::dtype::Dtype;

/// Largest header accepted, as in the reference implementation.
pub const MAX_HEADER_LEN: u64 = 100 << 20;
/// Most dimensions a tensor may have.
pub const MAX_RANK: usize = 64;

/// One tensor as the header describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape (empty for a 0-dim scalar).
    pub shape: Vec<u64>,
    /// Absolute byte range in the file.
    pub range: std::ops::Range<u64>,
}

/// A parsed safetensors file: the header's byte length (including its 8-byte length
/// prefix) and the tensors in file order.
#[derive(Clone, Debug)]
pub struct Header {
    /// Bytes before the data section: 8 + the declared header length.
    pub prefix_len: u64,
    /// Tensors sorted by offset.
    pub tensors: Vec<TensorInfo>,
}

/// Errors in a safetensors header.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderError {
    /// The file is shorter than the 8-byte length prefix.
    #[error("file of {0} bytes is too short for a safetensors header")]
    TooShort(u64),
    /// The declared header length is over the cap or past the end of the file.
    #[error("header length {len} exceeds {limit} (file is {file_len} bytes)")]
    HeaderLength {
        /// Declared length.
        len: u64,
        /// Largest allowed here.
        limit: u64,
        /// File size.
        file_len: u64,
    },
    /// The header is not valid UTF-8 JSON of the expected shape.
    #[error("header is not valid JSON: {0}")]
    Json(String),
    /// A tensor entry is malformed.
    #[error("tensor {name:?}: {problem}")]
    Tensor {
        /// Tensor name.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// The tensors do not tile the data section.
    #[error("data offsets do not tile the data section: {0}")]
    Layout(String),
}

/// Parses and validates the header of a safetensors file given its first bytes (at least
/// the whole header) and its total length.
pub fn parse(bytes: &[u8], file_len: u64) -> Result<Header, HeaderError> {
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or(HeaderError::TooShort(file_len))?;
    let len = u64::from_le_bytes(len_bytes);
    let limit = MAX_HEADER_LEN.min(file_len.saturating_sub(8));
    if len > limit || len as usize > bytes.len() - 8 {
        return Err(HeaderError::HeaderLength {
            len,
            limit,
            file_len,
        });
    }
    let json = &bytes[8..8 + len as usize];
    if json.first() != Some(&b'{') {
        return Err(HeaderError::Json("header does not start with '{'".into()));
    }
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| HeaderError::Json(e.to_string()))?;
    let map = value
        .as_object()
        .ok_or_else(|| HeaderError::Json("header is not an object".into()))?;
    let prefix_len = 8 + len;
    let data_len = file_len - prefix_len;
    let mut tensors = Vec::with_capacity(map.len());
    for (name, entry) in map {
        if name == "__metadata__" {
            let ok = entry
                .as_object()
                .is_some_and(|m| m.values().all(|v| v.is_string()));
            if !ok {
                return Err(HeaderError::Json(
                    "__metadata__ is not a map of strings".into(),
                ));
            }
            continue;
        }
        tensors.push(parse_entry(name, entry, prefix_len, data_len)?);
    }
    tensors.sort_by_key(|t| (t.range.start, t.range.end));
    let mut at = prefix_len;
    for t in &tensors {
        if t.range.start != at {
            let what = if t.range.start < at {
                "overlaps the previous tensor"
            } else {
                "leaves a gap"
            };
            return Err(HeaderError::Layout(format!(
                "tensor {:?} starts at data offset {} but the previous one ends at {}: it {what}",
                t.name,
                t.range.start - prefix_len,
                at - prefix_len
            )));
        }
        at = t.range.end;
    }
    if at != file_len {
        return Err(HeaderError::Layout(format!(
            "tensors end at data offset {} but the data section is {data_len} bytes",
            at - prefix_len
        )));
    }
    Ok(Header {
        prefix_len,
        tensors,
    })
}

fn parse_entry(
    name: &str,
    entry: &serde_json::Value,
    prefix_len: u64,
    data_len: u64,
) -> Result<TensorInfo, HeaderError> {
    let bad = |problem: String| HeaderError::Tensor {
        name: name.to_owned(),
        problem,
    };
    let obj = entry
        .as_object()
        .ok_or_else(|| bad("entry is not an object".into()))?;
    let dtype = obj
        .get("dtype")
        .and_then(|d| d.as_str())
        .ok_or_else(|| bad("missing string 'dtype'".into()))?;
    let dtype = Dtype::parse(dtype);
    let shape_json = obj
        .get("shape")
        .and_then(|s| s.as_array())
        .ok_or_else(|| bad("missing array 'shape'".into()))?;
    if shape_json.len() > MAX_RANK {
        return Err(bad(format!("rank {} exceeds {MAX_RANK}", shape_json.len())));
    }
    let shape: Vec<u64> = shape_json
        .iter()
        .map(|d| {
            d.as_u64()
                .ok_or_else(|| bad(format!("shape entry {d} is not an unsigned integer")))
        })
        .collect::<Result<_, _>>()?;
    let offsets = obj
        .get("data_offsets")
        .and_then(|o| o.as_array())
        .filter(|o| o.len() == 2)
        .ok_or_else(|| bad("missing 'data_offsets' pair".into()))?;
    let (begin, end) = match (offsets[0].as_u64(), offsets[1].as_u64()) {
        (Some(b), Some(e)) => (b, e),
        _ => return Err(bad("data_offsets are not unsigned integers".into())),
    };
    if begin > end || end > data_len {
        return Err(bad(format!(
            "data_offsets [{begin}, {end}] outside the {data_len}-byte data section"
        )));
    }
    if let Err(e) = dtype.check_shape(&shape, end - begin) {
        return Err(bad(match e.needs {
            None => format!("shape {shape:?} overflows"),
            Some(bytes) => format!(
                "shape {shape:?} of {dtype} needs {bytes} bytes, data_offsets give {}",
                end - begin
            ),
        }));
    }
    Ok(TensorInfo {
        name: name.to_owned(),
        dtype,
        shape,
        range: prefix_len + begin..prefix_len + end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data_len: usize) -> Vec<u8> {
        let mut f = (header.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(header.as_bytes());
        f.resize(f.len() + data_len, 0);
        f
    }

    fn check(header: &str, data_len: usize) -> Result<Header, HeaderError> {
        let f = file(header, data_len);
        parse(&f, f.len() as u64)
    }

    #[test]
    fn valid_header_parses_in_offset_order() {
        let h = check(
            r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[2,2],"data_offsets":[4,12]},"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"s":{"dtype":"F32","shape":[],"data_offsets":[12,16]},"e":{"dtype":"F16","shape":[0,3],"data_offsets":[16,16]}}  "#,
            16,
        )
        .unwrap();
        let names: Vec<&str> = h.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "s", "e"]);
    }

    #[test]
    fn hostile_headers_are_refused() {
        let t = |o: &str| format!(r#"{{"t":{{"dtype":"U8","shape":[4],"data_offsets":{o}}}}}"#);
        assert!(
            matches!(check(&t("[0,4]"), 5), Err(HeaderError::Layout(_))),
            "gap at end"
        );
        assert!(
            matches!(check(&t("[1,5]"), 5), Err(HeaderError::Layout(_))),
            "gap at start"
        );
        assert!(matches!(
            check(&t("[0,8]"), 4),
            Err(HeaderError::Tensor { .. })
        ));
        let overlap = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#;
        assert!(matches!(check(overlap, 6), Err(HeaderError::Layout(_))));
        let overflow =
            r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}"#;
        assert!(matches!(
            check(overflow, 4),
            Err(HeaderError::Tensor { .. })
        ));
        assert!(matches!(check("not json", 0), Err(HeaderError::Json(_))));
        assert!(matches!(check("[1,2]", 0), Err(HeaderError::Json(_))));
        assert!(matches!(
            check(r#"{"__metadata__":{"a":1}}"#, 0),
            Err(HeaderError::Json(_))
        ));
        let mut f = file("{}", 0);
        f[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(
            parse(&f, f.len() as u64),
            Err(HeaderError::HeaderLength { .. })
        ));
        assert!(matches!(parse(&f[..5], 5), Err(HeaderError::TooShort(5))));
    }
}
