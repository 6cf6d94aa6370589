//! `rm` and `gc`: models are removed by their manifest; objects no model needs are
//! deleted after a grace period (STORE.md §7).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use crate::backend::ObjectInfo;
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
    /// Safe beside running `add`s: an add touches every object it reuses and writes
    /// its manifest only after checking all its objects still exist, so an object a
    /// running add relies on is younger than the grace period unless that add has run
    /// longer than it (in which case the add fails rather than publish a broken model).
    pub fn gc(&self, grace: Duration) -> Result<GcReport> {
        let cutoff = SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        // Objects are listed before manifests are read: an object written after the
        // listing is never a candidate, whatever manifest refers to it.
        let candidates = self.gc_candidates(cutoff, None)?;
        let mut report = GcReport {
            kept_young: candidates.1,
            ..GcReport::default()
        };
        // A second look just before deleting: an object that a writer touched or a new
        // manifest took up while the first pass ran is spared (this narrows the window
        // between deciding and deleting to the deletes themselves; STORE.md §7).
        let (confirmed, _) = self.gc_candidates(cutoff, Some(&candidates.0))?;
        report.kept_young += (candidates.0.len() - confirmed.len()) as u64;
        for o in confirmed {
            self.backend.delete_object(&o.key)?;
            report.deleted += 1;
            report.deleted_bytes += o.size;
        }
        let (n, b) = self.backend.clean_temporaries(cutoff)?;
        report.temporaries = n;
        report.temporary_bytes = b;
        Ok(report)
    }

    /// Objects no manifest needs and last modified before `cutoff` (restricted to `within`
    /// when given), and the count of unreferenced objects kept for being younger.
    fn gc_candidates(
        &self,
        cutoff: SystemTime,
        within: Option<&[ObjectInfo]>,
    ) -> Result<(Vec<ObjectInfo>, u64)> {
        let objects = self.backend.list_objects()?;
        let referenced: HashSet<ObjectKey> = self
            .manifests()?
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
