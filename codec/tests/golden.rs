//! Golden files pin the format: every `fixtures/golden/*.mcz` must decode to its fixture
//! byte for byte, and packing the fixture must reproduce the golden bytes exactly.
//! `fixtures/golden/chunk16/` keeps the files the earlier default wrote (`chunk_log2 = 16`
//! in the index): they must still decode.
//!
//! After a deliberate encoder or format change, regenerate them with
//! `MCODEC_BLESS=1 cargo test -p mcodec --test golden` and commit the new files.

use std::path::{Path, PathBuf};

use mcodec::container::{pack, Archive, PackOptions};

const FIXTURES: &[&str] = &[
    "tiny-bf16.safetensors",
    "tiny-f16.safetensors",
    "tiny-f32.safetensors",
    "tiny-f8e4m3.safetensors",
    "tiny-f8e5m2.safetensors",
    "special-values.safetensors",
    "mixed.safetensors",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

#[test]
fn golden_files_decode_to_fixtures_and_encoding_is_stable() {
    let bless = std::env::var_os("MCODEC_BLESS").is_some();
    for name in FIXTURES {
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
            unpack(&golden) == input,
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
    for name in FIXTURES {
        let input = std::fs::read(root().join("data").join(name)).unwrap();
        let path = root().join("golden/chunk16").join(format!("{name}.mcz"));
        let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            unpack(&golden) == input,
            "{name}: chunk16 golden file no longer decodes"
        );
    }
}

/// The original file an `.mcz` file decodes to.
fn unpack(mcz: &[u8]) -> Vec<u8> {
    let mut back = Vec::new();
    Archive::open(mcz)
        .unwrap()
        .unpack_to(&mut back, &|_| {})
        .unwrap();
    back
}
