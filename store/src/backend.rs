//! Where objects and manifests live (STORE.md §1): a small trait that object storage can
//! implement as well as a local directory.
//!
//! The contract is the one S3-compatible stores offer: objects are immutable by content
//! (a key names what its bytes decode to, so a second put of the same key writes the same
//! bytes: the local directory keeps the first and reports it, S3 overwrites it, and
//! neither changes what a reader gets), any byte range of an object can be read,
//! manifests are small documents written create-only and atomically, and listings give
//! each object's size and last-modified time (which `gc` uses for its grace period).
//! Nothing relies on locks or on renaming objects.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::key::ObjectKey;

/// Errors of a backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// An I/O operation failed.
    #[error("{path}: {source}")]
    Io {
        /// What was being accessed.
        path: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The object does not exist.
    #[error("object {0} is missing")]
    NotFound(ObjectKey),
    /// A manifest of that name already exists.
    #[error("model {0:?} already exists")]
    ManifestExists(String),
    /// The location is not a store, or is damaged.
    #[error("{0}")]
    Layout(String),
    /// A request to a storage service failed (after its retries).
    #[error("{what}: {message}")]
    Remote {
        /// What was being accessed (a URL).
        what: String,
        /// What went wrong.
        message: String,
    },
    /// Another writer was doing the same thing at the same time; nothing was changed.
    #[error("{0}")]
    Conflict(String),
}

/// How a put went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was written.
    Created,
    /// An object with that key was already there and was kept.
    Existed,
}

/// One listed object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its key.
    pub key: ObjectKey,
    /// Its size in bytes.
    pub size: u64,
    /// When it was written or last touched.
    pub modified: SystemTime,
}

/// Kinds of coordination records (STORE.md §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordKind {
    /// A running `add`'s lease.
    Lease,
    /// A deleting `gc`'s sweep mark.
    Sweep,
}

impl RecordKind {
    /// The directory (local) or key prefix (S3) of the records.
    pub fn dir(self) -> &'static str {
        match self {
            Self::Lease => "leases",
            Self::Sweep => "sweeps",
        }
    }
}

/// Objects at least this large are mapped by [`LocalBackend::get_object_bytes`] rather than
/// read: reading copies them into fresh memory, which the kernel must first map and zero
/// page by page (12 % of `get`'s CPU on the MiniLM fine-tune, BENCHMARKS.md).
pub const MAP_MIN_BYTES: u64 = 1 << 20;

/// An object's bytes, read into memory or mapped from its file.
pub enum ObjectBytes {
    /// Read into memory.
    Owned(Vec<u8>),
    /// The object's file mapped read-only. Objects are immutable: the store writes each
    /// once, under a temporary name, and renames it into place; `gc` only unlinks.
    Mapped(memmap2::Mmap),
}

impl std::ops::Deref for ObjectBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Owned(v) => v,
            Self::Mapped(m) => m,
        }
    }
}

