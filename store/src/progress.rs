//! Progress of `add` and `get`, reported to a caller's callback (the CLI draws a bar).

use std::sync::atomic::{AtomicU64, Ordering};

/// Receives `(bytes done, bytes in all)` while `add` or `get` runs, from worker threads,
/// in no guaranteed order between threads; the last call reports `(total, total)` when
/// the operation succeeds. Bytes are the model's logical (file) bytes.
pub type ProgressFn<'a> = dyn Fn(u64, u64) + Send + Sync + 'a;

/// Bytes done out of a known total, forwarded to a [`ProgressFn`].
pub(crate) struct Progress<'a> {
    report: &'a ProgressFn<'a>,
    done: AtomicU64,
    total: u64,
}

impl<'a> Progress<'a> {
    pub(crate) fn new(report: &'a ProgressFn<'a>, total: u64) -> Self {
        report(0, total);
        Self {
            report,
            done: AtomicU64::new(0),
            total,
        }
    }

    /// Counts `n` more bytes done (never past the total).
    pub(crate) fn advance(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        (self.report)(done.min(self.total), self.total);
    }

    /// Reports everything done (parts that were not counted one by one: headers, padding).
    pub(crate) fn finish(&self) {
        (self.report)(self.total, self.total);
    }
}
