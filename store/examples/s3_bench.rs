//! Local directory vs S3 backend, side by side in one run: ingest (`add`) and serve (`get`)
//! throughput of a base model and its fine-tune, with fresh stores per repeat.
//!
//! ```sh
//! source target/garage/env   # or any S3-compatible service: AWS_* variables
//! cargo run --release -p mcodec-store --example s3_bench -- BASE FT s3://bucket/prefix [--repeat N] [--work DIR]
//! ```
//! Each repeat runs the local store first, then the S3 store (a new prefix each time), then
//! swaps the order on the next repeat so neither always runs on a warmer machine. Times are
//! medians; the last column is S3 time / local time (≤ 2 is the target).

use std::path::{Path, PathBuf};
use std::time::Instant;

use mcodec_store::{AddOptions, S3Backend, S3Options, Store};

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            dir_bytes(&e.path())
        } else {
            m.len()
        };
    }
    total
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

const STEPS: [&str; 4] = ["add base", "add ft --base base", "get base", "get ft"];

/// Runs the four steps on `store`; returns their times in seconds.
fn run(store: &Store, base: &Path, ft: &Path, out: &Path) -> [f64; 4] {
    let mut t = [0.0; 4];
    let s = Instant::now();
    store.add(base, "base", &AddOptions::default()).unwrap();
    t[0] = s.elapsed().as_secs_f64();
    let s = Instant::now();
    let opts = AddOptions {
        base: Some("base".into()),
        ..AddOptions::default()
    };
    store.add(ft, "ft", &opts).unwrap();
    t[1] = s.elapsed().as_secs_f64();
    for (i, name) in [(2, "base"), (3, "ft")] {
        let dest = out.join(format!("got-{name}"));
        let _ = std::fs::remove_dir_all(&dest);
        let s = Instant::now();
        store.get(name, &dest, false, false).unwrap();
        t[i] = s.elapsed().as_secs_f64();
        std::fs::remove_dir_all(&dest).unwrap();
    }
    t
}

/// Default options, with `MCODEC_S3_PART_MB` and `MCODEC_S3_CONCURRENCY` overrides for
/// tuning runs.
fn s3_options() -> S3Options {
    let mut o = S3Options::default();
    if let Some(mb) = std::env::var("MCODEC_S3_PART_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        o.part_size = mb << 20;
    }
    if let Some(c) = std::env::var("MCODEC_S3_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        o.concurrency = c;
    }
    o
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut pos = Vec::new();
    let mut repeat = 3;
    let mut work = std::env::temp_dir();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--repeat" => {
                repeat = args[i + 1].parse().unwrap();
                i += 1;
            }
            "--work" => {
                work = PathBuf::from(&args[i + 1]);
                i += 1;
            }
            a => pos.push(a.to_owned()),
        }
        i += 1;
    }
    let [base, ft, url] = &pos[..] else {
        eprintln!("usage: s3_bench BASE FT s3://bucket/prefix [--repeat N] [--work DIR]");
        std::process::exit(2);
    };
    let (base, ft) = (PathBuf::from(base), PathBuf::from(ft));
    let sizes = [
        dir_bytes(&base),
        dir_bytes(&ft),
        dir_bytes(&base),
        dir_bytes(&ft),
    ];
    std::fs::create_dir_all(&work).unwrap();
    let mut times: [[Vec<f64>; 4]; 2] = Default::default();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for r in 0..repeat {
        for which in [r % 2, 1 - r % 2] {
            let t = if which == 0 {
                let root = work.join(format!("s3bench-local-{r}"));
                let _ = std::fs::remove_dir_all(&root);
                let store = Store::init(&root).unwrap();
                let t = run(&store, &base, &ft, &work);
                std::fs::remove_dir_all(&root).unwrap();
                t
            } else {
                let prefix = format!("{}/s3bench-{stamp}-{r}", url.trim_end_matches('/'));
                let store =
                    Store::with_backend(Box::new(S3Backend::init(&prefix, s3_options()).unwrap()));
                let t = run(&store, &base, &ft, &work);
                // Leave the bucket as it was.
                for m in ["ft", "base"] {
                    store.remove(m).unwrap();
                }
                store.gc(std::time::Duration::ZERO).unwrap();
                t
            };
            for (k, secs) in t.into_iter().enumerate() {
                times[which][k].push(secs);
            }
            eprintln!(
                "repeat {r} {}: {:?}",
                ["local", "s3"][which],
                t.map(|s| (s * 1000.0).round() / 1000.0)
            );
        }
    }
    println!("| step | logical bytes | local MB/s | S3 MB/s | S3 time / local time |");
    println!("|---|---:|---:|---:|---:|");
    for (k, step) in STEPS.iter().enumerate() {
        let l = median(&mut times[0][k]);
        let s = median(&mut times[1][k]);
        let mb = sizes[k] as f64 / 1e6;
        println!(
            "| {step} | {} | {:.0} | {:.0} | {:.2} |",
            sizes[k],
            mb / l,
            mb / s,
            s / l
        );
    }
}
