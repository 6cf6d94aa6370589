//! What each operation reports: plain data, serialisable for `--json`.

use serde::Serialize;

use crate::manifest::BaseRef;

/// Candidate bases with their sampled delta ratio.
pub(crate) type BaseScores = Vec<(String, f64)>;

/// What [`Store::add`](crate::Store::add) did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AddReport {
    /// Model name.
    pub name: String,
    /// Base used.
    pub base: Option<BaseRef>,
    /// Candidate bases with their sampled delta ratio (delta bytes / sampled bytes).
    pub base_scores: BaseScores,
    /// Models not considered as a base because they could not be read (a damaged
    /// manifest or object); the add went on without them.
    pub skipped_bases: Vec<SkippedBase>,
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

/// A model skipped when choosing a base automatically.
#[derive(Clone, Debug, Serialize)]
pub struct SkippedBase {
    /// The model.
    pub name: String,
    /// Why, on one line.
    pub problem: String,
}

/// What [`Store::get`](crate::Store::get) did.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct GetReport {
    /// Files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
}

/// One model in [`Store::list`](crate::Store::list).
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

/// Sizes of one organisation's models (names `org/…`; models without a `/` form the
/// organisation `""`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct OrgStats {
    /// The organisation: the first segment of its models' names, or `""`.
    pub org: String,
    /// Its models.
    pub models: usize,
    /// Total bytes of its models' files.
    pub logical_bytes: u64,
    /// Bytes of every distinct object its models need (delta bases included).
    pub needed_bytes: u64,
    /// Bytes of objects no model of another organisation needs: what removing the
    /// organisation would free.
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
    /// Per organisation (name prefix up to the first `/`), sorted by name.
    pub organisations: Vec<OrgStats>,
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

impl Stats {
    /// Keeps only the models whose names start with `prefix`, and the organisations that
    /// hold them or lie under `prefix` (store-wide totals stay as they were).
    pub fn retain_prefix(&mut self, prefix: &str) {
        self.models.retain(|m| m.name.starts_with(prefix));
        self.organisations.retain(|o| {
            let org = format!("{}/", o.org);
            org.starts_with(prefix) || prefix.starts_with(&org)
        });
    }
}

/// What [`Store::gc`](crate::Store::gc) did.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct GcReport {
    /// Objects deleted.
    pub deleted: u64,
    /// Their bytes.
    pub deleted_bytes: u64,
    /// Unreferenced objects kept because they are younger than the grace period.
    pub kept_young: u64,
    /// Unreferenced objects not deleted because writers were adding models (deleted by a
    /// later `gc`).
    pub deferred: u64,
    /// Live writer leases that made this `gc` defer its deletes.
    pub writers: u64,
    /// Temporaries of interrupted writes removed.
    pub temporaries: u64,
    /// Their bytes.
    pub temporary_bytes: u64,
}

/// What [`Store::fsck`](crate::Store::fsck) found.
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
