//! Round trips, dedup, deltas, base choice, gc, fsck and hostile input on generated model
//! families (fixtures crate).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mcodec::tensor::EncodeOptions;
use mcodec_fixtures::{tiny_finetune, tiny_model, write_model_dir, Finetune};
use mcodec_store::object::Header;
use mcodec_store::{
    AddOptions, Backend, BackendError, DeltaMode, LocalBackend, Manifest, ObjectInfo, ObjectKey,
    PutOutcome, RecordKind, Store, StoreError,
};
use tempfile::TempDir;

const FLOAT_DTYPES: [&str; 5] = ["BF16", "F16", "F32", "F8_E4M3", "F8_E5M2"];

/// The header of the object `key` (objects are internal: the `fuzzing` feature exposes
/// their format to this test).
fn header(store: &Store, key: &ObjectKey) -> Header {
    let object = store.backend().get_object(key).unwrap();
    mcodec_store::object::split(&object).unwrap().0
}

/// Every file under `dir` with its bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    mcodec_fixtures::read_tree(dir).unwrap()
}

struct Family {
    _tmp: TempDir,
    root: std::path::PathBuf,
    base: std::path::PathBuf,
    ft: std::path::PathBuf,
    frozen: std::path::PathBuf,
}

fn family(dtype: &str) -> Family {
    let tmp = TempDir::new().unwrap();
    let models = tmp.path().join("models");
    let base = models.join("base");
    let ft = models.join("ft");
    let frozen = models.join("frozen");
    write_model_dir(&base, &tiny_model(dtype, 2), "base").unwrap();
    write_model_dir(
        &ft,
        &tiny_finetune(dtype, 2, 1, Finetune::Full { shift: 6 }),
        "ft",
    )
    .unwrap();
    write_model_dir(
        &frozen,
        &tiny_finetune(dtype, 2, 2, Finetune::FrozenEmbeddings { shift: 6 }),
        "frozen",
    )
    .unwrap();
    let root = tmp.path().join("store");
    Family {
        root,
        base,
        ft,
        frozen,
        _tmp: tmp,
    }
}

fn get_matches(store: &Store, name: &str, src: &Path, scratch: &Path) {
    let out = scratch.join(format!("out-{name}"));
    store.get(name, &out, false, false).unwrap();
    assert!(tree(&out) == tree(src), "{name} differs after get");
}

#[test]
fn families_round_trip_with_dedup_and_deltas_for_every_float_dtype() {
    for dtype in FLOAT_DTYPES {
        let f = family(dtype);
        let store = Store::init(&f.root).unwrap();
        let opts = AddOptions::default();
        let base = store.add(&f.base, "base", &opts).unwrap();
        assert!(base.base.is_none(), "{dtype}: first model has no base");
        assert_eq!(base.delta, 0);

        let ft = store.add(&f.ft, "ft", &opts).unwrap();
        let chosen = ft.base.clone().expect("a base is chosen");
        assert_eq!(
            (chosen.name.as_str(), chosen.auto),
            ("base", true),
            "{dtype}"
        );
        // config.json and tokenizer.json are shared; the I64 position ids too.
        assert!(ft.dedup >= 3, "{dtype}: {ft:?}");
        if dtype != "F8_E4M3" && dtype != "F8_E5M2" {
            assert!(ft.delta > 0, "{dtype}: no tensor coded as a delta: {ft:?}");
        }

        let frozen = store
            .add(
                &f.frozen,
                "frozen",
                &AddOptions {
                    base: Some("base".into()),
                    ..AddOptions::default()
                },
            )
            .unwrap();
        assert!(!frozen.base.as_ref().unwrap().auto);
        // Embeddings are identical to the base's: stored once.
        assert!(frozen.dedup > ft.dedup, "{dtype}: {frozen:?} vs {ft:?}");

        let objects_before = store.backend().list_objects().unwrap().len();
        let copy = store.add(&f.ft, "ft-copy", &opts).unwrap();
        assert_eq!(
            store.backend().list_objects().unwrap().len(),
            objects_before,
            "{dtype}: an identical model adds no objects"
        );
        // Only small tensors kept inline in the manifest are stored again.
        let inline: usize = store
            .manifest("ft-copy")
            .unwrap()
            .tensors()
            .filter_map(|t| t.inline.as_ref().map(|i| i.0.len()))
            .sum();
        assert_eq!(copy.new_bytes as usize, inline, "{dtype}: {copy:?}");
        assert_eq!(
            copy.plain as usize + copy.dedup as usize,
            copy.tensors + 3 + 1
        );

        let scratch = TempDir::new().unwrap();
        for (name, src) in [
            ("base", &f.base),
            ("ft", &f.ft),
            ("frozen", &f.frozen),
            ("ft-copy", &f.ft),
        ] {
            get_matches(&store, name, src, scratch.path());
        }
        let stats = store.stats().unwrap();
        let logical: u64 = [&f.base, &f.ft, &f.frozen, &f.ft]
            .iter()
            .map(|d| tree(d).values().map(|v| v.len() as u64).sum::<u64>())
            .sum();
        assert_eq!(stats.logical_bytes, logical);
        assert!(
            stats.saved_by_dedup >= (logical / 4) as i64,
            "{dtype}: {stats:?}"
        );
        assert!(stats.physical_bytes < logical / 2, "{dtype}: {stats:?}");
        assert_eq!(stats.orphan_objects, 0);
        let ft_stats = stats.models.iter().find(|m| m.name == "ft").unwrap();
        assert_eq!(ft_stats.base.as_ref().unwrap().name, "base");
        assert_eq!(ft_stats.exclusive_bytes, 0, "ft-copy shares everything");
        let fsck = store.fsck().unwrap();
        assert!(fsck.problems.is_empty(), "{dtype}: {:?}", fsck.problems);
        assert_eq!(fsck.models, 4);
    }
}

