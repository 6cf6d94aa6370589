//! A device run that cannot lie: with `MCODEC_GPU_REQUIRED` set, a step that would skip
//! for want of a GPU fails, loudly. Forced here on any machine by hiding every device
//! (`CUDA_VISIBLE_DEVICES=""`), so it runs in CI (no GPU) and on a device machine alike.

use std::path::PathBuf;
use std::process::{Command, Output};

/// This test binary, asked to run one GPU test with every device hidden.
fn gpu_test(required: bool) -> Output {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    // The forced skip is this test's subject, not a skip of the run: not logged.
    cmd.args(["gpu::gpu_reports_corrupt_chunks", "--exact", "--nocapture"])
        .env("CUDA_VISIBLE_DEVICES", "")
        .env_remove(mcodec_fixtures::SKIP_LOG_ENV);
    if required {
        cmd.env(mcodec_gpu::GPU_REQUIRED_ENV, "1");
    } else {
        cmd.env_remove(mcodec_gpu::GPU_REQUIRED_ENV);
    }
    cmd.output().expect("run the test binary")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_forced_skip_passes_saying_so_and_fails_when_a_gpu_is_required() {
    let relaxed = gpu_test(false);
    let log = text(&relaxed);
    assert!(relaxed.status.success(), "without the variable: {log}");
    assert!(log.contains("skipped: "), "a skip says so: {log}");

    let strict = gpu_test(true);
    let log = text(&strict);
    assert!(!strict.status.success(), "a required run passed: {log}");
    assert!(
        log.contains("FAILED instead of skipped") && log.contains(mcodec_gpu::GPU_REQUIRED_ENV),
        "the failure says why: {log}"
    );
    assert!(log.contains("1 failed"), "{log}");
}

/// The `infer` example beside this test binary (`cargo test` builds examples into
/// `target/<profile>/examples`), or `$MCODEC_INFER_BIN`.
fn infer_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MCODEC_INFER_BIN") {
        return Some(p.into());
    }
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("examples/infer");
    p.is_file().then_some(p)
}

#[test]
fn the_infer_example_fails_when_a_gpu_is_required_and_absent() {
    let Some(infer) = infer_binary() else {
        crate::common::skip("no infer example beside the test binary (set MCODEC_INFER_BIN)");
        return;
    };
    let model = crate::common::golden_dir().join("tiny-bf16.safetensors.mcz");
    let run = |required: bool| {
        let mut cmd = Command::new(&infer);
        cmd.arg(&model).env("CUDA_VISIBLE_DEVICES", "");
        if required {
            cmd.env(mcodec_gpu::GPU_REQUIRED_ENV, "1");
        } else {
            cmd.env_remove(mcodec_gpu::GPU_REQUIRED_ENV);
        }
        cmd.output().expect("run infer")
    };
    let relaxed = run(false);
    let log = text(&relaxed);
    assert!(relaxed.status.success(), "{log}");
    assert!(log.contains("skipped: "), "{log}");
    let strict = run(true);
    let log = text(&strict);
    assert!(!strict.status.success(), "a required run passed: {log}");
    assert!(log.contains("FAILED"), "{log}");
}
