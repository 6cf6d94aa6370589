//! End-to-end tests of `mcodec store`: round trips, concurrent writers, a writer killed
//! mid-add, names that try to escape, corrupt objects.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{fails, mcodec, models, ok, text, tree, BIN};
use tempfile::TempDir;

fn store(root: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("store")
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run mcodec")
}

struct Setup {
    tmp: TempDir,
    root: PathBuf,
    base: PathBuf,
    ft: PathBuf,
    frozen: PathBuf,
}

/// A store holding `base`, and the model directories of a family.
fn setup(layers: usize) -> Setup {
    let m = models(layers);
    let root = m.tmp.path().join("store");
    ok(&store(&root, &["init"]));
    ok(&store(
        &root,
        &["add", m.base.to_str().unwrap(), "--name", "base"],
    ));
    Setup {
        tmp: m.tmp,
        root,
        base: m.base,
        ft: m.ft,
        frozen: m.frozen,
    }
}

fn get_matches(s: &Setup, name: &str, src: &Path) {
    let out = s.tmp.path().join(format!("got-{name}"));
    ok(&store(&s.root, &["get", name, "-o", out.to_str().unwrap()]));
    assert!(tree(&out) == tree(src), "{name} differs after get");
    fs::remove_dir_all(&out).unwrap();
}

fn fsck_json(root: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(&store(root, &["fsck", "--json"]))).unwrap()
}

#[test]
fn commands_round_trip_and_report() {
    let s = setup(2);
    let out = ok(&store(
        &s.root,
        &["add", s.ft.to_str().unwrap(), "--name", "ft"],
    ));
    assert!(out.contains("base base (chosen automatically)"), "{out}");
    ok(&store(
        &s.root,
        &[
            "add",
            s.frozen.to_str().unwrap(),
            "--name",
            "frozen",
            "--base",
            "base",
            "--delta",
            "bitx",
        ],
    ));
    let ls = ok(&store(&s.root, &["ls"]));
    assert_eq!(ls.lines().count(), 3, "{ls}");
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&store(&s.root, &["stats", "--json"]))).unwrap();
    let ft = stats["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "ft")
        .unwrap();
    assert_eq!(ft["base"]["name"], "base");
    assert_eq!(ft["base"]["auto"], true);
    assert!(stats["physical_bytes"].as_u64() < stats["logical_bytes"].as_u64());
    assert!(ok(&store(&s.root, &["stats"])).contains("saved by dedup"));
    for (name, src) in [("base", &s.base), ("ft", &s.ft), ("frozen", &s.frozen)] {
        get_matches(&s, name, src);
    }
    // Existing output: refused without -f, replaced with it.
    let out = s.tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    fails(
        &store(&s.root, &["get", "ft", "-o", out.to_str().unwrap()]),
        &out,
        "already exists",
    );
    ok(&store(
        &s.root,
        &["-f", "get", "ft", "-o", out.to_str().unwrap()],
    ));
    assert!(tree(&out) == tree(&s.ft));
    fails(
        &store(&s.root, &["add", s.ft.to_str().unwrap(), "--name", "ft"]),
        &s.root,
        "already exists",
    );
    ok(&store(&s.root, &["rm", "ft"]));
    assert!(ok(&store(&s.root, &["gc", "--grace", "0"])).contains("deleted"));
    get_matches(&s, "frozen", &s.frozen);
    assert_eq!(fsck_json(&s.root)["problems"].as_array().unwrap().len(), 0);
    fails(&store(&s.root, &["rm", "ft"]), &s.root, "no model named");
    let missing = s.tmp.path().join("nowhere");
    fails(&store(&missing, &["ls"]), &missing, "not a store");
}

