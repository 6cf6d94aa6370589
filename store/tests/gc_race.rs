//! `gc` with a zero grace period, in a loop, against concurrent `add`s of models that reuse
//! each other's objects (STORE.md §7.1): every `add` succeeds, and afterwards every
//! published model `get`s back bit for bit and `fsck` finds nothing missing. Local, and on
//! an S3 server when `MCODEC_S3_TEST_URL` is set (see `tests/s3.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mcodec_fixtures::s3::test_url;
use mcodec_fixtures::{tiny_finetune, tiny_model, write_model_dir, Finetune};
use mcodec_store::{AddOptions, S3Backend, S3Options, Store};
use tempfile::TempDir;

fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    mcodec_fixtures::read_tree(dir).unwrap()
}

/// A base and fine-tunes of it: every fine-tune shares files and the untouched tensors
/// with the base, and each is coded as deltas against it, so each add reuses objects the
/// others wrote (and that removed models leave unreferenced).
fn family(dir: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let base = dir.join("m0");
    write_model_dir(&base, &tiny_model("BF16", 2), "m0").unwrap();
    dirs.push(base);
    for (i, how) in [
        Finetune::Full { shift: 6 },
        Finetune::FrozenEmbeddings { shift: 5 },
        Finetune::Full { shift: 8 },
    ]
    .into_iter()
    .enumerate()
    {
        let d = dir.join(format!("m{}", i + 1));
        write_model_dir(&d, &tiny_finetune("BF16", 2, i as u64, how), "m").unwrap();
        dirs.push(d);
    }
    dirs
}

/// Two writers add models (by turns every model of the family, under new names, base
/// chosen automatically or given) and remove the models added two rounds before, so that
/// the objects they reuse keep becoming unreferenced; one collector runs `gc(0)` in a
/// loop. Then every model still published is checked.
fn gc_against_writers(open: &(dyn Fn() -> Store + Sync), budget: Duration, tmp: &Path) {
    let models = family(&tmp.join("src"));
    let store = open();
    store
        .add(&models[0], "seed/m0", &AddOptions::default())
        .unwrap();
    // Garbage that only gc can reclaim: a model with a file of its own, removed.
    let junk = tmp.join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("own.bin"), format!("{:?}", Instant::now())).unwrap();
    store.add(&junk, "junk", &AddOptions::default()).unwrap();
    store.remove("junk").unwrap();
    let done = AtomicBool::new(false);
    let (gcs, deleted, deferred) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let published: Mutex<Vec<(String, usize)>> = Mutex::new(vec![("seed/m0".into(), 0)]);
    let start = Instant::now();
    std::thread::scope(|s| {
        let collector = s.spawn(|| {
            let store = open();
            while !done.load(Ordering::SeqCst) {
                let r = store.gc(Duration::ZERO).unwrap_or_else(|e| {
                    done.store(true, Ordering::SeqCst);
                    panic!("gc: {e}")
                });
                gcs.fetch_add(1, Ordering::Relaxed);
                deleted.fetch_add(r.deleted, Ordering::Relaxed);
                deferred.fetch_add(r.deferred, Ordering::Relaxed);
            }
        });
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let (models, published) = (&models, &published);
                s.spawn(move || {
                    let store = open();
                    let mut mine: Vec<String> = Vec::new();
                    let mut round = 0usize;
                    while start.elapsed() < budget {
                        let which = (round + w) % models.len();
                        let name = format!("w{w}/r{round}-m{which}");
                        let opts = AddOptions {
                            base: (which > 0 && round.is_multiple_of(2))
                                .then(|| "seed/m0".to_owned()),
                            ..AddOptions::default()
                        };
                        if let Err(e) = store.add(&models[which], &name, &opts) {
                            return Err(format!("add {name}: {e}"));
                        }
                        published.lock().unwrap().push((name.clone(), which));
                        mine.push(name);
                        if mine.len() > 2 {
                            let old = mine.remove(0);
                            if let Err(e) = store.remove(&old) {
                                return Err(format!("rm {old}: {e}"));
                            }
                            published.lock().unwrap().retain(|(n, _)| *n != old);
                        }
                        round += 1;
                    }
                    Ok(round)
                })
            })
            .collect();
        let rounds: Vec<Result<usize, String>> =
            writers.into_iter().map(|w| w.join().unwrap()).collect();
        done.store(true, Ordering::SeqCst);
        collector.join().unwrap();
        let rounds: Vec<usize> = rounds
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
            .collect();
        eprintln!(
            "{} adds by 2 writers, {} gc runs: {} objects deleted, {} deferred while writers ran",
            rounds.iter().sum::<usize>(),
            gcs.load(Ordering::Relaxed),
            deleted.load(Ordering::Relaxed),
            deferred.load(Ordering::Relaxed)
        );
        assert!(
            rounds.iter().all(|&r| r > 2),
            "each writer added models: {rounds:?}"
        );
        assert!(
            gcs.load(Ordering::Relaxed) > 2,
            "gc ran while the writers ran"
        );
    });
    // A last gc with nobody writing deletes what the removed models left.
    let last = store.gc(Duration::ZERO).unwrap();
    assert_eq!(last.deferred, 0, "{last:?}");
    assert!(
        deleted.load(Ordering::Relaxed) + last.deleted > 0,
        "gc deleted the removed models' objects"
    );
    let published = published.into_inner().unwrap();
    for (i, (name, which)) in published.iter().enumerate() {
        let out = tmp.join(format!("got-{i}"));
        store
            .get(name, &out, false, false)
            .unwrap_or_else(|e| panic!("get {name}: {e}"));
        assert!(tree(&out) == tree(&models[*which]), "{name} differs");
        std::fs::remove_dir_all(&out).unwrap();
    }
    let fsck = store.fsck().unwrap();
    assert!(fsck.problems.is_empty(), "{:?}", fsck.problems);
    assert_eq!(fsck.models, published.len());
}

#[test]
fn gc_with_zero_grace_loses_nothing_beside_concurrent_adds() {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().join("store");
    Store::init(&root).unwrap();
    gc_against_writers(
        &|| Store::open(&root).unwrap(),
        Duration::from_secs(8),
        tmp.path(),
    );
}

#[test]
fn gc_with_zero_grace_loses_nothing_beside_concurrent_adds_on_s3() {
    let Some(url) = test_url("gc-race") else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    drop(S3Backend::init(&url, S3Options::default()).unwrap());
    gc_against_writers(
        &|| {
            Store::with_backend(Box::new(
                S3Backend::open(&url, S3Options::default()).unwrap(),
            ))
        },
        Duration::from_secs(10),
        tmp.path(),
    );
}
