//! Progress bars: drawn on stderr only when it is a terminal and `--quiet` is off, so
//! pipes and logs never receive control sequences.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar that clears itself when dropped, so an error line printed afterwards
/// stands alone.
pub struct Bar(ProgressBar);

impl Bar {
    /// A bar over `total` bytes.
    pub fn bytes(total: u64, quiet: bool) -> Self {
        Self::new(
            total,
            quiet,
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
    }

    /// A bar over `total` steps named by a message.
    pub fn steps(total: u64, quiet: bool) -> Self {
        Self::new(
            total,
            quiet,
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
        )
    }

    fn new(total: u64, quiet: bool, template: &str) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Self(ProgressBar::hidden());
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Self(bar)
    }

    /// Sets the position.
    pub fn set(&self, pos: u64) {
        self.0.set_position(pos);
    }

    /// Shows `done` of `total`.
    pub fn show(&self, done: u64, total: u64) {
        self.0.set_length(total);
        self.0.set_position(done);
    }

    /// Grows the total by `n`.
    pub fn grow(&self, n: u64) {
        self.0.inc_length(n);
    }

    /// Runs `f` with the bar hidden, so that it can print lines of its own.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.0.suspend(f)
    }

    /// Sets the message shown after the bar.
    pub fn message(&self, msg: &'static str) {
        self.0.set_message(msg);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
