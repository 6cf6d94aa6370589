//! The host loader without a GPU: what it uploads is the copy it verified; packed and
//! constant fields have an end check; decoded tensors can be checked against their
//! checksums; a corrupt chunk names its tensor whichever sub-group was launched.

use crate::common::*;
use mcodec::container::{Archive, ContainerError, Part};
use mcodec::EncodeOptions;
use mcodec_gpu::plan::{
    Body, PlanError, Prepared, DEFAULT_MAX_TABLES, ERR_FIELD_HEADER, MODE_CONST, MODE_PACKED,
    MODE_RANS,
};
use mcodec_gpu::{check_decoded, mirror_decode, output_layout, Verify};
use xxhash_rust::xxh3::xxh3_64;

fn prepared(mcz: &[u8]) -> Prepared {
    Prepared::new(&Archive::open(mcz).expect("open"), None, DEFAULT_MAX_TABLES).expect("prepare")
}

fn copy(p: &Prepared) -> Prepared {
    Prepared {
        arena: p.arena.clone(),
        tables: p.tables.clone(),
        tensors: p.tensors.clone(),
    }
}

/// (tensor, field) of the first kernel tensor with a field of `mode`.
fn field_of_mode(p: &Prepared, mode: u32) -> (usize, usize) {
    p.tensors
        .iter()
        .enumerate()
        .find_map(|(t, pt)| match &pt.body {
            Body::Split(d) => d.fields[..d.n_fields as usize]
                .iter()
                .position(|f| f.mode == mode)
                .map(|f| (t, f)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no field of mode {mode}"))
}

fn desc(p: &Prepared, t: usize) -> mcodec_gpu::plan::TensorDesc {
    match &p.tensors[t].body {
        Body::Split(d) => *d,
        _ => panic!("tensor {t} is not kernel-decoded"),
    }
}

#[test]
fn the_arena_holds_the_verified_copy_of_every_stream() {
    let mcz = pack_with(&generated_model(), EncodeOptions::default());
    let archive = Archive::open(&mcz).expect("open");
    let p = prepared(&mcz);
    let mut streams = 0;
    for t in &p.tensors {
        if let Body::Split(d) = &t.body {
            let entry = &archive.index().tensors[t.index];
            for (f, s) in d.fields[..d.n_fields as usize].iter().zip(&entry.streams) {
                let at = f.stream as usize;
                assert_eq!(xxh3_64(&p.arena[at..at + s.len as usize]), s.checksum);
                streams += 1;
            }
        }
    }
    assert!(streams >= 8, "{streams} streams checked");
    // A stream damaged in the file is refused by the check of the copy, naming it.
    let entry = &archive.index().tensors[0];
    let s = entry.streams[entry.streams.len() - 1];
    let mut bad = mcz.clone();
    bad[(s.offset + s.len / 2) as usize] ^= 0x10;
    let archive = Archive::open(&bad).expect("the index is intact");
    match Prepared::new(&archive, None, DEFAULT_MAX_TABLES) {
        Err(PlanError::Container(ContainerError::Checksum {
            what: Part::UploadCopy { tensor, stream },
            ..
        })) => {
            assert_eq!(tensor, entry.name);
            assert_eq!(stream, entry.streams.len() - 1);
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
}

#[test]
fn damaged_packed_and_constant_headers_are_reported() {
    let mcz = pack_with(&generated_model(), EncodeOptions::default());
    let clean = prepared(&mcz);
    for (mode, offset, flip) in [
        (MODE_PACKED, 0, 0x01),
        (MODE_CONST, 0, 0x02),
        (MODE_CONST, 1, 0x01),
    ] {
        let (t, f) = field_of_mode(&clean, mode);
        let mut damaged = copy(&clean);
        let at = desc(&clean, t).fields[f].stream as usize + offset;
        damaged.arena[at] ^= flip;
        let all: Vec<usize> = (0..clean.tensors.len()).collect();
        match mirror_decode(&damaged, &all) {
            Err(e) => {
                assert_eq!(e.code, ERR_FIELD_HEADER, "{e}");
                assert_eq!(e.tensor, clean.tensors[t].name);
            }
            Ok(_) => panic!("mode {mode} byte {offset} damaged, nothing reported"),
        }
    }
}

#[test]
fn a_sub_group_error_names_the_damaged_tensor() {
    let mcz = pack_with(&generated_model(), EncodeOptions::default());
    let clean = prepared(&mcz);
    let kernel: Vec<usize> = (0..clean.tensors.len())
        .filter(|&t| matches!(clean.tensors[t].body, Body::Split(_)))
        .collect();
    // Damage the last kernel tensor that has a rANS field; launch it second in a
    // sub-group, so that its descriptor index (1), its index among the model's kernel
    // tensors and its index in the model all differ.
    let (t, f) = kernel
        .iter()
        .rev()
        .find_map(|&t| {
            let d = desc(&clean, t);
            d.fields[..d.n_fields as usize]
                .iter()
                .position(|f| f.mode == MODE_RANS)
                .map(|f| (t, f))
        })
        .expect("a rANS field");
    let fd = desc(&clean, t).fields[f];
    let payload = u64::from_le_bytes(
        clean.arena[fd.chunk_index as usize..][..8]
            .try_into()
            .expect("8 bytes"),
    );
    let mut damaged = copy(&clean);
    let at = (fd.stream + payload) as usize + 130;
    damaged.arena[at] ^= 0x5A;
    damaged.arena[at + 1] ^= 0xC3;
    let first = kernel.iter().copied().find(|&k| k != t).expect("another");
    assert_ne!(kernel.iter().position(|&k| k == t), Some(1));
    let e = mirror_decode(&damaged, &[first, t]).expect_err("corrupt chunk");
    assert_eq!(e.tensor, clean.tensors[t].name, "{e}");
}

#[test]
fn decoded_tensors_are_checked_against_their_checksums() {
    let mcz = pack_with(&generated_model(), EncodeOptions::default());
    let p = prepared(&mcz);
    let all: Vec<usize> = (0..p.tensors.len()).collect();
    let (mut out, offsets) = mirror_decode(&p, &all).expect("decode");
    assert_eq!(
        check_decoded(&p.tensors, &all, &offsets, &out, Verify::All),
        Ok(all.len())
    );
    // Damage one byte of one tensor: the full check names it; samples find it only when
    // they choose it, and over seeds every tensor gets chosen.
    let victim = 2;
    out[offsets[victim] as usize + 7] ^= 0x80;
    let e = check_decoded(&p.tensors, &all, &offsets, &out, Verify::All).expect_err("mismatch");
    assert_eq!(e.tensor, p.tensors[victim].name);
    let mut seen = vec![false; all.len()];
    for seed in 0..64 {
        let which = Verify::Sample { count: 2, seed };
        let chosen = which.positions(all.len());
        assert_eq!(chosen.len(), 2);
        assert!(chosen[0] < chosen[1]);
        chosen.iter().for_each(|&k| seen[k] = true);
        let r = check_decoded(&p.tensors, &all, &offsets, &out, which);
        assert_eq!(r.is_err(), chosen.contains(&victim), "seed {seed}: {r:?}");
    }
    assert!(seen.iter().all(|&s| s), "{seen:?}");
    // A group's layout is what `output_layout` says.
    assert_eq!(output_layout(&p.tensors, &all).0, offsets);
}

#[test]
fn tensors_with_many_tables_get_their_own_launch() {
    // 24 segments of very different scales: the archival encoder gives the exponent
    // stream many tables, more than the first table-count class holds.
    let n = 24 * 8192;
    let mut rng = mcodec_fixtures::rng::SplitMix64::new(7);
    let values: Vec<f32> = (0..n)
        .map(|i| (rng.gaussian() * 2f64.powi((i / 8192) as i32 * 3 - 40)) as f32)
        .collect();
    let small: Vec<f32> = (0..70_000).map(|i| (i % 13) as f32 * 0.01).collect();
    let tensors = [
        mcodec_fixtures::safetensors::Tensor::from_f32("segments", "BF16", &[n], &values),
        mcodec_fixtures::safetensors::Tensor::from_f32("small", "BF16", &[70_000], &small),
    ];
    let views: Vec<_> = tensors.iter().map(|t| t.view()).collect();
    let st = mcodec_fixtures::safetensors::safetensors_bytes(&views, None, 8).expect("st");
    let mcz = pack_with(&st, EncodeOptions::max());
    let p = prepared(&mcz);
    let tables: Vec<u32> = p
        .tensors
        .iter()
        .filter_map(|t| match &t.body {
            Body::Split(d) => Some(d.n_tables),
            _ => None,
        })
        .collect();
    let all: Vec<usize> = (0..p.tensors.len()).collect();
    let (out, offsets) = mirror_decode(&p, &all).expect("decode");
    assert_eq!(
        check_decoded(&p.tensors, &all, &offsets, &out, Verify::All),
        Ok(all.len())
    );
    let (descs, _) = mcodec_gpu::launch_work(&p.tensors, &all, &offsets, 0, 0, 0);
    let launches = mcodec_gpu::plan::launches(&descs, mcodec_gpu::plan::DEFAULT_WARP_SLOTS);
    assert!(
        launches.len() >= 2,
        "tables per tensor {tables:?}: {} launch(es)",
        launches.len()
    );
}
