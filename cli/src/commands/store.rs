//! `mcodec store`: the content-addressed hub store (see `docs/STORE.md`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use mcodec_store::{
    is_s3_url, AddOptions, DeltaMode, S3Backend, S3Options, Stats, Store, StoreError,
};

use super::{emit, mb_per_s};
use crate::error::{CliError, Failure};
use crate::progress::Bar;
use crate::Global;

/// Arguments of `store`.
#[derive(Args, Debug)]
pub struct StoreArgs {
    /// Store directory, or s3://BUCKET[/PREFIX] for S3-compatible object storage
    /// (credentials, endpoint and region from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_SESSION_TOKEN, AWS_ENDPOINT_URL, AWS_REGION) [default: $MCODEC_STORE]
    #[arg(long, value_name = "DIR|URL")]
    pub root: Option<PathBuf>,
    /// S3 endpoint URL, e.g. http://127.0.0.1:3900 [default: AWS_ENDPOINT_URL, else AWS]
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: AWS_REGION or AWS_DEFAULT_REGION, else us-east-1]
    #[arg(long, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// S3 requests in flight at once
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub s3_concurrency: u16,
    /// Retries of a failed S3 request (connection errors, 5xx, throttling), with
    /// exponential backoff
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub s3_retries: u16,
    /// Give up retrying an S3 request this many seconds after its first attempt
    #[arg(long, value_name = "SECS", default_value_t = 180)]
    pub s3_retry_timeout: u64,
    /// What to do
    #[command(subcommand)]
    pub command: StoreCommand,
}

/// Delta coder of `add`.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeltaArg {
    /// Every method, keeping the smallest per tensor
    #[default]
    Best,
    /// Only BitX (XOR + zstd -3), the published baseline
    Bitx,
    /// No deltas: dedup and the tensor codec only
    Off,
}

/// Output format of `get`.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GetFormat {
    /// Safetensors files, byte for byte as added (or as a packed input unpacks)
    #[default]
    Safetensors,
    /// Packed files, byte for byte what `mcodec pack` gives for them
    Mcz,
}

