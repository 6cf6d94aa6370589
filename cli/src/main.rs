//! `mcodec`: pack, unpack, inspect, verify and benchmark `.mcz` files.

use std::process::ExitCode;

use clap::Parser;
use mcodec_cli::{execute, Cli, CliError};

fn run(cli: Cli) -> Result<(), CliError> {
    // The pool first when its size is asked for (nothing to clean up yet if it fails).
    if let Some(n) = cli.global.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(usize::from(n))
            .build_global()
            .map_err(|e| CliError::plain(format!("cannot start {n} threads: {e}")))?;
    }
    // Then, before any output exists: an interrupted command removes its temporaries.
    // The signal thread starts rayon's global pool (reading the CPU quota, starting a
    // worker per core: ~0.3–0.5 ms) while this thread goes on parsing and opening (for
    // a `store get`, its first use of the pool is after the manifest is read).
    mcodec_cli::install_signal_handlers(|| {
        // Named here: threads take the name of the thread that starts them. Built
        // already (`-j`) is fine: then this does nothing.
        let _ = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("mcodec-{i}"))
            .build_global();
    })?;
    // A bad MCODEC_SIMD request stops the tool here, before any work, with one line
    // (the library alone would only warn and fall back).
    let simd = mcodec::simd::simd_level_from_env().map_err(|e| CliError {
        code: mcodec_cli::EXIT_USAGE,
        ..CliError::plain(e)
    })?;
    mcodec::simd::set_simd_level(simd).map_err(CliError::plain)?;
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
