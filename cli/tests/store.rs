//! End-to-end tests of `mcodec store`: round trips, concurrent writers, a writer killed
//! mid-add, names that try to escape, corrupt objects.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{fails, models, ok, text, tree, BIN};
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

/// `MCODEC_STORE` stands for `--root`; `get` without `-o` writes `./LAST` (the name's last
/// segment) in the current directory and refuses to overwrite it; `stats` reports per
/// organisation and filters models by prefix.
#[test]
fn store_env_default_output_and_stats_per_org() {
    let s = setup(1);
    let env_store = |args: &[&str], cwd: &Path| {
        Command::new(BIN)
            .arg("store")
            .args(args)
            .env("MCODEC_STORE", &s.root)
            .current_dir(cwd)
            .output()
            .expect("run mcodec")
    };
    let cwd = s.tmp.path().join("cwd");
    fs::create_dir(&cwd).unwrap();
    ok(&env_store(
        &["add", s.ft.to_str().unwrap(), "--name", "acme/ft-v1"],
        &cwd,
    ));
    ok(&env_store(
        &["add", s.frozen.to_str().unwrap(), "--name", "other/frozen"],
        &cwd,
    ));
    ok(&env_store(&["get", "acme/ft-v1"], &cwd));
    assert!(tree(&cwd.join("ft-v1")) == tree(&s.ft), "get without -o");
    let again = env_store(&["get", "acme/ft-v1"], &cwd);
    assert!(!again.status.success(), "overwrote ./ft-v1");
    assert!(
        text(&again.stderr).contains("ft-v1"),
        "{}",
        text(&again.stderr)
    );
    // Bad names fail on the name, not on a default output path.
    for bad in ["a/", "..", "a/.."] {
        let out = env_store(&["get", bad], &cwd);
        assert!(
            !out.status.success() && text(&out.stderr).contains("model name"),
            "{bad}"
        );
    }
    let stats = ok(&env_store(&["stats"], &cwd));
    for org in ["acme\t1\t", "other\t1\t", "(none)\t1\t"] {
        assert!(stats.contains(org), "no {org:?} row in\n{stats}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&ok(&env_store(&["stats", "acme/", "--json"], &cwd))).unwrap();
    let models: Vec<&str> = json["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["acme/ft-v1"]);
    let orgs = json["orgs"].as_array().unwrap();
    assert_eq!(orgs.len(), 1, "{orgs:?}");
    assert_eq!(orgs[0]["org"], "acme");
    // Everything the org needs that no other org shares is exclusive; its base is shared.
    let (needed, exclusive) = (
        orgs[0]["needed_bytes"].as_u64().unwrap(),
        orgs[0]["exclusive_bytes"].as_u64().unwrap(),
    );
    assert!(0 < exclusive && exclusive < needed, "{needed} {exclusive}");
}
