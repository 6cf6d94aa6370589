//! mcodec-store: a content-addressed store for model hubs (see `docs/STORE.md`).
//!
//! Every distinct tensor is stored once under the BLAKE3-256 hash of its dtype, shape and
//! bytes ([`key`]); a fine-tune's tensors are stored as deltas against its base model's
//! tensors when that is smaller ([`mcodec::delta`]), else with the tensor codec; other
//! files and safetensors headers are deduplicated blobs. A model becomes visible when its
//! [`manifest`] is written, last and atomically, through a [`backend::Backend`] that object
//! storage can implement. Layers: [`key`] → [`object`] → [`backend`] → [`manifest`] →
//! [`Store`].
#![warn(missing_docs, unnameable_types)]

mod add;
pub mod backend;
mod base;
mod coord;
mod error;
mod fsck;
mod gc;
mod get;
mod input;
pub mod key;
pub mod manifest;
mod model;
pub mod object;
pub mod outdir;
mod progress;
mod read;
mod report;
#[cfg(feature = "s3")]
pub mod s3;
mod stats;
mod store;
#[cfg(feature = "test-hooks")]
mod test_hooks;

pub use add::AddOptions;
pub use backend::{Backend, BackendError, LocalBackend, RecordKind};
pub use base::DeltaMode;
pub use error::{InputProblem, ObjectKind, StoreError};
pub use gc::DEFAULT_GRACE;
pub use key::ObjectKey;
pub use manifest::{Manifest, ManifestError};
pub use model::Model;
pub use progress::ProgressFn;
pub use report::{
    AddReport, FsckReport, GcReport, GetReport, KindStats, ModelInfo, ModelStats, OrgStats,
    SkippedBase, Stats,
};
#[cfg(feature = "s3")]
pub use s3::{is_s3_url, S3Backend, S3Options};
pub use store::Store;
