//! `mcodec store --root s3://…` end to end against a real S3-compatible server (Garage in
//! CI: `scripts/garage.sh`): commands, concurrent writer processes, and the server killed
//! in the middle of an `add`, with and without a restart.
//!
//! Runs when `MCODEC_S3_TEST_URL` and the `AWS_*` variables are set (`source
//! target/garage/env`); skips with a message otherwise, unless `MCODEC_S3_REQUIRED=1`.
//! The server tests also need `MCODEC_GARAGE_CTL` (the script's `ctl`), to kill and start
//! the server.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::RwLock;

use common::{fails, models, ok, text, tree, Models, BIN};

/// Tests that stop the server hold it for writing; the others for reading.
static SERVER: RwLock<()> = RwLock::new(());

fn test_url(test: &str) -> Option<String> {
    mcodec_fixtures::s3::test_url(&format!("cli-{test}"))
}

fn cmd(url: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(["store", "--root", url]).args(args);
    c
}

fn store(url: &str, args: &[&str]) -> Output {
    cmd(url, args).output().expect("run mcodec")
}

fn get_matches(m: &Models, url: &str, name: &str, src: &Path) {
    let out = m.tmp.path().join(format!("got-{name}"));
    ok(&store(url, &["get", name, "-o", out.to_str().unwrap()]));
    assert!(tree(&out) == tree(src), "{name} differs after get");
    fs::remove_dir_all(&out).unwrap();
}

fn fsck_json(url: &str) -> serde_json::Value {
    serde_json::from_str(&ok(&store(url, &["fsck", "--json"]))).unwrap()
}

fn add(url: &str, dir: &Path, name: &str) -> Output {
    store(url, &["add", dir.to_str().unwrap(), "--name", name])
}

#[test]
fn commands_work_on_s3() {
    let Some(url) = test_url("commands") else {
        return;
    };
    let _shared = SERVER.read().unwrap();
    let m = models(2);
    fails(&store(&url, &["ls"]), &url, "not a store");
    ok(&store(&url, &["init"]));
    fails(&store(&url, &["init"]), &url, "not empty");
    ok(&add(&url, &m.base, "base"));
    let out = ok(&add(&url, &m.ft, "ft"));
    assert!(out.contains("base base (chosen automatically)"), "{out}");
    let ls = ok(&store(&url, &["ls"]));
    assert!(ls.contains("base\t") && ls.contains("ft\t"), "{ls}");
    let stats = ok(&store(&url, &["stats"]));
    assert!(stats.contains("delta tensors"), "{stats}");
    get_matches(&m, &url, "base", &m.base);
    get_matches(&m, &url, "ft", &m.ft);
    fails(&add(&url, &m.ft, "ft"), &url, "already exists");
    fails(
        &store(
            &url,
            &[
                "get",
                "nope",
                "-o",
                m.tmp.path().join("x").to_str().unwrap(),
            ],
        ),
        &url,
        "no model named",
    );
    let fsck = fsck_json(&url);
    assert_eq!(fsck["problems"].as_array().unwrap().len(), 0, "{fsck}");
    ok(&store(&url, &["rm", "ft"]));
    ok(&store(&url, &["gc", "--grace", "0"]));
    let fsck = fsck_json(&url);
    assert_eq!(
        (fsck["models"].as_u64(), fsck["orphans"].as_u64()),
        (Some(1), Some(0))
    );
    get_matches(&m, &url, "base", &m.base);
}