/// Storage of immutable content-addressed objects and small named manifests.
pub trait Backend: Send + Sync {
    /// A human-readable location (a path or URL) for messages.
    fn describe(&self) -> String;
    /// Writes an object (idempotent: a key names its content). A backend that can tell
    /// keeps an existing object and returns [`PutOutcome::Existed`] (the local
    /// directory); S3 overwrites it with the same bytes and always returns
    /// [`PutOutcome::Created`].
    fn put_object(&self, key: &ObjectKey, bytes: &[u8]) -> Result<PutOutcome, BackendError>;
    /// The size of an object, or `None` if it does not exist.
    fn object_size(&self, key: &ObjectKey) -> Result<Option<u64>, BackendError>;
    /// The whole object.
    fn get_object(&self, key: &ObjectKey) -> Result<Vec<u8>, BackendError>;
    /// The whole object for a reader that only decodes it: a backend may map a large
    /// object's file instead of copying it into fresh memory (the local directory does,
    /// from [`MAP_MIN_BYTES`] up). The default reads it with [`Self::get_object`].
    fn get_object_bytes(&self, key: &ObjectKey) -> Result<ObjectBytes, BackendError> {
        self.get_object(key).map(ObjectBytes::Owned)
    }
    /// Bytes `range` of the object, cut short at its end.
    fn get_object_range(&self, key: &ObjectKey, range: Range<u64>)
        -> Result<Vec<u8>, BackendError>;
    /// Marks an existing object as recently used, so `gc` gives it a new grace period.
    fn touch_object(&self, key: &ObjectKey) -> Result<(), BackendError>;
    /// Every object.
    fn list_objects(&self) -> Result<Vec<ObjectInfo>, BackendError>;
    /// Deletes an object; deleting a missing object is not an error.
    fn delete_object(&self, key: &ObjectKey) -> Result<(), BackendError>;
    /// Makes every object put so far durable: called before a manifest refers to them.
    fn sync_objects(&self) -> Result<(), BackendError>;
    /// Writes a manifest atomically, failing with [`BackendError::ManifestExists`] if the
    /// name is taken. `name` has been validated by the caller.
    fn put_manifest(&self, name: &str, bytes: &[u8]) -> Result<(), BackendError>;
    /// A manifest, or `None` if there is none of that name.
    fn get_manifest(&self, name: &str) -> Result<Option<Vec<u8>>, BackendError>;
    /// Every manifest name (unvalidated: the caller checks them).
    fn list_manifests(&self) -> Result<Vec<String>, BackendError>;
    /// Deletes a manifest; returns whether it existed.
    fn delete_manifest(&self, name: &str) -> Result<bool, BackendError>;
    /// Removes temporaries of interrupted writes last modified before `cutoff`; returns
    /// their count and bytes.
    fn clean_temporaries(&self, cutoff: SystemTime) -> Result<(u64, u64), BackendError>;
    /// Writes (or rewrites, giving it the store's current time) the empty coordination
    /// record `id` of `kind`.
    fn put_record(&self, kind: RecordKind, id: &str) -> Result<(), BackendError>;
    /// Every record of `kind`: its id and when it was last written, by the store's clock.
    /// Listings must be read-after-write consistent.
    fn list_records(&self, kind: RecordKind) -> Result<Vec<(String, SystemTime)>, BackendError>;
    /// Deletes a record; deleting a missing one is not an error.
    fn delete_record(&self, kind: RecordKind, id: &str) -> Result<(), BackendError>;
    /// How many of these blocking calls usefully run at once: a remote service hides its
    /// latency behind concurrency, so the store runs its per-tensor work on at least this
    /// many threads. A local directory needs no more threads than cores.
    fn io_parallelism(&self) -> usize {
        1
    }
    /// Whether an object can be read back as soon as [`Backend::put_object`] returns.
    /// `false` for a backend that uploads in the background until
    /// [`Backend::sync_objects`] (S3; its uploads carry a checksum the server verifies).
    fn puts_are_synchronous(&self) -> bool {
        true
    }
}

/// Name of the marker file at the root of a local store.
pub(crate) const MARKER: &str = "mcodec-store.json";
/// Contents of the marker file.
pub(crate) const MARKER_TEXT: &str = "{\"format\":\"mcodec-store\",\"version\":2}\n";
/// Marker of a version 1 store (delta objects named by their tensor's key).
pub(crate) const MARKER_TEXT_V1: &str = "{\"format\":\"mcodec-store\",\"version\":1}\n";
pub(crate) const OBJECTS: &str = "objects";
pub(crate) const MODELS: &str = "models";
const TMP: &str = "tmp";
pub(crate) const MANIFEST_SUFFIX: &str = ".json";

