//! End-to-end tests of the `mcodec` binary.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{listing, mcodec, ok, BIN};
use tempfile::TempDir;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts exit code 1 and exactly one stderr line, which names `file`.
#[track_caller]
fn fails_naming(o: &Output, file: &str) {
    // Every message contains "": only the exit code, the one line and the name are checked.
    common::fails(o, file, "");
}

/// A deterministic pseudo-random generator.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 32) as u32
    }

    /// Roughly normal weights of scale `s`.
    fn weight(&mut self, s: f32) -> f32 {
        let sum: f32 = (0..4).map(|_| self.next() as f32 / u32::MAX as f32).sum();
        (sum - 2.0) * s
    }
}

/// A safetensors file with BF16, F32, I64, an empty and a 0-dim tensor and metadata.
fn safetensors(seed: u64) -> Vec<u8> {
    let mut rng = Lcg(seed);
    let mut tensors: Vec<(&str, &str, Vec<u64>, Vec<u8>)> = Vec::new();
    let bf16: Vec<u8> = (0..64 * 300)
        .flat_map(|_| ((rng.weight(0.02).to_bits() >> 16) as u16).to_le_bytes())
        .collect();
    tensors.push(("layer.0.weight", "BF16", vec![64, 300], bf16));
    let f32s: Vec<u8> = (0..5000)
        .flat_map(|_| rng.weight(0.1).to_le_bytes())
        .collect();
    tensors.push(("layer.0.bias", "F32", vec![5000], f32s));
    let ids: Vec<u8> = (0..100i64).flat_map(|i| (i * 7).to_le_bytes()).collect();
    tensors.push(("position_ids", "I64", vec![1, 100], ids));
    tensors.push(("empty", "F32", vec![0, 16], Vec::new()));
    tensors.push(("scale", "F32", vec![], 0.125f32.to_le_bytes().to_vec()));

    let mut header = String::from(r#"{"__metadata__":{"format":"pt","note":"test"}"#);
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in &tensors {
        let shape: Vec<String> = shape.iter().map(u64::to_string).collect();
        header.push_str(&format!(
            r#","{name}":{{"dtype":"{dtype}","shape":[{}],"data_offsets":[{},{}]}}"#,
            shape.join(","),
            data.len(),
            data.len() + bytes.len()
        ));
        data.extend_from_slice(bytes);
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&data);
    file
}

/// A temporary directory holding `model.safetensors`.
fn setup() -> (TempDir, Vec<u8>) {
    let dir = TempDir::new().unwrap();
    let st = safetensors(1);
    fs::write(dir.path().join("model.safetensors"), &st).unwrap();
    (dir, st)
}

/// Asserts two trees hold the same entries, file contents and symlink targets.
#[track_caller]
fn same_tree(a: &Path, b: &Path) {
    let (la, lb) = (listing(a), listing(b));
    assert_eq!(la, lb);
    for rel in la {
        let (pa, pb) = (a.join(&rel), b.join(&rel));
        let ma = fs::symlink_metadata(&pa).unwrap();
        let mb = fs::symlink_metadata(&pb).unwrap();
        assert_eq!(ma.file_type(), mb.file_type(), "{}", rel.display());
        if ma.file_type().is_symlink() {
            assert_eq!(fs::read_link(&pa).unwrap(), fs::read_link(&pb).unwrap());
        } else if ma.is_file() {
            assert!(
                fs::read(&pa).unwrap() == fs::read(&pb).unwrap(),
                "{} differs",
                rel.display()
            );
        }
    }
}

#[test]
fn pack_unpack_round_trip_with_default_names() {
    let (dir, st) = setup();
    let d = dir.path();
    ok(&mcodec(d, &["pack", "model.safetensors"]));
    let packed = fs::read(d.join("model.safetensors.mcz")).unwrap();
    assert!(packed.len() < st.len(), "{} >= {}", packed.len(), st.len());
    fs::rename(d.join("model.safetensors"), d.join("orig.safetensors")).unwrap();
    ok(&mcodec(d, &["-q", "unpack", "model.safetensors.mcz"]));
    assert!(fs::read(d.join("model.safetensors")).unwrap() == st);
    // The input is untouched.
    assert!(fs::read(d.join("model.safetensors.mcz")).unwrap() == packed);
}

#[test]
fn explicit_output_threads_and_level() {
    let (dir, st) = setup();
    let d = dir.path();
    for level in ["max", "fast", "default"] {
        let o = mcodec(
            d,
            &[
                "pack",
                "model.safetensors",
                "-o",
                "x.mcz",
                "-f",
                "-j",
                "1",
                "--level",
                level,
            ],
        );
        ok(&o);
        assert!(stdout(&o).contains("x.mcz"), "{level}: {}", stdout(&o));
        ok(&mcodec(
            d,
            &["unpack", "x.mcz", "-o", "back", "-f", "--threads", "2"],
        ));
        assert!(fs::read(d.join("back")).unwrap() == st, "{level}");
        ok(&mcodec(d, &["verify", "x.mcz"]));
    }
    let o = mcodec(
        d,
        &[
            "pack",
            "model.safetensors",
            "-o",
            "y.mcz",
            "--level",
            "fastest",
        ],
    );
    assert!(!o.status.success() && !d.join("y.mcz").exists());
}

#[test]
fn chunk_length_option_reaches_the_file_and_is_checked() {
    let (dir, st) = setup();
    let d = dir.path();
    ok(&mcodec(
        d,
        &[
            "pack",
            "model.safetensors",
            "-o",
            "c.mcz",
            "--chunk-log2",
            "10",
        ],
    ));
    let packed = fs::read(d.join("c.mcz")).unwrap();
    let archive = mcodec::container::Archive::open(&packed).unwrap();
    let split: Vec<u8> = archive
        .index()
        .tensors
        .iter()
        .filter(|t| matches!(t.codec, mcodec::Codec::Split(_)))
        .map(|t| t.chunk_log2)
        .collect();
    assert!(
        !split.is_empty() && split.iter().all(|&c| c == 10),
        "{split:?}"
    );
    ok(&mcodec(d, &["unpack", "c.mcz", "-o", "back"]));
    assert!(fs::read(d.join("back")).unwrap() == st);
    for bad in ["9", "23", "x"] {
        let o = mcodec(
            d,
            &[
                "pack",
                "model.safetensors",
                "-o",
                "bad.mcz",
                "--chunk-log2",
                bad,
            ],
        );
        assert_eq!(
            o.status.code(),
            Some(2),
            "--chunk-log2 {bad}: {}",
            stderr(&o)
        );
        assert!(!d.join("bad.mcz").exists());
    }
}

#[test]
fn quiet_prints_nothing() {
    let (dir, _) = setup();
    let o = mcodec(dir.path(), &["pack", "-q", "model.safetensors"]);
    ok(&o);
    assert!(o.stdout.is_empty() && o.stderr.is_empty());
}

#[test]
fn refuses_to_overwrite_without_force() {
    let (dir, st) = setup();
    let d = dir.path();
    fs::write(d.join("model.safetensors.mcz"), b"precious").unwrap();
    let o = mcodec(d, &["pack", "model.safetensors"]);
    fails_naming(&o, "model.safetensors.mcz");
    assert!(stderr(&o).contains("-f"));
    assert_eq!(
        fs::read(d.join("model.safetensors.mcz")).unwrap(),
        b"precious"
    );
    assert_eq!(listing(d).len(), 2, "{:?}", listing(d));

    ok(&mcodec(d, &["pack", "-f", "model.safetensors"]));
    ok(&mcodec(d, &["unpack", "model.safetensors.mcz", "-o", "b"]));
    assert!(fs::read(d.join("b")).unwrap() == st);
    let o = mcodec(d, &["unpack", "model.safetensors.mcz", "-o", "b"]);
    fails_naming(&o, "b");
    ok(&mcodec(
        d,
        &["unpack", "--force", "model.safetensors.mcz", "-o", "b"],
    ));
}

#[cfg(unix)]
#[test]
fn refuses_symlink_output_even_with_force() {
    let (dir, _) = setup();
    let d = dir.path();
    fs::write(d.join("target"), b"keep").unwrap();
    std::os::unix::fs::symlink("target", d.join("link.mcz")).unwrap();
    for args in [
        &["pack", "model.safetensors", "-o", "link.mcz"][..],
        &["pack", "-f", "model.safetensors", "-o", "link.mcz"][..],
    ] {
        let o = mcodec(d, args);
        fails_naming(&o, "link.mcz");
        assert!(stderr(&o).contains("symbolic link"));
    }
    assert_eq!(fs::read(d.join("target")).unwrap(), b"keep");
    assert!(fs::symlink_metadata(d.join("link.mcz"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn refuses_output_that_is_the_input() {
    let (dir, st) = setup();
    let d = dir.path();
    let o = mcodec(
        d,
        &["pack", "-f", "model.safetensors", "-o", "model.safetensors"],
    );
    fails_naming(&o, "model.safetensors");
    assert!(fs::read(d.join("model.safetensors")).unwrap() == st);
}

#[test]
fn unpack_without_mcz_suffix_needs_output() {
    let (dir, _) = setup();
    let d = dir.path();
    ok(&mcodec(
        d,
        &["pack", "model.safetensors", "-o", "packed.bin"],
    ));
    let o = mcodec(d, &["unpack", "packed.bin"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("-o"));
    ok(&mcodec(
        d,
        &["unpack", "packed.bin", "-o", "out.safetensors"],
    ));
}

#[test]
fn inspect_json_lists_tensors() {
    let (dir, st) = setup();
    let d = dir.path();
    ok(&mcodec(d, &["pack", "model.safetensors"]));
    let o = mcodec(d, &["inspect", "--json", "model.safetensors.mcz"]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["original_bytes"], st.len() as u64);
    let packed = fs::metadata(d.join("model.safetensors.mcz")).unwrap().len();
    assert_eq!(v["packed_bytes"], packed);
    assert!(v["ratio"].as_f64().unwrap() < 1.0);
    let tensors = v["tensors"].as_array().unwrap();
    let names: Vec<&str> = tensors
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "layer.0.weight",
            "layer.0.bias",
            "position_ids",
            "empty",
            "scale"
        ]
    );
    let w = &tensors[0];
    assert_eq!(w["dtype"], "BF16");
    assert_eq!(w["shape"], serde_json::json!([64, 300]));
    assert_eq!(w["codec"], "split-bf16");
    assert_eq!(w["original_bytes"], 64 * 300 * 2);
    let bpw = w["bits_per_weight"].as_f64().unwrap();
    assert!(bpw > 0.0 && bpw < 16.0, "{bpw}");
    let h = w["exponent_entropy"].as_f64().unwrap();
    assert!(h > 0.0 && h < 8.0, "{h}");
    assert!(!w["streams"].as_array().unwrap().is_empty());
    assert_eq!(tensors[3]["bits_per_weight"], serde_json::Value::Null);
    assert_eq!(tensors[4]["shape"], serde_json::json!([]));
    assert_eq!(tensors[4]["elements"], 1);

    let o = mcodec(d, &["inspect", "model.safetensors.mcz"]);
    ok(&o);
    let table = stdout(&o);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("layer.0.weight") && table.contains("ratio"));
}

/// `packed` with a bit flipped in the middle of its largest stream, which that stream's
/// checksum covers.
fn flip_in_largest_stream(packed: &[u8]) -> Vec<u8> {
    let archive = mcodec::container::Archive::open(packed).unwrap();
    let s = archive
        .index()
        .tensors
        .iter()
        .flat_map(|t| &t.streams)
        .max_by_key(|s| s.len)
        .unwrap();
    let mut flipped = packed.to_vec();
    flipped[(s.offset + s.len / 2) as usize] ^= 0x10;
    flipped
}

#[test]
fn verify_accepts_good_and_rejects_damaged_files() {
    let (dir, _) = setup();
    let d = dir.path();
    ok(&mcodec(d, &["pack", "model.safetensors"]));
    let o = mcodec(d, &["verify", "model.safetensors.mcz"]);
    ok(&o);
    let line = stdout(&o);
    assert_eq!(line.lines().count(), 1);
    assert!(line.contains("OK") && line.contains("MB/s"), "{line}");

    let packed = fs::read(d.join("model.safetensors.mcz")).unwrap();
    let flipped = flip_in_largest_stream(&packed);
    fs::write(d.join("flipped.mcz"), &flipped).unwrap();
    let o = mcodec(d, &["verify", "flipped.mcz"]);
    fails_naming(&o, "flipped.mcz");

    fs::write(d.join("truncated.mcz"), &packed[..packed.len() - 100]).unwrap();
    fails_naming(&mcodec(d, &["verify", "truncated.mcz"]), "truncated.mcz");
    fs::write(d.join("empty.mcz"), b"").unwrap();
    fails_naming(&mcodec(d, &["verify", "empty.mcz"]), "empty.mcz");
    let o = mcodec(d, &["verify", "model.safetensors"]);
    fails_naming(&o, "model.safetensors");
    assert!(stderr(&o).contains("not an mcz file"));
    fails_naming(&mcodec(d, &["verify", "missing.mcz"]), "missing.mcz");

    // Unpacking the damaged files fails too, and leaves nothing behind.
    let before = listing(d);
    fails_naming(
        &mcodec(d, &["unpack", "flipped.mcz", "-o", "out"]),
        "flipped.mcz",
    );
    fails_naming(&mcodec(d, &["inspect", "truncated.mcz"]), "truncated.mcz");
    assert_eq!(listing(d), before);
}

#[test]
fn non_safetensors_input_needs_dtype() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let mut rng = Lcg(7);
    let raw: Vec<u8> = (0..10_001)
        .flat_map(|_| ((rng.weight(0.05).to_bits() >> 16) as u16).to_le_bytes())
        .take(20_001)
        .collect();
    fs::write(d.join("weights.bin"), &raw).unwrap();
    let o = mcodec(d, &["pack", "weights.bin"]);
    fails_naming(&o, "weights.bin");
    assert!(stderr(&o).contains("--dtype"), "{}", stderr(&o));
    // No temporary file is left after the failure.
    assert_eq!(listing(d), [PathBuf::from("weights.bin")]);

    let o = mcodec(d, &["pack", "weights.bin", "--dtype", "NOPE"]);
    assert_eq!(o.status.code(), Some(2));

    ok(&mcodec(d, &["pack", "weights.bin", "--dtype", "BF16"]));
    ok(&mcodec(d, &["verify", "weights.bin.mcz"]));
    ok(&mcodec(d, &["unpack", "weights.bin.mcz", "-o", "back.bin"]));
    assert!(fs::read(d.join("back.bin")).unwrap() == raw);
    let o = mcodec(d, &["inspect", "--json", "weights.bin.mcz"]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["source"], "raw");
}

#[test]
fn directory_round_trip() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let model = d.join("model");
    fs::create_dir_all(model.join("sub/deeper")).unwrap();
    fs::create_dir_all(model.join("empty-dir")).unwrap();
    fs::write(model.join("a.safetensors"), safetensors(1)).unwrap();
    fs::write(model.join("sub/b.safetensors"), safetensors(2)).unwrap();
    fs::write(model.join("sub/deeper/c.safetensors"), safetensors(3)).unwrap();
    fs::write(model.join("config.json"), b"{\"hidden\": 64}").unwrap();
    fs::write(model.join("sub/deeper/README"), b"notes").unwrap();
    fs::write(model.join("sub/tokenizer.model"), [0u8, 1, 2, 255]).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("a.safetensors", model.join("link.safetensors")).unwrap();

    ok(&mcodec(d, &["pack", "model/"]));
    let packed = d.join("model.mcz");
    let names = listing(&packed);
    assert!(names.contains(&PathBuf::from("sub/deeper/c.safetensors.mcz")));
    assert!(names.contains(&PathBuf::from("sub/deeper/README")));
    assert!(!names.contains(&PathBuf::from("a.safetensors")));
    ok(&mcodec(d, &["verify", "model.mcz"]));

    fs::rename(&model, d.join("orig")).unwrap();
    ok(&mcodec(d, &["unpack", "model.mcz"]));
    same_tree(&d.join("orig"), &model);

    // Existing output: refused, then replaced with -f.
    fails_naming(&mcodec(d, &["pack", "model"]), "model.mcz");
    ok(&mcodec(d, &["pack", "-f", "model"]));
    ok(&mcodec(d, &["unpack", "model.mcz", "-o", "again"]));
    same_tree(&d.join("orig"), &d.join("again"));

    // A directory without .mcz in its name unpacks to NAME.out.
    fs::rename(&packed, d.join("packed")).unwrap();
    ok(&mcodec(d, &["unpack", "packed"]));
    same_tree(&d.join("orig"), &d.join("packed.out"));

    // Output inside the input is refused.
    let o = mcodec(d, &["pack", "orig", "-o", "orig/inner.mcz"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn directory_failure_leaves_nothing() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let model = d.join("model");
    fs::create_dir_all(model.join("sub")).unwrap();
    fs::write(model.join("a.safetensors"), safetensors(1)).unwrap();
    fs::write(model.join("sub/bad.safetensors"), b"not really").unwrap();
    let before = listing(d);
    let o = mcodec(d, &["pack", "model"]);
    fails_naming(&o, "model/sub/bad.safetensors");
    assert_eq!(listing(d), before);

    // A damaged archive in a packed tree fails unpack and verify alike.
    fs::remove_file(model.join("sub/bad.safetensors")).unwrap();
    ok(&mcodec(d, &["pack", "model"]));
    let a = d.join("model.mcz/a.safetensors.mcz");
    let mut bytes = fs::read(&a).unwrap();
    let n = bytes.len();
    bytes.truncate(n - 1);
    fs::write(&a, bytes).unwrap();
    let before = listing(d);
    let o = mcodec(d, &["unpack", "model.mcz", "-o", "out"]);
    fails_naming(&o, "model.mcz/a.safetensors.mcz");
    assert_eq!(listing(d), before);
    let o = mcodec(d, &["verify", "model.mcz"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("a.safetensors.mcz"));
}

#[test]
fn bench_json_has_the_keys() {
    let (dir, _) = setup();
    let d = dir.path();
    let o = mcodec(
        d,
        &[
            "bench",
            "model.safetensors",
            "--json",
            "--repeat",
            "2",
            "-j",
            "2",
        ],
    );
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in ["ratio", "encode_mb_s", "decode_mb_s", "decode_cold_mb_s"] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}: {v}");
    }
    assert!(v["ratio"].as_f64().unwrap() < 1.0);
    assert_eq!(v["repeats"], 2);
    assert_eq!(v["threads"], 2);
    assert_eq!(v["encode_s"].as_array().unwrap().len(), 2);
    assert_eq!(v["level"], "default");
    let o = mcodec(
        d,
        &[
            "bench",
            "model.safetensors",
            "--json",
            "--repeat",
            "1",
            "--level",
            "fast",
        ],
    );
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["level"], "fast");
    assert!(v["ratio"].as_f64().unwrap() < 1.0);

    // An .mcz input is unpacked to memory first.
    ok(&mcodec(d, &["pack", "model.safetensors"]));
    let o = mcodec(d, &["bench", "model.safetensors.mcz", "--repeat", "1"]);
    ok(&o);
    assert!(stdout(&o).contains("decode"));
    // Bench writes nothing.
    assert_eq!(listing(d).len(), 2);
}

/// `mcodec bench` with `MCODEC_SIMD` (and `MCODEC_NO_SIMD`) set as given.
fn bench_with_env(dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["bench", "model.safetensors", "--json", "--repeat", "1"])
        .current_dir(dir)
        .env_remove("MCODEC_SIMD")
        .env_remove("MCODEC_NO_SIMD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run mcodec")
}

