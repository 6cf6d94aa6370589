//! gpu-decode's integration tests, in one binary (each test binary costs a release link):
//! `mirror` (the kernel's CPU mirror against the CPU decoder, runs everywhere), `gpu` (the
//! kernel on a device, skips without one), `nvrtc` (the kernel source compiles, skips
//! without libnvrtc).

mod common;
mod gpu;
mod mirror;
mod nvrtc;