/// A store in a local directory: `objects/<2 hex>/<64 hex>`, `models/<name>.json`,
/// `tmp/` for files being written. Every file is written under `tmp/`, synced and then
/// linked into place without replacing anything.
#[derive(Debug)]
pub struct LocalBackend {
    root: PathBuf,
    /// Fan-out directories that received objects since the last [`Backend::sync_objects`].
    dirty_dirs: Mutex<HashSet<PathBuf>>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BackendError + '_ {
    move |source| BackendError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn sync_dir(path: &Path) -> Result<(), BackendError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err(path))
}

impl LocalBackend {
    /// Creates a new store at `root` (an absent or empty directory).
    pub fn init(root: &Path) -> Result<Self, BackendError> {
        fs::create_dir_all(root).map_err(io_err(root))?;
        let non_empty = fs::read_dir(root).map_err(io_err(root))?.next().is_some();
        if non_empty {
            return Err(BackendError::Layout(format!(
                "{}: directory is not empty; a store is created in a new or empty directory",
                root.display()
            )));
        }
        for d in [OBJECTS, MODELS, TMP] {
            let p = root.join(d);
            fs::create_dir(&p).map_err(io_err(&p))?;
        }
        let marker = root.join(MARKER);
        let mut f = File::create(&marker).map_err(io_err(&marker))?;
        f.write_all(MARKER_TEXT.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io_err(&marker))?;
        sync_dir(root)?;
        Self::open(root)
    }

