//! `mcodec`: pack, unpack, inspect, verify and benchmark `.mcz` files.

use std::process::ExitCode;

use clap::Parser;
use mcodec_cli::{execute, Cli, CliError};

fn run(cli: Cli) -> Result<(), CliError> {
    // First of all: an interrupted command removes its temporaries.
    mcodec_cli::install_signal_handlers()?;
    // A bad MCODEC_SIMD request stops the tool here, before any work, with one line
    // (the library alone would only warn and fall back).
    let simd = mcodec::simd::simd_level_from_env().map_err(|e| CliError {
        code: mcodec_cli::EXIT_USAGE,
        ..CliError::plain(e)
    })?;
    mcodec::simd::set_simd_level(simd).map_err(CliError::plain)?;
    if let Some(n) = cli.global.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(usize::from(n))
            .build_global()
            .map_err(|e| CliError::plain(format!("cannot start {n} threads: {e}")))?;
    }
    execute(&cli)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(u8::try_from(e.code).unwrap_or(1))
        }
    }
}
