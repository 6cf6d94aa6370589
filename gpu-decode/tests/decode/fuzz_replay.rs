//! Replays the `gpu_plan` fuzz target's committed seeds and crash inputs
//! (`fuzz/{corpus,crashes}/gpu_plan/*`) through the very check the fuzzer runs: the plan
//! builder never panics, and the mirror agrees with the CPU decoder on what it accepts.

use std::path::Path;

#[test]
fn gpu_plan_fuzz_inputs_replay_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for dir in ["corpus/gpu_plan", "crashes/gpu_plan"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let data = std::fs::read(&path).expect("read input");
            crate::gpu_plan::check(&data);
            replayed += 1;
        }
    }
    assert!(
        replayed >= 3,
        "only {replayed} gpu_plan inputs under {}",
        root.display()
    );
}
