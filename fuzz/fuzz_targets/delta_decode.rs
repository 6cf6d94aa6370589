//! cargo-fuzz entry of [`mcodec_fuzz::checks::delta_decode`], where the input layout and
//! the properties checked are described.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcodec_fuzz::checks::delta_decode::check(data));
