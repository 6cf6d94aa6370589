//! mcodec-store: a content-addressed store for model hubs (see `docs/STORE.md`).
//!
//! Every distinct tensor is stored once under the BLAKE3-256 hash of its dtype, shape and
//! bytes ([`ObjectKey`]); a fine-tune's tensors are stored as deltas against its base
//! model's tensors when that is smaller ([`mcodec::delta`]), else with the tensor codec;
//! other files and safetensors headers are deduplicated blobs. A model becomes visible when
//! its [`Manifest`] is written, last and atomically, through a [`Backend`] that object
//! storage can implement ([`LocalBackend`], [`S3Backend`]). Layers: key → object →
//! backend → manifest → [`Store`].
//!
//! [`outdir`] is the one module of helpers beside [`Store`]: the crash-safe outputs that
//! `get` writes, shared with the `mcodec` CLI and the Python package so that every front
//! end builds its outputs the same way and a signal handler can remove all temporaries.
#![warn(missing_docs, unnameable_types)]

mod add;
mod backend;
mod base;
mod coord;
mod error;
mod fsck;
mod gc;
mod get;
mod input;
mod key;
mod model;
pub mod outdir;
mod pieces;
mod progress;
mod read;
mod report;
#[cfg(feature = "s3")]
mod s3;
mod scratch;
mod stats;
mod store;
#[cfg(feature = "test-hooks")]
mod test_hooks;
mod treehash;
mod writer;

// Internal layers. The `fuzzing` feature (fuzz targets, this crate's own integration tests)
// makes them public, hidden from the docs; what the public API needs of them is exported
// below either way.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod manifest;
#[cfg(not(feature = "fuzzing"))]
mod manifest;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod object;
#[cfg(not(feature = "fuzzing"))]
mod object;

pub use add::AddOptions;
pub use backend::{
    Backend, BackendError, LocalBackend, ObjectBytes, ObjectInfo, PutOutcome, RecordKind,
    MAP_MIN_BYTES,
};
pub use base::DeltaMode;
pub use error::{InputProblem, ObjectKind, StoreError};
pub use gc::DEFAULT_GRACE;
pub use key::{KeyParseError, ObjectKey};
pub use manifest::{
    BaseRef, FileEntry, FileProblem, InlineBytes, Manifest, ManifestError, SafetensorsEntry,
    TensorEntry,
};
pub use model::Model;
pub use object::{ObjectError, TensorMeta};
pub use progress::ProgressFn;
pub use report::{
    AddReport, FsckReport, GcReport, GetReport, KindStats, ModelInfo, ModelStats, OrgStats,
    SkippedBase, Stats,
};
#[cfg(feature = "s3")]
pub use s3::{is_s3_url, S3Backend, S3Options};
pub use store::Store;
