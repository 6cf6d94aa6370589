//! `pack` and `unpack` of files and directories, by the CLI's own code: the same atomic
//! outputs, overwrite rules and checks as `mcodec pack` / `mcodec unpack`; and the whole
//! command line for the console script.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::ValueEnum;
use mcodec_cli::{execute, Cli, CliError, Command, Failure, Global, Level, PackArgs, UnpackArgs};
use pyo3::prelude::*;

use crate::errors::{error, Kind};
use crate::pool;

/// The names of the compression levels, in the order `mcodec pack --help` lists them:
/// the CLI's `Level` is the one list, exported to Python as `_native.LEVELS`.
pub(crate) fn level_names() -> Vec<String> {
    Level::value_variants()
        .iter()
        .filter_map(|l| l.to_possible_value())
        .map(|v| v.get_name().to_owned())
        .collect()
}

/// The compression level named by the Python API's `level` argument.
pub(crate) fn level_of(level: &str) -> PyResult<Level> {
    Level::from_str(level, false).map_err(|_| {
        let names: Vec<String> = level_names().iter().map(|n| format!("{n:?}")).collect();
        error(
            Kind::Argument,
            format!("level {level:?}: expected one of {}", names.join(", ")),
        )
    })
}

/// A CLI failure as the matching `mcodec.Error` subclass, chosen by its kind.
pub(crate) fn cli_error(e: CliError) -> PyErr {
    let kind = match e.kind {
        Failure::Usage | Failure::Invalid => Kind::Argument,
        // As `errors::container` classes `ContainerError::Unsupported`: the caller asked
        // for something the format cannot hold.
        Failure::Unsupported => Kind::Argument,
        Failure::Missing => Kind::Missing,
        Failure::Exists => Kind::Exists,
        Failure::Corrupt => Kind::Corrupt,
        Failure::Limit => Kind::Limit,
        // `FileError` is the general class of a failed file operation, as before kinds.
        Failure::Io | Failure::Other => Kind::File,
    };
    let message = e
        .to_string()
        .replace("(use -f to overwrite)", "(pass force=True to overwrite)");
    let message = message.strip_prefix("mcodec: ").unwrap_or(&message);
    error(kind, message)
}

fn run(py: Python<'_>, command: Command, force: bool, threads: Option<usize>) -> PyResult<()> {
    let cli = Cli {
        global: Global {
            threads: None,
            force,
            quiet: true,
        },
        command,
    };
    py.detach(|| pool::run(threads, || execute(&cli)))?
        .map_err(cli_error)
}

/// `mcodec pack SRC -o DST`: a safetensors file, or a directory with every
/// `*.safetensors` packed and every other file copied.
#[pyfunction]
#[pyo3(signature = (src, dst, force=false, level="default", chunk_log2=None, threads=None))]
pub fn pack(
    py: Python<'_>,
    src: PathBuf,
    dst: PathBuf,
    force: bool,
    level: &str,
    chunk_log2: Option<u8>,
    threads: Option<usize>,
) -> PyResult<()> {
    let level = level_of(level)?;
    if let Some(c) = chunk_log2 {
        if !mcodec::tensor::CHUNK_LOG2_RANGE.contains(&c) {
            let range = mcodec::tensor::CHUNK_LOG2_RANGE;
            return Err(error(
                Kind::Argument,
                format!(
                    "chunk_log2 {c} is outside {}..={}",
                    range.start(),
                    range.end()
                ),
            ));
        }
    }
    let args = PackArgs {
        input: src,
        output: Some(dst),
        level,
        chunk_log2,
        dtype: None,
        rm: false,
    };
    run(py, Command::Pack(args), force, threads)
}

/// `mcodec unpack SRC -o DST`: an `.mcz` file or a packed directory back to the original
/// bytes, every checksum verified.
#[pyfunction]
#[pyo3(signature = (src, dst, force=false, threads=None))]
pub fn unpack(
    py: Python<'_>,
    src: PathBuf,
    dst: PathBuf,
    force: bool,
    threads: Option<usize>,
) -> PyResult<()> {
    let args = UnpackArgs {
        input: src,
        output: Some(dst),
        rm: false,
    };
    run(py, Command::Unpack(args), force, threads)
}

/// The whole `mcodec` command line (`argv`, the program name first), as the binary runs
/// it: output on this process's stdout and stderr, the exit status returned. For the
/// package's `mcodec` console script and `python -m mcodec`, which do nothing else, since
/// it installs signal handlers and builds rayon's global pool for the process.
#[pyfunction]
pub fn cli_main(py: Python<'_>, argv: Vec<OsString>) -> u8 {
    py.detach(|| mcodec_cli::process::main(argv))
}
