//! Ctrl-C and SIGTERM: like zstd, an interrupted `pack`, `unpack` or `store get` removes
//! the temporaries of its unfinished outputs before it exits, instead of leaving hidden
//! `.mcodec-*` files or directories beside them.
//!
//! Every output is built under a temporary listed by [`mcodec_store::outdir`] while it
//! exists; a thread waiting for the signals deletes the listed ones and exits with the
//! status a shell gives a process killed by the signal (128 + its number: 130 for SIGINT,
//! 143 for SIGTERM). The list stays locked until the exit, so no new temporary appears
//! after the cleanup.

use mcodec_store::outdir::remove_temporaries;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::error::{CliError, Failure};

/// Exit status after a signal, as shells report one: 128 + the signal's number.
pub fn exit_status(signal: i32) -> i32 {
    128 + signal
}

/// Starts handling SIGINT and SIGTERM for the rest of the process: on either, remove the
/// temporaries and exit with the status a shell reports for the signal (130 for SIGINT,
/// 143 for SIGTERM). The handlers are in place when this returns; the thread that waits
/// for the signals first runs `warm_up` (work that may overlap the caller's, such as
/// starting rayon's pool), so that no second thread is started for it.
pub fn install(warm_up: impl FnOnce() + Send + 'static) -> Result<(), CliError> {
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| CliError::plain(Failure::Other, format!("cannot handle signals: {e}")))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            warm_up();
            if let Some(signal) = signals.forever().next() {
                let _no_new_temporaries = remove_temporaries();
                std::process::exit(exit_status(signal));
            }
        })
        .map_err(|e| {
            CliError::plain(
                Failure::Other,
                format!("cannot start the signal thread: {e}"),
            )
        })?;
    Ok(())
}
