//! Helpers shared by the CLI's tests: running the binary, checking its outcome, and the
//! model families of the store tests (local directory and S3).
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mcodec_fixtures::{tiny_finetune, tiny_model, write_model_dir, Finetune};
use tempfile::TempDir;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_mcodec");

/// Runs the binary with `args` in `dir`.
pub fn mcodec(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run mcodec")
}

/// Bytes as (lossy) text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts success; returns stdout.
#[track_caller]
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// Asserts exit code 1 and one stderr line that names `file` (a path or URL) and contains
/// `what`.
#[track_caller]
pub fn fails(o: &Output, file: impl AsRef<OsStr>, what: &str) {
    let file = Path::new(file.as_ref()).display().to_string();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(
        err.starts_with(&format!("mcodec: {file}")),
        "does not name {file}: {err:?}"
    );
    assert!(err.contains(what), "{err:?} lacks {what:?}");
}

/// Every entry under `dir`, relative, sorted (symlinks not followed).
pub fn listing(dir: &Path) -> Vec<PathBuf> {
    fn go(root: &Path, rel: &Path, v: &mut Vec<PathBuf>) {
        let mut names: Vec<_> = std::fs::read_dir(root.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let r = rel.join(n);
            v.push(r.clone());
            if std::fs::symlink_metadata(root.join(&r)).unwrap().is_dir() {
                go(root, &r, v);
            }
        }
    }
    let mut v = Vec::new();
    go(dir, Path::new(""), &mut v);
    v
}

/// Every file under `dir` with its bytes.
pub fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    mcodec_fixtures::read_tree(dir).unwrap()
}

/// A BF16 model family in a temporary directory.
pub struct Models {
    /// Holds everything.
    pub tmp: TempDir,
    /// The base model.
    pub base: PathBuf,
    /// A full fine-tune of it.
    pub ft: PathBuf,
    /// A fine-tune with frozen embeddings.
    pub frozen: PathBuf,
}

/// Writes a family of `layers`-layer models.
pub fn models(layers: usize) -> Models {
    let tmp = TempDir::new().unwrap();
    let base = tmp.path().join("base");
    let ft = tmp.path().join("ft");
    let frozen = tmp.path().join("frozen");
    write_model_dir(&base, &tiny_model("BF16", layers), "base").unwrap();
    write_model_dir(
        &ft,
        &tiny_finetune("BF16", layers, 1, Finetune::Full { shift: 6 }),
        "ft",
    )
    .unwrap();
    write_model_dir(
        &frozen,
        &tiny_finetune("BF16", layers, 2, Finetune::FrozenEmbeddings { shift: 6 }),
        "frozen",
    )
    .unwrap();
    Models {
        tmp,
        base,
        ft,
        frozen,
    }
}