#[test]
fn deltas_beat_plain_coding_and_bitx_mode_works() {
    let f = family("BF16");
    let store = Store::init(&f.root).unwrap();
    store.add(&f.base, "base", &AddOptions::default()).unwrap();
    let off = store
        .add(
            &f.ft,
            "ft-plain",
            &AddOptions {
                delta: DeltaMode::Off,
                ..AddOptions::default()
            },
        )
        .unwrap();
    assert_eq!(off.delta, 0);
    assert!(off.base.is_none());
    // Same bytes again: everything deduplicates, so store the fine-tune under a second
    // store to compare delta modes.
    let other = TempDir::new().unwrap();
    let store2 = Store::init(&other.path().join("s")).unwrap();
    store2.add(&f.base, "base", &AddOptions::default()).unwrap();
    let bitx = store2
        .add(
            &f.ft,
            "ft",
            &AddOptions {
                delta: DeltaMode::BitX,
                base: Some("base".into()),
                ..AddOptions::default()
            },
        )
        .unwrap();
    assert!(bitx.delta > 0);
    assert!(
        bitx.new_bytes < off.new_bytes,
        "deltas {} vs plain {}",
        bitx.new_bytes,
        off.new_bytes
    );
    let s = store2.stats().unwrap();
    assert!(s.saved_by_delta > 0, "{s:?}");
    assert!(s.delta_plain_bytes > s.delta.stored_bytes);
    get_matches(&store2, "ft", &f.ft, other.path());
}

#[test]
fn delta_chains_stay_one_level_deep() {
    let f = family("BF16");
    let store = Store::init(&f.root).unwrap();
    store.add(&f.base, "base", &AddOptions::default()).unwrap();
    store.add(&f.ft, "ft", &AddOptions::default()).unwrap();
    // A fine-tune of the fine-tune, its base given explicitly.
    let tmp = TempDir::new().unwrap();
    let ft2 = tmp.path().join("ft2");
    write_model_dir(
        &ft2,
        &tiny_finetune("BF16", 2, 1, Finetune::Full { shift: 5 }),
        "ft2",
    )
    .unwrap();
    store
        .add(
            &ft2,
            "ft2",
            &AddOptions {
                base: Some("ft".into()),
                ..AddOptions::default()
            },
        )
        .unwrap();
    let m = store.manifest("ft2").unwrap();
    let mut deltas = 0;
    for t in m.tensors() {
        if let Some(b) = t.delta_base {
            deltas += 1;
            assert!(
                matches!(header(&store, &b), Header::Plain { .. }),
                "{}: delta base is not plain",
                t.name
            );
        }
    }
    assert!(deltas > 0);
    get_matches(&store, "ft2", &ft2, tmp.path());
}

#[test]
fn single_files_round_trip_and_outputs_are_not_overwritten() {
    let f = family("F16");
    let store = Store::init(&f.root).unwrap();
    let file = f.base.join("model.safetensors");
    store.add(&file, "one", &AddOptions::default()).unwrap();
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    store.get("one", &out, false, true).unwrap();
    assert_eq!(
        fs::read(out.join("model.safetensors")).unwrap(),
        fs::read(&file).unwrap()
    );
    assert!(matches!(
        store.get("one", &out, false, false),
        Err(StoreError::Output { .. })
    ));
    store.get("one", &out, true, false).unwrap();
    assert!(matches!(
        store.add(&file, "one", &AddOptions::default()),
        Err(StoreError::ModelExists(_))
    ));
    assert!(matches!(
        store.get("nope", &tmp.path().join("x"), false, false),
        Err(StoreError::NoSuchModel(_))
    ));
}

#[test]
fn names_and_manifest_paths_cannot_escape() {
    let f = family("BF16");
    let store = Store::init(&f.root).unwrap();
    for bad in [
        "../evil", "a//b", "a/", "", ".", "..", "/abs", "x\\y", "a..b", "a/../b",
    ] {
        assert!(
            matches!(
                store.add(&f.base, bad, &AddOptions::default()),
                Err(StoreError::Manifest(_))
            ),
            "{bad:?}"
        );
        assert!(store.get(bad, &f.root.join("o"), false, false).is_err());
        assert!(store.remove(bad).is_err());
    }
    // A planted manifest whose file path climbs out of the output directory.
    store.add(&f.base, "base", &AddOptions::default()).unwrap();
    let models = f.root.join("models");
    let text = fs::read_to_string(models.join("base.json")).unwrap();
    let evil = text
        .replace("\"name\": \"base\"", "\"name\": \"evil\"")
        .replace(
            "\"path\": \"config.json\"",
            "\"path\": \"../../escaped.json\"",
        );
    fs::write(models.join("evil.json"), evil).unwrap();
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("a").join("out");
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    let err = store.get("evil", &out, false, false).unwrap_err();
    assert!(matches!(err, StoreError::BadManifest { .. }), "{err}");
    assert!(!tmp.path().join("escaped.json").exists());
    assert!(!out.exists());
    let fsck = store.fsck().unwrap();
    assert_eq!(fsck.problems.len(), 1, "{:?}", fsck.problems);
}

/// Flips one byte in the middle of the largest object referenced by `model`'s tensors.
fn corrupt_largest_tensor_object(store: &Store, root: &Path, model: &str) {
    let m = store.manifest(model).unwrap();
    let largest = m
        .tensors()
        .max_by_key(|t| store.backend().object_size(&t.object).unwrap())
        .unwrap();
    let hex = largest.object.to_hex();
    let path = root.join("objects").join(&hex[..2]).join(&hex);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2 + 100;
    bytes[mid] ^= 0x10;
    fs::write(&path, bytes).unwrap();
}

