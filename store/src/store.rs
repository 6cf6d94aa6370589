//! The store's operations: add, get, ls, stats, rm, gc and fsck (STORE.md §5–§7).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use mcodec::delta::{self, DeltaMethod};
use mcodec::safetensors;
use mcodec::tensor::{self, EncodeOptions};
use rayon::prelude::*;
use serde::Serialize;

use crate::backend::{Backend, BackendError, LocalBackend, ObjectInfo, PutOutcome};
use crate::input::{self, Data, InputFile};
use crate::key::ObjectKey;
use crate::manifest::{
    validate_name, BaseRef, FileEntry, InlineBytes, Manifest, ManifestError, SafetensorsEntry,
    TensorEntry, FORMAT, MAX_INLINE_BYTES, VERSION,
};
use crate::object::{self, Header, ObjectError, TensorMeta};

/// Models compared in full when choosing a base automatically.
const MAX_BASE_CANDIDATES: usize = 8;
/// Tensors sampled per candidate base.
const BASE_SAMPLES: usize = 6;
/// Bytes of each sampled tensor that are delta-coded to score a base.
const SAMPLE_BYTES: usize = 1 << 20;
/// Tensors smaller than this are not sampled (biases and norms say little).
const SAMPLE_MIN_BYTES: u64 = 4096;
/// Default grace period of `gc`: unreferenced objects younger than this are kept.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// Errors of store operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A model name is not allowed, or a manifest does not parse.
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    /// A stored manifest does not parse.
    #[error("manifest of model {name:?}: {source}")]
    BadManifest {
        /// The model.
        name: String,
        /// What is wrong.
        #[source]
        source: ManifestError,
    },
    /// No model of that name.
    #[error("no model named {0:?}")]
    NoSuchModel(String),
    /// A model of that name exists.
    #[error("model {0:?} already exists")]
    ModelExists(String),
    /// An input file cannot be read.
    #[error("{}: {problem}", path.display())]
    Input {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// The output cannot be written.
    #[error("{}: {problem}", path.display())]
    Output {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// An object is damaged.
    #[error("object {key}: {source}")]
    Object {
        /// The object.
        key: ObjectKey,
        /// What is wrong.
        #[source]
        source: ObjectError,
    },
    /// An object decoded to bytes that do not give its name (for a plain tensor or a blob
    /// their hash, for a delta the name derived from their hash and its base).
    #[error("object {key}: decoded bytes do not match the object's name (corrupt object or base)")]
    Checksum {
        /// The object.
        key: ObjectKey,
    },
    /// An object is not what the manifest says it is.
    #[error("object {key}: {problem}")]
    Mismatch {
        /// The object.
        key: ObjectKey,
        /// What differs.
        problem: String,
    },
    /// An object disappeared between being stored and being referenced (a `gc` with a
    /// grace period shorter than this `add`).
    #[error("object {0} vanished before the manifest was written; run the add again")]
    Vanished(ObjectKey),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Candidate bases with their sampled delta ratio.
type BaseScores = Vec<(String, f64)>;

fn obj_err(key: ObjectKey) -> impl FnOnce(ObjectError) -> StoreError {
    move |source| StoreError::Object { key, source }
}

fn out_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Output {
        path: path.to_owned(),
        problem: e.to_string(),
    }
}

/// Which delta coder `add` uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeltaMode {
    /// Every method of [`mcodec::delta`], keeping the smallest.
    #[default]
    Best,
    /// Only BitX (the published baseline), for comparison.
    BitX,
    /// No deltas: tensors are deduplicated and coded on their own.
    Off,
}

/// Options of [`Store::add`].
#[derive(Clone, Debug, Default)]
pub struct AddOptions {
    /// Base model; chosen automatically when `None`.
    pub base: Option<String>,
    /// Delta coder.
    pub delta: DeltaMode,
    /// Tensor codec settings of plain objects.
    pub encode: EncodeOptions,
    /// Testing hook for crash tests: once this many objects have been created, print a
    /// line to stderr and sleep forever, so the test can kill the process mid-add.
    pub pause_after_objects: Option<u64>,
    /// With `pause_after_objects`: sleep this long instead of forever, then go on (the
    /// S3 tests restart the server meanwhile).
    pub pause_for: Option<Duration>,
}

/// What [`Store::add`] did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AddReport {
    /// Model name.
    pub name: String,
    /// Base used.
    pub base: Option<BaseRef>,
    /// Candidate bases with their sampled delta ratio (delta bytes / sampled bytes).
    pub base_scores: BaseScores,
    /// Files.
    pub files: usize,
    /// Tensors.
    pub tensors: usize,
    /// Total bytes of the model's files.
    pub logical_bytes: u64,
    /// Tensors and blobs already in the store.
    pub dedup: u64,
    /// Tensors stored as deltas.
    pub delta: u64,
    /// Tensors stored on their own.
    pub plain: u64,
    /// Blobs stored.
    pub blobs: u64,
    /// Bytes of the objects this add created.
    pub new_bytes: u64,
}

/// What [`Store::get`] did.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct GetReport {
    /// Files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
}

/// One model in [`Store::list`].
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    /// Name.
    pub name: String,
    /// Base.
    pub base: Option<BaseRef>,
    /// Files.
    pub files: usize,
    /// Tensors.
    pub tensors: usize,
    /// Total bytes of its files.
    pub logical_bytes: u64,
}

