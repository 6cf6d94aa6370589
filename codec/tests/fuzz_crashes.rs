//! Replays every input the fuzzers ever crashed on (`fuzz/crashes/<target>/*`) and every
//! committed corpus seed (`fuzz/corpus/<target>/*`) through the very checks the fuzz
//! targets run (`fuzz/src/checks`, included here), plus every reader for crash inputs:
//! none may panic, and whatever packs must unpack byte for byte.

#[path = "../../fuzz/src/checks/mod.rs"]
#[allow(dead_code)]
mod checks;

use std::path::{Path, PathBuf};

use mcodec::container::{pack, Archive, ContainerError, PackOptions};

fn replay_through_readers(data: &[u8]) {
    if let Ok(archive) = Archive::open(data) {
        let _ = archive.verify(&|_| {});
    }
    if mcodec::safetensors::parse(data, data.len() as u64).is_ok() {
        let mut packed = Vec::new();
        match pack(data, &PackOptions::default(), &mut packed, &|_| {}) {
            Ok(_) => {
                let mut back = Vec::new();
                Archive::open(&packed)
                    .unwrap()
                    .unpack_to(&mut back, &|_| {})
                    .unwrap();
                assert!(back == data, "pack/unpack changed the file");
            }
            Err(ContainerError::Unsupported(_)) => {}
            Err(e) => panic!("pack failed on accepted input: {e}"),
        }
    }
}

/// Every file under `fuzz/<dir>/<target>/`, with its target's name.
fn inputs(dir: &str) -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(dir);
    let mut found = Vec::new();
    for target in std::fs::read_dir(&root).unwrap() {
        let target = target.unwrap().path();
        let name = target.file_name().unwrap().to_str().unwrap().to_owned();
        for input in std::fs::read_dir(&target).unwrap() {
            found.push((name.clone(), input.unwrap().path()));
        }
    }
    found.sort();
    assert!(!found.is_empty(), "no inputs under {}", root.display());
    found
}

#[test]
fn every_committed_crash_input_is_handled() {
    for (target, path) in inputs("crashes") {
        let data = std::fs::read(&path).unwrap();
        eprintln!("replaying {}", path.display());
        if !checks::run(&target, &data) {
            // A target of another crate (the store's manifest parser, say) replays its
            // inputs in that crate's tests; the codec's readers still get them here.
            eprintln!("{target} is not a codec target");
        }
        replay_through_readers(&data);
    }
}

#[test]
fn every_corpus_seed_passes_its_target() {
    let mut checked = 0;
    for (target, path) in inputs("corpus") {
        let data = std::fs::read(&path).unwrap();
        if checks::run(&target, &data) {
            checked += 1;
        } else {
            eprintln!(
                "{target} is not a codec target: {} not checked here",
                path.display()
            );
        }
    }
    assert!(checked > 0, "no corpus input of a codec target");
}
