//! Decoding must write every byte it claims to produce. Each input is an `.mcz` file
//! (tried as is, with its trailer repaired, and with every checksum recomputed, as in
//! `container_open`); every tensor and the whole file are decoded into buffers
//! pre-filled with different poison values, whole, in pieces and in parallel, and every
//! successful decode must give identical bytes.

use super::{decode_with_poison, repair_checksums, repair_trailer};
use mcodec::container::Archive;

/// Runs the check on one input; panics on a violated property.
pub fn check(data: &[u8]) {
    if let Ok(a) = Archive::open(data) {
        decode_with_poison(&a);
    }
    let mut fixed = data.to_vec();
    if !repair_trailer(&mut fixed) {
        return;
    }
    if let Ok(a) = Archive::open(&fixed) {
        decode_with_poison(&a);
    } else {
        return;
    }
    if let Some(full) = repair_checksums(&fixed) {
        if let Ok(a) = Archive::open(&full) {
            decode_with_poison(&a);
        }
    }
}