#[test]
fn corrupt_objects_are_caught_by_get_and_fsck() {
    let f = family("BF16");
    let store = Store::init(&f.root).unwrap();
    store.add(&f.base, "base", &AddOptions::default()).unwrap();
    store.add(&f.ft, "ft", &AddOptions::default()).unwrap();
    assert!(store.fsck().unwrap().problems.is_empty());
    // Damage the base: both the base and the fine-tune (whose deltas need it) fail.
    corrupt_largest_tensor_object(&store, &f.root, "base");
    let tmp = TempDir::new().unwrap();
    for name in ["base", "ft"] {
        let out = tmp.path().join(name);
        let err = store.get(name, &out, false, false).unwrap_err();
        assert!(
            matches!(err, StoreError::Checksum { .. } | StoreError::Object { .. }),
            "{name}: {err}"
        );
        assert!(!out.exists(), "{name}: partial output left behind");
    }
    let fsck = store.fsck().unwrap();
    assert!(!fsck.problems.is_empty());
    // Every leftover temporary directory of the failed gets is gone.
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn rm_and_gc_reclaim_only_unneeded_objects() {
    let f = family("BF16");
    let store = Store::init(&f.root).unwrap();
    store.add(&f.base, "base", &AddOptions::default()).unwrap();
    store.add(&f.ft, "ft", &AddOptions::default()).unwrap();
    let before = store.stats().unwrap();
    let ft_exclusive = before
        .models
        .iter()
        .find(|m| m.name == "ft")
        .unwrap()
        .exclusive_bytes;
    assert!(ft_exclusive > 0);
    // `rm base` keeps the objects the fine-tune's deltas need.
    store.remove("base").unwrap();
    assert!(matches!(
        store.remove("base"),
        Err(StoreError::NoSuchModel(_))
    ));
    // The base's tensors now count only as the fine-tune's delta bases.
    let after_rm = store.stats().unwrap();
    assert_eq!(after_rm.models.len(), 1);
    assert!(after_rm.unique_bytes > 0);
    let kept = store.gc(mcodec_store::DEFAULT_GRACE).unwrap();
    assert_eq!(kept.deleted, 0, "young objects are kept: {kept:?}");
    let r = store.gc(Duration::ZERO).unwrap();
    assert!(r.deleted > 0);
    let tmp = TempDir::new().unwrap();
    get_matches(&store, "ft", &f.ft, tmp.path());
    assert!(store.fsck().unwrap().problems.is_empty());
    store.remove("ft").unwrap();
    store.gc(Duration::ZERO).unwrap();
    assert!(store.backend().list_objects().unwrap().is_empty());
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn stored_manifests_parse_strictly() {
    let f = family("F32");
    let store = Store::init(&f.root).unwrap();
    store.add(&f.base, "base", &AddOptions::default()).unwrap();
    let bytes = fs::read(f.root.join("models/base.json")).unwrap();
    let m = Manifest::parse(&bytes).unwrap();
    assert_eq!(m.to_json(), bytes);
    for cut in [0, 1, bytes.len() / 2, bytes.len() - 3] {
        assert!(Manifest::parse(&bytes[..cut]).is_err());
    }
}

#[test]
fn fuzz_seeds_are_valid_manifests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/store_manifest");
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("seed-")
        {
            Manifest::parse(&fs::read(&p).unwrap()).unwrap();
            n += 1;
        }
    }
    assert!(n >= 2);
}

/// Path of object `key` in the local store at `root`.
fn object_path(root: &Path, key: &ObjectKey) -> PathBuf {
    let hex = key.to_hex();
    root.join("objects").join(&hex[..2]).join(hex)
}

/// Tensor keys of every safetensors file under `dir`, by tensor name.
fn source_keys(dir: &Path) -> HashMap<String, ObjectKey> {
    let mut keys = HashMap::new();
    for (path, bytes) in tree(dir) {
        if !path.ends_with(".safetensors") {
            continue;
        }
        let h = mcodec::safetensors::parse(&bytes, bytes.len() as u64).unwrap();
        for t in h.tensors {
            let b = &bytes[t.range.start as usize..t.range.end as usize];
            keys.insert(t.name.clone(), ObjectKey::tensor(&t.dtype, &t.shape, b));
        }
    }
    keys
}

#[test]
fn delta_objects_are_named_by_tensor_and_base() {
    let f = family("BF16");
    let store = Store::init(&f.root).unwrap();
    store.add(&f.base, "base", &AddOptions::default()).unwrap();
    store.add(&f.ft, "ft", &AddOptions::default()).unwrap();
    let base = store.manifest("base").unwrap();
    let base_plain: HashMap<ObjectKey, bool> = base
        .tensors()
        .map(|t| (t.key, t.delta_base.is_none()))
        .collect();
    let m = Manifest::parse(&fs::read(f.root.join("models/ft.json")).unwrap()).unwrap();
    let keys = source_keys(&f.ft);
    let mut deltas = 0;
    for t in m.tensors() {
        assert_eq!(t.key, keys[&t.name], "{}: key is the tensor's hash", t.name);
        match t.delta_base {
            None => assert_eq!(t.object, t.key, "{}", t.name),
            Some(y) => {
                deltas += 1;
                assert_eq!(t.object, ObjectKey::delta(&t.key, &y), "{}", t.name);
                assert_ne!(t.object, t.key);
                assert_eq!(base_plain.get(&y), Some(&true), "{}: base is plain", t.name);
                match header(&store, &t.object) {
                    Header::Delta { base, .. } => assert_eq!(base, y, "{}", t.name),
                    h => panic!("{}: {h:?} at a delta name", t.name),
                }
                // Nothing is stored under the tensor's own key.
                assert_eq!(store.backend().object_size(&t.key).unwrap(), None);
            }
        }
    }
    assert!(deltas > 0);
    assert!(store.fsck().unwrap().problems.is_empty());
}

#[test]
fn old_stores_are_refused_with_a_clear_message() {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().join("s");
    Store::init(&root).unwrap();
    fs::write(
        root.join("mcodec-store.json"),
        "{\"format\":\"mcodec-store\",\"version\":1}\n",
    )
    .unwrap();
    let err = Store::open(&root).err().unwrap().to_string();
    assert!(
        err.contains("store format version 1 is not supported by this mcodec; re-create it"),
        "{err}"
    );
}