#[test]
fn bench_reports_the_simd_path_that_ran_and_refuses_bad_requests() {
    use mcodec::simd::SimdLevel;
    let (dir, _) = setup();
    let d = dir.path();
    let simd_of = |o: &Output| {
        ok(o);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["simd"].as_str().unwrap().to_owned()
    };
    assert_eq!(simd_of(&bench_with_env(d, &[])), SimdLevel::detect().name());
    for level in SimdLevel::supported() {
        let o = bench_with_env(d, &[("MCODEC_SIMD", level.name())]);
        assert_eq!(simd_of(&o), level.name());
    }
    let o = bench_with_env(d, &[("MCODEC_NO_SIMD", "1")]);
    assert_eq!(simd_of(&o), "scalar");
    let o = bench_with_env(d, &[("MCODEC_SIMD", "sse9")]);
    assert_eq!(o.status.code(), Some(2), "stderr: {}", stderr(&o));
    assert!(
        stderr(&o).contains("MCODEC_SIMD=\"sse9\""),
        "{}",
        stderr(&o)
    );
    for level in SimdLevel::ALL.into_iter().filter(|l| !l.is_supported()) {
        let o = bench_with_env(d, &[("MCODEC_SIMD", level.name())]);
        assert_eq!(o.status.code(), Some(2), "stderr: {}", stderr(&o));
        assert!(stderr(&o).contains("not supported by this CPU"));
    }
    if SimdLevel::detect() != SimdLevel::Scalar {
        let o = bench_with_env(d, &[("MCODEC_NO_SIMD", "1"), ("MCODEC_SIMD", "avx2")]);
        assert_eq!(o.status.code(), Some(2), "stderr: {}", stderr(&o));
    }
    // The human output names the path too.
    let o = mcodec(d, &["bench", "model.safetensors", "--repeat", "1"]);
    ok(&o);
    assert!(stdout(&o).contains("simd "), "{}", stdout(&o));
}

