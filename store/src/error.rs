//! Errors of store operations.

use std::path::{Path, PathBuf};

use crate::backend::BackendError;
use crate::key::ObjectKey;
use crate::manifest::ManifestError;
use crate::object::ObjectError;
use crate::outdir::OutputError;

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

pub(crate) type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn obj_err(key: ObjectKey) -> impl FnOnce(ObjectError) -> StoreError {
    move |source| StoreError::Object { key, source }
}

pub(crate) fn out_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Output {
        path: path.to_owned(),
        problem: e.to_string(),
    }
}

impl From<OutputError> for StoreError {
    fn from(e: OutputError) -> Self {
        let path = e.path().to_owned();
        let problem = e.to_string();
        let prefix = format!("{}: ", path.display());
        let problem = problem.strip_prefix(&prefix).unwrap_or(&problem).to_owned();
        Self::Output { path, problem }
    }
}
