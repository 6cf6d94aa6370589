//! The S3-compatible backend (STORE.md §8): AWS S3, Cloudflare R2, MinIO, Ceph RGW, Garage.
//!
//! Layout under `s3://bucket/prefix/`: the marker `mcodec-store.json`, objects at
//! `objects/<2 hex>/<64 hex>`, touch markers at `touched/<64 hex>`, manifests at
//! `models/<name>.json` and publication claims at `claims/<name>/<writer>`.
//!
//! Nothing here needs conditional writes, which some services (Garage) do not offer:
//! an object's name fixes what it decodes to and what it depends on, so a second writer
//! overwriting it is harmless; "touching" an object writes its touch marker (copying an
//! object onto itself is refused by AWS); and a manifest is published under a claim
//! protocol that gives one writer per name (see [`S3Backend::put_manifest`]).
//!
//! The [`Backend`] trait is synchronous; this backend owns a small tokio runtime and
//! blocks on it. Object uploads run in the background, bounded by the bytes in flight,
//! and [`Backend::sync_objects`] waits for them and reports the first failure, so encoding
//! overlaps with uploading. Transient failures (connection errors, 5xx, throttling) are
//! retried by `object_store` with exponential backoff and jitter.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, Checksum};
use object_store::path::Path as StorePath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload,
    RetryConfig,
};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::backend::{
    Backend, BackendError, ObjectInfo, PutOutcome, RecordKind, MANIFEST_SUFFIX, MARKER,
    MARKER_TEXT, MARKER_TEXT_V1, MODELS as MODELS_DIR, OBJECTS as OBJECTS_DIR,
};
use crate::key::ObjectKey;

const TOUCHED_DIR: &str = "touched";
const CLAIMS_DIR: &str = "claims";
/// A claim older than this (by the service's clock) belongs to a writer that died while
/// publishing; it no longer blocks the name and `gc` deletes it.
const CLAIM_TTL: Duration = Duration::from_secs(600);
/// Tries of a publication that keeps meeting a rival's claim.
pub(crate) const PUBLISH_ATTEMPTS: u32 = 4;
/// Unit of the in-flight byte budget.
const PERMIT_BYTES: usize = 1 << 20;

/// Settings of the S3 backend. Credentials, endpoint and region default to the usual
/// `AWS_*` environment variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, ...).
#[derive(Clone, Debug)]
pub struct S3Options {
    /// Endpoint URL (e.g. `http://127.0.0.1:3900`); overrides `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// Region; overrides `AWS_REGION` / `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    /// Requests in flight at once (uploads, parts, ranged reads).
    pub concurrency: usize,
    /// Objects at least this large go up as multipart uploads and come down as parallel
    /// ranged reads of this many bytes each.
    pub part_size: usize,
    /// Retries of a failed request (connection errors, 5xx, throttling).
    pub max_retries: usize,
    /// No retry starts later than this after the first attempt.
    pub retry_timeout: Duration,
    /// Timeout of one request.
    pub request_timeout: Duration,
}

impl Default for S3Options {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            concurrency: 16,
            part_size: 8 << 20,
            max_retries: 10,
            retry_timeout: Duration::from_secs(180),
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// A store in an S3-compatible bucket.
pub struct S3Backend {
    url: String,
    s3: Arc<dyn ObjectStore>,
    prefix: String,
    opts: S3Options,
    runtime: Runtime,
    /// Bytes in flight, in [`PERMIT_BYTES`] units.
    budget: Arc<Semaphore>,
    budget_permits: u32,
    /// Background uploads not yet waited for.
    pending: Mutex<Vec<JoinHandle<Result<(), BackendError>>>>,
    writer_id: String,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend").field("url", &self.url).finish()
    }
}

/// Whether `root` names an S3 location (`s3://bucket[/prefix]`).
pub fn is_s3_url(root: &str) -> bool {
    root.starts_with("s3://")
}

