//! The safetensors parser on arbitrary bytes must never panic, and whatever it accepts
//! must tile the data section and pack into an `.mcz` file that unpacks byte-exact.

use mcodec::container::{pack, Archive, ContainerError, PackOptions};
use mcodec::safetensors;

/// Runs the check on one input; panics on a violated property.
pub fn check(data: &[u8]) {
    let file_len = data.len() as u64;
    let Ok(header) = safetensors::parse(data, file_len) else {
        return;
    };
    let mut at = header.prefix_len;
    for t in &header.tensors {
        assert_eq!(t.range.start, at, "tensors must tile the data section");
        assert!(t.range.end >= t.range.start);
        if let Some(size) = t.dtype.element_size() {
            let elems: u64 = t.shape.iter().product();
            assert_eq!(elems * size as u64, t.range.end - t.range.start);
        }
        at = t.range.end;
    }
    assert_eq!(at, file_len);

    // End to end: every file the parser accepts either packs and survives unpack, or is
    // refused as unrepresentable (a name too long for the index).
    let mut packed = Vec::new();
    match pack(data, &PackOptions::default(), &mut packed, &|_| {}) {
        Ok(_) => {}
        Err(ContainerError::Unsupported(_)) => return,
        Err(e) => panic!("pack failed on accepted input: {e}"),
    }
    let archive = Archive::open(&packed).expect("open what pack wrote");
    let mut back = Vec::new();
    archive
        .unpack_to(&mut back, &|_| {})
        .expect("unpack what pack wrote");
    assert!(back == data, "pack/unpack changed the file");
}