#[test]
fn gpu_bench_decodes_on_a_gpu_or_says_there_is_none() {
    let (tmp, _) = setup();
    let d = tmp.path();
    ok(&mcodec(d, &["pack", "model.safetensors"]));
    let o = mcodec(
        d,
        &[
            "gpu-bench",
            "model.safetensors.mcz",
            "--iters",
            "2",
            "--launches",
            "3",
        ],
    );
    if o.status.success() {
        assert!(stdout(&o).contains("bit-exact   yes"), "{}", stdout(&o));
    } else {
        // No device here: one line, exit 1, saying so.
        assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
        assert!(
            err.contains("no CUDA device") || err.contains("NVRTC not found"),
            "{err:?}"
        );
    }
    // A file that is not an .mcz is refused before any GPU work, naming it.
    fails_naming(
        &mcodec(d, &["gpu-bench", "model.safetensors"]),
        "model.safetensors",
    );
}

/// Runs the binary with `args` in `dir`, `input` piped to its standard input.
fn mcodec_piped(dir: &Path, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mcodec");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Written from a thread of its own: the child may fill its stdout pipe before it has
    // read all of its input.
    let writer = std::thread::spawn(move || {
        // (A child that fails early closes its input: a broken pipe here is expected.)
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for mcodec");
    writer.join().unwrap();
    out
}

#[test]
fn dash_stands_for_standard_input_and_output() {
    let (dir, st) = setup();
    let d = dir.path();
    ok(&mcodec(d, &["-q", "pack", "model.safetensors"]));
    let packed = fs::read(d.join("model.safetensors.mcz")).unwrap();

    // Each command with `-` for its input (piped in) or output: the same bytes as with
    // files, and where the data go to stdout the summary line goes to stderr.
    let none: &[u8] = &[];
    for (args, input, expected) in [
        (&["pack", "-"][..], &st[..], &packed[..]),
        (&["pack", "model.safetensors", "-o", "-"], none, &packed),
        (&["unpack", "-"], &packed, &st),
        (&["unpack", "model.safetensors.mcz", "-o", "-"], none, &st),
    ] {
        let o = mcodec_piped(d, args, input);
        ok(&o);
        assert!(o.stdout == expected, "{args:?} wrote other bytes");
        let from = if input.is_empty() { args[1] } else { "<stdin>" };
        assert!(
            stderr(&o).starts_with(&format!("{from} -> <stdout>: ")),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    for (args, input, file, expected) in [
        (
            &["-q", "pack", "-", "-o", "piped.mcz"],
            &st,
            "piped.mcz",
            &packed,
        ),
        (
            &["-q", "unpack", "-", "-o", "back.st"],
            &packed,
            "back.st",
            &st,
        ),
    ] {
        ok(&mcodec_piped(d, args, input));
        assert!(fs::read(d.join(file)).unwrap() == *expected, "{args:?}");
    }
    let o = mcodec_piped(d, &["verify", "-"], &packed);
    ok(&o);
    assert!(stdout(&o).starts_with("<stdin>: OK"), "{}", stdout(&o));
    let o = mcodec_piped(d, &["inspect", "--json", "-"], &packed);
    ok(&o);
    assert!(stdout(&o).contains("\"file\": \"<stdin>\""));
    // bench takes either kind of file from stdin, as from a path.
    for input in [&st, &packed] {
        let o = mcodec_piped(d, &["-q", "bench", "--repeat", "1", "--json", "-"], input);
        ok(&o);
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["file"], "<stdin>");
        assert_eq!(v["original_bytes"], st.len());
    }

    // Damaged input: an error naming <stdin> (or the file), and not one byte on stdout,
    // although stdout cannot be taken back (unpack checks every checksum first).
    let flipped = flip_in_largest_stream(&packed);
    fs::write(d.join("flipped.mcz"), &flipped).unwrap();
    for o in [
        mcodec_piped(d, &["unpack", "-"], &flipped),
        mcodec_piped(d, &["unpack", "-"], &packed[..packed.len() / 2]),
        mcodec_piped(d, &["verify", "-"], &flipped),
        mcodec_piped(d, &["pack", "-"], b"not a safetensors file"),
        mcodec_piped(d, &["bench", "-"], &flipped),
    ] {
        fails_naming(&o, "<stdin>");
        assert!(o.stdout.is_empty(), "wrote {} bytes", o.stdout.len());
    }
    let o = mcodec(d, &["unpack", "flipped.mcz", "-o", "-"]);
    fails_naming(&o, "flipped.mcz");
    assert!(o.stdout.is_empty(), "wrote {} bytes", o.stdout.len());

    // A directory does not go to stdout.
    fs::create_dir(d.join("tree")).unwrap();
    fs::write(d.join("tree/a.safetensors"), &st).unwrap();
    let o = mcodec(d, &["pack", "tree", "-o", "-"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
}

/// Data never go to a terminal, and a terminal is never waited on for input: run under
/// `script` (util-linux), which gives the command a pseudo-terminal for both.
#[test]
fn dash_refuses_a_terminal() {
    let (dir, _) = setup();
    let d = dir.path();
    ok(&mcodec(d, &["-q", "pack", "model.safetensors"]));
    let under_terminal = |command: &str| {
        Command::new("timeout")
            .args([
                "20",
                "script",
                "-qec",
                &format!("'{BIN}' {command}"),
                "/dev/null",
            ])
            .current_dir(d)
            .output()
    };
    match under_terminal("--version") {
        Ok(o) if o.status.success() => {}
        other => {
            mcodec_fixtures::skip(format!(
                "`timeout` and `script` (util-linux) cannot run here: {other:?}"
            ));
            return;
        }
    }
    for (command, names) in [
        ("pack model.safetensors -o -", "<stdout>"),
        ("unpack model.safetensors.mcz -o -", "<stdout>"),
        ("unpack -", "<stdin>"),
        ("pack -", "<stdin>"),
    ] {
        let o = under_terminal(command).unwrap();
        // (`script` passes the command's exit status on and copies the terminal's text
        // to its own stdout.)
        let text = stdout(&o);
        assert_eq!(o.status.code(), Some(2), "{command}: {text}");
        assert!(
            text.contains(&format!("mcodec: {names}: is a terminal")),
            "{command}: {text}"
        );
    }
}

#[test]
fn completion_scripts_name_every_subcommand_and_bash_completes() {
    let dir = TempDir::new().unwrap();
    let subcommands = [
        "pack",
        "unpack",
        "inspect",
        "verify",
        "bench",
        "store",
        "gpu-bench",
        "completions",
    ];
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = ok(&mcodec(dir.path(), &["completions", shell]));
        for name in subcommands.iter().chain(&["threads", "level"]) {
            assert!(script.contains(name), "{shell} script lacks {name}");
        }
    }
    assert_eq!(
        mcodec(dir.path(), &["completions", "tcsh"]).status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
    // The bash script, sourced, completes `mcodec pa` to `pack` and `mcodec pack --le`
    // to `--level` (bash is there wherever the test suite's scripts run).
    let script = dir.path().join("mcodec.bash");
    fs::write(&script, ok(&mcodec(dir.path(), &["completions", "bash"]))).unwrap();
    let complete = |words: &str| {
        let program = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             _mcodec mcodec \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; \
             echo \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let o = Command::new("bash")
            .args(["-c", &program])
            .output()
            .unwrap();
        ok(&o)
    };
    assert_eq!(complete("mcodec pa").trim(), "pack");
    assert!(complete("mcodec pack --le").contains("--level"));
}

#[test]
fn rm_removes_the_input_only_after_a_complete_output() {
    let (dir, st) = setup();
    let d = dir.path();
    let (input, packed_path) = (d.join("model.safetensors"), d.join("model.safetensors.mcz"));
    ok(&mcodec(d, &["-q", "pack", "--rm", "model.safetensors"]));
    assert!(!input.exists(), "pack --rm left its input");
    let packed = fs::read(&packed_path).unwrap();
    ok(&mcodec(
        d,
        &["-q", "unpack", "--rm", "model.safetensors.mcz"],
    ));
    assert!(!packed_path.exists(), "unpack --rm left its input");
    assert!(
        fs::read(&input).unwrap() == st,
        "the round trip changed bytes"
    );

    // Refused before any work where no input file would be left to remove, or no output
    // file to check: the input stays.
    for args in [
        &["pack", "--rm", "model.safetensors", "-o", "-"][..],
        &["pack", "--rm", "-"],
        &["pack", "--rm", "."],
    ] {
        let o = mcodec(d, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("--rm"), "{args:?}: {}", stderr(&o));
    }
    assert!(fs::read(&input).unwrap() == st);

    // A failure keeps the input: an existing output without -f, a file that is not
    // safetensors, a damaged .mcz (which writes no output either).
    fs::write(&packed_path, b"in the way").unwrap();
    assert_eq!(
        mcodec(d, &["pack", "--rm", "model.safetensors"])
            .status
            .code(),
        Some(1)
    );
    assert!(fs::read(&input).unwrap() == st);
    fs::write(d.join("notes.txt"), b"not a model").unwrap();
    fails_naming(&mcodec(d, &["pack", "--rm", "notes.txt"]), "notes.txt");
    assert!(d.join("notes.txt").exists());
    fs::write(d.join("damaged.mcz"), flip_in_largest_stream(&packed)).unwrap();
    fails_naming(
        &mcodec(d, &["unpack", "--rm", "damaged.mcz"]),
        "damaged.mcz",
    );
    assert!(d.join("damaged.mcz").exists() && !d.join("damaged").exists());
}
