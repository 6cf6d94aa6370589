//! `save_file`: tensors in memory to an `.mcz` file that unpacks to exactly the bytes
//! `safetensors` would write for them, without first building that file in memory.

use std::path::PathBuf;

use mcodec::container::{pack_parts, PackOptions};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde_json::{Map, Value};

use crate::errors::{error, Kind};
use crate::pool;

/// safetensors' dtypes in its own order (the `Dtype` enum of the reference
/// implementation): files list tensors by this order, largest first, then by name.
const DTYPE_ORDER: [&str; 20] = [
    "BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16",
    "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64",
];

/// One tensor to save: name, safetensors dtype name, shape, address and length of its
/// bytes (C-contiguous, little-endian).
type Tensor = (String, String, Vec<u64>, usize, usize);

/// The safetensors header (8-byte length, JSON, space padding to a multiple of 8) for
/// `tensors` and `metadata`, laid out as the reference implementation lays it out, and
/// the order in which the tensors' bytes follow it.
fn header(
    tensors: &[(String, String, Vec<u64>, usize)],
    metadata: Option<Vec<(String, String)>>,
) -> PyResult<(Vec<u8>, Vec<usize>)> {
    let rank = |dtype: &str| {
        DTYPE_ORDER.iter().position(|d| *d == dtype).ok_or_else(|| {
            error(
                Kind::Argument,
                format!("unknown safetensors dtype {dtype:?}"),
            )
        })
    };
    let mut order = (0..tensors.len()).collect::<Vec<_>>();
    let ranks = tensors
        .iter()
        .map(|t| rank(&t.1))
        .collect::<PyResult<Vec<_>>>()?;
    order.sort_by(|&a, &b| {
        ranks[b]
            .cmp(&ranks[a])
            .then_with(|| tensors[a].0.cmp(&tensors[b].0))
    });
    let mut json = Map::new();
    if let Some(metadata) = metadata {
        let m = metadata
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect::<Map<_, _>>();
        json.insert("__metadata__".into(), Value::Object(m));
    }
    let mut at = 0u64;
    for &i in &order {
        let (name, dtype, shape, len) = &tensors[i];
        if name == "__metadata__" || json.contains_key(name) {
            return Err(error(
                Kind::Argument,
                format!("tensor name {name:?} is reserved or repeated"),
            ));
        }
        let end = at + *len as u64;
        json.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [at, end]}),
        );
        at = end;
    }
    let mut text = serde_json::to_vec(&Value::Object(json))
        .map_err(|e| error(Kind::Argument, format!("header: {e}")))?;
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&text);
    Ok((bytes, order))
}

/// The safetensors header `save_file` writes for `tensors` (`(name, dtype, shape,
/// nbytes)`) and `metadata`, and the order of the tensors after it.
#[pyfunction]
#[pyo3(signature = (tensors, metadata=None))]
pub fn safetensors_header<'py>(
    py: Python<'py>,
    tensors: Vec<(String, String, Vec<u64>, usize)>,
    metadata: Option<Vec<(String, String)>>,
) -> PyResult<(Bound<'py, PyBytes>, Vec<usize>)> {
    let (bytes, order) = header(&tensors, metadata)?;
    Ok((PyBytes::new(py, &bytes), order))
}

/// What packing takes: the safetensors header, each tensor's bytes in file order, and
/// the options.
type Prepared<'a> = (Vec<u8>, Vec<&'a [u8]>, PackOptions);

/// What packing `tensors` takes (see [`Prepared`]).
fn prepare<'t>(
    tensors: &'t [Tensor],
    metadata: Option<Vec<(String, String)>>,
    level: &str,
    chunk_log2: Option<u8>,
) -> PyResult<Prepared<'t>> {
    let level = crate::files::level_of(level)?;
    let described = tensors
        .iter()
        .map(|(n, d, s, _, len)| (n.clone(), d.clone(), s.clone(), *len))
        .collect::<Vec<_>>();
    let (head, order) = header(&described, metadata)?;
    let opts = PackOptions::new().encode(level.options(chunk_log2));
    let parts = order
        .iter()
        .map(|&i| {
            let (_, _, _, address, len) = tensors[i];
            if len == 0 {
                Ok(&[][..])
            } else if address == 0 {
                Err(error(
                    Kind::Argument,
                    format!("tensor {:?}: null data", tensors[i].0),
                ))
            } else {
                // SAFETY: the caller guarantees (see `save_file`, `save_bytes`) that
                // `address` points to `len` readable bytes that stay alive and unchanged
                // during the call; it is not null (checked) and bytes need no alignment.
                Ok(unsafe { std::slice::from_raw_parts(address as *const u8, len) })
            }
        })
        .collect::<PyResult<Vec<&[u8]>>>()?;
    Ok((head, parts, opts))
}

/// Packs `tensors` into the `.mcz` file `path`: written under a temporary name and renamed
/// into place when complete; an existing `path` is replaced only with `force`.
///
/// The addresses must be readable memory of the given lengths that stays alive and
/// unchanged until this returns (the Python caller holds the tensors).
#[pyfunction]
#[pyo3(signature = (path, tensors, metadata=None, force=false, level="default", chunk_log2=None, threads=None))]
#[allow(clippy::too_many_arguments)]
pub fn save_file(
    py: Python<'_>,
    path: PathBuf,
    tensors: Vec<Tensor>,
    metadata: Option<Vec<(String, String)>>,
    force: bool,
    level: &str,
    chunk_log2: Option<u8>,
    threads: Option<usize>,
) -> PyResult<()> {
    let (head, parts, opts) = prepare(&tensors, metadata, level, chunk_log2)?;
    let perms = mcodec_cli::new_file_permissions();
    py.detach(|| {
        pool::run(threads, || {
            mcodec_cli::write_atomic(&path, force, perms, |w| {
                pack_parts(&head, &parts, &opts, w, &|_| {})
                    .map_err(|e| mcodec_cli::CliError::at(&path, e))
            })
        })
    })?
    .map(|_| ())
    .map_err(crate::files::cli_error)
}

/// Packs `tensors` into an `.mcz` file returned as bytes (as `save_file`, in memory).
///
/// The addresses must be readable memory of the given lengths that stays alive and
/// unchanged until this returns (the Python caller holds the tensors).
#[pyfunction]
#[pyo3(signature = (tensors, metadata=None, level="default", threads=None))]
pub fn save_bytes<'py>(
    py: Python<'py>,
    tensors: Vec<Tensor>,
    metadata: Option<Vec<(String, String)>>,
    level: &str,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyBytes>> {
    let (head, parts, opts) = prepare(&tensors, metadata, level, None)?;
    let mut out = Vec::new();
    py.detach(|| {
        pool::run(threads, || {
            pack_parts(&head, &parts, &opts, &mut out, &|_| {})
        })
    })?
    .map_err(|e| error(Kind::Argument, format!("packing to memory: {e}")))?;
    Ok(PyBytes::new(py, &out))
}
