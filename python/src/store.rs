//! `mcodec._native.Store`: the hub store (a local directory or `s3://bucket/prefix`),
//! with `load` decoding a stored model's tensors straight into caller memory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mcodec_store::outdir::OutputError;
use mcodec_store::{is_s3_url, AddOptions, DeltaMode, S3Backend, S3Options, Store, StoreError};
use pyo3::prelude::*;
use rayon::prelude::*;

use crate::errors::{error, Kind};
use crate::pool;

/// A hub store.
#[pyclass(frozen, module = "mcodec._native", name = "Store")]
pub struct PyStore {
    store: Store,
    root: String,
}

/// One stored tensor as Python sees it: file, name, dtype, shape, byte length.
type Entry = (String, String, String, Vec<u64>, u64);

impl PyStore {
    fn err(&self, e: StoreError) -> PyErr {
        store_error(&self.root, e)
    }
}

/// A store error as the matching `mcodec.Error` subclass, naming the store.
fn store_error(root: &str, e: StoreError) -> PyErr {
    let kind = match &e {
        StoreError::NoSuchModel(_) => Kind::NoTensor,
        StoreError::ModelExists(_) | StoreError::NameCollision { .. } => Kind::Exists,
        StoreError::Manifest(_) | StoreError::OwnBase(_) | StoreError::BufferLength { .. } => {
            Kind::Argument
        }
        StoreError::Output(OutputError::Exists { .. }) => Kind::Exists,
        StoreError::Input { .. } | StoreError::Output(_) | StoreError::Backend(_) => Kind::File,
        _ => Kind::Corrupt,
    };
    let message = e
        .to_string()
        .replace("(use -f to overwrite)", "(pass force=True to overwrite)");
    error(kind, format!("store {root}: {message}"))
}

fn json<T: serde::Serialize>(v: &T) -> PyResult<String> {
    serde_json::to_string(v).map_err(|e| error(Kind::Argument, e.to_string()))
}

#[pymethods]
impl PyStore {
    /// Opens the store at `root` (a directory or `s3://bucket/prefix`; S3 settings from
    /// the `AWS_*` environment), or creates it with `create`.
    #[new]
    #[pyo3(signature = (root, create=false))]
    fn new(py: Python<'_>, root: String, create: bool) -> PyResult<Self> {
        let opened = py.detach(|| -> Result<Store, StoreError> {
            if is_s3_url(&root) {
                let backend = if create {
                    S3Backend::init(&root, S3Options::default())?
                } else {
                    S3Backend::open(&root, S3Options::default())?
                };
                Ok(Store::with_backend(Box::new(backend)))
            } else if create {
                Store::init(Path::new(&root))
            } else {
                Store::open(Path::new(&root))
            }
        });
        let store = opened.map_err(|e| store_error(&root, e))?;
        Ok(Self { store, root })
    }

    /// The store's root as given.
    #[getter]
    fn root(&self) -> String {
        self.root.clone()
    }

    /// Adds the model at `path` (file or directory) as `name`; returns the report as JSON.
    #[pyo3(signature = (path, name, base=None, delta="best"))]
    fn add(
        &self,
        py: Python<'_>,
        path: PathBuf,
        name: String,
        base: Option<String>,
        delta: &str,
    ) -> PyResult<String> {
        let delta = match delta {
            "best" => DeltaMode::Best,
            "bitx" => DeltaMode::BitX,
            "off" => DeltaMode::Off,
            other => {
                return Err(error(
                    Kind::Argument,
                    format!("delta {other:?}: expected 'best', 'bitx' or 'off'"),
                ))
            }
        };
        let opts = AddOptions {
            base,
            delta,
            ..AddOptions::default()
        };
        let report = py
            .detach(|| self.store.add(&path, &name, &opts))
            .map_err(|e| self.err(e))?;
        json(&report)
    }

    /// Writes model `name` to `out` (refusing to overwrite without `force`); returns the
    /// report as JSON.
    #[pyo3(signature = (name, out, force=false))]
    fn get(&self, py: Python<'_>, name: String, out: PathBuf, force: bool) -> PyResult<String> {
        let report = py
            .detach(|| self.store.get(&name, &out, force, false))
            .map_err(|e| self.err(e))?;
        json(&report)
    }

    /// The stored models as JSON.
    fn list(&self, py: Python<'_>) -> PyResult<String> {
        let models = py.detach(|| self.store.list()).map_err(|e| self.err(e))?;
        json(&models)
    }