#[test]
fn manifests_whose_objects_do_not_follow_from_their_keys_are_refused() {
    let f = family("BF16");
    let store = Store::init(&f.root).unwrap();
    store.add(&f.base, "base", &AddOptions::default()).unwrap();
    store.add(&f.ft, "ft", &AddOptions::default()).unwrap();
    let m = store.manifest("ft").unwrap();
    let d = m.tensors().find(|t| t.delta_base.is_some()).unwrap();
    let models = f.root.join("models");
    let text = fs::read_to_string(models.join("ft.json")).unwrap();
    let planted = [
        // The delta object recorded as if it were plain.
        text.replacen(
            &format!("\"delta_base\": \"{}\"", d.delta_base.unwrap()),
            "\"delta_base\": null",
            1,
        ),
        // The delta's object named under the tensor's own key.
        text.replacen(
            &format!("\"object\": \"{}\"", d.object),
            &format!("\"object\": \"{}\"", d.key),
            1,
        ),
    ];
    for (i, evil) in planted.iter().enumerate() {
        assert_ne!(evil, &text);
        let name = format!("evil{i}");
        let evil = evil.replace("\"name\": \"ft\"", &format!("\"name\": \"{name}\""));
        fs::write(models.join(format!("{name}.json")), evil).unwrap();
        let err = store
            .get(&name, &f.root.join("out"), false, false)
            .unwrap_err();
        assert!(matches!(err, StoreError::BadManifest { .. }), "{i}: {err}");
        fs::remove_file(models.join(format!("{name}.json"))).unwrap();
    }
    // `null` is not a key; a manifest whose plain entry names a delta object is refused by
    // validation rather than by the JSON shape.
    let mut bad = m.clone();
    for f in &mut bad.files {
        for t in f.safetensors.iter_mut().flat_map(|s| &mut s.tensors) {
            if t.delta_base.is_some() {
                t.delta_base = None;
            }
        }
    }
    let err = Manifest::parse(&bad.to_json()).unwrap_err().to_string();
    assert!(err.contains("is not its key"), "{err}");
}

/// Two non-inline tensors of `model` of the same dtype and shape but different keys,
/// both coded the same way (both plain, or both deltas).
fn twins(store: &Store, model: &str, delta: bool) -> (ObjectKey, ObjectKey) {
    let m = store.manifest(model).unwrap();
    let ts: Vec<_> = m
        .tensors()
        .filter(|t| t.inline.is_none() && t.delta_base.is_some() == delta)
        .collect();
    for (i, a) in ts.iter().enumerate() {
        for b in &ts[i + 1..] {
            if a.dtype == b.dtype && a.shape == b.shape && a.key != b.key {
                return (a.object, b.object);
            }
        }
    }
    panic!("{model}: no two tensors alike");
}

#[test]
fn an_object_swapped_for_another_tensors_is_caught() {
    for delta in [false, true] {
        let f = family("BF16");
        let store = Store::init(&f.root).unwrap();
        store.add(&f.base, "base", &AddOptions::default()).unwrap();
        store.add(&f.ft, "ft", &AddOptions::default()).unwrap();
        let model = if delta { "ft" } else { "base" };
        let (a, b) = twins(&store, model, delta);
        // A well-formed object of the same dtype and shape, under the wrong name.
        fs::copy(object_path(&f.root, &a), object_path(&f.root, &b)).unwrap();
        let tmp = TempDir::new().unwrap();
        let err = store
            .get(model, &tmp.path().join("out"), false, false)
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Checksum { key, .. }
                    | StoreError::WrongTensor { key, .. }
                    | StoreError::WrongBase { key, .. } if key == b
            ),
            "{model}: {err}"
        );
        let fsck = store.fsck().unwrap();
        let hex = b.to_hex();
        assert!(
            fsck.problems.iter().any(|p| p.contains(&hex)),
            "{model}: {:?}",
            fsck.problems
        );
        // A swapped delta harms nothing else (a swapped plain object also breaks the
        // deltas against it).
        if delta {
            assert_eq!(fsck.problems.len(), 1, "{:?}", fsck.problems);
        }
    }
}

#[test]
fn adding_the_same_finetune_twice_stores_nothing_new() {
    let f = family("F16");
    let store = Store::init(&f.root).unwrap();
    store.add(&f.base, "base", &AddOptions::default()).unwrap();
    let with_base = AddOptions {
        base: Some("base".into()),
        ..AddOptions::default()
    };
    let first = store.add(&f.ft, "ft", &with_base).unwrap();
    assert!(first.delta > 0, "{first:?}");
    let objects = store.backend().list_objects().unwrap();
    let again = store.add(&f.ft, "ft-again", &with_base).unwrap();
    assert_eq!(store.backend().list_objects().unwrap().len(), objects.len());
    let inline: u64 = store
        .manifest("ft-again")
        .unwrap()
        .tensors()
        .filter_map(|t| t.inline.as_ref().map(|i| i.0.len() as u64))
        .sum();
    assert_eq!(again.new_bytes, inline, "{again:?}");
    assert_eq!((again.delta, again.blobs), (0, 0), "{again:?}");
    let entries = |name: &str| -> Vec<_> {
        store
            .manifest(name)
            .unwrap()
            .tensors()
            .map(|t| (t.key, t.object, t.delta_base))
            .collect()
    };
    assert_eq!(entries("ft"), entries("ft-again"));
}

/// A backend like an S3 server without conditional PUT: a put replaces whatever is there,
/// and while `blind` is set, existence checks answer "absent" (as for writers racing on the
/// same new object) until the add syncs its objects.
struct Overwriting {
    inner: LocalBackend,
    blind: Arc<AtomicBool>,
    /// Flip a bit of every object put (a disk or network corrupting writes).
    damage: bool,
}

