//! Store benchmark: growth on disk and ingest/retrieval throughput of a model family, with
//! the default delta coder beside the BitX-only baseline in the same run.
//!
//! ```sh
//! cargo run --release -p mcodec-store --example store_bench -- BASE FT [FROZEN] [--repeat N] [--work DIR] [--no-auto]
//! ```
//! Per repeat and delta mode, two fresh stores: (A) base, ft `--base`, frozen `--base`, ft
//! again under another name; (B) base, ft and frozen with the base chosen automatically.
//! Growth is measured on disk (allocated blocks) and as file bytes; times are medians.

use std::path::{Path, PathBuf};
use std::time::Instant;

use mcodec_store::{AddOptions, DeltaMode, Store};

fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut blocks, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            blocks += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            } else {
                bytes += m.len();
            }
        }
    }
    (blocks, bytes)
}

fn dir_bytes(dir: &Path) -> u64 {
    disk_usage(dir).1
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[derive(Default)]
struct Runs {
    rows: Vec<(String, Vec<f64>, Vec<u64>, u64)>,
}

impl Runs {
    fn record(&mut self, what: &str, secs: f64, growth: u64, logical: u64) {
        if let Some(r) = self.rows.iter_mut().find(|r| r.0 == what) {
            r.1.push(secs);
            r.2.push(growth);
        } else {
            self.rows
                .push((what.to_owned(), vec![secs], vec![growth], logical));
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut pos = Vec::new();
    let mut repeat = 3;
    let mut auto = true;
    let mut work = std::env::temp_dir();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--repeat" => {
                repeat = args[i + 1].parse().unwrap();
                i += 1;
            }
            "--no-auto" => auto = false,
            "--work" => {
                work = PathBuf::from(&args[i + 1]);
                i += 1;
            }
            a => pos.push(PathBuf::from(a)),
        }
        i += 1;
    }
    let (base, ft) = (&pos[0], &pos[1]);
    let frozen = pos.get(2);
    println!(
        "threads {}, repeats {repeat}, base {} ({} bytes), ft {} ({} bytes)",
        rayon::current_num_threads(),
        base.display(),
        dir_bytes(base),
        ft.display(),
        dir_bytes(ft)
    );
    for (label, mode) in [("best", DeltaMode::Best), ("bitx", DeltaMode::BitX)] {
        let mut runs = Runs::default();
        for _ in 0..repeat {
            let tmp = tempfile::tempdir_in(&work).unwrap();
            // Store A: explicit base, identical copy.
            let root = tmp.path().join("a");
            let store = Store::init(&root).unwrap();
            let step = |store: &Store,
                        root: &Path,
                        runs: &mut Runs,
                        what: &str,
                        src: &Path,
                        name: &str,
                        b: Option<&str>| {
                let before = disk_usage(root).0;
                let t = Instant::now();
                store
                    .add(
                        src,
                        name,
                        &AddOptions {
                            base: b.map(str::to_owned),
                            delta: mode,
                            ..AddOptions::default()
                        },
                    )
                    .unwrap();
                let secs = t.elapsed().as_secs_f64();
                runs.record(what, secs, disk_usage(root).0 - before, dir_bytes(src));
            };
            step(&store, &root, &mut runs, "add base", base, "base", None);
            step(
                &store,
                &root,
                &mut runs,
                "add ft --base",
                ft,
                "ft",
                Some("base"),
            );
            if let Some(f) = frozen {
                step(
                    &store,
                    &root,
                    &mut runs,
                    "add ft-frozen --base",
                    f,
                    "frozen",
                    Some("base"),
                );
            }
            step(
                &store,
                &root,
                &mut runs,
                "add ft again (identical)",
                ft,
                "ft-copy",
                Some("base"),
            );
            for (what, sync) in [("get ft (no fsync)", false), ("get ft (fsync)", true)] {
                let out = tmp.path().join("out");
                let t = Instant::now();
                store.get("ft", &out, false, sync).unwrap();
                let secs = t.elapsed().as_secs_f64();
                runs.record(what, secs, 0, dir_bytes(ft));
                std::fs::remove_dir_all(&out).unwrap();
            }
            let stats = store.stats().unwrap();
            if runs.rows[0].1.len() == 1 {
                let m = stats.models.iter().find(|m| m.name == "ft").unwrap();
                println!(
                    "[{label}] ft: {} delta / {} plain tensors; store: logical {} physical {}; saved dedup {} delta {} entropy {}",
                    m.delta_tensors, m.plain_tensors, stats.logical_bytes, stats.physical_bytes,
                    stats.saved_by_dedup, stats.saved_by_delta, stats.saved_by_entropy
                );
            }
            if !auto {
                continue;
            }
            // Store B: base chosen automatically.
            let root_b = tmp.path().join("b");
            let store_b = Store::init(&root_b).unwrap();
            step(&store_b, &root_b, &mut runs, "add base", base, "base", None);
            step(
                &store_b,
                &root_b,
                &mut runs,
                "add ft (auto base)",
                ft,
                "ft",
                None,
            );
            if let Some(f) = frozen {
                step(
                    &store_b,
                    &root_b,
                    &mut runs,
                    "add ft-frozen (auto base)",
                    f,
                    "frozen",
                    None,
                );
            }
            let chosen = store_b.manifest("ft").unwrap().base.map(|b| b.name);
            assert_eq!(chosen.as_deref(), Some("base"), "auto base");
        }
        println!("[{label}] step | growth on disk | % of input | median s | MB/s");
        for (what, mut secs, growth, logical) in runs.rows {
            let s = median(&mut secs);
            let g = growth.iter().copied().max().unwrap_or(0);
            let pct = if what.starts_with("get") {
                "-".into()
            } else {
                format!("{:.2}%", g as f64 * 100.0 / logical as f64)
            };
            println!(
                "[{label}] {what} | {g} | {pct} | {s:.3} | {:.0}",
                logical as f64 / 1e6 / s
            );
        }
    }
}