/// Per-model statistics.
#[derive(Clone, Debug, Serialize)]
pub struct ModelStats {
    /// Name.
    pub name: String,
    /// Base (and whether it was chosen automatically).
    pub base: Option<BaseRef>,
    /// Total bytes of its files.
    pub logical_bytes: u64,
    /// Tensors coded as deltas.
    pub delta_tensors: usize,
    /// Tensors coded on their own.
    pub plain_tensors: usize,
    /// Bytes of every distinct object needed to get it (delta bases included).
    pub needed_bytes: u64,
    /// Bytes of objects no other model needs: what `rm` and `gc` would free.
    pub exclusive_bytes: u64,
}

/// Logical and physical bytes of one kind of object.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct KindStats {
    /// Distinct objects.
    pub objects: u64,
    /// Their decoded bytes.
    pub raw_bytes: u64,
    /// Their stored bytes.
    pub stored_bytes: u64,
}

/// Store-wide statistics.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    /// Models.
    pub models: Vec<ModelStats>,
    /// Bytes of every model's files added up.
    pub logical_bytes: u64,
    /// Decoded bytes of the distinct referenced objects.
    pub unique_bytes: u64,
    /// Bytes of referenced objects plus manifests.
    pub physical_bytes: u64,
    /// Bytes of manifests.
    pub manifest_bytes: u64,
    /// Saved by storing identical tensors and files once: logical − unique (negative
    /// when objects are kept only as delta bases of models whose base was removed).
    pub saved_by_dedup: i64,
    /// Saved by coding tensors as deltas rather than on their own.
    pub saved_by_delta: i64,
    /// Saved by entropy coding (tensor codec and zstd), object headers deducted.
    pub saved_by_entropy: i64,
    /// Blobs (non-tensor files and safetensors headers).
    pub blobs: KindStats,
    /// Tensors coded on their own.
    pub plain: KindStats,
    /// Tensors coded as deltas.
    pub delta: KindStats,
    /// Small plain tensors kept inside manifests (their stored bytes are part of
    /// `manifest_bytes`).
    pub inline: KindStats,
    /// What the delta tensors would have cost coded on their own.
    pub delta_plain_bytes: u64,
    /// Unreferenced objects (reclaimed by `gc` after the grace period).
    pub orphan_objects: u64,
    /// Their bytes.
    pub orphan_bytes: u64,
}

/// What [`Store::gc`] did.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct GcReport {
    /// Objects deleted.
    pub deleted: u64,
    /// Their bytes.
    pub deleted_bytes: u64,
    /// Unreferenced objects kept because they are younger than the grace period.
    pub kept_young: u64,
    /// Temporaries of interrupted writes removed.
    pub temporaries: u64,
    /// Their bytes.
    pub temporary_bytes: u64,
}

/// What [`Store::fsck`] found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FsckReport {
    /// Models checked.
    pub models: usize,
    /// Objects decoded and checked against their keys.
    pub objects: u64,
    /// Unreferenced objects (not an error: `gc` reclaims them).
    pub orphans: u64,
    /// Problems, one line each; empty when the store is consistent.
    pub problems: Vec<String>,
}

/// A content-addressed model store over a [`Backend`].
pub struct Store {
    backend: Box<dyn Backend>,
    /// Threads for per-tensor work when the backend wants more than rayon's global pool
    /// has (a remote service: its latency overlaps across threads).
    io_pool: Option<rayon::ThreadPool>,
}

/// One safetensors tensor of an input file.
struct InputTensor<'a> {
    info: safetensors::TensorInfo,
    bytes: &'a [u8],
}

/// An input file, loaded and (for safetensors) parsed.
struct LoadedFile {
    file: InputFile,
    data: Data,
    header: Option<safetensors::Header>,
}

impl LoadedFile {
    fn tensors(&self) -> Vec<InputTensor<'_>> {
        self.header.as_ref().map_or_else(Vec::new, |h| {
            h.tensors
                .iter()
                .map(|t| InputTensor {
                    info: t.clone(),
                    bytes: &self.data[t.range.start as usize..t.range.end as usize],
                })
                .collect()
        })
    }
}

/// Counters of an add, shared between worker threads.
#[derive(Default)]
struct Counters {
    dedup: AtomicU64,
    delta: AtomicU64,
    plain: AtomicU64,
    blobs: AtomicU64,
    new_bytes: AtomicU64,
    created: AtomicU64,
    pause_after: Option<u64>,
    pause_for: Option<Duration>,
}

impl Counters {
    /// Counts a created object of `bytes` bytes (and honours the crash-test pause).
    fn created(&self, bytes: usize) {
        self.new_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let n = self.created.fetch_add(1, Ordering::SeqCst) + 1;
        if self.pause_after == Some(n) {
            eprintln!("mcodec-store: paused after {n} objects");
            match self.pause_for {
                Some(d) => std::thread::sleep(d),
                None => loop {
                    std::thread::sleep(Duration::from_secs(3600));
                },
            }
        }
    }
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
        let io_pool = (want > rayon::current_num_threads())
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