#[test]
fn concurrent_writer_processes_lose_nothing() {
    let Some(url) = test_url("concurrent") else {
        return;
    };
    let _shared = SERVER.read().unwrap();
    let m = models(4);
    ok(&store(&url, &["init"]));
    ok(&add(&url, &m.base, "base"));
    let spawn = |dir: &Path, name: &str| {
        cmd(&url, &["add", dir.to_str().unwrap(), "--name", name])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Two writers storing the same new objects at once, a third storing related ones.
    let children = [
        spawn(&m.ft, "ft-1"),
        spawn(&m.ft, "ft-2"),
        spawn(&m.frozen, "frozen"),
    ];
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    // Two writers claiming one name: at most one wins, the other fails cleanly.
    let a = spawn(&m.ft, "same").wait_with_output();
    let b = spawn(&m.frozen, "same").wait_with_output();
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(
        !(a.status.success() && b.status.success()),
        "both published one name"
    );
    for o in [&a, &b] {
        if !o.status.success() {
            let e = text(&o.stderr);
            assert!(
                e.contains("already exists") || e.contains("same time"),
                "{e}"
            );
        }
    }
    let winner = match (a.status.success(), b.status.success()) {
        (true, _) => Some(&m.ft),
        (_, true) => Some(&m.frozen),
        _ => None,
    };
    for (name, src) in [("ft-1", &m.ft), ("ft-2", &m.ft), ("frozen", &m.frozen)] {
        get_matches(&m, &url, name, src);
    }
    if let Some(src) = winner {
        get_matches(&m, &url, "same", src);
    }
    let fsck = fsck_json(&url);
    assert_eq!(fsck["problems"].as_array().unwrap().len(), 0, "{fsck}");
    assert_eq!(fsck["models"], 4 + u64::from(winner.is_some()));
}

/// Runs the server control script (`MCODEC_GARAGE_CTL kill|start`).
fn server(ctl: &str, action: &str) {
    let o = Command::new(ctl).arg(action).output().unwrap();
    assert!(o.status.success(), "{ctl} {action}: {}", text(&o.stderr));
}

/// Starts an add that pauses for `pause_secs` after its fifth new object, and returns
/// once it has paused.
fn paused_add(
    url: &str,
    dir: &Path,
    name: &str,
    pause_secs: u64,
    extra: &[&str],
) -> std::process::Child {
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["add", dir.to_str().unwrap(), "--name", name]);
    let mut child = Command::new(BIN)
        .args(["store", "--root", url])
        .args(&args)
        .env("MCODEC_STORE_TEST_PAUSE_AFTER_OBJECTS", "5")
        .env("MCODEC_STORE_TEST_PAUSE_SECS", pause_secs.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    err.read_line(&mut line).unwrap();
    assert!(line.contains("paused after 5 objects"), "{line:?}");
    // Keep draining stderr into the child's output for the assertions below.
    std::thread::spawn(move || {
        let mut rest = String::new();
        while err.read_line(&mut rest).unwrap_or(0) > 0 {}
        eprint!("{rest}");
    });
    child
}

#[test]
fn server_killed_mid_add_the_add_completes_after_retries_or_fails_cleanly() {
    let (Some(url), Some(ctl)) = (test_url("killed"), mcodec_fixtures::s3::server_control()) else {
        return;
    };
    let _exclusive = SERVER.write().unwrap_or_else(|e| e.into_inner());
    let m = models(4);
    ok(&store(&url, &["init"]));
    ok(&add(&url, &m.base, "base"));

    // 1. Killed and restarted while the add is paused: its requests retry with backoff
    //    and it completes; the model is whole.
    let mut child = paused_add(&url, &m.ft, "ft", 3, &[]);
    server(&ctl, "kill");
    std::thread::sleep(std::time::Duration::from_secs(3));
    server(&ctl, "start");
    let status = child.wait().unwrap();
    assert!(status.success(), "the add did not survive a server restart");
    get_matches(&m, &url, "ft", &m.ft);
    let fsck = fsck_json(&url);
    assert_eq!(fsck["problems"].as_array().unwrap().len(), 0, "{fsck}");

    // 2. Killed and not back within the retry budget: the add fails with one line,
    //    publishes nothing, and the store stays consistent.
    let child = paused_add(
        &url,
        &m.frozen,
        "frozen",
        2,
        &["--s3-retries", "2", "--s3-retry-timeout", "3"],
    );
    server(&ctl, "kill");
    let o = child.wait_with_output().unwrap();
    server(&ctl, "start");
    assert_eq!(o.status.code(), Some(1));
    let ls = ok(&store(&url, &["ls"]));
    assert!(!ls.contains("frozen"), "half-added model visible: {ls}");
    let fsck = fsck_json(&url);
    assert_eq!(fsck["problems"].as_array().unwrap().len(), 0, "{fsck}");
    // Adding it again works and is exact; nothing else was disturbed.
    ok(&add(&url, &m.frozen, "frozen"));
    for (name, src) in [("base", &m.base), ("ft", &m.ft), ("frozen", &m.frozen)] {
        get_matches(&m, &url, name, src);
    }
}

#[test]
fn a_failed_add_reports_one_line_naming_the_store() {
    let (Some(url), Some(ctl)) = (test_url("failline"), mcodec_fixtures::s3::server_control())
    else {
        return;
    };
    let _exclusive = SERVER.write().unwrap_or_else(|e| e.into_inner());
    let m = models(2);
    ok(&store(&url, &["init"]));
    server(&ctl, "kill");
    let o = store(
        &url,
        &[
            "--s3-retries",
            "1",
            "--s3-retry-timeout",
            "2",
            "add",
            m.base.to_str().unwrap(),
            "--name",
            "base",
        ],
    );
    server(&ctl, "start");
    fails(&o, &url, "error");
    ok(&add(&url, &m.base, "base"));
    get_matches(&m, &url, "base", &m.base);
}
