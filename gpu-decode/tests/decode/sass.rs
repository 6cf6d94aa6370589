//! SASS instruction count of the step loop per layout (`gpu-decode/sass-count.py`: NVRTC
//! cubin for sm_90, `nvdisasm`), and no register spills in any decoder instance. Needs
//! python3, libnvrtc and nvdisasm (the PyPI `triton` wheel ships one); skips saying why
//! without them (CI has NVRTC but no nvdisasm).

use std::process::Command;

#[test]
fn step_loop_instruction_counts_and_no_spills() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/sass-count.py");
    let out = match Command::new("python3").arg(script).output() {
        Ok(out) => out,
        Err(e) => {
            println!("skipped: no python3 ({e})");
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{text}");
    if text.lines().any(|l| l.starts_with("skipped:")) {
        return;
    }
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| instance"))
        .map(|l| l.trim_matches('|').split(" | ").map(str::trim).collect())
        .collect();
    assert!(rows.len() >= 5, "{text}");
    for row in &rows {
        let per32: f64 = row[3].parse().unwrap_or_else(|_| panic!("{row:?}"));
        assert!(per32 > 10.0, "{row:?}");
        let (regs, spills) = row[4].split_once(", ").expect("registers, spills");
        assert!(regs.parse::<u32>().expect("registers") <= 64, "{row:?}");
        assert_eq!(spills, "0 B", "{row:?} spills registers");
    }
}
