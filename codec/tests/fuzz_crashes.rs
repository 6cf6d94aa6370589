//! Replays every input the fuzzers ever crashed on (`fuzz/crashes/<target>/*`) through
//! every reader: none may panic, and whatever packs must unpack byte for byte.

use std::path::Path;

use mcodec::container::{pack, Archive, ContainerError, PackOptions};

fn replay(data: &[u8]) {
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

#[test]
fn every_committed_crash_input_is_handled() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/crashes");
    let mut replayed = 0;
    for target in std::fs::read_dir(&root).unwrap() {
        for input in std::fs::read_dir(target.unwrap().path()).unwrap() {
            let path = input.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            replay(&data);
            replayed += 1;
        }
    }
    assert!(
        replayed > 0,
        "no crash inputs found under {}",
        root.display()
    );
}