/// The store subcommands.
#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Create a store in a new or empty directory
    Init,
    /// Add a model directory or a single file
    Add {
        /// Model directory or file
        path: PathBuf,
        /// Name of the model in the store
        #[arg(long)]
        name: String,
        /// Base model for deltas [default: chosen automatically]
        #[arg(long, value_name = "NAME")]
        base: Option<String>,
        /// Delta coder
        #[arg(long, value_enum, default_value_t = DeltaArg::Best)]
        delta: DeltaArg,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Write a model out to a new directory, verifying every byte
    Get {
        /// Model name
        name: String,
        /// Output directory [default: ./LAST, the last segment of the name: `org/model`
        /// goes to ./model]; never overwritten without --force
        #[arg(short, long, value_name = "DIR")]
        output: Option<PathBuf>,
        /// Do not fsync the written files (faster; not durable across a power loss)
        #[arg(long)]
        no_sync: bool,
        /// Format of the model's safetensors files: as they were added, or packed as
        /// `mcodec pack` writes them (`X.safetensors.mcz`)
        #[arg(long, value_enum, default_value_t = GetFormat::Safetensors)]
        format: GetFormat,
    },
    /// List the models
    Ls {
        /// Only models whose names start with this (e.g. `org/`)
        #[arg(value_name = "PREFIX")]
        prefix: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Logical and physical sizes, per model and per organisation, and where the savings
    /// come from
    Stats {
        /// Only list models whose names start with this (e.g. `org/`); the store-wide
        /// totals stay store-wide
        #[arg(value_name = "PREFIX")]
        prefix: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove a model (its objects are reclaimed by gc)
    Rm {
        /// Model name
        name: String,
    },
    /// Delete objects no model needs that are older than the grace period
    Gc {
        /// Grace period in seconds: younger unreferenced objects may belong to an add in
        /// progress and are kept
        #[arg(long, value_name = "SECS", default_value_t = mcodec_store::DEFAULT_GRACE.as_secs())]
        grace: u64,
    },
    /// Decode every object and check it against its key and the manifests
    Fsck {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// Turns a store error into a one-line CLI error naming the right file.
fn cli_error(root: &Path, e: StoreError) -> CliError {
    match e {
        StoreError::Input { path, problem } => CliError::at(&path, problem),
        StoreError::Output(o) => o.into(),
        e => CliError::at(root, e),
    }
}

fn json(v: &impl serde::Serialize) -> Result<(), CliError> {
    let mut s = serde_json::to_string_pretty(v).expect("reports serialise");
    s.push('\n');
    emit(&s)
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.2}%", part as f64 * 100.0 / whole as f64)
    }
}

/// Environment variable naming the store when `--root` is not given.
pub const STORE_ENV: &str = "MCODEC_STORE";

/// The store's location: `--root`, else `$MCODEC_STORE` (non-empty), else a usage error.
fn store_root(a: &StoreArgs) -> Result<PathBuf, CliError> {
    if let Some(r) = &a.root {
        return Ok(r.clone());
    }
    match std::env::var_os(STORE_ENV) {
        Some(v) if !v.is_empty() => Ok(PathBuf::from(v)),
        _ => Err(CliError::plain(
            Failure::Usage,
            format!("no store given: pass --root DIR|URL or set {STORE_ENV}"),
        )),
    }
}

/// Where `get NAME` writes without `-o`: the last segment of the name, in the current
/// directory (`org/model` → `./model`, like `git clone`).
pub fn default_output(name: &str) -> PathBuf {
    PathBuf::from(name.rsplit('/').next().unwrap_or(name))
}

/// Opens (or with `init`, creates) the store at `root`: a directory or an S3 URL.
fn open_store(a: &StoreArgs, root: &Path, init: bool) -> Result<Store, StoreError> {
    let url = root.to_str().filter(|r| is_s3_url(r));
    let Some(url) = url else {
        return if init {
            Store::init(root)
        } else {
            Store::open(root)
        };
    };
    let opts = S3Options {
        endpoint: a.s3_endpoint.clone(),
        region: a.s3_region.clone(),
        concurrency: usize::from(a.s3_concurrency),
        max_retries: usize::from(a.s3_retries),
        retry_timeout: Duration::from_secs(a.s3_retry_timeout),
        ..S3Options::default()
    };
    let backend = if init {
        S3Backend::init(url, opts)?
    } else {
        S3Backend::open(url, opts)?
    };
    Ok(Store::with_backend(Box::new(backend)))
}

/// Runs `store`.
pub fn run(a: &StoreArgs, g: &Global) -> Result<(), CliError> {
    let root = &store_root(a)?;
    let err = |e| cli_error(root, e);
    if let StoreCommand::Init = a.command {
        open_store(a, root, true).map_err(err)?;
        if !g.quiet {
            emit(&format!("initialised store {}\n", root.display()))?;
        }
        return Ok(());
    }
    let store = open_store(a, root, false).map_err(err)?;
    match &a.command {
        StoreCommand::Init => unreachable!("handled above"),
        StoreCommand::Add {
            path,
            name,
            base,
            delta,
            json: as_json,
        } => {
            let opts = AddOptions {
                base: base.clone(),
                delta: match delta {
                    DeltaArg::Best => DeltaMode::Best,
                    DeltaArg::Bitx => DeltaMode::BitX,
                    DeltaArg::Off => DeltaMode::Off,
                },
                ..AddOptions::default()
            };
            let start = Instant::now();
            let bar = Bar::bytes(0, g.quiet);
            let r = store
                .add_with_progress(path, name, &opts, &|done, total| bar.show(done, total))
                .map_err(err);
            drop(bar);
            let r = r?;
            let secs = start.elapsed().as_secs_f64();
            if *as_json {
                return json(&r);
            }
            for b in &r.skipped_bases {
                // Not an error: the add went on without that candidate.
                eprintln!(
                    "mcodec: note: model {:?} not considered as a base: {}",
                    b.name, b.problem
                );
            }
            if !g.quiet {
                let base = match &r.base {
                    Some(b) if b.auto => format!("base {} (chosen automatically)", b.name),
                    Some(b) => format!("base {}", b.name),
                    None => "no base".into(),
                };
                emit(&format!(
                    "added {}: {} files, {} tensors, {base}; {} dedup, {} delta, {} plain, {} new blobs; store grew by {} bytes ({} of {}), {:.1} MB/s\n",
                    r.name,
                    r.files,
                    r.tensors,
                    r.dedup,
                    r.delta,
                    r.plain,
                    r.blobs,
                    r.new_bytes,
                    pct(r.new_bytes, r.logical_bytes),
                    r.logical_bytes,
                    mb_per_s(r.logical_bytes, secs)
                ))?;
            }
        }
        StoreCommand::Get {
            name,
            output,
            no_sync,
            format,
        } => {
            let output = &output.clone().unwrap_or_else(|| default_output(name));
            let start = Instant::now();
            let bar = Bar::bytes(0, g.quiet);
            let r = match format {
                GetFormat::Safetensors => {
                    store.get_with_progress(name, output, g.force, !no_sync, &|done, total| {
                        bar.show(done, total)
                    })
                }
                GetFormat::Mcz => store.get_packed(
                    name,
                    output,
                    g.force,
                    !no_sync,
                    // What `mcodec pack` uses by default.
                    &mcodec::container::PackOptions::new()
                        .encode(crate::Level::Default.options(None)),
                ),
            }
            .map_err(err);
            drop(bar);
            let r = r?;
            if !g.quiet {
                emit(&format!(
                    "{name} -> {}: {} files, {} bytes verified, {:.1} MB/s\n",
                    output.display(),
                    r.files,
                    r.bytes,
                    mb_per_s(r.bytes, start.elapsed().as_secs_f64())
                ))?;
            }
        }
        StoreCommand::Ls {
            prefix,
            json: as_json,
        } => {
            let models = store
                .list_under(prefix.as_deref().unwrap_or(""))
                .map_err(err)?;
            if *as_json {
                return json(&models);
            }
            let mut s = String::new();
            for m in models {
                let base = m.base.map_or("-".into(), |b| {
                    format!("{}{}", b.name, if b.auto { " (auto)" } else { "" })
                });
                s.push_str(&format!(
                    "{}\t{} files\t{} tensors\t{} bytes\tbase {base}\n",
                    m.name, m.files, m.tensors, m.logical_bytes
                ));
            }
            emit(&s)?;
        }
        StoreCommand::Stats {
            prefix,
            json: as_json,
        } => {
            let mut s = store.stats().map_err(err)?;
            if let Some(prefix) = prefix {
                s.retain_prefix(prefix);
            }
            if *as_json {
                return json(&s);
            }
            emit(&stats_text(&s))?;
        }
        StoreCommand::Rm { name } => {
            store.remove(name).map_err(err)?;
            if !g.quiet {
                emit(&format!("removed {name}; run gc to reclaim its objects\n"))?;
            }
        }
        StoreCommand::Gc { grace } => {
            let r = store.gc(Duration::from_secs(*grace)).map_err(err)?;
            if !g.quiet {
                emit(&format!(
                    "deleted {} objects ({} bytes) and {} temporaries ({} bytes); kept {} unreferenced objects younger than {grace} s\n",
                    r.deleted, r.deleted_bytes, r.temporaries, r.temporary_bytes, r.kept_young
                ))?;
                if r.deferred > 0 {
                    emit(&format!(
                        "deferred {} unreferenced objects: {} writers were adding models (run gc again later)\n",
                        r.deferred, r.writers
                    ))?;
                }
            }
        }
        StoreCommand::Fsck { json: as_json } => {
            let r = store.fsck().map_err(err)?;
            if *as_json {
                json(&r)?;
            } else if !g.quiet {
                let mut s = String::new();
                for p in &r.problems {
                    s.push_str(&format!("problem: {p}\n"));
                }
                s.push_str(&format!(
                    "{} models, {} objects checked, {} unreferenced (gc reclaims them), {} problems\n",
                    r.models,
                    r.objects,
                    r.orphans,
                    r.problems.len()
                ));
                emit(&s)?;
            }
            if let Some(first) = r.problems.first() {
                return Err(CliError::at_kind(
                    root,
                    Failure::Corrupt,
                    format!("{} problems, first: {first}", r.problems.len()),
                ));
            }
        }
    }
    Ok(())
}

fn stats_text(s: &Stats) -> String {
    let mut t = String::new();
    t.push_str("model\tbase\tlogical\tneeded\texclusive\tdelta/plain tensors\n");
    for m in &s.models {
        let base = m.base.as_ref().map_or("-".into(), |b| {
            format!("{}{}", b.name, if b.auto { " (auto)" } else { "" })
        });
        t.push_str(&format!(
            "{}\t{base}\t{}\t{} ({})\t{} ({})\t{}/{}\n",
            m.name,
            m.logical_bytes,
            m.needed_bytes,
            pct(m.needed_bytes, m.logical_bytes),
            m.exclusive_bytes,
            pct(m.exclusive_bytes, m.logical_bytes),
            m.delta_tensors,
            m.plain_tensors
        ));
    }
    if s.organisations.iter().any(|o| !o.org.is_empty()) {
        t.push_str("organisation\tmodels\tlogical\tneeded\texclusive\n");
        for o in &s.organisations {
            t.push_str(&format!(
                "{}\t{}\t{}\t{} ({})\t{} ({})\n",
                if o.org.is_empty() { "-" } else { &o.org },
                o.models,
                o.logical_bytes,
                o.needed_bytes,
                pct(o.needed_bytes, o.logical_bytes),
                o.exclusive_bytes,
                pct(o.exclusive_bytes, o.logical_bytes),
            ));
        }
    }
    t.push_str(&format!(
        "logical {} bytes, physical {} bytes ({}), of which manifests {}\n",
        s.logical_bytes,
        s.physical_bytes,
        pct(s.physical_bytes, s.logical_bytes),
        s.manifest_bytes
    ));
    t.push_str(&format!(
        "saved by dedup {} ({}), by delta {}, by entropy coding {}\n",
        s.saved_by_dedup,
        pct(s.saved_by_dedup.max(0) as u64, s.logical_bytes),
        s.saved_by_delta,
        s.saved_by_entropy
    ));
    for (kind, k) in [
        ("blobs", &s.blobs),
        ("plain tensors", &s.plain),
        ("delta tensors", &s.delta),
        ("inline tensors (in manifests)", &s.inline),
    ] {
        t.push_str(&format!(
            "{kind}: {} objects, {} -> {} bytes ({})\n",
            k.objects,
            k.raw_bytes,
            k.stored_bytes,
            pct(k.stored_bytes, k.raw_bytes)
        ));
    }
    if s.orphan_objects > 0 {
        t.push_str(&format!(
            "unreferenced: {} objects, {} bytes (gc reclaims them after the grace period)\n",
            s.orphan_objects, s.orphan_bytes
        ));
    }
    t
}
