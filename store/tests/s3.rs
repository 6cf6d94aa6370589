//! The S3 backend against a real S3-compatible server (Garage in CI: `scripts/garage.sh`).
//!
//! Runs when `MCODEC_S3_TEST_URL` (e.g. `s3://mcodec-test`) and the usual `AWS_*`
//! variables are set; skips with a message otherwise, unless `MCODEC_S3_REQUIRED=1`
//! (CI), where a missing server is a failure. Every test works under its own prefix.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use mcodec_fixtures::{tiny_finetune, tiny_model, write_model_dir, Finetune};
use mcodec_store::{
    AddOptions, Backend, BackendError, ObjectKey, PutOutcome, S3Backend, S3Options, Store,
};
use tempfile::TempDir;

use mcodec_fixtures::s3::test_url;

fn opts() -> S3Options {
    S3Options {
        // Small parts so that the test's multi-megabyte objects use multipart uploads
        // and parallel ranged reads.
        part_size: 5 << 20,
        ..S3Options::default()
    }
}

fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    mcodec_fixtures::read_tree(dir).unwrap()
}

/// Deterministic incompressible bytes.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[test]
fn models_round_trip_through_s3_with_dedup_deltas_gc_and_fsck() {
    let Some(url) = test_url("round-trip") else {
        return;
    };
    let tmp = TempDir::new().unwrap();
    let base = tmp.path().join("base");
    let ft = tmp.path().join("ft");
    write_model_dir(&base, &tiny_model("BF16", 3), "base").unwrap();
    // A 12 MiB incompressible file: a multipart upload and three ranged reads.
    std::fs::write(base.join("extra.bin"), noise(12 << 20, 7)).unwrap();
    write_model_dir(
        &ft,
        &tiny_finetune("BF16", 3, 1, Finetune::Full { shift: 6 }),
        "ft",
    )
    .unwrap();

    let store = Store::with_backend(Box::new(S3Backend::init(&url, opts()).unwrap()));
    let add = AddOptions::default();
    let rb = store.add(&base, "base", &add).unwrap();
    assert!(rb.new_bytes > 12 << 20, "{rb:?}");
    let rf = store.add(&ft, "ft", &add).unwrap();
    assert_eq!(rf.base.as_ref().map(|b| b.name.as_str()), Some("base"));
    assert!(rf.delta > 0, "deltas against the base: {rf:?}");

    // A second handle (another process would do the same) sees both, bit-exact.
    let store2 = Store::with_backend(Box::new(S3Backend::open(&url, opts()).unwrap()));
    for (name, src) in [("base", &base), ("ft", &ft)] {
        let out = tmp.path().join(format!("got-{name}"));
        store2.get(name, &out, false, false).unwrap();
        assert!(tree(&out) == tree(src), "{name} differs after get");
    }
    let names: Vec<String> = store2.list().unwrap().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["base", "ft"]);
    let fsck = store2.fsck().unwrap();
    assert!(fsck.problems.is_empty(), "{:?}", fsck.problems);
    assert_eq!(fsck.orphans, 0);

    // The same model again stores (almost) nothing new.
    let again = store2.add(&ft, "ft-again", &add).unwrap();
    assert!(again.new_bytes * 4 < rf.new_bytes, "{again:?} vs {rf:?}");

    // rm + gc: young orphans are kept, then reclaimed with no grace; base survives.
    store2.remove("ft").unwrap();
    store2.remove("ft-again").unwrap();
    let kept = store2.gc(Duration::from_secs(3600)).unwrap();
    assert_eq!(kept.deleted, 0);
    assert!(kept.kept_young > 0, "{kept:?}");
    let gone = store2.gc(Duration::ZERO).unwrap();
    assert!(gone.deleted > 0, "{gone:?}");
    let fsck = store2.fsck().unwrap();
    assert!(fsck.problems.is_empty(), "{:?}", fsck.problems);
    assert_eq!((fsck.models, fsck.orphans), (1, 0));
    let out = tmp.path().join("base-after-gc");
    store2.get("base", &out, false, false).unwrap();
    assert!(tree(&out) == tree(&base));

    // A damaged object is caught by get and fsck, and get leaves nothing behind.
    let victim = store2
        .backend()
        .list_objects()
        .unwrap()
        .into_iter()
        .max_by_key(|o| o.size)
        .unwrap();
    let mut bytes = store2.backend().get_object(&victim.key).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    store2.backend().delete_object(&victim.key).unwrap();
    store2.backend().put_object(&victim.key, &bytes).unwrap();
    store2.backend().sync_objects().unwrap();
    let out = tmp.path().join("damaged");
    assert!(store2.get("base", &out, false, false).is_err());
    assert!(!out.exists());
    assert!(!store2.fsck().unwrap().problems.is_empty());
}

#[test]
fn init_and_open_refuse_what_is_not_a_new_store() {
    let Some(url) = test_url("init") else {
        return;
    };
    match S3Backend::open(&url, opts()) {
        Err(BackendError::Layout(m)) => assert!(m.contains("not a store"), "{m}"),
        other => panic!("opened a missing store: {other:?}"),
    }
    S3Backend::init(&url, opts()).unwrap();
    match S3Backend::init(&url, opts()) {
        Err(BackendError::Layout(m)) => assert!(m.contains("not empty"), "{m}"),
        other => panic!("initialised twice: {other:?}"),
    }
    for bad in ["s3://", "s3:///x", "s3://b/../x", "s3://b//x"] {
        assert!(
            matches!(S3Backend::open(bad, opts()), Err(BackendError::Layout(_))),
            "{bad}"
        );
    }
}

