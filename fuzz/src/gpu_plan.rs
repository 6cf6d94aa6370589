//! The GPU loader's host side on arbitrary `.mcz` bytes (target `gpu_plan`): the plan
//! builder (`mcodec_gpu::plan::Prepared::new`) never panics, and whatever it accepts, the
//! kernel's CPU mirror decodes without touching memory outside what would be uploaded
//! (its accessors panic otherwise) to exactly the bytes of the CPU decoder, for every
//! tensor the CPU decoder accepts. When the mirror reports a corrupt chunk, the CPU
//! decoder must refuse some tensor too.
//!
//! Kept apart from `checks` (which depends only on `mcodec`): the replay of its inputs
//! lives in gpu-decode's tests. Inputs are tried as they are and with checksums repaired,
//! as `container_open` does.

use mcodec::container::Archive;
use mcodec_gpu::plan::{Prepared, DEFAULT_MAX_TABLES};

use crate::checks::{repair_checksums, repair_trailer, MAX_DECODED};

/// Runs the check on one input; panics on a violated property.
pub fn check(data: &[u8]) {
    one(data);
    let mut fixed = data.to_vec();
    if !repair_trailer(&mut fixed) {
        return;
    }
    one(&fixed);
    if let Some(full) = repair_checksums(&fixed) {
        one(&full);
    }
}

fn one(bytes: &[u8]) {
    let Ok(archive) = Archive::open(bytes) else {
        return;
    };
    let total = archive
        .index()
        .tensors
        .iter()
        .try_fold(0u64, |acc, t| acc.checked_add(t.original_len));
    if total.is_none_or(|t| t > MAX_DECODED) {
        return;
    }
    let Ok(prepared) = Prepared::new(&archive, None, DEFAULT_MAX_TABLES) else {
        return;
    };
    let all: Vec<usize> = (0..prepared.tensors.len()).collect();
    let cpu = |i: usize| {
        let len = usize::try_from(archive.index().tensors[i].original_len).ok()?;
        let mut out = vec![0u8; len];
        archive.decode_tensor(i, &mut out).ok().map(|()| out)
    };
    match mcodec_gpu::mirror_decode(&prepared, &all) {
        Ok((out, offsets)) => {
            for (t, &off) in prepared.tensors.iter().zip(&offsets) {
                if let Some(want) = cpu(t.index) {
                    let got = &out[off as usize..off as usize + want.len()];
                    assert!(
                        got == want.as_slice(),
                        "mirror differs on tensor {}",
                        t.index
                    );
                }
            }
        }
        Err(corrupt) => assert!(
            prepared.tensors.iter().any(|t| cpu(t.index).is_none()),
            "mirror reports {corrupt:?} but the CPU decoder accepts every tensor"
        ),
    }
}
