//! `mcodec`: pack, unpack, inspect, verify and benchmark `.mcz` files.

use std::process::ExitCode;

use clap::Parser;
use mcodec_cli::{execute, Cli, CliError};

fn run(cli: Cli) -> Result<(), CliError> {
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