#[test]
fn concurrent_adds_lose_nothing() {
    let s = setup(4);
    // Two writers storing the same new objects at once, a third storing related ones.
    let spawn = |dir: &Path, name: &str| {
        Command::new(BIN)
            .args(["store", "--root"])
            .arg(&s.root)
            .args(["add", dir.to_str().unwrap(), "--name", name])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children = [
        spawn(&s.ft, "ft-1"),
        spawn(&s.ft, "ft-2"),
        spawn(&s.frozen, "frozen"),
    ];
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    // Two writers claiming one name: exactly one wins, the other fails cleanly.
    let a = spawn(&s.ft, "same");
    let b = spawn(&s.frozen, "same");
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(
        a.status.success() != b.status.success(),
        "{} / {}",
        text(&a.stderr),
        text(&b.stderr)
    );
    let loser = if a.status.success() { &b } else { &a };
    assert!(text(&loser.stderr).contains("already exists"));
    let winner_src = if a.status.success() { &s.ft } else { &s.frozen };
    for (name, src) in [
        ("ft-1", &s.ft),
        ("ft-2", &s.ft),
        ("frozen", &s.frozen),
        ("same", winner_src),
    ] {
        get_matches(&s, name, src);
    }
    let fsck = fsck_json(&s.root);
    assert_eq!(fsck["problems"].as_array().unwrap().len(), 0, "{fsck}");
    assert_eq!(fsck["models"], 5);
}

#[test]
fn a_writer_killed_mid_add_leaves_the_store_consistent() {
    let s = setup(4);
    let mut child = Command::new(BIN)
        .args(["store", "--root"])
        .arg(&s.root)
        .args(["add", s.ft.to_str().unwrap(), "--name", "ft"])
        .env("MCODEC_STORE_TEST_PAUSE_AFTER_OBJECTS", "5")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed only once it has written objects, wherever it then is.
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("paused after 5 objects"), "{line:?}");
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success());

    // The half-added model is invisible and the store is consistent.
    let ls = ok(&store(&s.root, &["ls"]));
    assert!(!ls.contains("ft"), "{ls}");
    let fsck = fsck_json(&s.root);
    assert_eq!(fsck["problems"].as_array().unwrap().len(), 0, "{fsck}");
    assert!(fsck["orphans"].as_u64().unwrap() >= 5, "{fsck}");
    fails(
        &store(
            &s.root,
            &["get", "ft", "-o", s.tmp.path().join("x").to_str().unwrap()],
        ),
        &s.root,
        "no model named",
    );
    // gc with the default grace keeps the young orphans (an add might still need them),
    // with no grace it reclaims them.
    ok(&store(&s.root, &["gc"]));
    assert!(fsck_json(&s.root)["orphans"].as_u64().unwrap() >= 5);
    // The killed writer's lease is live (for an hour, STORE.md §7.1): even with no grace
    // gc defers. Once the lease is gone (here: removed, as its expiry would), it reclaims.
    let deferred = ok(&store(&s.root, &["gc", "--grace", "0"]));
    assert!(deferred.contains("deferred"), "{deferred}");
    assert!(fsck_json(&s.root)["orphans"].as_u64().unwrap() >= 5);
    for lease in fs::read_dir(s.root.join("leases")).unwrap() {
        fs::remove_file(lease.unwrap().path()).unwrap();
    }
    ok(&store(&s.root, &["gc", "--grace", "0"]));
    assert_eq!(fsck_json(&s.root)["orphans"], 0);
    // Adding it again works and is exact.
    ok(&store(
        &s.root,
        &["add", s.ft.to_str().unwrap(), "--name", "ft"],
    ));
    get_matches(&s, "ft", &s.ft);
    get_matches(&s, "base", &s.base);
}

#[test]
fn names_cannot_escape_the_store() {
    let s = setup(1);
    for bad in [
        "../evil", "a//b", "a/", "..", ".x", "a\\b", "/abs", "a/../b",
    ] {
        fails(
            &store(&s.root, &["add", s.ft.to_str().unwrap(), "--name", bad]),
            &s.root,
            "model name",
        );
        let out = s.tmp.path().join("o");
        fails(
            &store(&s.root, &["get", bad, "-o", out.to_str().unwrap()]),
            &s.root,
            "model name",
        );
        fails(&store(&s.root, &["rm", bad]), &s.root, "model name");
    }
    assert!(!s.tmp.path().join("evil.json").exists());
    assert!(!s.root.join("evil.json").exists());
    // Hub names: `org/name`, listed by prefix.
    ok(&store(
        &s.root,
        &["add", s.ft.to_str().unwrap(), "--name", "org/ft"],
    ));
    let ls = ok(&store(&s.root, &["ls", "org/"]));
    assert!(ls.contains("org/ft"), "{ls}");
    let ls = ok(&store(&s.root, &["ls", "nobody/"]));
    assert!(!ls.contains("org/ft"), "{ls}");
}

