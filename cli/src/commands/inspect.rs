//! `mcodec inspect`: what is in an `.mcz` file and how well each tensor compressed.

use std::path::Path;

use mcodec::container::{Archive, SourceKind, TensorEntry};
use mcodec::tensor::TensorError;
use mcodec::Codec;
use mcodec::StreamKind;
use rayon::prelude::*;
use serde_json::{json, Value};

use super::{emit, ratio, PackedInput};
use crate::error::{Classify, CliError, Context, Failure};
use crate::fsutil;
use crate::{Global, InspectArgs};

/// One stream of a tensor as reported.
struct StreamRow {
    /// `rans`, `packed`, `const`, `zstd` or `stored`.
    kind: &'static str,
    /// Frequency tables of a rANS stream.
    tables: Option<usize>,
    /// Coded bytes.
    bytes: u64,
}

/// One tensor as reported.
struct Row<'a> {
    entry: &'a TensorEntry,
    elements: Option<u64>,
    exponent_entropy: Option<f64>,
    streams: Vec<StreamRow>,
}

impl Row<'_> {
    fn bits_per_weight(&self) -> Option<f64> {
        self.elements
            .filter(|&n| n > 0)
            .map(|n| self.entry.coded_len() as f64 * 8.0 / n as f64)
    }

    fn streams_text(&self) -> String {
        self.streams
            .iter()
            .map(|s| match s.tables {
                Some(t) => format!("{}({t})", s.kind),
                None => s.kind.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("+")
    }
}

/// Runs `inspect`.
pub fn run(a: &InspectArgs, _g: &Global) -> Result<(), CliError> {
    let file = &a.file;
    let source = PackedInput::open(file)?;
    let packed = source.len();
    let archive = source.archive(file)?;
    let file = fsutil::input_name(file);
    archive.prefetch();
    let index = archive.index();
    // The entropy figure decodes each exponent stream: worth doing in parallel.
    let rows = index
        .tensors
        .par_iter()
        .enumerate()
        .map(|(i, t)| row(&archive, i, t, file))
        .collect::<Result<Vec<_>, _>>()?;
    let text = if a.json {
        let mut s = serde_json::to_string_pretty(&to_json(file, &archive, &rows, packed))
            .map_err(|e| CliError::plain(Failure::Other, format!("formatting JSON: {e}")))?;
        s.push('\n');
        s
    } else {
        table(&archive, &rows, packed)
    };
    emit(&text)
}

fn row<'a>(
    archive: &Archive<'_>,
    i: usize,
    t: &'a TensorEntry,
    file: &Path,
) -> Result<Row<'a>, CliError> {
    let bad =
        |e: TensorError| CliError::at_kind(file, e.failure(), format!("tensor {:?}: {e}", t.name));
    let decoder = archive.tensor_decoder(i).at(file)?;
    let exponent_entropy = decoder.first_field_entropy().map_err(bad)?;
    let kinds = decoder.stream_kinds();
    let streams = t
        .streams
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let (kind, tables) = match (t.codec, kinds.get(k)) {
                (Codec::Stored, _) => ("stored", None),
                (Codec::Zstd, _) => ("zstd", None),
                (_, Some(StreamKind::Rans(n))) => ("rans", Some(*n)),
                (_, Some(StreamKind::Const)) => ("const", None),
                (_, Some(StreamKind::Packed)) => ("packed", None),
                (_, None) => ("?", None),
            };
            StreamRow {
                kind,
                tables,
                bytes: s.len,
            }
        })
        .collect();
    let elements = match t.dtype.element_size() {
        Some(size) => Some(t.original_len / size as u64),
        None => t.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d)),
    };
    Ok(Row {
        entry: t,
        elements,
        exponent_entropy,
        streams,
    })
}

/// A JSON number, or null where it is undefined.
fn num(x: Option<f64>) -> Value {
    x.filter(|v| v.is_finite()).map_or(Value::Null, Value::from)
}

