//! The `mcodec` process: parse the command line, set up the pool, signal handlers and
//! SIMD path, run the command, and turn the outcome into an exit status. Shared by the
//! binary and the Python package's `mcodec` console script, so that both behave alike.

use std::ffi::OsString;

use clap::Parser;

use crate::error::{Classify, CliError, Failure};
use crate::{execute, heap, Cli, Command};

/// Runs the `mcodec` command line `args` (the program name first) as a whole process
/// does, printing help, errors and summaries, and returns the exit status. Meant to be
/// the only thing its process does: it sets the allocator's thresholds for `pack` and
/// `store`, builds rayon's global pool and installs signal handlers that remove an
/// interrupted command's temporaries.
pub fn main<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with status 0, usage errors to stderr.
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(1);
        }
    };
    // Before any other thread exists; where it was measured to pay (`heap`).
    if matches!(cli.command, Command::Pack(_) | Command::Store(_)) {
        heap::tune();
    }
    match run(&cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            u8::try_from(e.kind.exit_code()).unwrap_or(1)
        }
    }
}

fn run(cli: &Cli) -> Result<(), CliError> {
    // The pool first when its size is asked for (nothing to clean up yet if it fails).
    if let Some(n) = cli.global.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(usize::from(n))
            .start_handler(|_| heap::advise_thread_heap())
            .build_global()
            .map_err(|e| {
                CliError::plain(Failure::Other, format!("cannot start {n} threads: {e}"))
            })?;
    }
    // Then, before any output exists: an interrupted command removes its temporaries.
    // The signal thread starts rayon's global pool (reading the CPU quota, starting a
    // worker per core: ~0.3–0.5 ms) if it gets there before this thread does (below).
    crate::signals::install(start_pool)?;
    // A bad MCODEC_SIMD request stops the tool here, before any work, with one line
    // (the library alone would only warn and fall back).
    let simd =
        mcodec::simd::simd_level_from_env().map_err(|e| CliError::plain(Failure::Usage, e))?;
    mcodec::simd::set_simd_level(simd).map_err(|e| CliError::plain(e.failure(), e))?;
    // Here too: on this guest the signal thread often starts only after this thread's
    // first use of the pool, which would otherwise build rayon's default pool (no
    // names, no heap advice). Whichever comes first builds it; the other waits for it.
    start_pool();
    execute(cli)
}

/// Builds rayon's global pool: workers named here (threads take the name of the thread
/// that starts them), each advising its heap for huge pages as it starts (`heap`).
/// Built already (`-j`, or by the other caller) is fine: then this does nothing.
fn start_pool() {
    let _ = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("mcodec-{i}"))
        .start_handler(|_| heap::advise_thread_heap())
        .build_global();
}