fn remote(what: impl Into<String>, e: impl std::fmt::Display) -> BackendError {
    BackendError::Remote {
        what: what.into(),
        // object_store's messages can span lines (retry history): keep errors one line.
        message: e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl S3Backend {
    /// Creates a new store at `url` (`s3://bucket/prefix`); the prefix must hold no
    /// objects.
    pub fn init(url: &str, opts: S3Options) -> Result<Self, BackendError> {
        let b = Self::connect(url, opts)?;
        let any = b.block_on(async {
            let mut list = b.s3.list(Some(&StorePath::from(b.prefix.as_str())));
            list.next().await.transpose()
        });
        match any {
            Ok(Some(_)) => {
                return Err(BackendError::Layout(format!(
                    "{url}: prefix is not empty; a store is created under a new or empty prefix"
                )))
            }
            Ok(None) => {}
            Err(e) => return Err(remote(url, e)),
        }
        let marker = b.path(MARKER);
        b.block_on(b.s3.put(&marker, PutPayload::from_static(MARKER_TEXT.as_bytes())))
            .map_err(|e| remote(b.url_of(MARKER), e))?;
        Self::open(url, b.opts.clone())
    }

    /// Opens the store at `url` (`s3://bucket/prefix`).
    pub fn open(url: &str, opts: S3Options) -> Result<Self, BackendError> {
        let b = Self::connect(url, opts)?;
        let marker = b.path(MARKER);
        let text = b.block_on(async { b.s3.get(&marker).await?.bytes().await });
        match text {
            Ok(t) if t.as_ref() == MARKER_TEXT.as_bytes() => Ok(b),
            Ok(t) if t.as_ref() == MARKER_TEXT_V1.as_bytes() => Err(BackendError::Layout(format!(
                "{url}: store format version 1 is not supported by this mcodec; re-create it"
            ))),
            Ok(_) => Err(BackendError::Layout(format!(
                "{}: unknown store format or version",
                b.url_of(MARKER)
            ))),
            Err(e) if is_not_found(&e) => Err(BackendError::Layout(format!(
                "{url}: not a store (no {MARKER}; create one with `init`)"
            ))),
            Err(e) => Err(remote(b.url_of(MARKER), e)),
        }
    }

    fn connect(url: &str, opts: S3Options) -> Result<Self, BackendError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| BackendError::Layout(format!("{url}: not an s3://bucket/prefix URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        if bucket.is_empty()
            || prefix
                .split('/')
                .any(|c| c == "." || c == ".." || (c.is_empty() && !prefix.is_empty()))
        {
            return Err(BackendError::Layout(format!(
                "{url}: expected s3://bucket or s3://bucket/prefix"
            )));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        // Integrity of uploads by CRC64-NVME (x-amz-checksum-crc64nvme, checked by the
        // service) instead of a SHA-256 of every payload in the signature, which costs
        // both sides far more CPU; AWS_UNSIGNED_PAYLOAD / AWS_CHECKSUM_ALGORITHM override.
        if std::env::var_os("AWS_UNSIGNED_PAYLOAD").is_none() {
            builder = builder.with_unsigned_payload(true);
        }
        if std::env::var_os("AWS_CHECKSUM_ALGORITHM").is_none() {
            builder = builder.with_checksum_algorithm(Checksum::CRC64NVME);
        }
        if let Some(e) = &opts.endpoint {
            builder = builder.with_endpoint(e);
        }
        if let Some(r) = &opts.region {
            builder = builder.with_region(r);
        } else if let Ok(r) = std::env::var("AWS_REGION") {
            builder = builder.with_region(r);
        }
        let endpoint = opts
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT").ok());
        // A plain-HTTP endpoint was asked for explicitly: allow it.
        let allow_http = endpoint.is_some_and(|e| e.starts_with("http://"));
        let client = ClientOptions::new()
            .with_allow_http(allow_http)
            .with_timeout(opts.request_timeout)
            .with_connect_timeout(Duration::from_secs(5))
            .with_pool_max_idle_per_host(opts.concurrency.max(1));
        let retry = RetryConfig {
            // Decorrelated jitter: each pause is drawn from [init, 3 × the previous one],
            // capped. With base 2 the pauses barely grow (10 retries of a refused
            // connection took 1.7 s); base 3 from 0.5 s rides out a restarting server
            // (≥ 5 s for 10 retries, typically about 45 s).
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(500),
                max_backoff: Duration::from_secs(10),
                base: 3.0,
            },
            max_retries: opts.max_retries,
            retry_timeout: opts.retry_timeout,
        };
        let s3 = builder
            .with_client_options(client)
            .with_retry(retry)
            .build()
            .map_err(|e| remote(url, e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mcodec-s3")
            .enable_all()
            .build()
            .map_err(|source| BackendError::Io {
                path: url.to_owned(),
                source,
            })?;
        let budget_permits = u32::try_from(
            (opts.concurrency.max(1) * opts.part_size.max(PERMIT_BYTES)).div_ceil(PERMIT_BYTES),
        )
        .unwrap_or(u32::MAX);
        Ok(Self {
            url: format!("s3://{bucket}/{prefix}"),
            s3: Arc::new(s3),
            prefix: prefix.to_owned(),
            budget: Arc::new(Semaphore::new(budget_permits as usize)),
            budget_permits,
            opts,
            runtime,
            pending: Mutex::new(Vec::new()),
            writer_id: crate::coord::record_id(),
        })
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    fn path(&self, rel: &str) -> StorePath {
        if self.prefix.is_empty() {
            StorePath::from(rel)
        } else {
            StorePath::from(format!("{}/{rel}", self.prefix))
        }
    }

    fn url_of(&self, rel: &str) -> String {
        format!("{}/{rel}", self.url.trim_end_matches('/'))
    }

    fn object_rel(key: &ObjectKey) -> String {
        let hex = key.to_hex();
        format!("{OBJECTS_DIR}/{}/{hex}", &hex[..2])
    }

    fn touch_rel(key: &ObjectKey) -> String {
        format!("{TOUCHED_DIR}/{}", key.to_hex())
    }

    fn manifest_rel(name: &str) -> String {
        format!("{MODELS_DIR}/{name}{MANIFEST_SUFFIX}")
    }

    /// Starts a background upload of `data` to `rel`, waiting first for room in the
    /// in-flight budget.
    fn spawn_put(&self, rel: String, data: Bytes) -> Result<(), BackendError> {
        let want = u32::try_from(data.len().div_ceil(PERMIT_BYTES).max(1))
            .unwrap_or(u32::MAX)
            .min(self.budget_permits);
        let permit = self
            .block_on(Arc::clone(&self.budget).acquire_many_owned(want))
            .expect("the budget semaphore is never closed");
        let s3 = Arc::clone(&self.s3);
        let path = self.path(&rel);
        let what = self.url_of(&rel);
        let part_size = self.opts.part_size;
        let parallel_parts = self.opts.concurrency.clamp(1, 8);
        let task = self.runtime.spawn(async move {
            let r = upload(s3.as_ref(), &path, data, part_size, parallel_parts).await;
            drop(permit);
            r.map_err(|e| remote(what, e))
        });
        let mut pending = self.pending.lock().expect("no panics while held");
        // Keep the list short: drop uploads that already succeeded.
        if pending.len() >= 256 {
            let (done, running): (Vec<_>, Vec<_>) =
                pending.drain(..).partition(JoinHandle::is_finished);
            *pending = running;
            let mut first_err = None;
            for h in done {
                if let Err(e) = self.join(h) {
                    first_err.get_or_insert(e);
                }
            }
            pending.push(task);
            return first_err.map_or(Ok(()), Err);
        }
        pending.push(task);
        Ok(())
    }

    fn join(&self, h: JoinHandle<Result<(), BackendError>>) -> Result<(), BackendError> {
        match self.block_on(h) {
            Ok(r) => r,
            Err(e) => Err(remote(&self.url, format!("upload task failed: {e}"))),
        }
    }

    async fn head(&self, rel: &str) -> Result<Option<object_store::ObjectMeta>, BackendError> {
        match self.s3.head(&self.path(rel)).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(remote(self.url_of(rel), e)),
        }
    }

    /// Every object under `dir/` with its size and last-modified time.
    fn list_dir(&self, dir: &str) -> Result<Vec<object_store::ObjectMeta>, BackendError> {
        let prefix = self.path(dir);
        self.block_on(self.s3.list(Some(&prefix)).try_collect::<Vec<_>>())
            .map_err(|e| remote(self.url_of(dir), e))
    }

    /// The part of `location` after `dir/`, or `None` if it is not under it.
    fn rel_under<'a>(&self, location: &'a StorePath, dir: &str) -> Option<&'a str> {
        let full = location.as_ref();
        let head = if self.prefix.is_empty() {
            format!("{dir}/")
        } else {
            format!("{}/{dir}/", self.prefix)
        };
        full.strip_prefix(head.as_str())
    }

    /// One round of the claim protocol of [`Backend::put_manifest`].
    fn try_publish(&self, name: &str, bytes: &[u8]) -> Result<(), BackendError> {
        let claim_rel = format!("{CLAIMS_DIR}/{name}/{}", self.writer_id);
        let claim_dir = format!("{CLAIMS_DIR}/{name}");
        let claim = self.path(&claim_rel);
        self.block_on(self.s3.put(&claim, PutPayload::from_static(b"")))
            .map_err(|e| remote(self.url_of(&claim_rel), e))?;
        let result = (|| {
            // Only this name's claims: those of `org/name/sub` are listed under it too.
            let claims: Vec<_> = self
                .list_dir(&claim_dir)?
                .into_iter()
                .filter(|m| {
                    self.rel_under(&m.location, &claim_dir)
                        .is_some_and(|w| !w.contains('/'))
                })
                .collect();
            let mine = claims
                .iter()
                .find(|m| m.location == claim)
                .map(|m| SystemTime::from(m.last_modified))
                .ok_or_else(|| {
                    remote(
                        self.url_of(&claim_rel),
                        "the claim just written is not listed (is the service's listing \
                         read-after-write consistent?)",
                    )
                })?;
            let live_rival = claims.iter().any(|m| {
                m.location != claim && SystemTime::from(m.last_modified) + CLAIM_TTL > mine
            });
            if live_rival {
                return Err(BackendError::Conflict(format!(
                    "another writer kept publishing model {name:?} at the same time; nothing \
                     was published by this one (run the add again)"
                )));
            }
            let rel = Self::manifest_rel(name);
            if self.block_on(self.head(&rel))?.is_some() {
                return Err(BackendError::ManifestExists(name.to_owned()));
            }
            self.block_on(
                self.s3
                    .put(&self.path(&rel), PutPayload::from(bytes.to_vec())),
            )
            .map_err(|e| remote(self.url_of(&rel), e))?;
            Ok(())
        })();
        // Best effort: a claim left behind expires after CLAIM_TTL and gc deletes it.
        let _ = self.block_on(self.s3.delete(&claim));
        result
    }

    /// The key of the object stored at `location` (`objects/<2 hex>/<64 hex>`), if it is one.
    fn object_key_of(&self, location: &StorePath) -> Option<ObjectKey> {
        let (fan, hex) = self.rel_under(location, OBJECTS_DIR)?.split_once('/')?;
        let key = ObjectKey::from_hex(hex).ok()?;
        (fan == &hex[..2]).then_some(key)
    }

    /// Reads the whole object at `rel`: one ranged GET of the first MiB, which also tells
    /// the size, then the rest in concurrent ranged GETs pinned to the same version.
    async fn read_all(&self, rel: &str) -> Result<Vec<u8>, object_store::Error> {
        let path = self.path(rel);
        let first_len = PERMIT_BYTES as u64;
        let first = self
            .s3
            .get_opts(
                &path,
                GetOptions {
                    range: Some(GetRange::Bounded(0..first_len)),
                    ..GetOptions::default()
                },
            )
            .await;
        let first = match first {
            Ok(r) => r,
            // An empty object has no byte 0 to ask for.
            Err(object_store::Error::Generic { .. }) => {
                return Ok(self.s3.get(&path).await?.bytes().await?.to_vec())
            }
            Err(e) => return Err(e),
        };
        let size = first.meta.size;
        let etag = first.meta.e_tag.clone();
        let head = first.bytes().await?;
        let mut out = Vec::new();
        out.try_reserve_exact(usize::try_from(size).unwrap_or(usize::MAX))
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?;
        out.extend_from_slice(&head);
        // The rest in up to 8 concurrent ranges (more streams keep more of the
        // service's cores busy), none longer than a part.
        let rest = size.saturating_sub(first_len);
        let part = (rest / 8).clamp(
            PERMIT_BYTES as u64,
            self.opts.part_size.max(PERMIT_BYTES) as u64,
        );
        let ranges: Vec<Range<u64>> = (first_len..size)
            .step_by(part as usize)
            .map(|s| s..(s + part).min(size))
            .collect();
        let parts = futures::stream::iter(ranges)
            .map(|r| {
                let options = GetOptions {
                    range: Some(GetRange::Bounded(r)),
                    // Every part must come from the same version of the object.
                    if_match: etag.clone(),
                    ..GetOptions::default()
                };
                let path = &path;
                async move { self.s3.get_opts(path, options).await?.bytes().await }
            })
            .buffered(self.opts.concurrency.clamp(1, 8));
        futures::pin_mut!(parts);
        while let Some(p) = parts.next().await {
            out.extend_from_slice(&p?);
        }
        Ok(out)
    }
}

/// Uploads `data` to `path`: one PUT, or a multipart upload with up to `parallel` parts
/// in flight for objects of at least two parts (aborted on failure).
async fn upload(
    s3: &dyn ObjectStore,
    path: &StorePath,
    data: Bytes,
    part_size: usize,
    parallel: usize,
) -> Result<(), object_store::Error> {
    let part_size = part_size.max(5 << 20); // S3's smallest part
    if data.len() < 2 * part_size {
        s3.put(path, PutPayload::from_bytes(data)).await?;
        return Ok(());
    }
    let mut up = s3.put_multipart(path).await?;
    let parts: Vec<_> = (0..data.len())
        .step_by(part_size)
        .map(|s| {
            up.put_part(PutPayload::from_bytes(
                data.slice(s..(s + part_size).min(data.len())),
            ))
        })
        .collect();
    let sent = futures::stream::iter(parts)
        .buffer_unordered(parallel)
        .try_collect::<Vec<()>>()
        .await;
    match sent {
        Ok(_) => up.complete().await.map(|_| ()),
        Err(e) => {
            // Best effort: a failed abort leaves an incomplete upload, invisible to
            // readers, that the bucket's lifecycle rule removes (STORE.md §8).
            let _ = up.abort().await;
            Err(e)
        }
    }
}

impl Backend for S3Backend {
    fn describe(&self) -> String {
        self.url.clone()
    }

    /// Queues the upload and returns at once (as [`PutOutcome::Created`]: without
    /// conditional writes the service cannot say whether the object existed); failures
    /// surface from [`Backend::sync_objects`].
    fn put_object(&self, key: &ObjectKey, bytes: &[u8]) -> Result<PutOutcome, BackendError> {
        self.spawn_put(Self::object_rel(key), Bytes::copy_from_slice(bytes))?;
        Ok(PutOutcome::Created)
    }

    fn object_size(&self, key: &ObjectKey) -> Result<Option<u64>, BackendError> {
        Ok(self
            .block_on(self.head(&Self::object_rel(key)))?
            .map(|m| m.size))
    }

    fn get_object(&self, key: &ObjectKey) -> Result<Vec<u8>, BackendError> {
        let rel = Self::object_rel(key);
        self.block_on(self.read_all(&rel)).map_err(|e| {
            if is_not_found(&e) {
                BackendError::NotFound(*key)
            } else {
                remote(self.url_of(&rel), e)
            }
        })
    }

    fn get_object_range(
        &self,
        key: &ObjectKey,
        range: Range<u64>,
    ) -> Result<Vec<u8>, BackendError> {
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        let rel = Self::object_rel(key);
        let r = self.block_on(async {
            let res = self
                .s3
                .get_opts(
                    &self.path(&rel),
                    GetOptions {
                        range: Some(GetRange::Bounded(range.clone())),
                        ..GetOptions::default()
                    },
                )
                .await?;
            res.bytes().await
        });
        match r {
            Ok(b) => Ok(b.to_vec()),
            Err(e) if is_not_found(&e) => Err(BackendError::NotFound(*key)),
            Err(e) => {
                // A range starting at or past the end is an error for S3; the trait
                // wants the bytes cut short: nothing.
                match self.object_size(key)? {
                    None => Err(BackendError::NotFound(*key)),
                    Some(size) if range.start >= size => Ok(Vec::new()),
                    Some(_) => Err(remote(self.url_of(&rel), e)),
                }
            }
        }
    }

    /// Writes the object's touch marker: an empty object whose last-modified time `gc`
    /// reads as the object's (S3 cannot change an object's time in place).
    fn touch_object(&self, key: &ObjectKey) -> Result<(), BackendError> {
        self.spawn_put(Self::touch_rel(key), Bytes::new())
    }

    fn list_objects(&self) -> Result<Vec<ObjectInfo>, BackendError> {
        let objects = self.list_dir(OBJECTS_DIR)?;
        let touched = self.list_dir(TOUCHED_DIR)?;
        let mut touch_times = std::collections::HashMap::new();
        for m in &touched {
            if let Some(k) = self
                .rel_under(&m.location, TOUCHED_DIR)
                .and_then(|n| ObjectKey::from_hex(n).ok())
            {
                touch_times.insert(k, SystemTime::from(m.last_modified));
            }
        }
        let mut out = Vec::with_capacity(objects.len());
        for m in &objects {
            let Some(key) = self.object_key_of(&m.location) else {
                continue;
            };
            let mut modified = SystemTime::from(m.last_modified);
            if let Some(t) = touch_times.get(&key) {
                modified = modified.max(*t);
            }
            out.push(ObjectInfo {
                key,
                size: m.size,
                modified,
            });
        }
        out.sort_by_key(|o| o.key);
        Ok(out)
    }

    fn delete_object(&self, key: &ObjectKey) -> Result<(), BackendError> {
        for rel in [Self::object_rel(key), Self::touch_rel(key)] {
            match self.block_on(self.s3.delete(&self.path(&rel))) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(remote(self.url_of(&rel), e)),
            }
        }
        Ok(())
    }

    /// Waits for every queued upload; returns the first failure.
    fn sync_objects(&self) -> Result<(), BackendError> {
        let tasks: Vec<_> = self
            .pending
            .lock()
            .expect("no panics while held")
            .drain(..)
            .collect();
        let mut first_err = None;
        for t in tasks {
            if let Err(e) = self.join(t) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Publishes a manifest so that, among writers racing for one name, at most one
    /// succeeds — without conditional writes. The writer puts a claim
    /// `claims/<name>/<writer>`, lists the claims of the name and backs off if it sees
    /// any other live claim; then it checks that no manifest exists, writes it and drops
    /// its claim. With the read-after-write consistent listings S3-compatible services
    /// give, two writers cannot both see only their own claim: the one that listed first
    /// put its claim before the other listed. Both may back off: each then tries again
    /// after a random pause, up to 4 times in all, and finally gives up with
    /// [`BackendError::Conflict`], having published nothing.
    fn put_manifest(&self, name: &str, bytes: &[u8]) -> Result<(), BackendError> {
        let mut attempt = 0u32;
        loop {
            match self.try_publish(name, bytes) {
                Err(BackendError::Conflict(_)) if attempt < PUBLISH_ATTEMPTS => {
                    // Both racers may have backed off: try again after a random pause,
                    // so that one of them usually goes first and the other then finds
                    // the name taken.
                    attempt += 1;
                    let h = blake3::hash(format!("{}/{attempt}", self.writer_id).as_bytes());
                    let jitter = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8"));
                    let ms = (50 << attempt.min(4)) + jitter % 500;
                    std::thread::sleep(Duration::from_millis(ms));
                }
                r => return r,
            }
        }
    }

    fn get_manifest(&self, name: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let rel = Self::manifest_rel(name);
        match self.block_on(async { self.s3.get(&self.path(&rel)).await?.bytes().await }) {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(remote(self.url_of(&rel), e)),
        }
    }

    fn list_manifests(&self) -> Result<Vec<String>, BackendError> {
        let mut names: Vec<String> = self
            .list_dir(MODELS_DIR)?
            .iter()
            .filter_map(|m| {
                self.rel_under(&m.location, MODELS_DIR)?
                    .strip_suffix(MANIFEST_SUFFIX)
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        Ok(names)
    }

    fn delete_manifest(&self, name: &str) -> Result<bool, BackendError> {
        let rel = Self::manifest_rel(name);
        if self.block_on(self.head(&rel))?.is_none() {
            return Ok(false);
        }
        self.block_on(self.s3.delete(&self.path(&rel)))
            .map_err(|e| remote(self.url_of(&rel), e))?;
        Ok(true)
    }

    /// Deletes expired publication claims and touch markers of objects that no longer
    /// exist. Incomplete multipart uploads of killed writers are invisible to readers
    /// and are removed by the bucket's lifecycle rule (STORE.md §8), as `object_store`
    /// cannot list them.
    fn put_record(&self, kind: RecordKind, id: &str) -> Result<(), BackendError> {
        let rel = format!("{}/{id}", kind.dir());
        self.block_on(self.s3.put(&self.path(&rel), PutPayload::from_static(b"")))
            .map(|_| ())
            .map_err(|e| remote(self.url_of(&rel), e))
    }

    fn list_records(&self, kind: RecordKind) -> Result<Vec<(String, SystemTime)>, BackendError> {
        Ok(self
            .list_dir(kind.dir())?
            .iter()
            .filter_map(|m| {
                let id = self.rel_under(&m.location, kind.dir())?;
                Some((id.to_owned(), SystemTime::from(m.last_modified)))
            })
            .collect())
    }

    fn delete_record(&self, kind: RecordKind, id: &str) -> Result<(), BackendError> {
        let rel = format!("{}/{id}", kind.dir());
        match self.block_on(self.s3.delete(&self.path(&rel))) {
            Err(e) if !is_not_found(&e) => Err(remote(self.url_of(&rel), e)),
            _ => Ok(()),
        }
    }

    fn io_parallelism(&self) -> usize {
        self.opts.concurrency
    }

    fn puts_are_synchronous(&self) -> bool {
        false
    }

    fn clean_temporaries(&self, cutoff: SystemTime) -> Result<(u64, u64), BackendError> {
        let (mut count, mut bytes) = (0, 0);
        let claims = self.list_dir(CLAIMS_DIR)?;
        let objects: std::collections::HashSet<ObjectKey> = self
            .list_dir(OBJECTS_DIR)?
            .iter()
            .filter_map(|m| self.object_key_of(&m.location))
            .collect();
        let orphans = self.list_dir(TOUCHED_DIR)?.into_iter().filter(|m| {
            self.rel_under(&m.location, TOUCHED_DIR)
                .and_then(|n| ObjectKey::from_hex(n).ok())
                .is_none_or(|k| !objects.contains(&k))
        });
        let stale: Vec<_> = claims
            .into_iter()
            .chain(orphans)
            .filter(|m| SystemTime::from(m.last_modified) < cutoff)
            .collect();
        for m in stale {
            match self.block_on(self.s3.delete(&m.location)) {
                Ok(()) => {
                    count += 1;
                    bytes += m.size;
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(remote(m.location.to_string(), e)),
            }
        }
        Ok((count, bytes))
    }
}

impl Drop for S3Backend {
    fn drop(&mut self) {
        // Uploads nobody waited for belong to a failed operation: stop them.
        for t in self
            .pending
            .get_mut()
            .expect("no panics while held")
            .drain(..)
        {
            t.abort();
        }
    }
}
