//! Replays the `store_object` fuzz target's committed corpus and crash inputs
//! (`fuzz/corpus/store_object`, `fuzz/crashes/store_object`) through the very check the
//! fuzzer runs (`fuzz/src/store_object.rs`, included here), so a regression is caught
//! without a fuzzer; and writes the target's seeds on request.

#[path = "../../fuzz/src/store_object.rs"]
mod store_object;

use std::path::{Path, PathBuf};

use mcodec::delta;
use mcodec::Dtype;
use mcodec_store::object::{self, TensorMeta};
use mcodec_store::ObjectKey;

fn fuzz_dir(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(dir)
        .join("store_object")
}

/// Every file in `dir` (none if it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    found.sort();
    found
}

#[test]
fn corpus_and_crash_inputs_pass_the_check() {
    let corpus = files(&fuzz_dir("corpus"));
    assert!(
        corpus.iter().filter(|p| is_seed(p)).count() >= 5,
        "store_object seeds missing"
    );
    for path in corpus.iter().chain(&files(&fuzz_dir("crashes"))) {
        eprintln!("replaying {}", path.display());
        store_object::check(&std::fs::read(path).unwrap());
    }
}

fn is_seed(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("seed-"))
}

/// Valid objects of every kind: blobs stored and zstd-coded, plain tensors of the split,
/// zstd and stored codecs, a delta against the check's base.
#[test]
#[ignore = "writes fuzz/corpus/store_object; run explicitly"]
fn write_seeds() {
    let dir = fuzz_dir("corpus");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        store_object::check(bytes);
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    };
    write("blob-stored", &object::encode_blob(b"{\"a\": 1}"));
    write(
        "blob-zstd",
        &object::encode_blob(&b"config text, config text, ".repeat(20)),
    );
    let weights = store_object::delta_base(2 * 1500);
    let tensors: [(&str, Dtype, Vec<u8>); 4] = [
        ("bf16", Dtype::BF16, weights.clone()),
        ("f16-const", Dtype::F16, vec![0x3C; 400]),
        (
            "i32",
            Dtype::I32,
            (0..300u32).flat_map(|i| (i / 10).to_le_bytes()).collect(),
        ),
        ("u8-stored", Dtype::U8, (0..64u8).collect()),
    ];
    let opts = mcodec::EncodeOptions {
        chunk_log2: 10,
        block_log2: 8,
        ..Default::default()
    };
    for (name, dtype, bytes) in tensors {
        let elements = (bytes.len() / dtype.element_size().unwrap()) as u64;
        let meta = TensorMeta {
            dtype: dtype.clone(),
            shape: vec![elements],
            raw_len: bytes.len() as u64,
        };
        let enc = mcodec::tensor::encode(&dtype, &bytes, &opts);
        write(&format!("plain-{name}"), &object::encode_plain(meta, &enc));
    }
    // A fine-tune of the base: small moves, some elements untouched.
    let base = store_object::delta_base(2 * 1500);
    let target: Vec<u8> = base
        .chunks(2)
        .enumerate()
        .flat_map(|(i, b)| {
            let v = u16::from_le_bytes([b[0], b[1]]);
            (if i % 3 == 0 {
                v
            } else {
                v.wrapping_add((i % 5) as u16)
            })
            .to_le_bytes()
        })
        .collect();
    let meta = TensorMeta {
        dtype: Dtype::BF16,
        shape: vec![1500],
        raw_len: 3000,
    };
    for method in delta::DeltaMethod::ALL {
        let d = delta::encode_with(method, &Dtype::BF16, &base, &target).unwrap();
        write(
            &format!("delta-{}", method.name()),
            &object::encode_delta(meta.clone(), ObjectKey([7; 32]), 2000, &d),
        );
    }
}