impl Backend for Overwriting {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn put_object(&self, key: &ObjectKey, bytes: &[u8]) -> Result<PutOutcome, BackendError> {
        self.inner.delete_object(key)?;
        let mut bytes = bytes.to_vec();
        if self.damage {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x04;
        }
        self.inner.put_object(key, &bytes)
    }
    fn object_size(&self, key: &ObjectKey) -> Result<Option<u64>, BackendError> {
        if self.blind.load(Ordering::SeqCst) {
            return Ok(None);
        }
        self.inner.object_size(key)
    }
    fn get_object(&self, key: &ObjectKey) -> Result<Vec<u8>, BackendError> {
        self.inner.get_object(key)
    }
    fn get_object_range(
        &self,
        key: &ObjectKey,
        range: Range<u64>,
    ) -> Result<Vec<u8>, BackendError> {
        self.inner.get_object_range(key, range)
    }
    fn touch_object(&self, key: &ObjectKey) -> Result<(), BackendError> {
        self.inner.touch_object(key)
    }
    fn list_objects(&self) -> Result<Vec<ObjectInfo>, BackendError> {
        self.inner.list_objects()
    }
    fn delete_object(&self, key: &ObjectKey) -> Result<(), BackendError> {
        self.inner.delete_object(key)
    }
    fn sync_objects(&self) -> Result<(), BackendError> {
        self.blind.store(false, Ordering::SeqCst);
        self.inner.sync_objects()
    }
    fn put_manifest(&self, name: &str, bytes: &[u8]) -> Result<(), BackendError> {
        self.inner.put_manifest(name, bytes)
    }
    fn get_manifest(&self, name: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.inner.get_manifest(name)
    }
    fn list_manifests(&self) -> Result<Vec<String>, BackendError> {
        self.inner.list_manifests()
    }
    fn delete_manifest(&self, name: &str) -> Result<bool, BackendError> {
        self.inner.delete_manifest(name)
    }
    fn clean_temporaries(&self, cutoff: SystemTime) -> Result<(u64, u64), BackendError> {
        self.inner.clean_temporaries(cutoff)
    }
    fn put_record(&self, kind: RecordKind, id: &str) -> Result<(), BackendError> {
        self.inner.put_record(kind, id)
    }
    fn list_records(&self, kind: RecordKind) -> Result<Vec<(String, SystemTime)>, BackendError> {
        self.inner.list_records(kind)
    }
    fn delete_record(&self, kind: RecordKind, id: &str) -> Result<(), BackendError> {
        self.inner.delete_record(kind, id)
    }
}

#[test]
fn objects_overwritten_by_racing_writers_still_decode() {
    let f = family("BF16");
    let blind = Arc::new(AtomicBool::new(false));
    let store = Store::with_backend(Box::new(Overwriting {
        inner: LocalBackend::init(&f.root).unwrap(),
        blind: blind.clone(),
        damage: false,
    }));
    let snapshot = || -> HashMap<ObjectKey, Vec<u8>> {
        store
            .backend()
            .list_objects()
            .unwrap()
            .iter()
            .map(|o| (o.key, store.backend().get_object(&o.key).unwrap()))
            .collect()
    };
    // Each add below sees none of the objects the others stored, so it codes every tensor
    // again and overwrites what is there with its own coding.
    let add = |dir: &Path, name: &str, delta: DeltaMode, chunk_log2: u8| {
        blind.store(true, Ordering::SeqCst);
        store
            .add(
                dir,
                name,
                &AddOptions {
                    base: (dir != f.base).then(|| "base".to_owned()),
                    delta,
                    encode: EncodeOptions {
                        chunk_log2,
                        block_log2: 10,
                        ..EncodeOptions::default()
                    },
                },
            )
            .unwrap()
    };
    add(&f.base, "base", DeltaMode::Off, 18);
    let bitx = add(&f.ft, "ft-bitx", DeltaMode::BitX, 18);
    assert!(bitx.delta > 0, "{bitx:?}");
    let before = snapshot();
    // The same fine-tune coded plain (old scheme: it replaced ft-bitx's deltas, which live
    // at the tensors' keys, by plain objects), then with every delta method (another
    // coding at the same delta names), then the base again with shorter chunks (another
    // plain coding of every delta base).
    add(&f.ft, "ft-off", DeltaMode::Off, 18);
    add(&f.ft, "ft-best", DeltaMode::Best, 18);
    add(&f.base, "base-again", DeltaMode::Off, 10);
    let after = snapshot();
    let delta_names: Vec<ObjectKey> = store
        .manifest("ft-bitx")
        .unwrap()
        .tensors()
        .filter(|t| t.delta_base.is_some())
        .map(|t| t.object)
        .collect();
    assert!(
        delta_names.iter().any(|k| before[k] != after[k]),
        "no delta object was recoded"
    );
    let base_keys: Vec<ObjectKey> = store
        .manifest("base")
        .unwrap()
        .tensors()
        .filter(|t| t.inline.is_none())
        .map(|t| t.key)
        .collect();
    assert!(
        base_keys.iter().any(|k| before[k] != after[k]),
        "no base object was recoded"
    );
    let scratch = TempDir::new().unwrap();
    for (name, src) in [
        ("base", &f.base),
        ("ft-bitx", &f.ft),
        ("ft-off", &f.ft),
        ("ft-best", &f.ft),
        ("base-again", &f.base),
    ] {
        get_matches(&store, name, src, scratch.path());
    }
    let fsck = store.fsck().unwrap();
    assert!(fsck.problems.is_empty(), "{:?}", fsck.problems);
    assert_eq!(fsck.orphans, 0);
    store.stats().unwrap();
}

#[test]
fn a_tiny_object_cannot_claim_a_terabyte_in_get_or_fsck() {
    use mcodec_store::manifest::{FileEntry, SafetensorsEntry, TensorEntry, FORMAT, VERSION};
    use mcodec_store::object::ObjectError;
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().join("store");
    let store = Store::init(&root).unwrap();
    // A plain F32 object of 2^38 elements (1 TiB) with one empty stored stream: 41 bytes.
    let len: u64 = 1 << 40;
    let mut obj = b"MCSO\x01\x01\x03F32\x01".to_vec();
    obj.extend_from_slice(&(len / 4).to_le_bytes());
    obj.extend_from_slice(&len.to_le_bytes());
    obj.extend_from_slice(&[0, 0, 1]);
    obj.extend_from_slice(&0u64.to_le_bytes());
    assert!(obj.len() < 64);
    let key = ObjectKey([7; 32]);
    store.backend().put_object(&key, &obj).unwrap();
    let json = format!(
        "{{\"t\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[0,{len}]}}}}",
        len / 4
    );
    let mut header = (json.len() as u64).to_le_bytes().to_vec();
    header.extend_from_slice(json.as_bytes());
    let header_key = ObjectKey::blob(&header);
    store
        .backend()
        .put_object(&header_key, &mcodec_store::object::encode_blob(&header))
        .unwrap();
    let m = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        name: "huge".into(),
        base: None,
        single_file: true,
        files: vec![FileEntry {
            path: "huge.safetensors".into(),
            size: header.len() as u64 + len,
            mode: 0o644,
            blob: None,
            safetensors: Some(SafetensorsEntry {
                header: header_key,
                header_len: header.len() as u64,
                tensors: vec![TensorEntry {
                    name: "t".into(),
                    dtype: "F32".into(),
                    shape: vec![len / 4],
                    len,
                    key,
                    object: key,
                    delta_base: None,
                    inline: None,
                }],
            }),
        }],
    };
    store.backend().put_manifest("huge", &m.to_json()).unwrap();
    let out = tmp.path().join("out");
    let err = store.get("huge", &out, false, false).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Object { key: k, source: ObjectError::Limit { requested, .. } }
                if k == key && requested == len
        ),
        "{err}"
    );
    assert!(!out.exists());
    let fsck = store.fsck().unwrap();
    assert_eq!(fsck.problems.len(), 1, "{:?}", fsck.problems);
    assert!(
        fsck.problems[0].contains(&key.to_hex()) && fsck.problems[0].contains("exceeds the limit"),
        "{:?}",
        fsck.problems
    );
}