#[test]
fn ranges_sizes_touch_and_listing_follow_the_backend_contract() {
    let Some(url) = test_url("contract") else {
        return;
    };
    let b = S3Backend::init(&url, opts()).unwrap();
    let key = ObjectKey::blob(b"contract");
    assert_eq!(b.object_size(&key).unwrap(), None);
    assert!(matches!(b.get_object(&key), Err(BackendError::NotFound(_))));
    let data = noise(11 << 20, 3);
    assert_eq!(b.put_object(&key, &data).unwrap(), PutOutcome::Created);
    b.sync_objects().unwrap();
    assert_eq!(b.object_size(&key).unwrap(), Some(data.len() as u64));
    assert!(b.get_object(&key).unwrap() == data);
    let n = data.len() as u64;
    assert_eq!(b.get_object_range(&key, 5..9).unwrap(), &data[5..9]);
    assert_eq!(
        b.get_object_range(&key, n - 3..n + 100).unwrap(),
        &data[data.len() - 3..]
    );
    assert!(b.get_object_range(&key, n + 1..n + 5).unwrap().is_empty());

    let listed = b.list_objects().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].key, listed[0].size), (key, n));
    let before = listed[0].modified;
    std::thread::sleep(Duration::from_millis(1100));
    b.touch_object(&key).unwrap();
    b.sync_objects().unwrap();
    let after = b.list_objects().unwrap()[0].modified;
    assert!(
        after > before,
        "touch did not refresh: {before:?} -> {after:?}"
    );

    b.delete_object(&key).unwrap();
    b.delete_object(&key).unwrap();
    assert!(b.list_objects().unwrap().is_empty());
    assert_eq!(b.clean_temporaries(SystemTime::now()).unwrap().0, 0);
}

#[test]
fn racing_publishers_never_both_win_a_name() {
    let Some(url) = test_url("race") else {
        return;
    };
    S3Backend::init(&url, opts()).unwrap();
    let a = Arc::new(S3Backend::open(&url, opts()).unwrap());
    let b = Arc::new(S3Backend::open(&url, opts()).unwrap());
    let (mut one_won, mut both_lost) = (0, 0);
    for round in 0..20 {
        let name = format!("m{round}");
        let barrier = Arc::new(Barrier::new(2));
        let run = |be: Arc<S3Backend>, body: &'static [u8]| {
            let (barrier, name) = (Arc::clone(&barrier), name.clone());
            std::thread::spawn(move || {
                barrier.wait();
                be.put_manifest(&name, body)
            })
        };
        let ta = run(Arc::clone(&a), b"{\"writer\":\"a\"}");
        let tb = run(Arc::clone(&b), b"{\"writer\":\"b\"}");
        let (ra, rb) = (ta.join().unwrap(), tb.join().unwrap());
        let stored = a.get_manifest(&name).unwrap();
        match (&ra, &rb) {
            (Ok(()), Ok(())) => panic!("round {round}: both writers published"),
            (Ok(()), Err(e)) | (Err(e), Ok(())) => {
                assert!(
                    matches!(
                        e,
                        BackendError::Conflict(_) | BackendError::ManifestExists(_)
                    ),
                    "{e}"
                );
                let winner: &[u8] = if ra.is_ok() {
                    b"{\"writer\":\"a\"}"
                } else {
                    b"{\"writer\":\"b\"}"
                };
                assert_eq!(stored.as_deref(), Some(winner));
                one_won += 1;
            }
            (Err(ea), Err(eb)) => {
                assert!(matches!(ea, BackendError::Conflict(_)), "{ea}");
                assert!(matches!(eb, BackendError::Conflict(_)), "{eb}");
                assert_eq!(stored, None, "round {round}: a manifest nobody published");
                both_lost += 1;
            }
        }
        // Later writers find the name taken.
        if stored.is_some() {
            assert!(matches!(
                a.put_manifest(&name, b"{}"),
                Err(BackendError::ManifestExists(_))
            ));
        }
    }
    eprintln!("20 races: {one_won} with one winner, {both_lost} where both backed off");
    // Claims are cleaned up as writers finish.
    assert_eq!(a.clean_temporaries(SystemTime::now()).unwrap().0, 0);
}

#[test]
fn an_unreachable_server_fails_cleanly_after_bounded_retries() {
    let Some(url) = test_url("unreachable") else {
        return;
    };
    let o = S3Options {
        endpoint: Some("http://127.0.0.1:9".into()),
        max_retries: 2,
        retry_timeout: Duration::from_secs(3),
        ..opts()
    };
    let t = std::time::Instant::now();
    let msg = S3Backend::open(&url, o).unwrap_err().to_string();
    assert!(msg.contains("mcodec-store.json"), "{msg}");
    assert_eq!(msg.lines().count(), 1, "{msg}");
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
}