    /// Runs `f` (which uses rayon) on the I/O pool when there is one.
    fn par<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
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
            return Err(StoreError::BadManifest {
                name: name.to_owned(),
                source: ManifestError::Invalid(format!("manifest names model {:?}", m.name)),
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

    /// Adds the model at `path` (a directory or a single file) as `name`.
    pub fn add(&self, path: &Path, name: &str, opts: &AddOptions) -> Result<AddReport> {
        self.par(|| self.add_inner(path, name, opts))
    }

    fn add_inner(&self, path: &Path, name: &str, opts: &AddOptions) -> Result<AddReport> {
        validate_name(name)?;
        if self.backend.get_manifest(name)?.is_some() {
            return Err(StoreError::ModelExists(name.to_owned()));
        }
        let (single_file, files) = input::collect(path)?;
        let loaded: Vec<LoadedFile> = files
            .into_iter()
            .map(|file| {
                let data = input::load(&file.path)?;
                let header = file
                    .rel
                    .ends_with(".safetensors")
                    .then(|| safetensors::parse(&data, data.len() as u64).ok())
                    .flatten();
                Ok(LoadedFile { file, data, header })
            })
            .collect::<Result<_>>()?;
        let all_tensors: Vec<InputTensor<'_>> =
            loaded.iter().flat_map(LoadedFile::tensors).collect();

        let mut report = AddReport {
            name: name.to_owned(),
            files: loaded.len(),
            tensors: all_tensors.len(),
            logical_bytes: loaded.iter().map(|f| f.data.len() as u64).sum(),
            ..AddReport::default()
        };
        let base = match &opts.base {
            Some(b) => {
                if b == name {
                    return Err(ManifestError::Invalid(format!(
                        "model {name:?} cannot be its own base"
                    ))
                    .into());
                }
                Some((self.manifest(b)?, false))
            }
            None if opts.delta == DeltaMode::Off || all_tensors.is_empty() => None,
            None => {
                let (chosen, scores) = self.choose_base(&all_tensors, name, opts.delta)?;
                report.base_scores = scores;
                chosen.map(|m| (m, true))
            }
        };
        report.base = base.as_ref().map(|(m, auto)| BaseRef {
            name: m.name.clone(),
            auto: *auto,
        });
        let base_roots: HashMap<(&str, String, &[u64]), ObjectKey> = base
            .as_ref()
            .map(|(m, _)| {
                // Inline objects are not in the backend: no deltas against them.
                m.tensors()
                    .filter(|t| t.inline.is_none())
                    .map(|t| ((t.name.as_str(), t.dtype.clone(), &t.shape[..]), t.root()))
                    .collect()
            })
            .unwrap_or_default();

        let counters = Counters {
            pause_after: opts.pause_after_objects,
            pause_for: opts.pause_for,
            ..Counters::default()
        };
        let mut entries = Vec::with_capacity(loaded.len());
        for f in &loaded {
            let entry = match &f.header {
                None => FileEntry {
                    path: f.file.rel.clone(),
                    size: f.data.len() as u64,
                    mode: f.file.mode,
                    blob: Some(self.put_blob(&f.data, &counters)?),
                    safetensors: None,
                },
                Some(h) => {
                    let header = self.put_blob(&f.data[..h.prefix_len as usize], &counters)?;
                    let tensors = f
                        .tensors()
                        .par_iter()
                        .map(|t| {
                            let root = if opts.delta == DeltaMode::Off {
                                None
                            } else {
                                base_roots
                                    .get(&(
                                        t.info.name.as_str(),
                                        t.info.dtype.name().to_owned(),
                                        &t.info.shape[..],
                                    ))
                                    .copied()
                            };
                            self.put_tensor(t, root, opts, &counters)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    FileEntry {
                        path: f.file.rel.clone(),
                        size: f.data.len() as u64,
                        mode: f.file.mode,
                        blob: None,
                        safetensors: Some(SafetensorsEntry {
                            header,
                            header_len: h.prefix_len,
                            tensors,
                        }),
                    }
                }
            };
            entries.push(entry);
        }
        let manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            name: name.to_owned(),
            base: report.base.clone(),
            single_file,
            files: entries,
        };
        manifest.validate()?;
        // Objects first, durable, and all still there; the manifest last.
        self.backend.sync_objects()?;
        let mut needed: Vec<ObjectKey> = manifest.objects().into_iter().map(|(k, _)| k).collect();
        needed.sort();
        needed.dedup();
        for k in needed {
            if self.backend.object_size(&k)?.is_none() {
                return Err(StoreError::Vanished(k));
            }
        }
        match self.backend.put_manifest(name, &manifest.to_json()) {
            Err(BackendError::ManifestExists(n)) => return Err(StoreError::ModelExists(n)),
            r => r?,
        }
        report.dedup = counters.dedup.into_inner();
        report.delta = counters.delta.into_inner();
        report.plain = counters.plain.into_inner();
        report.blobs = counters.blobs.into_inner();
        report.new_bytes = counters.new_bytes.into_inner();
        Ok(report)
    }

    /// Stores a blob unless present; returns its key.
    fn put_blob(&self, bytes: &[u8], c: &Counters) -> Result<ObjectKey> {
        let key = ObjectKey::blob(bytes);
        if self.backend.object_size(&key)?.is_some() {
            self.backend.touch_object(&key)?;
            c.dedup.fetch_add(1, Ordering::Relaxed);
            return Ok(key);
        }
        let obj = object::encode_blob(bytes);
        if self.backend.put_object(&key, &obj)? == PutOutcome::Created {
            c.blobs.fetch_add(1, Ordering::Relaxed);
            c.created(obj.len());
        } else {
            self.backend.touch_object(&key)?;
            c.dedup.fetch_add(1, Ordering::Relaxed);
        }
        Ok(key)
    }

    /// Stores a tensor unless present, as the smaller of its plain coding (at its key) and
    /// its delta against the plain object `root` (at [`ObjectKey::delta`] of both);
    /// returns its manifest entry.
    ///
    /// A name fixes what its object decodes to and what it depends on, so an object found
    /// under either name is reused without reading it, and a put that finds (or, on a
    /// backend without create-only puts, replaces) another writer's coding is harmless.
    fn put_tensor(
        &self,
        t: &InputTensor<'_>,
        root: Option<ObjectKey>,
        opts: &AddOptions,
        c: &Counters,
    ) -> Result<TensorEntry> {
        let info = &t.info;
        let key = ObjectKey::tensor(&info.dtype, &info.shape, t.bytes);
        let entry = |delta_base: Option<ObjectKey>, inline| TensorEntry {
            name: info.name.clone(),
            dtype: info.dtype.name().to_owned(),
            shape: info.shape.clone(),
            len: t.bytes.len() as u64,
            key,
            object: delta_base.map_or(key, |b| ObjectKey::delta(&key, &b)),
            delta_base,
            inline,
        };
        if self.backend.object_size(&key)?.is_some() {
            self.backend.touch_object(&key)?;
            c.dedup.fetch_add(1, Ordering::Relaxed);
            return Ok(entry(None, None));
        }
        // A base tensor identical to this one is plain at `key`, which is missing: code
        // this tensor on its own rather than against a base that is not there.
        let root = root.filter(|r| *r != key);
        if let Some(root) = root {
            let name = ObjectKey::delta(&key, &root);
            if self.backend.object_size(&name)?.is_some() {
                self.backend.touch_object(&name)?;
                self.backend.touch_object(&root)?;
                c.dedup.fetch_add(1, Ordering::Relaxed);
                return Ok(entry(Some(root), None));
            }
        }
        let meta = TensorMeta {
            dtype: info.dtype.clone(),
            shape: info.shape.clone(),
            raw_len: t.bytes.len() as u64,
        };
        let plain = tensor::encode(&info.dtype, t.bytes, &opts.encode);
        let mut delta: Option<(ObjectKey, Vec<u8>)> = None;
        if let Some(root) = root {
            // Verified: a delta against damaged base bytes would decode wrongly once the
            // base is repaired or rewritten by another writer.
            let base = self.load_tensor(&root, Some(&meta), false, true)?;
            self.backend.touch_object(&root)?;
            let d = match opts.delta {
                DeltaMode::BitX => {
                    delta::encode_with(DeltaMethod::BitX, &info.dtype, &base, t.bytes)
                }
                _ => delta::encode(&info.dtype, &base, t.bytes),
            };
            if let Some(d) = d.ok().filter(|d| d.len() + 32 < plain.coded_len()) {
                delta = Some((root, d));
            }
        }
        let (obj, delta_base) = match delta {
            Some((root, d)) => (
                object::encode_delta(meta, root, plain.coded_len() as u64, &d),
                Some(root),
            ),
            None => (object::encode_plain(meta, &plain), None),
        };
        if delta_base.is_none() && obj.len() <= MAX_INLINE_BYTES {
            c.plain.fetch_add(1, Ordering::Relaxed);
            c.new_bytes.fetch_add(obj.len() as u64, Ordering::Relaxed);
            return Ok(entry(None, Some(InlineBytes(obj))));
        }
        let e = entry(delta_base, None);
        if self.backend.put_object(&e.object, &obj)? == PutOutcome::Existed {
            // Another writer stored it meanwhile; whatever its coding, it decodes to this
            // tensor (against the same base, for a delta).
            self.backend.touch_object(&e.object)?;
            c.dedup.fetch_add(1, Ordering::Relaxed);
            return Ok(e);
        }
        let counter = if delta_base.is_some() {
            &c.delta
        } else {
            &c.plain
        };
        counter.fetch_add(1, Ordering::Relaxed);
        c.created(obj.len());
        Ok(e)
    }

    /// An object's header.
    pub fn header(&self, key: &ObjectKey) -> Result<Header> {
        let head = self
            .backend
            .get_object_range(key, 0..object::MAX_HEADER_LEN as u64)?;
        Ok(Header::parse(&head).map_err(obj_err(*key))?.0)
    }

    /// Decodes the tensor object named `key` (checking it is `expect` when given),
    /// verifying the bytes against the name when `verify`. A delta object is decoded
    /// against its base only when `allow_delta`; the base must be plain (chains are one
    /// level deep).
    fn load_tensor(
        &self,
        key: &ObjectKey,
        expect: Option<&TensorMeta>,
        allow_delta: bool,
        verify: bool,
    ) -> Result<Vec<u8>> {
        let obj = self.backend.get_object(key)?;
        let (header, n) = Header::parse(&obj).map_err(obj_err(*key))?;
        let meta = header.meta().ok_or_else(|| StoreError::Mismatch {
            key: *key,
            problem: "is a blob, not a tensor".into(),
        })?;
        if let Some(e) = expect.filter(|e| *e != meta) {
            return Err(StoreError::Mismatch {
                key: *key,
                problem: format!(
                    "holds {} {:?}, expected {} {:?}",
                    meta.dtype, meta.shape, e.dtype, e.shape
                ),
            });
        }
        let mut out = object::alloc(meta.raw_len).map_err(obj_err(*key))?;
        self.decode_tensor_object(key, &header, &obj[n..], allow_delta, verify, &mut out)?;
        Ok(out)
    }

    /// Decodes the payload of the tensor object named `key` into `out` and, when `verify`,
    /// checks the bytes against the name: a plain object's name is the tensor's key, a
    /// delta object's is [`ObjectKey::delta`] of the tensor's key and the header's base
    /// (which also checks that the header names the base the name was made with). Returns
    /// the tensor's key when verified.
    fn decode_tensor_object(
        &self,
        key: &ObjectKey,
        header: &Header,
        payload: &[u8],
        allow_delta: bool,
        verify: bool,
        out: &mut [u8],
    ) -> Result<Option<ObjectKey>> {
        match header {
            Header::Blob { .. } => {
                return Err(StoreError::Mismatch {
                    key: *key,
                    problem: "is a blob, not a tensor".into(),
                })
            }
            Header::Plain {
                codec,
                chunk_log2,
                stream_lens,
                ..
            } => object::decode_plain_into(*codec, *chunk_log2, stream_lens, payload, out)
                .map_err(obj_err(*key))?,
            Header::Delta { meta, base, .. } => {
                if !allow_delta {
                    return Err(StoreError::Mismatch {
                        key: *key,
                        problem: "is a delta where a plain object is required".into(),
                    });
                }
                // Not verified on its own: a wrong base gives a wrong result, which the
                // check of this object's name below catches.
                let base_bytes = self.load_tensor(base, Some(meta), false, false)?;
                delta::decode(&meta.dtype, &base_bytes, payload, out).map_err(|e| {
                    StoreError::Object {
                        key: *key,
                        source: ObjectError::Payload(e.to_string()),
                    }
                })?;
            }
        }
        if !verify {
            return Ok(None);
        }
        let meta = header.meta().expect("tensor header");
        let tensor = ObjectKey::tensor(&meta.dtype, &meta.shape, out);
        let name = header
            .delta_base()
            .map_or(tensor, |b| ObjectKey::delta(&tensor, &b));
        if name != *key {
            return Err(StoreError::Checksum { key: *key });
        }
        Ok(Some(tensor))
    }

    /// Decodes the tensor of manifest entry `t` into `out` and verifies it.
    fn get_tensor_into(&self, t: &TensorEntry, out: &mut [u8]) -> Result<()> {
        let obj = match &t.inline {
            Some(i) => i.0.clone(),
            None => self.backend.get_object(&t.object)?,
        };
        let (header, n) = Header::parse(&obj).map_err(obj_err(t.object))?;
        let want = TensorMeta {
            dtype: t.dtype(),
            shape: t.shape.clone(),
            raw_len: t.len,
        };
        if header.meta() != Some(&want) || header.delta_base() != t.delta_base {
            return Err(StoreError::Mismatch {
                key: t.object,
                problem: format!("does not hold tensor {:?} as the manifest says", t.name),
            });
        }
        let decoded = self.decode_tensor_object(&t.object, &header, &obj[n..], true, true, out)?;
        if decoded != Some(t.key) {
            return Err(StoreError::Checksum { key: t.object });
        }
        Ok(())
    }

    /// Decodes a blob and verifies it.
    fn get_blob(&self, key: &ObjectKey, len: u64) -> Result<Vec<u8>> {
        let obj = self.backend.get_object(key)?;
        let (header, n) = Header::parse(&obj).map_err(obj_err(*key))?;
        let Header::Blob { zstd, raw_len } = header else {
            return Err(StoreError::Mismatch {
                key: *key,
                problem: "is a tensor, not a blob".into(),
            });
        };
        if raw_len != len {
            return Err(StoreError::Mismatch {
                key: *key,
                problem: format!("holds {raw_len} bytes, the manifest says {len}"),
            });
        }
        let bytes = object::decode_blob(zstd, raw_len, &obj[n..]).map_err(obj_err(*key))?;
        if ObjectKey::blob(&bytes) != *key {
            return Err(StoreError::Checksum { key: *key });
        }
        Ok(bytes)
    }

    /// Chooses the base among stored models with matching tensors: the one whose
    /// sampled tensors give the smallest deltas. Returns it and every candidate's score.
    fn choose_base(
        &self,
        tensors: &[InputTensor<'_>],
        name: &str,
        mode: DeltaMode,
    ) -> Result<(Option<Manifest>, BaseScores)> {
        let mut candidates: Vec<(usize, Manifest)> = Vec::new();
        for n in self.backend.list_manifests()? {
            if n == name || validate_name(&n).is_err() {
                continue;
            }
            let m = self.manifest(&n)?;
            let theirs: HashSet<(&str, &str, &[u64])> = m
                .tensors()
                .map(|t| (t.name.as_str(), t.dtype.as_str(), &t.shape[..]))
                .collect();
            let matching = tensors
                .iter()
                .filter(|t| {
                    theirs.contains(&(t.info.name.as_str(), t.info.dtype.name(), &t.info.shape[..]))
                })
                .count();
            // At least half of the new model's tensors must have a counterpart.
            if matching > 0 && 2 * matching >= tensors.len() {
                candidates.push((matching, m));
            }
        }
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
        candidates.truncate(MAX_BASE_CANDIDATES);
        let mut scores = Vec::new();
        let mut best: Option<(f64, Manifest)> = None;
        for (_, m) in candidates {
            let score = self.score_base(tensors, &m, mode)?;
            scores.push((m.name.clone(), score));
            if best.as_ref().is_none_or(|(s, _)| score < *s) {
                best = Some((score, m));
            }
        }
        Ok((best.map(|(_, m)| m), scores))
    }

    /// Sampled delta size of `tensors` against base `m`: delta bytes over sampled bytes,
    /// a tensor without a counterpart counting as incompressible.
    fn score_base(
        &self,
        tensors: &[InputTensor<'_>],
        m: &Manifest,
        mode: DeltaMode,
    ) -> Result<f64> {
        let theirs: HashMap<(&str, &str, &[u64]), &TensorEntry> = m
            .tensors()
            .map(|t| ((t.name.as_str(), t.dtype.as_str(), &t.shape[..]), t))
            .collect();
        let big: Vec<&InputTensor<'_>> = tensors
            .iter()
            .filter(|t| t.bytes.len() as u64 >= SAMPLE_MIN_BYTES)
            .collect();
        let pool: Vec<&InputTensor<'_>> = if big.is_empty() {
            tensors.iter().collect()
        } else {
            big
        };
        let step = pool.len().div_ceil(BASE_SAMPLES).max(1);
        let sampled: Vec<(u64, u64)> = pool
            .iter()
            .step_by(step)
            .collect::<Vec<_>>()
            .par_iter()
            .map(|t| {
                let n = t.bytes.len().min(SAMPLE_BYTES) as u64;
                let key = (t.info.name.as_str(), t.info.dtype.name(), &t.info.shape[..]);
                let Some(e) = theirs.get(&key) else {
                    return Ok((n, n));
                };
                let width = t.info.dtype.element_size().unwrap_or(1);
                let n = (n as usize) / width * width;
                if e.key == ObjectKey::tensor(&t.info.dtype, &t.info.shape, t.bytes) {
                    return Ok((n as u64, 0));
                }
                let base = match &e.inline {
                    Some(_) => {
                        let mut b = object::alloc(e.len).map_err(obj_err(e.object))?;
                        self.get_tensor_into(e, &mut b)?;
                        b
                    }
                    // Scored against the plain root, which is what a delta would be coded
                    // against.
                    None => self.load_tensor(&e.root(), None, false, false)?,
                };
                let d = match mode {
                    DeltaMode::BitX => delta::encode_with(
                        DeltaMethod::BitX,
                        &t.info.dtype,
                        &base[..n],
                        &t.bytes[..n],
                    ),
                    _ => delta::encode(&t.info.dtype, &base[..n], &t.bytes[..n]),
                };
                Ok((n as u64, d.map_or(n, |d| d.len()) as u64))
            })
            .collect::<Result<_>>()?;
        let (total, coded) = sampled
            .iter()
            .fold((0u64, 0u64), |(a, b), (n, d)| (a + n, b + d));
        Ok(if total == 0 {
            1.0
        } else {
            coded as f64 / total as f64
        })
    }

    /// Writes model `name` to the new directory `out` (replacing an existing one only with
    /// `force`): every file rebuilt and verified in a temporary directory beside `out`,
    /// then renamed into place. With `sync`, files are flushed to disk first.
    pub fn get(&self, name: &str, out: &Path, force: bool, sync: bool) -> Result<GetReport> {
        self.par(|| self.get_inner(name, out, force, sync))
    }

    fn get_inner(&self, name: &str, out: &Path, force: bool, sync: bool) -> Result<GetReport> {
        let m = self.manifest(name)?;
        check_output(out, force)?;
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let holder = tempfile::Builder::new()
            .prefix(".mcodec-get-")
            .tempdir_in(parent)
            .map_err(out_err(out))?;
        let root = holder.path().join("out");
        fs::create_dir(&root).map_err(out_err(out))?;
        let mut report = GetReport::default();
        for f in &m.files {
            let dest = root.join(&f.path);
            if let Some(dir) = dest.parent() {
                fs::create_dir_all(dir).map_err(out_err(out))?;
            }
            self.write_file(f, &dest, sync).map_err(|e| match e {
                StoreError::Output { problem, .. } => StoreError::Output {
                    path: out.join(&f.path),
                    problem,
                },
                e => e,
            })?;
            set_mode(&dest, f.mode).map_err(out_err(out))?;
            report.files += 1;
            report.bytes += f.size;
        }
        if sync {
            File::open(&root)
                .and_then(|d| d.sync_all())
                .map_err(out_err(out))?;
        }
        // Re-checked at the end: a directory may have appeared meanwhile.
        check_output(out, force)?;
        if fs::symlink_metadata(out).is_ok() {
            let aside = holder.path().join("old");
            fs::rename(out, &aside).map_err(out_err(out))?;
            if let Err(e) = fs::rename(&root, out) {
                let _ = fs::rename(&aside, out);
                return Err(out_err(out)(e));
            }
        } else {
            fs::rename(&root, out).map_err(out_err(out))?;
        }
        Ok(report)
    }

    /// Writes one file of a model to `dest`.
    fn write_file(&self, f: &FileEntry, dest: &Path, sync: bool) -> Result<()> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dest)
            .map_err(out_err(dest))?;
        if let Some(key) = &f.blob {
            let bytes = self.get_blob(key, f.size)?;
            (&file).write_all(&bytes).map_err(out_err(dest))?;
        } else if let Some(st) = &f.safetensors {
            if f.size > 0 {
                file.set_len(f.size).map_err(out_err(dest))?;
                // SAFETY: the file was just created by us in a private temporary directory
                // and has the length set above; nothing else maps or truncates it.
                let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(out_err(dest))?;
                let header = self.get_blob(&st.header, st.header_len)?;
                let (head, mut rest) = map.split_at_mut(header.len());
                head.copy_from_slice(&header);
                let mut slices = Vec::with_capacity(st.tensors.len());
                for t in &st.tensors {
                    let (s, tail) = std::mem::take(&mut rest).split_at_mut(t.len as usize);
                    slices.push((t, s));
                    rest = tail;
                }
                slices
                    .into_par_iter()
                    .try_for_each(|(t, s)| self.get_tensor_into(t, s))?;
                if sync {
                    map.flush().map_err(out_err(dest))?;
                }
            }
        }
        if sync {
            file.sync_all().map_err(out_err(dest))?;
        }
        Ok(())
    }

    /// Every model with its size and base.
    pub fn list(&self) -> Result<Vec<ModelInfo>> {
        Ok(self
            .manifests()?
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

    /// Removes model `name` (its manifest). Its objects stay until `gc`.
    pub fn remove(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        if !self.backend.delete_manifest(name)? {
            return Err(StoreError::NoSuchModel(name.to_owned()));
        }
        Ok(())
    }

    /// Logical and physical sizes, per model and store-wide, with the savings attributed
    /// to dedup, delta and entropy coding.
    pub fn stats(&self) -> Result<Stats> {
        self.par(|| self.stats_inner())
    }

    fn stats_inner(&self) -> Result<Stats> {
        let manifests = self.manifests()?;
        let listed: HashMap<ObjectKey, u64> = self
            .backend
            .list_objects()?
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        let size_of = |k: &ObjectKey| listed.get(k).copied().unwrap_or(0);
        // Decoded size and kind of each referenced object.
        #[derive(Clone, Copy, PartialEq)]
        enum Kind {
            Blob,
            Plain,
            Delta,
        }
        let mut kinds: HashMap<ObjectKey, (Kind, u64)> = HashMap::new();
        let mut inline_objects: HashMap<ObjectKey, (u64, u64)> = HashMap::new();
        let mut users: HashMap<ObjectKey, usize> = HashMap::new();
        for m in &manifests {
            for f in &m.files {
                if let Some(b) = f.blob {
                    kinds.insert(b, (Kind::Blob, f.size));
                }
                if let Some(st) = &f.safetensors {
                    kinds.insert(st.header, (Kind::Blob, st.header_len));
                    for t in &st.tensors {
                        if let Some(i) = &t.inline {
                            inline_objects.insert(t.object, (t.len, i.0.len() as u64));
                            continue;
                        }
                        match t.delta_base {
                            Some(b) => {
                                kinds.insert(t.object, (Kind::Delta, t.len));
                                kinds.entry(b).or_insert((Kind::Plain, t.len));
                            }
                            None => {
                                kinds.insert(t.object, (Kind::Plain, t.len));
                            }
                        }
                    }
                }
            }
            let mine: HashSet<ObjectKey> = m.objects().into_iter().map(|(k, _)| k).collect();
            for k in mine {
                *users.entry(k).or_default() += 1;
            }
        }
        let mut blobs = KindStats::default();
        let mut plain = KindStats::default();
        let mut delta = KindStats::default();
        let mut delta_plain_bytes = 0u64;
        let delta_keys: Vec<ObjectKey> = kinds
            .iter()
            .filter(|(_, (k, _))| *k == Kind::Delta)
            .map(|(key, _)| *key)
            .collect();
        let plain_lens: HashMap<ObjectKey, u64> = delta_keys
            .par_iter()
            .map(|k| {
                let plain_len = match self.header(k) {
                    Ok(Header::Delta { plain_len, .. }) => plain_len,
                    _ => 0,
                };
                (*k, plain_len)
            })
            .collect();
        for (key, (kind, raw)) in &kinds {
            let s = match kind {
                Kind::Blob => &mut blobs,
                Kind::Plain => &mut plain,
                Kind::Delta => {
                    delta_plain_bytes += plain_lens.get(key).copied().unwrap_or(0);
                    &mut delta
                }
            };
            s.objects += 1;
            s.raw_bytes += raw;
            s.stored_bytes += size_of(key);
        }
        let models = manifests
            .iter()
            .map(|m| {
                let mine: HashSet<ObjectKey> = m.objects().into_iter().map(|(k, _)| k).collect();
                ModelStats {
                    name: m.name.clone(),
                    base: m.base.clone(),
                    logical_bytes: m.logical_size(),
                    delta_tensors: m.tensors().filter(|t| t.delta_base.is_some()).count(),
                    plain_tensors: m.tensors().filter(|t| t.delta_base.is_none()).count(),
                    needed_bytes: mine.iter().map(size_of).sum(),
                    exclusive_bytes: mine
                        .iter()
                        .filter(|k| users.get(*k) == Some(&1))
                        .map(size_of)
                        .sum(),
                }
            })
            .collect();
        let manifest_bytes: u64 = manifests.iter().map(|m| m.to_json().len() as u64).sum();
        let logical_bytes: u64 = manifests.iter().map(Manifest::logical_size).sum();
        let mut inline = KindStats::default();
        for (raw, stored) in inline_objects.values() {
            inline.objects += 1;
            inline.raw_bytes += raw;
            inline.stored_bytes += stored;
        }
        let unique_bytes = blobs.raw_bytes + plain.raw_bytes + delta.raw_bytes + inline.raw_bytes;
        let stored = blobs.stored_bytes + plain.stored_bytes + delta.stored_bytes;
        let (orphan_objects, orphan_bytes) = listed
            .iter()
            .filter(|(k, _)| !kinds.contains_key(*k))
            .fold((0, 0), |(n, b), (_, s)| (n + 1, b + s));
        let saved_by_delta = delta_plain_bytes as i64 - delta.stored_bytes as i64;
        Ok(Stats {
            models,
            logical_bytes,
            unique_bytes,
            physical_bytes: stored + manifest_bytes,
            manifest_bytes,
            saved_by_dedup: logical_bytes as i64 - unique_bytes as i64,
            saved_by_delta,
            saved_by_entropy: unique_bytes as i64
                - stored as i64
                - inline.stored_bytes as i64
                - saved_by_delta,
            blobs,
            plain,
            delta,
            inline,
            delta_plain_bytes,
            orphan_objects,
            orphan_bytes,
        })
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

    /// Checks every manifest and every object: each object decodes to what its name says
    /// (a blob or plain tensor hashes to its name; a delta's tensor key and header base
    /// give its name), deltas point at plain objects of the same tensor shape, manifests
    /// agree with their objects and nothing they need is missing.
    pub fn fsck(&self) -> Result<FsckReport> {
        self.par(|| self.fsck_inner())
    }

    fn fsck_inner(&self) -> Result<FsckReport> {
        let mut report = FsckReport::default();
        let objects = self.backend.list_objects()?;
        let present: HashSet<ObjectKey> = objects.iter().map(|o| o.key).collect();
        let mut referenced: HashSet<ObjectKey> = HashSet::new();
        let mut expected: HashMap<ObjectKey, (Option<TensorMeta>, Option<ObjectKey>)> =
            HashMap::new();
        for name in self.backend.list_manifests()? {
            let m = match self.manifest(&name) {
                Ok(m) => m,
                Err(e) => {
                    report.problems.push(e.to_string());
                    continue;
                }
            };
            report.models += 1;
            for (k, _) in m.objects() {
                referenced.insert(k);
                if !present.contains(&k) {
                    report
                        .problems
                        .push(format!("model {name:?}: object {k} is missing"));
                }
            }
            for t in m.tensors().filter(|t| t.inline.is_some()) {
                report.objects += 1;
                let checked = object::alloc(t.len)
                    .map_err(obj_err(t.object))
                    .and_then(|mut out| self.get_tensor_into(t, &mut out));
                if let Err(e) = checked {
                    report
                        .problems
                        .push(format!("model {name:?}: inline tensor {:?}: {e}", t.name));
                }
            }
            for f in &m.files {
                if let Some(b) = f.blob {
                    expected.insert(b, (None, None));
                }
                if let Some(st) = &f.safetensors {
                    expected.insert(st.header, (None, None));
                    for t in st.tensors.iter().filter(|t| t.inline.is_none()) {
                        let meta = TensorMeta {
                            dtype: t.dtype(),
                            shape: t.shape.clone(),
                            raw_len: t.len,
                        };
                        expected.insert(t.object, (Some(meta), t.delta_base));
                    }
                }
            }
        }
        report.orphans = objects
            .iter()
            .filter(|o| !referenced.contains(&o.key))
            .count() as u64;
        let problems: Vec<String> = objects
            .par_iter()
            .filter_map(|o| {
                self.check_object(&o.key, expected.get(&o.key))
                    .err()
                    .map(|e| e.to_string())
            })
            .collect();
        report.objects += objects.len() as u64;
        report.problems.extend(problems);
        Ok(report)
    }

    /// Decodes the object named `key`, checks it against its name and against what a
    /// manifest says.
    fn check_object(
        &self,
        key: &ObjectKey,
        expect: Option<&(Option<TensorMeta>, Option<ObjectKey>)>,
    ) -> Result<()> {
        let obj = self.backend.get_object(key)?;
        let (header, n) = Header::parse(&obj).map_err(obj_err(*key))?;
        match &header {
            Header::Blob { zstd, raw_len } => {
                if expect.is_some_and(|(m, _)| m.is_some()) {
                    return Err(StoreError::Mismatch {
                        key: *key,
                        problem: "a manifest lists it as a tensor but it is a blob".into(),
                    });
                }
                let bytes =
                    object::decode_blob(*zstd, *raw_len, &obj[n..]).map_err(obj_err(*key))?;
                if ObjectKey::blob(&bytes) != *key {
                    return Err(StoreError::Checksum { key: *key });
                }
            }
            Header::Plain { meta, .. } | Header::Delta { meta, .. } => {
                if let Some((m, base)) = expect {
                    if m.as_ref() != Some(meta) || *base != header.delta_base() {
                        return Err(StoreError::Mismatch {
                            key: *key,
                            problem: "differs from what a manifest says it holds".into(),
                        });
                    }
                }
                let mut out = object::alloc(meta.raw_len).map_err(obj_err(*key))?;
                self.decode_tensor_object(key, &header, &obj[n..], true, true, &mut out)?;
            }
        }
        Ok(())
    }
}

/// Refuses an output that exists (without `force`) or is a symlink.
fn check_output(out: &Path, force: bool) -> Result<()> {
    match fs::symlink_metadata(out) {
        Err(_) => Ok(()),
        Ok(m) if m.file_type().is_symlink() => Err(StoreError::Output {
            path: out.to_owned(),
            problem: "is a symbolic link; refusing to write through it".into(),
        }),
        Ok(_) if !force => Err(StoreError::Output {
            path: out.to_owned(),
            problem: "already exists (use -f to overwrite)".into(),
        }),
        Ok(_) => Ok(()),
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let mut p = fs::metadata(path)?.permissions();
        p.set_readonly(mode & 0o200 == 0);
        fs::set_permissions(path, p)
    }
}
