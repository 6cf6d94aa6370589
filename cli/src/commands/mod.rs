//! The subcommands, one module each, and what they share.

pub mod bench;
pub mod gpu_bench;
pub mod inspect;
pub mod pack;
pub mod store;
pub mod tree;
pub mod unpack;
pub mod verify;

use std::io::{self, Write};
use std::path::Path;
use std::time::Instant;

use mcodec::container::ContainerError;

use crate::error::CliError;
use crate::Global;

/// Writes `text` to stdout. A closed pipe (`mcodec inspect x | head`) is not an error.
pub fn emit(text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(CliError::plain(format!("writing to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

/// Blames a container error on the right file: failed writes on the output, everything
/// else (bad or corrupt data) on the input.
pub fn blame(e: ContainerError, input: &Path, output: &Path) -> CliError {
    match e {
        ContainerError::Io(e) => CliError::at(output, e),
        e => CliError::at(input, e),
    }
}

/// Throughput in MB/s (10^6 bytes per second); zero for an unmeasurably short time.
pub fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / 1e6 / secs
    } else {
        0.0
    }
}

/// `packed / original`, or `None` for an empty original.
pub fn ratio(packed: u64, original: u64) -> Option<f64> {
    (original > 0).then(|| packed as f64 / original as f64)
}

/// A size change: `1000 -> 600 bytes (60.00%)` when packing, without the percentage
/// when unpacking.
pub fn sizes(from: u64, to: u64, packing: bool) -> String {
    match ratio(to, from).filter(|_| packing) {
        Some(r) => format!("{from} -> {to} bytes ({:.2}%)", r * 100.0),
        None => format!("{from} -> {to} bytes"),
    }
}

/// Prints, unless `--quiet`, the line with which `pack` and `unpack` of a single file end:
/// `INPUT -> OUTPUT: ` the sizes (see [`sizes`]) and the rate since `start`, which counts
/// the original's bytes: `from` when packing, `to` when unpacking.
pub fn file_done(
    g: &Global,
    input: &Path,
    out: &Path,
    from: u64,
    to: u64,
    packing: bool,
    start: Instant,
) -> Result<(), CliError> {
    if g.quiet {
        return Ok(());
    }
    let original = if packing { from } else { to };
    emit(&format!(
        "{} -> {}: {}, {:.1} MB/s\n",
        input.display(),
        out.display(),
        sizes(from, to, packing),
        mb_per_s(original, start.elapsed().as_secs_f64()),
    ))
}