#[test]
fn tensors_of_zeros_round_trip_within_the_expansion_limit() {
    use mcodec_fixtures::safetensors::Tensor;
    let tmp = TempDir::new().unwrap();
    let model = tmp.path().join("zeros");
    let tensors = vec![
        Tensor::new("a", "F32", &[1 << 20], vec![0; 4 << 20]),
        Tensor::new("b", "BF16", &[1 << 20], vec![0; 2 << 20]),
    ];
    write_model_dir(&model, &tensors, "zeros").unwrap();
    let store = Store::init(&tmp.path().join("store")).unwrap();
    store.add(&model, "zeros", &AddOptions::default()).unwrap();
    let m = store.manifest("zeros").unwrap();
    for t in m.tensors().filter(|t| t.inline.is_none()) {
        let size = store.backend().object_size(&t.object).unwrap().unwrap();
        assert!(
            size * 1024 >= t.len,
            "{}: {size} bytes for {}",
            t.name,
            t.len
        );
    }
    let out = tmp.path().join("out");
    store.get("zeros", &out, false, false).unwrap();
    assert_eq!(tree(&out), tree(&model));
    assert!(store.fsck().unwrap().problems.is_empty());
}

#[test]
fn objects_damaged_on_the_way_to_the_backend_fail_the_add() {
    let f = family("BF16");
    let store = Store::with_backend(Box::new(Overwriting {
        inner: LocalBackend::init(&f.root).unwrap(),
        blind: Arc::new(AtomicBool::new(false)),
        damage: true,
    }));
    let err = store
        .add(&f.base, "base", &AddOptions::default())
        .unwrap_err();
    assert!(matches!(err, StoreError::ReadBack { .. }), "{err}");
    assert!(store.list().unwrap().is_empty());
}

/// Every object file of `model`'s tensors of at least 4 KiB replaced by the smallest
/// non-inline tensor object of the model: well-formed, shorter than the manifest says.
fn shorten_tensor_objects(store: &Store, root: &Path, model: &str) {
    let m = store.manifest(model).unwrap();
    let stored: Vec<_> = m.tensors().filter(|t| t.inline.is_none()).collect();
    let small = stored.iter().min_by_key(|t| t.len).unwrap();
    let small_bytes = fs::read(object_path(root, &small.object)).unwrap();
    let mut replaced = 0;
    for t in stored
        .iter()
        .filter(|t| t.len >= 4096 && t.len != small.len)
    {
        fs::write(object_path(root, &t.object), &small_bytes).unwrap();
        replaced += 1;
    }
    assert!(replaced > 0);
}

#[test]
fn unreadable_candidate_bases_are_skipped_and_reported() {
    let f = family("BF16");
    let store = Store::init(&f.root).unwrap();
    store.add(&f.base, "base", &AddOptions::default()).unwrap();
    // A model whose manifest does not parse: every automatic add used to fail on it.
    fs::write(f.root.join("models").join("broken.json"), b"{").unwrap();
    let r = store.add(&f.ft, "ft", &AddOptions::default()).unwrap();
    assert_eq!(r.base.as_ref().map(|b| b.name.as_str()), Some("base"));
    let skipped: Vec<&str> = r.skipped_bases.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(skipped, ["broken"], "{:?}", r.skipped_bases);
    fs::remove_file(f.root.join("models").join("broken.json")).unwrap();
    let tmp = TempDir::new().unwrap();
    get_matches(&store, "ft", &f.ft, tmp.path());

    // A base whose objects are shorter than its manifest says: scoring it used to panic.
    shorten_tensor_objects(&store, &f.root, "base");
    let r = store
        .add(&f.frozen, "frozen", &AddOptions::default())
        .unwrap();
    let skipped: Vec<&str> = r.skipped_bases.iter().map(|s| s.name.as_str()).collect();
    assert!(skipped.contains(&"base"), "{:?}", r.skipped_bases);
    assert!(
        r.skipped_bases.iter().all(|s| !s.problem.contains('\n')),
        "{:?}",
        r.skipped_bases
    );
    assert!(r.base.is_none(), "{:?}", r.base);
}

