//! cargo-fuzz entry of [`mcodec_fuzz::store_object`], where the input and the properties
//! checked are described.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcodec_fuzz::store_object::check(data));