    /// Removes model `name` (its objects go at the next `gc`).
    fn remove(&self, py: Python<'_>, name: String) -> PyResult<()> {
        py.detach(|| self.store.remove(&name))
            .map_err(|e| self.err(e))
    }

    /// Logical and physical sizes (`mcodec store stats --json`), of the models and
    /// organisations under `prefix` if given.
    #[pyo3(signature = (prefix=None))]
    fn stats(&self, py: Python<'_>, prefix: Option<String>) -> PyResult<String> {
        let mut stats = py.detach(|| self.store.stats()).map_err(|e| self.err(e))?;
        if let Some(prefix) = prefix {
            stats.retain_prefix(&prefix);
        }
        json(&stats)
    }

    /// Deletes the objects no model needs that are older than `grace_s` seconds; returns
    /// the report as JSON.
    fn gc(&self, py: Python<'_>, grace_s: f64) -> PyResult<String> {
        let grace = Duration::try_from_secs_f64(grace_s).map_err(|_| {
            error(
                Kind::Argument,
                format!("grace {grace_s}: expected a number of seconds, 0 or more"),
            )
        })?;
        let report = py
            .detach(|| self.store.gc(grace))
            .map_err(|e| self.err(e))?;
        json(&report)
    }

    /// Decodes every object and checks it against its key and the manifests; returns the
    /// report as JSON (its `problems` are empty when the store is consistent).
    fn fsck(&self, py: Python<'_>) -> PyResult<String> {
        let report = py.detach(|| self.store.fsck()).map_err(|e| self.err(e))?;
        json(&report)
    }

    /// Every tensor of model `name`'s safetensors files: `(file, name, dtype, shape,
    /// nbytes)`.
    fn tensors(&self, py: Python<'_>, name: String) -> PyResult<Vec<Entry>> {
        let model = py
            .detach(|| self.store.model(&name))
            .map_err(|e| self.err(e))?;
        Ok(model
            .tensors()
            .map(|(file, t)| {
                (
                    file.to_owned(),
                    t.name.clone(),
                    t.dtype.clone(),
                    t.shape.clone(),
                    t.len,
                )
            })
            .collect())
    }

    /// Decodes tensors of model `name` into memory: `(file, tensor, address, nbytes)`
    /// each, in parallel with the GIL released, every tensor verified against its key.
    /// The addresses must be writable, non-overlapping and kept alive by the caller.
    #[pyo3(signature = (name, targets, threads=None))]
    fn decode_into(
        &self,
        py: Python<'_>,
        name: String,
        targets: Vec<(String, String, usize, usize)>,
        threads: Option<usize>,
    ) -> PyResult<()> {
        let model = py
            .detach(|| self.store.model(&name))
            .map_err(|e| self.err(e))?;
        let mut work = Vec::with_capacity(targets.len());
        for (file, tensor, address, len) in targets {
            let entry = model.tensor(&file, &tensor).ok_or_else(|| {
                error(
                    Kind::NoTensor,
                    format!(
                        "store {}: model {name:?} has no tensor {tensor:?} in {file:?}",
                        self.root
                    ),
                )
            })?;
            if entry.len != len as u64 || (len > 0 && address == 0) {
                return Err(error(
                    Kind::Argument,
                    format!(
                        "tensor {tensor:?} has {} bytes, the buffer {len}",
                        entry.len
                    ),
                ));
            }
            work.push((entry, address, len));
        }
        work.sort_by_key(|w| std::cmp::Reverse(w.2));
        let store = &self.store;
        py.detach(|| {
            pool::run(threads, || {
                work.par_iter().try_for_each(|&(entry, address, len)| {
                    let out: &mut [u8] = if len == 0 {
                        &mut []
                    } else {
                        // SAFETY: the caller guarantees (see the method's docs) that
                        // `address` points to `len` writable bytes used by nothing else
                        // until this returns, not overlapping another target; it is not
                        // null (checked above) and bytes need no alignment.
                        unsafe { std::slice::from_raw_parts_mut(address as *mut u8, len) }
                    };
                    store.read_tensor_into(entry, out)
                })
            })
        })?
        .map_err(|e| self.err(e))
    }

    fn __repr__(&self) -> String {
        format!("<mcodec Store {:?}>", self.root)
    }
}
