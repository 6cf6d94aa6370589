//! SASS instruction count of the decode loops per layout (`gpu-decode/sass-count.py`:
//! NVRTC cubin for sm_90, `nvdisasm`), the BF16 budget of issue #15, and no register
//! spills inside any decoder instance's loops (the script itself fails when the step-only
//! `MODES_ANY` F32 instances, which decode F32 tensors with raw blocks, spill in theirs). Needs python3, libnvrtc and nvdisasm (the PyPI `triton`
//! wheel ships one; the script looks in the Python test venv `~/.cache/mcodec/py-venv`
//! that CI keeps, and in `/work/venv`); skips saying why without them, unless
//! `MCODEC_SASS_REQUIRED` is set (CI sets it once NVRTC is installed): then it fails.

use std::process::Command;

/// SASS warp-instructions per 32 BF16 elements, flush included (issue #15).
const BF16_BUDGET: f64 = 45.0;

#[test]
fn decode_loops_within_the_instruction_budget_and_without_spills() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/sass-count.py");
    let out = match Command::new("python3").arg(script).output() {
        Ok(out) => out,
        Err(e) => {
            mcodec_fixtures::skip(format!("no python3 ({e})"));
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sass-count.py failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{text}");
    if let Some(why) = text.lines().find_map(|l| l.strip_prefix("skipped: ")) {
        assert!(
            std::env::var_os("MCODEC_SASS_REQUIRED").is_none(),
            "MCODEC_SASS_REQUIRED is set but sass-count.py skipped: {why}"
        );
        mcodec_fixtures::skip(format!("sass-count.py: {why}"));
        return;
    }
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| instance"))
        .map(|l| l.trim_matches('|').split(" | ").map(str::trim).collect())
        .collect();
    assert!(rows.len() >= 5, "{text}");
    for row in &rows {
        let per32: f64 = row[1].parse().unwrap_or_else(|_| panic!("{row:?}"));
        assert!(per32 > 10.0, "{row:?}");
        let step: Vec<f64> = row[3]
            .split(", ")
            .map(|v| v.parse().unwrap_or_else(|_| panic!("{row:?}")))
            .collect();
        assert!(step.len() == 3 && step[2] > 10.0, "{row:?}");
        let (regs, _) = row[4].split_once(", ").expect("registers, spill stores");
        assert!(regs.parse::<u32>().expect("registers") <= 64, "{row:?}");
        // Spill stores outside the loops are the per-chunk call's arguments (decoders are
        // __noinline__); none may be inside a decode loop.
        assert_eq!(
            row[5], "0",
            "{row:?}: local-memory accesses in a decode loop"
        );
    }
    // Issue #15's budget for the usual BF16 instance (the script's first case, which also
    // fails the script when it is exceeded).
    assert!(
        rows[0][0].starts_with("BF16 exp rANS, sign+mantissa packed"),
        "{text}"
    );
    let bf16: f64 = rows[0][1].parse().expect("BF16 per 32 elements");
    assert!(
        bf16 <= BF16_BUDGET,
        "BF16: {bf16} SASS instructions per 32 elements, over the budget of {BF16_BUDGET}"
    );
}