#[test]
fn models_read_tensor_by_tensor_match_their_files() {
    let f = family("BF16");
    let store = Store::init(&f.root).unwrap();
    store.add(&f.base, "base", &AddOptions::default()).unwrap();
    store.add(&f.ft, "ft", &AddOptions::default()).unwrap();
    let src = tree(&f.ft);
    let model = store.model("ft").unwrap();
    assert_eq!(model.name(), "ft");
    let paths: Vec<&str> = model.files().iter().map(|f| f.path.as_str()).collect();
    let want: Vec<&str> = src.keys().map(String::as_str).collect();
    assert_eq!(paths, want);
    let mut tensors = 0;
    let mut deltas = 0;
    for file in model.files() {
        let bytes = &src[&file.path];
        let Some(st) = &file.safetensors else {
            assert_eq!(&store.read_file(file).unwrap(), bytes);
            assert!(store.read_safetensors_header(file).unwrap().is_none());
            continue;
        };
        let header = store.read_safetensors_header(file).unwrap().unwrap();
        assert_eq!(header[..], bytes[..header.len()]);
        assert!(matches!(
            store.read_file(file),
            Err(StoreError::NotBlobFile { .. })
        ));
        let parsed = mcodec::safetensors::parse(bytes, bytes.len() as u64).unwrap();
        for (t, info) in st.tensors.iter().zip(&parsed.tensors) {
            assert_eq!(
                (t.name.as_str(), t.dtype.as_str()),
                (info.name.as_str(), info.dtype.name())
            );
            assert_eq!(t.shape, info.shape);
            assert_eq!(model.tensor(&file.path, &t.name), Some(t));
            let mut out = vec![0xA5; t.len as usize];
            store.read_tensor_into(t, &mut out).unwrap();
            assert!(
                out[..] == bytes[info.range.start as usize..info.range.end as usize],
                "{}",
                t.name
            );
            let mut short = vec![0; t.len as usize + 1];
            assert!(matches!(
                store.read_tensor_into(t, &mut short),
                Err(StoreError::BufferLength { .. })
            ));
            tensors += 1;
            deltas += usize::from(t.delta_base.is_some());
        }
    }
    assert_eq!(tensors, model.tensors().count());
    assert!(
        tensors > 0 && deltas > 0,
        "{tensors} tensors, {deltas} deltas"
    );

    // A damaged object is an error, not wrong bytes.
    corrupt_largest_tensor_object(&store, &f.root, "ft");
    let m = store.manifest("ft").unwrap();
    let largest = m
        .tensors()
        .max_by_key(|t| store.backend().object_size(&t.object).unwrap())
        .unwrap();
    let mut out = vec![0; largest.len as usize];
    assert!(store.read_tensor_into(largest, &mut out).is_err());
}

#[test]
fn org_names_round_trip_list_by_prefix_and_refuse_case_collisions() {
    let f = family("BF16");
    let store = Store::init(&f.root).unwrap();
    store
        .add(&f.base, "org/base", &AddOptions::default())
        .unwrap();
    let r = store.add(&f.ft, "org/ft", &AddOptions::default()).unwrap();
    assert_eq!(r.base.map(|b| b.name), Some("org/base".to_owned()));
    store
        .add(&f.frozen, "other/x/frozen", &AddOptions::default())
        .unwrap();
    assert!(f.root.join("models/org/ft.json").is_file());
    let names = |prefix: &str| -> Vec<String> {
        store
            .list_under(prefix)
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect()
    };
    assert_eq!(names(""), ["org/base", "org/ft", "other/x/frozen"]);
    assert_eq!(names("org/"), ["org/base", "org/ft"]);
    assert_eq!(names("other/x/"), ["other/x/frozen"]);
    assert!(names("nobody/").is_empty());
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("org-ft");
    store.get("org/ft", &out, false, false).unwrap();
    assert!(tree(&out) == tree(&f.ft), "org/ft differs after get");
    for clash in ["Org/new", "ORG/base", "org/Base", "other/X/y"] {
        let err = store
            .add(&f.frozen, clash, &AddOptions::default())
            .unwrap_err();
        assert!(
            matches!(err, StoreError::NameCollision { .. }),
            "{clash}: {err}"
        );
    }
    assert!(matches!(
        store.add(&f.frozen, "org/ft", &AddOptions::default()),
        Err(StoreError::ModelExists(_))
    ));
    // The organisation's directory goes with its last model.
    store.remove("org/ft").unwrap();
    store.remove("org/base").unwrap();
    assert!(!f.root.join("models/org").exists());
    store
        .add(&f.base, "Org/base", &AddOptions::default())
        .unwrap();
    assert_eq!(names(""), ["Org/base", "other/x/frozen"]);
    assert!(store.fsck().unwrap().problems.is_empty());
}

#[test]
fn add_and_get_report_progress_up_to_the_model_size() {
    let f = family("BF16");
    let store = Store::init(&f.root).unwrap();
    store.add(&f.base, "base", &AddOptions::default()).unwrap();
    let size: u64 = tree(&f.ft).values().map(|b| b.len() as u64).sum();
    // Every call's (done, total), from any thread.
    let calls = std::sync::Mutex::new(Vec::new());
    let record = |done: u64, total: u64| calls.lock().unwrap().push((done, total));
    let r = store
        .add_with_progress(&f.ft, "ft", &AddOptions::default(), &record)
        .unwrap();
    assert_eq!(r.logical_bytes, size);
    let check = |calls: &mut Vec<(u64, u64)>| {
        // Some progress in between, never past the total, ending at the total.
        assert!(calls.len() > 3, "{calls:?}");
        assert!(calls.iter().all(|&(d, t)| t == size && d <= t), "{calls:?}");
        assert_eq!(calls.first(), Some(&(0, size)));
        assert_eq!(calls.last(), Some(&(size, size)));
        assert!(calls.iter().any(|&(d, _)| d > 0 && d < size), "{calls:?}");
        calls.clear();
    };
    check(&mut calls.lock().unwrap());
    let out = f.root.parent().unwrap().join("got");
    store
        .get_with_progress("ft", &out, false, false, &record)
        .unwrap();
    check(&mut calls.lock().unwrap());
    assert!(tree(&out) == tree(&f.ft));
}

/// Values like trained weights (sums of uniforms, scale `s`), deterministic by `seed`.
fn weights(n: usize, seed: u64, s: f32) -> Vec<f32> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            let mut acc = 0.0f32;
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                acc += (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            acc * s
        })
        .collect()
}

