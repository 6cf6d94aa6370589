//! Ctrl-C (SIGINT) and SIGTERM in the middle of `pack`, `unpack` and `store get` remove
//! the hidden temporaries beside the output and exit with 128 + the signal's number.
#![cfg(unix)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{ok, BIN};
use tempfile::TempDir;

/// Elements of the one BF16 tensor of the input: 64 MiB, long enough to pack, unpack
/// or get that a signal always arrives mid-write, even on an idle machine.
const ELEMENTS: usize = 32 << 20;

/// A safetensors file of one BF16 tensor of weight-like values.
fn big_safetensors(path: &Path) {
    let header = format!(
        r#"{{"w":{{"dtype":"BF16","shape":[{ELEMENTS}],"data_offsets":[0,{}]}}}}"#,
        2 * ELEMENTS
    );
    let mut header = header.into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut bytes = Vec::with_capacity(8 + header.len() + 2 * ELEMENTS);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..ELEMENTS {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Sign and low mantissa bits random, exponents from a narrow range (0x3C..0x3F).
        let r = state as u16;
        let value = (r & 0x807F) | (0x3C00 + ((r >> 8) & 0x3) * 0x80);
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    fs::write(path, bytes).unwrap();
}

/// The `.mcodec-*` temporaries in `dir`.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".mcodec-"))
        })
        .collect()
}

/// Runs `mcodec ARGS` (one thread, so it takes its time), sends `signal` once its
/// temporary has appeared in `out_dir` and some output has been written, and checks that
/// it exits with 128 + `signal`, leaving neither a temporary nor `out`.
fn interrupt(args: &[&str], out_dir: &Path, out: &Path, signal: i32) {
    let mut child = Command::new(BIN)
        .args(["-j", "1", "-q"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mcodec");
    let start = Instant::now();
    while temporaries(out_dir).is_empty() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{args:?} ended ({status}) before its temporary appeared");
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no temporary");
        sleep(Duration::from_millis(1));
    }
    // Well into the writing, but far from its end.
    sleep(Duration::from_millis(30));
    assert!(
        child.try_wait().unwrap().is_none(),
        "{args:?} finished before the signal; the test input is too small"
    );
    // SAFETY: `kill` with a child's pid and a valid signal number has no memory effects.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        temporaries(out_dir),
        Vec::<PathBuf>::new(),
        "{args:?} left temporaries after signal {signal}"
    );
    assert_eq!(
        output.status.code(),
        Some(128 + signal),
        "{args:?}: {} after signal {signal}; stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!out.exists(), "{args:?} left {}", out.display());
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn interrupted_pack_unpack_and_get_leave_no_temporaries() {
    let tmp = TempDir::new().unwrap();
    let model = tmp.path().join("model");
    fs::create_dir(&model).unwrap();
    let input = model.join("big.safetensors");
    big_safetensors(&input);
    let packed = tmp.path().join("big.safetensors.mcz");
    ok(&Command::new(BIN)
        .args(["-q", "pack", p(&input), "-o", p(&packed)])
        .output()
        .unwrap());
    let root = tmp.path().join("store");
    for args in [vec!["init"], vec!["add", p(&model), "--name", "big"]] {
        ok(&Command::new(BIN)
            .args(["-q", "store", "--root", p(&root)])
            .args(args)
            .output()
            .unwrap());
    }

    let out_dir = tmp.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // A single file, and a directory (whose temporary is a directory).
        let out = out_dir.join("big.mcz");
        interrupt(&["pack", p(&input), "-o", p(&out)], &out_dir, &out, signal);
        let out = out_dir.join("model.mcz");
        interrupt(&["pack", p(&model), "-o", p(&out)], &out_dir, &out, signal);
        let out = out_dir.join("big.safetensors");
        interrupt(
            &["unpack", p(&packed), "-o", p(&out)],
            &out_dir,
            &out,
            signal,
        );
        let out = out_dir.join("got");
        let get = ["store", "--root", p(&root), "get", "big", "-o", p(&out)];
        interrupt(&get, &out_dir, &out, signal);
    }
}
