//! The subcommands, one module each, and what they share.

pub mod bench;
pub mod completions;
pub mod gpu_bench;
pub mod inspect;
pub mod pack;
pub mod store;
pub mod tree;
pub mod unpack;
pub mod verify;

use std::fs::{File, Metadata, Permissions};
use std::io::{self, Write};
use std::path::Path;
use std::time::Instant;

use mcodec::container::{Archive, ContainerError};

use crate::error::{Classify, CliError, Context};
use crate::fsutil::{self, Input};
use crate::Global;

/// Writes `text` to stdout. A closed pipe (`mcodec inspect x | head`) is not an error.
pub fn emit(text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(CliError::plain(
            e.failure(),
            format!("writing to stdout: {e}"),
        )),
        _ => Ok(()),
    }
}

/// Where an `.mcz` comes from: a file, opened for the archive's own map (opening reads
/// only the pages it parses, and `prefetch` queues the reads of the rest), or standard
/// input ([`fsutil::STDIO`]), read whole.
pub enum PackedInput {
    /// A regular file and its metadata.
    File(File, Metadata),
    /// Everything standard input held.
    Stdin(Input),
}

impl PackedInput {
    /// Opens `path`, or reads standard input for [`fsutil::STDIO`].
    pub fn open(path: &Path) -> Result<Self, CliError> {
        if fsutil::is_stdio(path) {
            return Ok(Self::Stdin(fsutil::read_stdin()?));
        }
        let file = fsutil::open_input(path)?;
        let meta = file.metadata().at(path)?;
        Ok(Self::File(file, meta))
    }

    /// The archive; errors name `path` as [`fsutil::input_name`] does.
    pub fn archive(&self, path: &Path) -> Result<Archive<'_>, CliError> {
        match self {
            Self::File(file, _) => Archive::open_file(file).at(path),
            Self::Stdin(bytes) => Archive::open(bytes).at(fsutil::stdin_name()),
        }
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Self::File(_, meta) => meta.len(),
            Self::Stdin(bytes) => bytes.len() as u64,
        }
    }

    /// The permissions an output made from it takes: the file's, or
    /// [`fsutil::new_file_permissions`] for standard input.
    pub fn permissions(&self) -> Option<Permissions> {
        match self {
            Self::File(_, meta) => Some(meta.permissions()),
            Self::Stdin(_) => fsutil::new_file_permissions(),
        }
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

/// Prints, unless `--quiet`, the line with which `pack` and `unpack` of a single file end
/// (`input` and `out` as messages name them, [`fsutil::input_name`] and
/// [`fsutil::output_name`]): `INPUT -> OUTPUT: ` the sizes (see [`sizes`]) and the rate since `start`, which counts
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
    let text = format!(
        "{} -> {}: {}, {:.1} MB/s\n",
        input.display(),
        out.display(),
        sizes(from, to, packing),
        mb_per_s(original, start.elapsed().as_secs_f64()),
    );
    // Where the data go to standard output, the line goes to stderr, apart from them.
    if out == fsutil::stdout_name() {
        eprint!("{text}");
        Ok(())
    } else {
        emit(&text)
    }
}
