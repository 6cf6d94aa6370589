//! Round trips, dedup, deltas, base choice, gc, fsck and hostile input on generated model
//! families (fixtures crate).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use mcodec_fixtures::{tiny_finetune, tiny_model, write_model_dir, Finetune};
use mcodec_store::object::Header;
use mcodec_store::{AddOptions, DeltaMode, Manifest, Store, StoreError};
use tempfile::TempDir;

const FLOAT_DTYPES: [&str; 5] = ["BF16", "F16", "F32", "F8_E4M3", "F8_E5M2"];

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
                matches!(store.header(&b).unwrap(), Header::Plain { .. }),
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
    for bad in ["../evil", "a/b", "", ".", "..", "/abs", "x\\y", "a..b"] {
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