#[test]
fn corrupt_objects_fail_get_and_fsck() {
    let s = setup(1);
    let objects = s.root.join("objects");
    // Damage the largest object (a tensor of the base).
    let mut largest: Option<(u64, PathBuf)> = None;
    for fan in fs::read_dir(&objects).unwrap() {
        for o in fs::read_dir(fan.unwrap().path()).unwrap() {
            let p = o.unwrap().path();
            let n = fs::metadata(&p).unwrap().len();
            if largest.as_ref().is_none_or(|(m, _)| n > *m) {
                largest = Some((n, p));
            }
        }
    }
    let path = largest.unwrap().1;
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 4;
    fs::write(&path, bytes).unwrap();
    let out = s.tmp.path().join("out");
    fails(
        &store(&s.root, &["get", "base", "-o", out.to_str().unwrap()]),
        &s.root,
        "object",
    );
    assert!(!out.exists());
    let o = store(&s.root, &["fsck"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stdout).contains("problem:"));
}

#[test]
fn packed_models_go_in_and_out_byte_for_byte() {
    let s = setup(2);
    let t = s.tmp.path();
    let p = |x: &Path| x.to_str().unwrap().to_owned();
    // `mcodec pack` of the fine-tune, added as it is: stored tensor by tensor.
    let packed = t.join("ft-packed");
    ok(&mcodec(t, &["pack", &p(&s.ft), "-o", &p(&packed)]));
    let report = ok(&store(
        &s.root,
        &[
            "add",
            &p(&packed),
            "--name",
            "org/ft",
            "--base",
            "base",
            "--json",
        ],
    ));
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert!(report["delta"].as_u64().unwrap() > 0, "{report}");
    // get gives what `mcodec unpack` gives; get --format mcz what `mcodec pack` gives.
    let unpacked = t.join("ft-unpacked");
    ok(&mcodec(t, &["unpack", &p(&packed), "-o", &p(&unpacked)]));
    let got = t.join("got");
    ok(&store(&s.root, &["get", "org/ft", "-o", &p(&got)]));
    assert!(tree(&got) == tree(&unpacked), "get differs from unpack");
    let got_packed = t.join("got-packed");
    ok(&store(
        &s.root,
        &["get", "org/ft", "-o", &p(&got_packed), "--format", "mcz"],
    ));
    assert!(
        tree(&got_packed) == tree(&packed),
        "get --format mcz differs from pack"
    );
    // A damaged packed file is refused, naming it; nothing is published.
    let bad = t.join("bad");
    fs::create_dir_all(&bad).unwrap();
    let mcz = fs::read_dir(&packed)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_str().unwrap().ends_with(".mcz"))
        .unwrap();
    let mut bytes = fs::read(&mcz).unwrap();
    let n = bytes.len();
    bytes.truncate(n / 2);
    fs::write(bad.join("model.safetensors.mcz"), bytes).unwrap();
    fails(
        &store(&s.root, &["add", &p(&bad), "--name", "bad"]),
        bad.join("model.safetensors.mcz"),
        "not a valid packed file",
    );
    assert!(!ok(&store(&s.root, &["ls"])).contains("bad"));
}

