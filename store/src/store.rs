//! The store: a [`Backend`] and the manifests in it. Each operation lives in its own
//! module (`add`, `get`, `stats`, `gc`, `fsck`) as more `impl Store` blocks; this one
//! opens stores and reads manifests.

use std::path::Path;

use crate::backend::{Backend, LocalBackend};
use crate::error::{Result, StoreError};
use crate::manifest::{validate_name, Manifest};
use crate::report::ModelInfo;

/// A content-addressed model store over a [`Backend`].
pub struct Store {
    pub(crate) backend: Box<dyn Backend>,
    /// Threads for per-tensor work when the backend wants more than rayon's global pool
    /// has (a remote service: its latency overlaps across threads).
    pub(crate) io_pool: Option<rayon::ThreadPool>,
}

impl Store {
    /// Creates a local store in the new or empty directory `root`.
    pub fn init(root: &Path) -> Result<Self> {
        Ok(Self::with_backend(Box::new(LocalBackend::init(root)?)))
    }

    /// Opens the local store at `root`.
    pub fn open(root: &Path) -> Result<Self> {
        Ok(Self::with_backend(Box::new(LocalBackend::open(root)?)))
    }

    /// A store over any backend.
    pub fn with_backend(backend: Box<dyn Backend>) -> Self {
        let want = backend.io_parallelism();
        // `want > 1` first: a local store does not wait here for rayon's pool to start.
        let io_pool = (want > 1 && want > rayon::current_num_threads())
            .then(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(want)
                    .thread_name(|i| format!("mcodec-store-io-{i}"))
                    .build()
                    .ok()
            })
            .flatten();
        Self { backend, io_pool }
    }

    /// Runs `f` (which uses rayon) on the I/O pool when there is one. Not on rayon's
    /// global pool otherwise: a `get` run on one of its workers (so that its loops start
    /// there, with no hand-off from and back to the calling thread) left one worker
    /// asleep for 4.5–15 ms of a 46 MB `get` instead of 3.4–8.4, its tensors 4–7 ms
    /// slower (BENCHMARKS.md fourteenth session).
    pub(crate) fn par<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.io_pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The manifest of model `name`.
    pub fn manifest(&self, name: &str) -> Result<Manifest> {
        validate_name(name)?;
        let bytes = self
            .backend
            .get_manifest(name)?
            .ok_or_else(|| StoreError::NoSuchModel(name.to_owned()))?;
        let m = Manifest::parse(&bytes).map_err(|source| StoreError::BadManifest {
            name: name.to_owned(),
            source,
        })?;
        if m.name != name {
            return Err(StoreError::ManifestName {
                name: name.to_owned(),
                found: m.name,
            });
        }
        Ok(m)
    }

    /// Every model's manifest, sorted by name.
    pub fn manifests(&self) -> Result<Vec<Manifest>> {
        self.backend
            .list_manifests()?
            .iter()
            .map(|n| self.manifest(n))
            .collect()
    }

    /// Every model's manifest, sorted by name, leaving out models removed between the
    /// listing and the read (a concurrent `rm`); any other failure is an error.
    pub(crate) fn manifests_present(&self) -> Result<Vec<Manifest>> {
        let mut out = Vec::new();
        for n in self.backend.list_manifests()? {
            match self.manifest(&n) {
                Ok(m) => out.push(m),
                Err(StoreError::NoSuchModel(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Every model with its size and base.
    pub fn list(&self) -> Result<Vec<ModelInfo>> {
        self.list_under("")
    }

    /// The models whose names start with `prefix` (`"org/"`: an organisation's), with
    /// their sizes and bases, sorted by name.
    pub fn list_under(&self, prefix: &str) -> Result<Vec<ModelInfo>> {
        Ok(self
            .backend
            .list_manifests()?
            .iter()
            .filter(|n| n.starts_with(prefix))
            .map(|n| self.manifest(n))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .map(|m| ModelInfo {
                files: m.files.len(),
                tensors: m.tensors().count(),
                logical_bytes: m.logical_size(),
                base: m.base.clone(),
                name: m.name,
            })
            .collect())
    }

    /// Refuses a new name that agrees with a stored model's name, or with one of its
    /// leading segments (`Org/x` against `org/y`), when letter case is ignored but not
    /// otherwise: the store keeps one spelling of each name and organisation, so models
    /// never share a manifest or directory on a case-insensitive file system (STORE.md §4).
    pub(crate) fn check_case_collision(&self, name: &str) -> Result<()> {
        let mine: Vec<&str> = name.split('/').collect();
        for existing in self.backend.list_manifests()? {
            let theirs: Vec<&str> = existing.split('/').collect();
            for k in 1..=mine.len().min(theirs.len()) {
                let (a, b) = (mine[..k].join("/"), theirs[..k].join("/"));
                if a != b && a.eq_ignore_ascii_case(&b) {
                    return Err(StoreError::NameCollision {
                        name: name.to_owned(),
                        existing,
                    });
                }
            }
        }
        Ok(())
    }
}