/// A model of tensors larger than one piece of `get`'s piecewise decode (BF16 and F32
/// tensors of several pieces and a short last one, an F16 tensor the fine-tune leaves
/// alone, NaN payloads, a tiny tensor) and its fine-tune.
fn large_pair(dir: &Path) -> (PathBuf, PathBuf) {
    use mcodec_fixtures::safetensors::Tensor;
    let shapes: [(&str, &str, [usize; 2]); 4] = [
        ("a.big", "BF16", [1700, 1024]),
        ("b.wide", "F32", [700, 1000]),
        ("c.frozen", "F16", [600, 1000]),
        ("d.tiny", "BF16", [3, 7]),
    ];
    let mut base = Vec::new();
    let mut ft = Vec::new();
    for (i, (name, dtype, shape)) in shapes.into_iter().enumerate() {
        let n = shape[0] * shape[1];
        let w = weights(n, 11 + i as u64, 0.05);
        let mut b = Tensor::from_f32(name, dtype, &shape, &w);
        let moved: Vec<f32> = if name == "c.frozen" {
            w
        } else {
            let noise = weights(n, 99 + i as u64, 0.05 / 64.0);
            w.iter()
                .zip(&noise)
                .enumerate()
                .map(|(k, (a, d))| if k % 5 == 0 { *a } else { a + d })
                .collect()
        };
        let mut t = Tensor::from_f32(name, dtype, &shape, &moved);
        if dtype == "BF16" && n > 1000 {
            // NaNs with payloads, in the base and moved in the fine-tune.
            for (k, nan) in [(17usize, 0x7FC1u16), (4000, 0xFF81), (n - 1, 0x7F80 | 0x55)] {
                b.data[2 * k..2 * k + 2].copy_from_slice(&nan.to_le_bytes());
                t.data[2 * k..2 * k + 2].copy_from_slice(&(nan ^ 3).to_le_bytes());
            }
        }
        base.push(b);
        ft.push(t);
    }
    let (b, f) = (dir.join("base"), dir.join("ft"));
    write_model_dir(&b, &base, "base").unwrap();
    write_model_dir(&f, &ft, "ft").unwrap();
    (b, f)
}

/// `get` decodes large tensors a piece at a time (base, delta, hash per piece): ULP and
/// BitX deltas and plain objects come back byte for byte, and damage to a delta or its
/// base anywhere in a multi-piece tensor is refused.
#[test]
fn large_tensors_come_back_from_pieces_bit_exactly() {
    let tmp = TempDir::new().unwrap();
    let (base, ft) = large_pair(tmp.path());
    for mode in [DeltaMode::Best, DeltaMode::BitX] {
        let root = tmp.path().join(format!("store-{mode:?}"));
        let store = Store::init(&root).unwrap();
        store.add(&base, "base", &AddOptions::default()).unwrap();
        let opts = AddOptions {
            delta: mode,
            base: Some("base".into()),
            ..AddOptions::default()
        };
        let r = store.add(&ft, "ft", &opts).unwrap();
        assert!(r.delta >= 2, "{mode:?}: {r:?}");
        let scratch = tmp.path().join(format!("out-{mode:?}"));
        fs::create_dir_all(&scratch).unwrap();
        get_matches(&store, "ft", &ft, &scratch);
        get_matches(&store, "base", &base, &scratch);
        let m = store.manifest("ft").unwrap();
        let big = m.tensors().find(|t| t.name == "a.big").unwrap().clone();
        assert!(matches!(header(&store, &big.object), Header::Delta { .. }));
        let frozen = m.tensors().find(|t| t.name == "c.frozen").unwrap();
        assert!(
            frozen.delta_base.is_none(),
            "the unchanged tensor is deduplicated"
        );
        // Damage in the delta (early, middle, late) and in the base.
        let base_key = big.delta_base.unwrap();
        for (key, at) in [
            (big.object, 0.1),
            (big.object, 0.5),
            (big.object, 0.97),
            (base_key, 0.6),
        ] {
            let path = object_path(&root, &key);
            let good = fs::read(&path).unwrap();
            let mut bad = good.clone();
            let i = (bad.len() as f64 * at) as usize;
            bad[i] ^= 0x41;
            fs::write(&path, &bad).unwrap();
            let out = scratch.join("damaged");
            let err = store.get("ft", &out, false, false).unwrap_err();
            assert!(
                matches!(err, StoreError::Checksum { .. } | StoreError::Object { .. }),
                "{mode:?} at {at}: {err}"
            );
            assert!(!out.exists());
            fs::write(&path, &good).unwrap();
        }
        fs::create_dir_all(scratch.join("again")).unwrap();
        get_matches(&store, "ft", &ft, &scratch.join("again"));
    }
}

/// Damaged blob files after the tensors fail a `get` on the first damaged file in file
/// order, with nothing left behind; undamaged, they come back bit-exactly. (Kept from a
/// trial that decoded these files ahead of their turn on another thread: any such scheme
/// must report the same error.)
#[test]
fn damaged_blob_files_after_the_tensors_fail_the_get_in_file_order() {
    let f = family("BF16");
    fs::write(f.base.join("vocab.txt"), "[PAD]\n[UNK]\nword\n".repeat(500)).unwrap();
    let store = Store::init(&f.root).unwrap();
    store.add(&f.base, "base", &AddOptions::default()).unwrap();
    let tmp = TempDir::new().unwrap();
    get_matches(&store, "base", &f.base, tmp.path());
    let m = store.manifest("base").unwrap();
    let st = m
        .files
        .iter()
        .position(|f| f.safetensors.is_some())
        .unwrap();
    let after: Vec<ObjectKey> = m.files[st + 1..].iter().filter_map(|f| f.blob).collect();
    assert!(after.len() >= 2, "{:?}", m.files);
    let damage = |key: &ObjectKey| {
        let hex = key.to_hex();
        let path = f.root.join("objects").join(&hex[..2]).join(&hex);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        fs::write(&path, bytes).unwrap();
    };
    let failed_on = |name: &str| {
        let out = tmp.path().join(name);
        let err = store.get("base", &out, false, false).unwrap_err();
        assert!(!out.exists(), "partial output left behind");
        match err {
            StoreError::Checksum { key, .. } | StoreError::Object { key, .. } => key,
            e => panic!("{e}"),
        }
    };
    // The last one first, then also the one before it: each get fails on the first
    // damaged file in file order.
    damage(&after[after.len() - 1]);
    for round in 0..3 {
        assert_eq!(failed_on(&format!("a{round}")), after[after.len() - 1]);
    }
    damage(&after[after.len() - 2]);
    for round in 0..3 {
        assert_eq!(failed_on(&format!("b{round}")), after[after.len() - 2]);
    }
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
}
