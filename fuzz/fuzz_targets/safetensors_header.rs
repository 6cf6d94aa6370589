//! cargo-fuzz entry of [`mcodec_fuzz::checks::safetensors_header`], where the input layout and the
//! properties checked are described.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcodec_fuzz::checks::safetensors_header::check(data));
