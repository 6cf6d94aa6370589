//! The CLI never leaves partial output, never overwrites without `-f`, and never writes
//! through or reproduces a symlink that leads out of the directory it writes to.

mod common;

use std::fs;
use std::path::Path;

use common::{fails, listing, mcodec, ok};
use tempfile::TempDir;

/// A safetensors file of one BF16 tensor and one F32 tensor of pseudo-random weights.
fn safetensors(seed: u64) -> Vec<u8> {
    let mut s = seed;
    let mut weight = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.05
    };
    let bf16: Vec<u8> = (0..20_000)
        .flat_map(|_| ((weight().to_bits() >> 16) as u16).to_le_bytes())
        .collect();
    let f32s: Vec<u8> = (0..20_000).flat_map(|_| weight().to_le_bytes()).collect();
    let header = format!(
        r#"{{"w":{{"dtype":"BF16","shape":[20000],"data_offsets":[0,{}]}},"b":{{"dtype":"F32","shape":[20000],"data_offsets":[{},{}]}}}}"#,
        bf16.len(),
        bf16.len(),
        bf16.len() + f32s.len()
    );
    let mut f = (header.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(header.as_bytes());
    f.extend_from_slice(&bf16);
    f.extend_from_slice(&f32s);
    f
}

#[test]
fn a_failure_after_output_began_leaves_nothing_and_keeps_the_old_file() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    fs::write(d.join("m.safetensors"), safetensors(1)).unwrap();
    ok(&mcodec(d, &["pack", "m.safetensors", "-o", "m.mcz"]));
    // Damage the second tensor's stream: the header and the first tensor are written
    // before its checksum fails.
    let mut bytes = fs::read(d.join("m.mcz")).unwrap();
    let at = bytes.len() * 3 / 4;
    bytes[at] ^= 0x10;
    fs::write(d.join("bad.mcz"), &bytes).unwrap();
    let before = listing(d);
    fails(
        &mcodec(d, &["unpack", "bad.mcz", "-o", "out"]),
        "bad.mcz",
        "checksum",
    );
    assert_eq!(listing(d), before, "partial output or temporary file left");

    // With -f over an existing file: the old file survives the failure untouched.
    fs::write(d.join("out"), b"precious").unwrap();
    fails(
        &mcodec(d, &["unpack", "-f", "bad.mcz", "-o", "out"]),
        "bad.mcz",
        "checksum",
    );
    assert_eq!(fs::read(d.join("out")).unwrap(), b"precious");
    // Without -f, nothing is decoded over it; with -f a good file replaces it.
    fails(&mcodec(d, &["unpack", "m.mcz", "-o", "out"]), "out", "-f");
    assert_eq!(fs::read(d.join("out")).unwrap(), b"precious");
    ok(&mcodec(d, &["unpack", "-f", "m.mcz", "-o", "out"]));
    assert!(fs::read(d.join("out")).unwrap() == safetensors(1));
}

#[cfg(unix)]
#[test]
fn symlinks_leading_out_of_a_tree_are_refused() {
    use std::os::unix::fs::symlink;
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    fs::write(d.join("outside.safetensors"), safetensors(2)).unwrap();
    let model = d.join("model");
    fs::create_dir_all(model.join("sub")).unwrap();
    fs::write(model.join("a.safetensors"), safetensors(1)).unwrap();
    // In-tree links are reproduced as links.
    symlink("../a.safetensors", model.join("sub/in.safetensors")).unwrap();
    ok(&mcodec(d, &["pack", "model"]));
    let link = fs::read_link(d.join("model.mcz/sub/in.safetensors")).unwrap();
    assert_eq!(link, Path::new("../a.safetensors"));
    fs::remove_dir_all(d.join("model.mcz")).unwrap();

    let outside = d.join("outside.safetensors");
    for target in [outside.as_path(), Path::new("../../outside.safetensors")] {
        symlink(target, model.join("sub/evil.safetensors")).unwrap();
        let before = listing(d);
        fails(
            &mcodec(d, &["pack", "model"]),
            "model/sub/evil.safetensors",
            "leads out of the directory",
        );
        assert_eq!(listing(d), before);
        fs::remove_file(model.join("sub/evil.safetensors")).unwrap();
    }

    // A packed tree (say, downloaded) with such a link is refused on unpack too.
    ok(&mcodec(d, &["pack", "model"]));
    symlink(
        "../../outside.safetensors",
        d.join("model.mcz/sub/x.safetensors"),
    )
    .unwrap();
    fails(
        &mcodec(d, &["unpack", "model.mcz", "-o", "back"]),
        "model.mcz/sub/x.safetensors",
        "leads out of the directory",
    );
    assert!(!d.join("back").exists());
    assert!(fs::read(&outside).unwrap() == safetensors(2));
}

#[cfg(unix)]
#[test]
fn replacing_an_output_tree_never_writes_through_its_symlinks() {
    use std::os::unix::fs::symlink;
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let model = d.join("model");
    fs::create_dir_all(&model).unwrap();
    fs::write(model.join("a.safetensors"), safetensors(1)).unwrap();
    ok(&mcodec(d, &["pack", "model"]));
    // The existing output tree holds links to files outside it, named like the files
    // unpack writes, and a link to a directory outside it.
    fs::write(d.join("victim"), b"keep").unwrap();
    fs::create_dir(d.join("victim-dir")).unwrap();
    let out = d.join("out");
    fs::create_dir(&out).unwrap();
    symlink(d.join("victim"), out.join("a.safetensors")).unwrap();
    symlink(d.join("victim-dir"), out.join("sub")).unwrap();
    fails(
        &mcodec(d, &["unpack", "model.mcz", "-o", "out"]),
        "out",
        "-f",
    );
    ok(&mcodec(d, &["unpack", "-f", "model.mcz", "-o", "out"]));
    assert_eq!(fs::read(d.join("victim")).unwrap(), b"keep");
    assert!(listing(&d.join("victim-dir")).is_empty());
    assert!(fs::read(out.join("a.safetensors")).unwrap() == safetensors(1));
    assert!(!fs::symlink_metadata(out.join("a.safetensors"))
        .unwrap()
        .is_symlink());

    // A single-file output that is a link is refused even with -f (the link survives).
    symlink(d.join("victim"), d.join("single")).unwrap();
    fails(
        &mcodec(
            d,
            &[
                "unpack",
                "-f",
                "model.mcz/a.safetensors.mcz",
                "-o",
                "single",
            ],
        ),
        "single",
        "symbolic link",
    );
    assert_eq!(fs::read(d.join("victim")).unwrap(), b"keep");
}
