//! `rm` and `gc`: models are removed by their manifest; objects no model needs are
//! deleted after a grace period (STORE.md §7).

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use crate::backend::{ObjectInfo, RecordKind};
use crate::coord::{others_live, put_record_timed, record_id, LEASE_TTL, SWEEP_REFRESH};
use crate::error::{Result, StoreError};
use crate::key::ObjectKey;
use crate::manifest::validate_name;
use crate::report::GcReport;
use crate::Store;

/// Default grace period of `gc`: unreferenced objects younger than this are kept.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

impl Store {
    /// Removes model `name` (its manifest). Its objects stay until `gc`.
    pub fn remove(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        if !self.backend.delete_manifest(name)? {
            return Err(StoreError::NoSuchModel(name.to_owned()));
        }
        Ok(())
    }

    /// Deletes objects no model needs that are older than `grace`, and temporaries of
    /// interrupted writes older than `grace`.
    ///
    /// Safe beside running `add`s with any grace period, zero included: deletes happen
    /// only under a sweep mark that every `add` observes, and only when no `add` holds a
    /// live lease (STORE.md §7.1); otherwise the candidates are counted as deferred.
    pub fn gc(&self, grace: Duration) -> Result<GcReport> {
        let cutoff = SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        // Objects are listed before manifests are read: an object written after the
        // listing is never a candidate, whatever manifest refers to it.
        let (candidates, kept_young) = self.gc_candidates(cutoff, None)?;
        let mut report = GcReport {
            kept_young,
            ..GcReport::default()
        };
        let id = record_id();
        let swept = self.sweep(&id, cutoff, &candidates, &mut report);
        // Best effort: a mark left behind is dead after SWEEP_TTL.
        let _ = self.backend.delete_record(RecordKind::Sweep, &id);
        swept?;
        Ok(report)
    }

    /// The deleting half of `gc` under sweep mark `id` (STORE.md §7.1): mark, then look
    /// for writers' leases (any live one: delete nothing), then a second look at the
    /// objects and manifests (a model published meanwhile keeps its objects), then the
    /// deletes, refreshing the mark as they go, and the temporaries older than `cutoff`
    /// (a running writer's temporaries are as young as its lease protects them).
    fn sweep(
        &self,
        id: &str,
        cutoff: SystemTime,
        candidates: &[ObjectInfo],
        report: &mut GcReport,
    ) -> Result<()> {
        let now = put_record_timed(self, RecordKind::Sweep, id)?;
        let writers = others_live(self, RecordKind::Lease, "", now, LEASE_TTL)?;
        if writers > 0 {
            report.deferred = candidates.len() as u64;
            report.writers = writers as u64;
            return Ok(());
        }
        let mut refreshed = Instant::now();
        let (confirmed, _) = self.gc_candidates(cutoff, Some(candidates))?;
        report.kept_young += (candidates.len() - confirmed.len()) as u64;
        for o in confirmed {
            if refreshed.elapsed() >= SWEEP_REFRESH {
                self.backend.put_record(RecordKind::Sweep, id)?;
                refreshed = Instant::now();
            }
            self.backend.delete_object(&o.key)?;
            report.deleted += 1;
            report.deleted_bytes += o.size;
        }
        let (n, b) = self.backend.clean_temporaries(cutoff)?;
        report.temporaries = n;
        report.temporary_bytes = b;
        Ok(())
    }

    /// Objects no manifest needs and last modified before `cutoff` (restricted to `within`
    /// when given), and the count of unreferenced objects kept for being younger.
    fn gc_candidates(
        &self,
        cutoff: SystemTime,
        within: Option<&[ObjectInfo]>,
    ) -> Result<(Vec<ObjectInfo>, u64)> {
        let objects = self.backend.list_objects()?;
        // A model removed since the listing needs nothing.
        let referenced: HashSet<ObjectKey> = self
            .manifests_present()?
            .iter()
            .flat_map(|m| m.objects().into_iter().map(|(k, _)| k))
            .collect();
        let allowed: Option<HashSet<ObjectKey>> = within.map(|w| w.iter().map(|o| o.key).collect());
        let (mut out, mut young) = (Vec::new(), 0);
        for o in objects {
            if referenced.contains(&o.key) || allowed.as_ref().is_some_and(|a| !a.contains(&o.key))
            {
                continue;
            }
            if o.modified >= cutoff {
                young += 1;
                continue;
            }
            out.push(o);
        }
        Ok((out, young))
    }
}
