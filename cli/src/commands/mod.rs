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

use mcodec::container::ContainerError;

use crate::error::CliError;

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