#[test]
fn store_from_the_environment_and_default_output() {
    let s = setup(1);
    let t = s.tmp.path();
    let env_store = |args: &[&str]| {
        Command::new(BIN)
            .current_dir(t)
            .env("MCODEC_STORE", &s.root)
            .arg("store")
            .args(args)
            .output()
            .expect("run mcodec")
    };
    ok(&env_store(&[
        "add",
        s.ft.to_str().unwrap(),
        "--name",
        "org/my-ft",
    ]));
    // Without -o: ./my-ft, the last segment of the name; never overwritten.
    ok(&env_store(&["get", "org/my-ft"]));
    assert!(tree(&t.join("my-ft")) == tree(&s.ft));
    let again = env_store(&["get", "org/my-ft"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("my-ft"),
        "{}",
        text(&again.stderr)
    );
    // stats per organisation.
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&env_store(&["stats", "--json"]))).unwrap();
    let orgs: Vec<&str> = stats["organisations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["org"].as_str().unwrap())
        .collect();
    assert_eq!(orgs, ["", "org"]);
    let org = &stats["organisations"][1];
    let (needed, exclusive) = (
        org["needed_bytes"].as_u64().unwrap(),
        org["exclusive_bytes"].as_u64().unwrap(),
    );
    // The fine-tune's own objects are the org's alone; its base (org "") is shared.
    assert!(0 < exclusive && exclusive < needed, "{needed} {exclusive}");
    // stats PREFIX: the models and organisations under the prefix only.
    let only: serde_json::Value =
        serde_json::from_str(&ok(&env_store(&["stats", "org/", "--json"]))).unwrap();
    let names: Vec<&str> = only["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["org/my-ft"]);
    assert_eq!(only["organisations"].as_array().unwrap().len(), 1);
    // Bad names fail on the name, not on a default output path.
    for bad in ["a/", "..", "a/.."] {
        let out = env_store(&["get", bad]);
        assert!(
            !out.status.success() && text(&out.stderr).contains("model name"),
            "{bad}: {}",
            text(&out.stderr)
        );
    }
    // No --root and no MCODEC_STORE: a usage error.
    let out = Command::new(BIN)
        .env_remove("MCODEC_STORE")
        .args(["store", "ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MCODEC_STORE"));
}

#[test]
fn piped_add_and_get_draw_no_progress_bars() {
    // stderr is a pipe here: the bars must stay hidden, leaving only the summary lines
    // on stdout and nothing on stderr.
    let s = setup(2);
    let out = s.tmp.path().join("got");
    for args in [
        vec!["add", s.ft.to_str().unwrap(), "--name", "ft"],
        vec!["get", "ft", "-o", out.to_str().unwrap()],
    ] {
        let o = store(&s.root, &args);
        ok(&o);
        assert!(o.stderr.is_empty(), "{args:?}: {:?}", text(&o.stderr));
        let stdout = text(&o.stdout);
        assert_eq!(stdout.lines().count(), 1, "{args:?}: {stdout:?}");
        assert!(
            !stdout.contains('\r') && !stdout.contains('\x1b'),
            "{stdout:?}"
        );
    }
}

#[test]
fn add_and_get_draw_progress_bars_on_a_terminal_unless_quiet() {
    // `script` runs the command on a pseudo-terminal and records what it printed.
    if Command::new("script").arg("--version").output().is_err() {
        mcodec_fixtures::skip("no `script` (util-linux) to run mcodec on a pseudo-terminal");
        return;
    }
    let s = setup(2);
    let on_terminal = |args: &str| {
        let o = Command::new("script")
            .args(["-qec", &format!("{BIN} {args}"), "/dev/null"])
            .output()
            .unwrap();
        ok(&o);
        text(&o.stdout)
    };
    let root = s.root.to_str().unwrap();
    let out = s.tmp.path().join("got");
    let add = format!("store --root {root} add {} --name ft", s.ft.display());
    let get = format!("store --root {root} get ft -o {}", out.display());
    for cmd in [add, get] {
        let printed = on_terminal(&cmd);
        // A bar shows its byte counts (`… 12.3 KiB/45.6 KiB …`) and is cleared at the end.
        assert!(printed.contains("B/"), "{cmd}: {printed:?}");
    }
    fs::remove_dir_all(&out).unwrap();
    let printed = on_terminal(&format!(
        "--quiet store --root {root} get ft -o {}",
        out.display()
    ));
    assert!(!printed.contains("B/"), "{printed:?}");
}
