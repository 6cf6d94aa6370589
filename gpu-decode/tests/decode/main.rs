//! gpu-decode's integration tests, in one binary (each test binary costs a release link):
//! `mirror` (the kernel's CPU mirror against the CPU decoder, runs everywhere), `loader`
//! (what the host uploads is what it verified; errors name the right tensor), `gpu` (the
//! kernel on a device, skips without one), `required` (a forced skip fails loudly under
//! `MCODEC_GPU_REQUIRED`), `nvrtc` (the kernel source compiles, skips without libnvrtc),
//! `sass` (instructions per 32 elements from the cubin's SASS, skips without NVRTC and
//! nvdisasm) and `fuzz_replay` (the `gpu_plan` fuzz target's inputs).

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
mod loader;
mod mirror;
mod mirror_raw;
mod nvrtc;
mod required;
mod sass;
