//! gpu-decode's integration tests, in one binary (each test binary costs a release link):
//! `mirror` (the kernel's CPU mirror against the CPU decoder, runs everywhere), `gpu` (the
//! kernel on a device, skips without one), `nvrtc` (the kernel source compiles, skips
//! without libnvrtc), and `fuzz_replay` (the `gpu_plan` fuzz target's inputs).

// The fuzz targets' shared helpers and the `gpu_plan` check, included as the fuzzer
// builds them.
#[path = "../../../fuzz/src/checks/mod.rs"]
#[allow(dead_code)]
mod checks;
#[path = "../../../fuzz/src/gpu_plan.rs"]
mod gpu_plan;

mod common;
mod fuzz_replay;
mod gpu;
mod mirror;
mod nvrtc;
