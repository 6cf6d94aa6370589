//! The kernel on a real device against the CPU decoder, bit for bit. Skips, saying why,
//! on machines without a CUDA driver, device or NVRTC.

use crate::common::*;
use mcodec::container::Archive;
use mcodec::EncodeOptions;
use mcodec_gpu::plan::{Body, Prepared, MODE_RANS};
use mcodec_gpu::{GpuDecoder, GpuError, GpuModel};

fn decoder() -> Option<GpuDecoder> {
    match GpuDecoder::new(0) {
        Ok(d) => Some(d),
        Err(e @ (GpuError::NoDevice(_) | GpuError::NvrtcMissing(_))) => {
            println!("skipped: {e}");
            None
        }
        Err(e) => panic!("GPU decoder: {e}"),
    }
}

/// Uploads every tensor of `mcz`, decodes them all in one launch and compares each with
/// the CPU decoder; then decodes a group of every other tensor twice into one buffer.
fn check_file(dec: &GpuDecoder, mcz: &[u8], what: &str) {
    let stream = dec.context().default_stream();
    let archive = Archive::open(mcz).expect("open");
    let mut model = GpuModel::upload(dec, &archive, None, &stream).expect("upload");
    let (buf, offsets) = model.decode_all(&stream).expect("decode");
    let host = stream.clone_dtoh(&buf).expect("download");
    for (t, &off) in model.tensors().iter().zip(&offsets) {
        let want = cpu_tensor(&archive, t.index);
        let got = &host[off as usize..off as usize + want.len()];
        assert!(
            got == want.as_slice(),
            "{what}: tensor {:?} differs",
            t.name
        );
    }
    let some: Vec<usize> = (0..model.tensors().len()).step_by(2).collect();
    let (_, total) = mcodec_gpu::output_layout(model.tensors(), &some);
    let mut scratch = stream
        .alloc_zeros::<u8>(total.max(1) as usize)
        .expect("alloc");
    let group = model.group(&some, &scratch, &stream).expect("group");
    for _ in 0..2 {
        model.launch(&group, &mut scratch, &stream).expect("launch");
        model.check(&stream).expect("no corrupt chunk");
    }
    let host = stream.clone_dtoh(&scratch).expect("download");
    let last = model.tensors().len() - 1;
    let mut single = stream
        .alloc_zeros::<u8>(model.tensors()[last].out_len.max(1) as usize)
        .expect("alloc");
    model
        .decode_tensor(last, &mut single, &stream)
        .expect("decode one");
    model.check(&stream).expect("no corrupt chunk");
    let want = cpu_tensor(&archive, model.tensors()[last].index);
    assert!(stream.clone_dtoh(&single).expect("download")[..want.len()] == want[..]);
    for (&t, &off) in some.iter().zip(group.offsets()) {
        let want = cpu_tensor(&archive, model.tensors()[t].index);
        assert!(
            host[off as usize..off as usize + want.len()] == want[..],
            "{what}: group tensor {t} differs"
        );
    }
}

#[test]
fn gpu_decode_is_bit_identical_to_cpu() {
    let Some(dec) = decoder() else { return };
    println!("device: {}", dec.describe());
    let dir = golden_dir();
    for entry in std::fs::read_dir(&dir).expect("fixtures/golden") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "mcz") {
            check_file(
                &dec,
                &std::fs::read(&path).expect("read"),
                &path.display().to_string(),
            );
        }
    }
    let model = generated_model();
    for (name, settings) in encode_settings() {
        check_file(&dec, &pack_with(&model, settings), name);
    }
    match minilm_mcz() {
        Ok(mcz) => check_file(&dec, &mcz, "minilm"),
        Err(why) => println!("minilm skipped: {why}"),
    }
}

#[test]
fn gpu_reports_corrupt_chunks() {
    let Some(dec) = decoder() else { return };
    let stream = dec.context().default_stream();
    let mcz = pack_with(&generated_model(), EncodeOptions::default());
    let archive = Archive::open(&mcz).expect("open");
    let mut prepared = Prepared::new(&archive, None, dec.max_tables()).expect("prepare");
    // Damage the first rANS payload's words after host validation.
    let f = prepared
        .tensors
        .iter()
        .find_map(|t| match &t.body {
            Body::Split(d) => d.fields[..d.n_fields as usize]
                .iter()
                .find(|f| f.mode == MODE_RANS)
                .copied(),
            _ => None,
        })
        .expect("a rANS stream");
    let payload = u64::from_le_bytes(
        prepared.arena[f.chunk_index as usize..][..8]
            .try_into()
            .unwrap(),
    );
    let at = (f.stream + payload) as usize + 200;
    prepared.arena[at] ^= 0x5A;
    prepared.arena[at + 1] ^= 0xC3;
    let mut model = GpuModel::upload_prepared(&dec, prepared, &stream).expect("upload");
    match model.decode_all(&stream) {
        Err(GpuError::Corrupt(c)) => println!("reported: {c}"),
        other => panic!("expected a corrupt chunk, got {other:?}"),
    }
}
