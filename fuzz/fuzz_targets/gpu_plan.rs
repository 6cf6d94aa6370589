//! cargo-fuzz entry of [`mcodec_fuzz::gpu_plan`], where the properties checked are
//! described.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcodec_fuzz::gpu_plan::check(data));
