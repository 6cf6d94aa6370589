//! Writer leases and sweep marks: how `gc` and running `add`s keep out of each other's way
//! without locks (STORE.md §7.1).
//!
//! An `add` writes a *lease* before it looks at any object and drops it after its
//! manifest is published. A `gc` that has chosen what to delete first writes a *sweep
//! mark*, then lists the leases: if any writer holds a live lease it deletes nothing.
//! An `add` that wrote its lease lists the sweep marks and waits while any is live. With
//! read-after-write consistent listings, of a lease and a mark written at about the same
//! time at least one side sees the other's record: either the `gc` sees the lease and
//! deletes nothing, or the `add` sees the mark and looks at no object before that sweep has
//! finished. So no object disappears while an `add` relies on it, whatever the grace period.
//!
//! Records are compared by the store's own clock (file times of a local store, the
//! service's `Last-Modified` on S3): each side writes its record first and takes its
//! record's time as "now", so the writers' clocks do not matter. A record older than its
//! time-to-live is dead (its process was killed) and is ignored; the live ones refresh
//! theirs well within it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use crate::backend::{BackendError, RecordKind};
use crate::error::Result;
use crate::Store;

/// A lease older than this (by the store's clock) is dead. Live writers refresh theirs
/// every [`LEASE_REFRESH`].
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(3600);
/// How often a running `add` refreshes its lease.
const LEASE_REFRESH: Duration = Duration::from_secs(300);
/// A sweep mark older than this is dead: an `add` waits at most this long for a killed
/// `gc`. A live `gc` refreshes its mark at least every [`SWEEP_REFRESH`] while deleting,
/// and one delete request gives up long before the rest of the time-to-live runs out.
pub(crate) const SWEEP_TTL: Duration = Duration::from_secs(600);
/// How often a deleting `gc` refreshes its mark.
pub(crate) const SWEEP_REFRESH: Duration = Duration::from_secs(60);
/// Pause between looks at the sweep marks while waiting for a sweep to finish.
const SWEEP_POLL: Duration = Duration::from_millis(20);

/// A process-unique record id: the process id, the clock and a counter, hashed.
pub(crate) fn record_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    h.update(&std::process::id().to_le_bytes());
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    h.update(&now.as_nanos().to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    if let Ok(host) = std::fs::read("/proc/sys/kernel/hostname") {
        h.update(&host);
    }
    h.finalize().to_hex()[..32].to_owned()
}

/// Writes record `id` and returns its time by the store's clock.
pub(crate) fn put_record_timed(store: &Store, kind: RecordKind, id: &str) -> Result<SystemTime> {
    store.backend.put_record(kind, id)?;
    let mine = store
        .backend
        .list_records(kind)?
        .into_iter()
        .find(|(r, _)| r == id)
        .map(|(_, t)| t)
        .ok_or_else(|| {
            BackendError::Layout(format!(
                "{}: the {} record just written is not listed (is the service's listing \
                 read-after-write consistent?)",
                store.backend.describe(),
                kind.dir()
            ))
        })?;
    Ok(mine)
}

/// Whether a record of `kind` other than `mine` is live at `now` (the store's time).
pub(crate) fn others_live(
    store: &Store,
    kind: RecordKind,
    mine: &str,
    now: SystemTime,
    ttl: Duration,
) -> Result<usize> {
    Ok(store
        .backend
        .list_records(kind)?
        .iter()
        .filter(|(id, t)| id != mine && *t + ttl > now)
        .count())
}

impl Store {
    /// Runs `f` under a writer lease: the lease is written, any live sweep is waited for,
    /// `f` runs while a side thread refreshes the lease, and the lease is dropped after.
    pub(crate) fn with_lease<R: Send>(&self, f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
        let id = record_id();
        let result = self.lease_and_run(&id, f);
        // Best effort: a lease left behind is dead after LEASE_TTL.
        let _ = self.backend.delete_record(RecordKind::Lease, &id);
        result
    }

    fn lease_and_run<R: Send>(&self, id: &str, f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
        loop {
            let now = put_record_timed(self, RecordKind::Lease, id)?;
            if others_live(self, RecordKind::Sweep, "", now, SWEEP_TTL)? == 0 {
                break;
            }
            // A sweep that may not have seen this lease is deleting: wait for it. A killed
            // gc's mark stops being refreshed and is dead SWEEP_TTL after its last refresh;
            // rewriting the lease each round moves this writer's "now" on.
            std::thread::sleep(SWEEP_POLL);
        }
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::scope(|s| {
            s.spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(LEASE_REFRESH)
                {
                    let _ = self.backend.put_record(RecordKind::Lease, id);
                }
            });
            let r = f();
            drop(stop);
            r
        })
    }
}