    /// Opens the store at `root`.
    pub fn open(root: &Path) -> Result<Self, BackendError> {
        let marker = root.join(MARKER);
        match fs::read(&marker) {
            Ok(text) if text == MARKER_TEXT.as_bytes() => {}
            Ok(text) if text == MARKER_TEXT_V1.as_bytes() => {
                return Err(BackendError::Layout(format!(
                    "{}: store format version 1 is not supported by this mcodec; re-create it",
                    root.display()
                )))
            }
            Ok(_) => {
                return Err(BackendError::Layout(format!(
                    "{}: unknown store format or version",
                    marker.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BackendError::Layout(format!(
                    "{}: not a store (no {MARKER}; create one with `init`)",
                    root.display()
                )))
            }
            Err(e) => return Err(io_err(&marker)(e)),
        }
        for d in [OBJECTS, MODELS, TMP] {
            let p = root.join(d);
            if !p.is_dir() {
                return Err(BackendError::Layout(format!(
                    "{}: missing directory",
                    p.display()
                )));
            }
        }
        Ok(Self {
            root: root.to_owned(),
            dirty_dirs: Mutex::new(HashSet::new()),
        })
    }

    fn object_path(&self, key: &ObjectKey) -> PathBuf {
        let hex = key.to_hex();
        self.root.join(OBJECTS).join(&hex[..2]).join(hex)
    }

    fn manifest_path(&self, name: &str) -> PathBuf {
        self.root
            .join(MODELS)
            .join(format!("{name}{MANIFEST_SUFFIX}"))
    }

    /// Writes `bytes` to a synced temporary and links it to `dest` unless `dest` exists.
    fn write_noclobber(&self, dest: &Path, bytes: &[u8]) -> Result<bool, BackendError> {
        if let Some(dir) = dest.parent() {
            // An organisation's directory of `models/` (object fan-out directories too).
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let tmp_dir = self.root.join(TMP);
        let mut tmp = tempfile::Builder::new()
            .prefix("put-")
            .suffix(".tmp")
            .tempfile_in(&tmp_dir)
            .map_err(io_err(&tmp_dir))?;
        tmp.write_all(bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(io_err(tmp.path()))?;
        match tmp.persist_noclobber(dest) {
            Ok(_) => Ok(true),
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_err(dest)(e.error)),
        }
    }
}

/// Levels of `models/` listed: more than a valid name has (`manifest::MAX_NAME_SEGMENTS`),
/// so a stray deeper file is listed and refused by name validation rather than ignored.
const MAX_LISTING_DEPTH: usize = 8;

/// Collects the names of the manifests under `dir` (whose names start with `prefix`),
/// descending at most [`MAX_LISTING_DEPTH`] levels (`org/name` is `models/org/name.json`).
fn list_manifests_in(
    dir: &Path,
    prefix: &str,
    depth: usize,
    names: &mut Vec<String>,
) -> Result<(), BackendError> {
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let is_dir = entry.file_type().map_err(io_err(&entry.path()))?.is_dir();
        if is_dir && depth < MAX_LISTING_DEPTH {
            let sub = format!("{prefix}{file_name}/");
            list_manifests_in(&entry.path(), &sub, depth + 1, names)?;
        } else if let Some(n) = file_name.strip_suffix(MANIFEST_SUFFIX).filter(|_| !is_dir) {
            names.push(format!("{prefix}{n}"));
        }
    }
    Ok(())
}

impl Backend for LocalBackend {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn put_object(&self, key: &ObjectKey, bytes: &[u8]) -> Result<PutOutcome, BackendError> {
        let path = self.object_path(key);
        if path.exists() {
            return Ok(PutOutcome::Existed);
        }
        let dir = path.parent().expect("object paths have a parent");
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let created = self.write_noclobber(&path, bytes)?;
        self.dirty_dirs
            .lock()
            .expect("no panics while held")
            .insert(dir.to_owned());
        Ok(if created {
            PutOutcome::Created
        } else {
            PutOutcome::Existed
        })
    }

    fn object_size(&self, key: &ObjectKey) -> Result<Option<u64>, BackendError> {
        let path = self.object_path(key);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn get_object(&self, key: &ObjectKey) -> Result<Vec<u8>, BackendError> {
        let path = self.object_path(key);
        fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => BackendError::NotFound(*key),
            _ => io_err(&path)(e),
        })
    }

    fn get_object_bytes(&self, key: &ObjectKey) -> Result<ObjectBytes, BackendError> {
        let path = self.object_path(key);
        let not_found = |e: io::Error| match e.kind() {
            io::ErrorKind::NotFound => BackendError::NotFound(*key),
            _ => io_err(&path)(e),
        };
        let file = File::open(&path).map_err(not_found)?;
        let len = file.metadata().map_err(io_err(&path))?.len();
        if len < MAP_MIN_BYTES {
            let mut out = Vec::with_capacity(len as usize);
            (&file).read_to_end(&mut out).map_err(io_err(&path))?;
            return Ok(ObjectBytes::Owned(out));
        }
        // SAFETY: object files are never written in place: each is written once under a
        // temporary name and renamed into place, and removal only unlinks it (the mapping
        // keeps the unlinked file's pages). Only a process outside the store truncating
        // the file could change the mapped bytes; a changed object decodes to bytes that
        // fail the check against its name.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(&path))?;
        Ok(ObjectBytes::Mapped(map))
    }

    fn get_object_range(
        &self,
        key: &ObjectKey,
        range: Range<u64>,
    ) -> Result<Vec<u8>, BackendError> {
        let path = self.object_path(key);
        let mut f = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => BackendError::NotFound(*key),
            _ => io_err(&path)(e),
        })?;
        let mut out = Vec::new();
        f.seek(SeekFrom::Start(range.start))
            .and_then(|_| {
                f.take(range.end.saturating_sub(range.start))
                    .read_to_end(&mut out)
            })
            .map_err(io_err(&path))?;
        Ok(out)
    }

    fn touch_object(&self, key: &ObjectKey) -> Result<(), BackendError> {
        let path = self.object_path(key);
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(SystemTime::now()))
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => BackendError::NotFound(*key),
                _ => io_err(&path)(e),
            })
    }

    fn list_objects(&self) -> Result<Vec<ObjectInfo>, BackendError> {
        let objects = self.root.join(OBJECTS);
        let mut out = Vec::new();
        for fan in fs::read_dir(&objects).map_err(io_err(&objects))? {
            let fan = fan.map_err(io_err(&objects))?.path();
            if !fan.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&fan).map_err(io_err(&fan))? {
                let entry = entry.map_err(io_err(&fan))?;
                let name = entry.file_name();
                let Some(key) = name
                    .to_str()
                    .and_then(|n| ObjectKey::from_hex(n).ok())
                    .filter(|k| fan.ends_with(&k.to_hex()[..2]))
                else {
                    continue;
                };
                let path = entry.path();
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    // Deleted since the directory was read (a concurrent gc).
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(&path)(e)),
                };
                out.push(ObjectInfo {
                    key,
                    size: meta.len(),
                    modified: meta.modified().map_err(io_err(&path))?,
                });
            }
        }
        out.sort_by_key(|o| o.key);
        Ok(out)
    }

    fn delete_object(&self, key: &ObjectKey) -> Result<(), BackendError> {
        let path = self.object_path(key);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        }
    }

    fn sync_objects(&self) -> Result<(), BackendError> {
        let dirs: Vec<PathBuf> = self
            .dirty_dirs
            .lock()
            .expect("no panics while held")
            .drain()
            .collect();
        for d in &dirs {
            sync_dir(d)?;
        }
        sync_dir(&self.root.join(OBJECTS))
    }

    fn put_manifest(&self, name: &str, bytes: &[u8]) -> Result<(), BackendError> {
        let path = self.manifest_path(name);
        if !self.write_noclobber(&path, bytes)? {
            return Err(BackendError::ManifestExists(name.to_owned()));
        }
        // The manifest's directory, and each directory up to `models/` (a new
        // organisation's directory must itself be durable).
        let models = self.root.join(MODELS);
        let mut dir = path.parent();
        while let Some(d) = dir {
            sync_dir(d)?;
            if d == models {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    fn get_manifest(&self, name: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let path = self.manifest_path(name);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn list_manifests(&self) -> Result<Vec<String>, BackendError> {
        let mut names = Vec::new();
        list_manifests_in(&self.root.join(MODELS), "", 1, &mut names)?;
        names.sort();
        Ok(names)
    }

    fn delete_manifest(&self, name: &str) -> Result<bool, BackendError> {
        let path = self.manifest_path(name);
        match fs::remove_file(&path) {
            Ok(()) => {
                // An organisation's directory goes with its last model (not if another
                // writer has just put one there: removing a non-empty directory fails).
                let models = self.root.join(MODELS);
                let mut dir = path.parent();
                while let Some(d) = dir.filter(|d| *d != models) {
                    if fs::remove_dir(d).is_err() {
                        break;
                    }
                    dir = d.parent();
                }
                sync_dir(dir.unwrap_or(&models))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn put_record(&self, kind: RecordKind, id: &str) -> Result<(), BackendError> {
        let dir = self.root.join(kind.dir());
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join(id);
        // Not synced: a record matters only while its process runs.
        File::create(&path)
            .and_then(|f| f.set_modified(SystemTime::now()))
            .map_err(io_err(&path))
    }

    fn list_records(&self, kind: RecordKind) -> Result<Vec<(String, SystemTime)>, BackendError> {
        let dir = self.root.join(kind.dir());
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&dir))?;
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            match entry.metadata().and_then(|m| m.modified()) {
                Ok(t) => out.push((id, t)),
                // Deleted since the directory was read.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&entry.path())(e)),
            }
        }
        Ok(out)
    }

    fn delete_record(&self, kind: RecordKind, id: &str) -> Result<(), BackendError> {
        let path = self.root.join(kind.dir()).join(id);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        }
    }

    fn clean_temporaries(&self, cutoff: SystemTime) -> Result<(u64, u64), BackendError> {
        let dir = self.root.join(TMP);
        let (mut count, mut bytes) = (0, 0);
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() && meta.modified().is_ok_and(|m| m < cutoff) {
                let path = entry.path();
                match fs::remove_file(&path) {
                    Ok(()) => {
                        count += 1;
                        bytes += meta.len();
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&path)(e)),
                }
            }
        }
        Ok((count, bytes))
    }
}
