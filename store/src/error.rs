//! Errors of store operations: one enum, each variant carrying what was found and what
//! was expected, so a caller can match on them; every message is one line that names
//! the file, model or object concerned.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::backend::BackendError;
use crate::key::ObjectKey;
use crate::manifest::ManifestError;
use crate::object::{ObjectError, TensorMeta};
use crate::outdir::OutputError;

/// Errors of store operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A model name is not allowed, or a manifest being written is invalid.
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
    /// A stored manifest names another model than the one it is stored as.
    #[error("manifest of model {name:?} names model {found:?}")]
    ManifestName {
        /// The model it is stored as.
        name: String,
        /// The name inside it.
        found: String,
    },
    /// No model of that name.
    #[error("no model named {0:?}")]
    NoSuchModel(String),
    /// A model of that name exists.
    #[error("model {0:?} already exists")]
    ModelExists(String),
    /// A new model's name differs only in letter case from a stored model's name, or
    /// from its organisation (a leading segment): on a case-insensitive file system they
    /// would share a manifest or a directory.
    #[error("model name {name:?} differs only in case from stored model {existing:?}")]
    NameCollision {
        /// The new name.
        name: String,
        /// The stored model it collides with.
        existing: String,
    },
    /// `add` was asked to use the model being added as its own base.
    #[error("model {0:?} cannot be its own base")]
    OwnBase(String),
    /// An input file cannot be read.
    #[error("{}: {problem}", path.display())]
    Input {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        problem: InputProblem,
    },
    /// The output cannot be written.
    #[error(transparent)]
    Output(#[from] OutputError),
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
    #[error(
        "object {key}: decoded bytes give name {computed}, not the object's (corrupt object or base)"
    )]
    Checksum {
        /// The object.
        key: ObjectKey,
        /// The name the decoded bytes give.
        computed: ObjectKey,
    },
    /// An object just coded by `add` decodes to bytes other than the tensor it was coded
    /// from, although they hash to the same name (never seen: the decode is compared with
    /// the input, and a difference is first reported as [`Self::Checksum`]).
    #[error("object {key}: decodes to other bytes than the tensor it was coded from")]
    VerifyMismatch {
        /// The object.
        key: ObjectKey,
    },
    /// An object is of another kind than required.
    #[error("object {key}: is a {found}, expected a {expected}")]
    WrongKind {
        /// The object.
        key: ObjectKey,
        /// The kind required.
        expected: ObjectKind,
        /// The kind it is.
        found: ObjectKind,
    },
    /// A tensor object holds another dtype or shape than expected.
    #[error(
        "object {key}: holds {} {:?} ({} bytes), expected {} {:?} ({} bytes){}",
        found.dtype, found.shape, found.raw_len, expected.dtype, expected.shape, expected.raw_len,
        tensor.as_deref().map(|t| format!(" for tensor {t:?}")).unwrap_or_default()
    )]
    WrongTensor {
        /// The object.
        key: ObjectKey,
        /// The manifest's tensor, when a manifest asked for it.
        tensor: Option<String>,
        /// What was expected.
        expected: Box<TensorMeta>,
        /// What the object holds.
        found: Box<TensorMeta>,
    },
    /// A tensor object's delta base differs from what a manifest says.
    #[error(
        "object {key}: delta base is {}, a manifest says {}",
        show_base(found),
        show_base(expected)
    )]
    WrongBase {
        /// The object.
        key: ObjectKey,
        /// The base the manifest names (`None`: a plain object).
        expected: Option<ObjectKey>,
        /// The base in the object's header (`None`: a plain object).
        found: Option<ObjectKey>,
    },
    /// A blob's decoded length differs from what its manifest says.
    #[error("object {key}: holds {found} bytes, the manifest says {expected}")]
    BlobLength {
        /// The object.
        key: ObjectKey,
        /// Length in the manifest.
        expected: u64,
        /// Length in the object's header.
        found: u64,
    },
    /// A caller's buffer for a tensor has the wrong length.
    #[error("tensor {tensor:?} is {expected} bytes, the buffer {found}")]
    BufferLength {
        /// The tensor.
        tensor: String,
        /// Its length.
        expected: u64,
        /// The buffer's.
        found: u64,
    },
    /// A file asked for whole is a safetensors file, stored as header and tensors.
    #[error("file {path:?} is a safetensors file: read its header and tensors")]
    NotBlobFile {
        /// The file.
        path: String,
    },
    /// An object read back after writing differs from what was written.
    #[error(
        "object {key}: read back after writing differs ({written} bytes written, {read} read)"
    )]
    ReadBack {
        /// The object.
        key: ObjectKey,
        /// Bytes written.
        written: u64,
        /// Bytes read back.
        read: u64,
    },
    /// An object disappeared between being stored and being referenced (a `gc` with a
    /// grace period shorter than this `add`).
    #[error("object {0} vanished before the manifest was written; run the add again")]
    Vanished(ObjectKey),
}

fn show_base(b: &Option<ObjectKey>) -> String {
    b.map_or_else(|| "none (plain)".to_owned(), |k| k.to_string())
}

/// Why an input file cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputProblem {
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Its name is not UTF-8.
    #[error("file name is not UTF-8")]
    NotUtf8,
    /// Its path inside the model is not allowed in a manifest.
    #[error(transparent)]
    Path(ManifestError),
    /// Neither a regular file nor a directory (a FIFO, socket or device).
    #[error("not a regular file or directory")]
    NotFileOrDir,
    /// Directories nest deeper than allowed.
    #[error("nested deeper than {limit} levels (a symlink loop?)")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// The directory holds more files than a manifest may list.
    #[error("more than {limit} files")]
    TooManyFiles {
        /// The limit.
        limit: usize,
    },
    /// A packed safetensors file (`.safetensors.mcz`) does not unpack.
    #[error("not a valid packed file: {0}")]
    Packed(#[source] mcodec::container::ContainerError),
    /// A packed file unpacks to the name of another file of the model.
    #[error("unpacks to {name}, which the model also holds")]
    UnpackedNameTaken {
        /// The unpacked name.
        name: String,
    },
}

/// The kinds of object (STORE.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObjectKind {
    /// A file or safetensors header.
    Blob,
    /// A tensor coded on its own.
    Plain,
    /// A tensor coded as a delta.
    Delta,
    /// A tensor, plain or delta.
    Tensor,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Blob => "blob",
            Self::Plain => "plain tensor",
            Self::Delta => "delta tensor",
            Self::Tensor => "tensor",
        })
    }
}

pub(crate) type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn obj_err(key: ObjectKey) -> impl FnOnce(ObjectError) -> StoreError {
    move |source| StoreError::Object { key, source }
}

pub(crate) fn out_err(path: &std::path::Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |e| OutputError::io(path, e).into()
}
