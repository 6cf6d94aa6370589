//! Golden files pin the format: every `fixtures/golden/*.mcz` must decode to its fixture
//! byte for byte, and packing the fixture must reproduce the golden bytes exactly.
//! `fixtures/golden/chunk16/` keeps the files the earlier default wrote (`chunk_log2 = 16`
//! in the index), `fixtures/golden/v1.0/` the last files of format version 1.0 (before
//! the joint split codecs), `fixtures/golden/v1.1/` the last of version 1.1 (before
//! compact tables, the zstd-coded index and 4-byte alignment), `fixtures/golden/v1.2/`
//! the last of version 1.2 (before run-coded block ids) and `fixtures/golden/v1.3/` the
//! last of version 1.3 (before raw blocks): they must still decode. `skewed-signs` has no
//! 1.0 files; `raw-rows` (format 1.4's raw blocks) has only current ones.
//!
//! After a deliberate encoder or format change, regenerate them with
//! `MCODEC_BLESS=1 cargo test -p mcodec --test golden` and commit the new files.

mod common;

use common::{fixtures_dir as root, unpack, FIXTURES_1_0, RAW_ROWS, SKEWED};
use mcodec::container::{pack, Archive, PackOptions};

#[test]
fn golden_files_decode_to_fixtures_and_encoding_is_stable() {
    let bless = std::env::var_os("MCODEC_BLESS").is_some();
    for name in FIXTURES_1_0.iter().chain([&SKEWED, &RAW_ROWS]) {
        let input = std::fs::read(root().join("data").join(name)).unwrap();
        let mut packed = Vec::new();
        pack(&input, &PackOptions::default(), &mut packed, &|_| {}).unwrap();
        let golden_path = root().join("golden").join(format!("{name}.mcz"));
        if bless {
            std::fs::write(&golden_path, &packed).unwrap();
        }
        let golden = std::fs::read(&golden_path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with MCODEC_BLESS=1 to create)",
                golden_path.display()
            )
        });
        assert!(
            unpack(&golden).unwrap() == input,
            "{name}: golden file no longer decodes to the fixture"
        );
        assert!(
            packed == golden,
            "{name}: encoder output changed; bless deliberately if intended"
        );
    }
}

#[test]
fn files_of_the_earlier_default_still_decode() {
    for dir in ["chunk16", "v1.0"] {
        for name in FIXTURES_1_0 {
            let input = std::fs::read(root().join("data").join(name)).unwrap();
            let path = root().join("golden").join(dir).join(format!("{name}.mcz"));
            let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(golden[10..12], [0, 0], "{dir}/{name}: not a 1.0 file");
            assert!(
                unpack(&golden).unwrap() == input,
                "{dir}/{name}: golden file no longer decodes"
            );
        }
    }
}

/// The golden files of format version 1.`minor` (`golden/v1.minor/`, which has every
/// fixture but raw-rows) still decode to their fixtures.
#[track_caller]
fn old_version_files_decode(minor: u8) {
    for name in FIXTURES_1_0.iter().chain([&SKEWED]) {
        let input = std::fs::read(root().join("data").join(name)).unwrap();
        let path = root()
            .join(format!("golden/v1.{minor}"))
            .join(format!("{name}.mcz"));
        let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            golden[10..12],
            [minor, 0],
            "v1.{minor}/{name}: not a 1.{minor} file"
        );
        assert!(
            unpack(&golden).unwrap() == input,
            "v1.{minor}/{name}: golden file no longer decodes"
        );
    }
}

#[test]
fn files_of_version_1_1_still_decode() {
    old_version_files_decode(1);
}

#[test]
fn files_of_version_1_2_still_decode() {
    old_version_files_decode(2);
}

#[test]
fn files_of_version_1_3_still_decode() {
    old_version_files_decode(3);
}

#[test]
fn current_golden_files_use_the_1_4_layout() {
    let mut run_coded_ids = 0;
    let mut raw_blocks = 0;
    for name in FIXTURES_1_0.iter().chain([&SKEWED, &RAW_ROWS]) {
        let golden = std::fs::read(root().join("golden").join(format!("{name}.mcz"))).unwrap();
        assert_eq!(golden[10..12], [4, 0], "{name}: minor version 4");
        let trailer = &golden[golden.len() - 64..];
        assert_ne!(trailer[32..40], [0; 8], "{name}: index stored as it is");
        assert_eq!(trailer[40], 2, "{name}: alignment");
        let archive = Archive::open(&golden).unwrap();
        // Every rANS stream has compact tables and run-coded ids (mode 4), none the 1.1
        // tables (mode 2) or the 1.2 byte ids (mode 3).
        for t in &archive.index().tensors {
            if matches!(t.codec, mcodec::Codec::Split(_)) {
                for s in &t.streams {
                    let bytes = archive.stream_unverified(s);
                    assert!(
                        !matches!(bytes[0], 2 | 3),
                        "{name}: mode {} stream",
                        bytes[0]
                    );
                    // Mode 4 with two or more tables: ids actually run-coded.
                    run_coded_ids += usize::from(bytes[0] == 4 && bytes[1] >= 2);
                    // Mode 5: raw blocks, only where the fixture has them.
                    raw_blocks += usize::from(bytes[0] == 5);
                    assert!(bytes[0] != 5 || *name == RAW_ROWS, "{name}: mode 5 stream");
                }
            }
        }
    }
    assert!(
        run_coded_ids > 0,
        "no golden stream has run-coded ids of several tables"
    );
    assert!(raw_blocks > 0, "no golden stream has raw blocks");
}

#[test]
fn skewed_signs_golden_file_uses_every_joint_codec() {
    let golden = std::fs::read(root().join("golden").join(format!("{SKEWED}.mcz"))).unwrap();
    assert_eq!(golden[10..12], [4, 0], "minor version 4");
    let archive = Archive::open(&golden).unwrap();
    let mut ids: Vec<u8> = archive
        .index()
        .tensors
        .iter()
        .map(|t| t.codec.id())
        .collect();
    ids.sort();
    assert_eq!(ids, [6, 7, 8], "{SKEWED}: codecs");
}

#[test]
fn replacing_the_index_by_itself_keeps_every_version_byte_for_byte() {
    // The index goes back in the form the file stores it: as it is in 1.0 and 1.1, one
    // zstd frame since 1.2, so the writer's own bytes come out again.
    for dir in ["v1.0", "v1.1", ""] {
        for name in FIXTURES_1_0 {
            let path = root().join("golden").join(dir).join(format!("{name}.mcz"));
            let golden = std::fs::read(&path).unwrap();
            let index = Archive::open(&golden).unwrap().index().clone();
            let mut rewritten = golden.clone();
            mcodec::container::replace_index(&mut rewritten, &index).unwrap();
            assert!(rewritten == golden, "{}: bytes changed", path.display());
        }
    }
}