fn to_json(file: &Path, archive: &Archive<'_>, rows: &[Row<'_>], packed: u64) -> Value {
    let index = archive.index();
    let tensors: Vec<Value> = rows
        .iter()
        .map(|r| {
            let t = r.entry;
            json!({
                "name": t.name,
                "dtype": t.dtype.name(),
                "shape": t.shape,
                "codec": t.codec.name(),
                "original_bytes": t.original_len,
                "coded_bytes": t.coded_len(),
                "elements": r.elements,
                "bits_per_weight": num(r.bits_per_weight()),
                "exponent_entropy": num(r.exponent_entropy),
                "streams": r.streams.iter().map(|s| {
                    let mut o = json!({"kind": s.kind, "bytes": s.bytes});
                    if let Some(n) = s.tables {
                        o["tables"] = n.into();
                    }
                    o
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "file": file.to_string_lossy(),
        "source": source_name(index.source),
        "original_bytes": index.original_len,
        "packed_bytes": packed,
        "ratio": num(ratio(packed, index.original_len)),
        "header_bytes": index.prefix.raw_len,
        "tensor_bytes": index.tensors.iter().map(|t| t.original_len).sum::<u64>(),
        "coded_tensor_bytes": index.tensors.iter().map(TensorEntry::coded_len).sum::<u64>(),
        "tensors": tensors,
    })
}

fn source_name(s: SourceKind) -> &'static str {
    match s {
        SourceKind::Safetensors => "safetensors",
        SourceKind::Raw => "raw",
    }
}

/// Shows control characters of untrusted names escaped, so they cannot break the table
/// or drive the terminal.
fn printable(s: &str) -> String {
    if s.chars().any(char::is_control) {
        s.escape_debug().to_string()
    } else {
        s.to_owned()
    }
}

fn table(archive: &Archive<'_>, rows: &[Row<'_>], packed: u64) -> String {
    const HEAD: [&str; 9] = [
        "NAME", "DTYPE", "SHAPE", "CODEC", "ORIGINAL", "CODED", "BITS/W", "EXP-H", "STREAMS",
    ];
    // Numeric columns are right-aligned.
    const RIGHT: [bool; 9] = [false, false, false, false, true, true, true, true, false];
    let fmt = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{v:.3}"));
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            let t = r.entry;
            let shape = t
                .shape
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            [
                printable(&t.name),
                printable(t.dtype.name()),
                format!("[{shape}]"),
                t.codec.name().to_owned(),
                t.original_len.to_string(),
                t.coded_len().to_string(),
                fmt(r.bits_per_weight()),
                fmt(r.exponent_entropy),
                r.streams_text(),
            ]
        })
        .collect();
    let mut width = HEAD.map(str::len);
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cols: &[String; 9]| {
        let mut l = String::new();
        for (k, s) in cols.iter().enumerate() {
            let pad = " ".repeat(width[k] - s.chars().count());
            if k > 0 {
                l.push_str("  ");
            }
            if RIGHT[k] {
                l.push_str(&pad);
                l.push_str(s);
            } else {
                l.push_str(s);
                if k + 1 < cols.len() {
                    l.push_str(&pad);
                }
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&HEAD.map(str::to_owned));
    for c in &cells {
        line(c);
    }
    let index = archive.index();
    let tensor_bytes: u64 = index.tensors.iter().map(|t| t.original_len).sum();
    let coded: u64 = index.tensors.iter().map(TensorEntry::coded_len).sum();
    let r = ratio(packed, index.original_len).map_or("-".to_owned(), |r| format!("{r:.4}"));
    out.push_str(&format!(
        "\n{} tensors ({}), header {} bytes\ntensor data  {tensor_bytes} -> {coded} bytes\nfile         {} -> {packed} bytes, ratio {r}\n",
        index.tensors.len(),
        source_name(index.source),
        index.prefix.raw_len,
        index.original_len,
    ));
    out
}
