//! The kernel on a real device against the CPU decoder, bit for bit. Skips, saying why,
//! on machines without a CUDA driver, device or NVRTC (fails instead when
//! `MCODEC_GPU_REQUIRED` is set).

use crate::common::*;
use mcodec::container::Archive;
use mcodec::EncodeOptions;
use mcodec_gpu::plan::{Body, Prepared, MODE_RANS};
use mcodec_gpu::{GpuDecoder, GpuError, GpuModel, Verify};

fn decoder() -> Option<GpuDecoder> {
    match GpuDecoder::new(0) {
        Ok(d) => Some(d),
        Err(e @ (GpuError::NoDevice(_) | GpuError::NvrtcMissing(_))) => {
            skip(&e.to_string());
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
        Err(why) => skip(&format!("MiniLM: {why}")),
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
    let damaged = prepared
        .tensors
        .iter()
        .position(|t| matches!(&t.body, Body::Split(d) if d.fields.contains(&f)))
        .expect("the damaged tensor");
    let mut model = GpuModel::upload_prepared(&dec, prepared, &stream).expect("upload");
    match model.decode_all(&stream) {
        Err(GpuError::Corrupt(c)) => println!("reported: {c}"),
        other => panic!("expected a corrupt chunk, got {other:?}"),
    }
    // A sub-group where the damaged tensor is not the model's first kernel tensor: the
    // error names it, not whichever tensor comes first in the model.
    let others: Vec<usize> = (0..model.tensors().len())
        .filter(|&t| t != damaged && matches!(model.tensors()[t].body, Body::Split(_)))
        .collect();
    let sub = [others[others.len() - 1], damaged];
    let (_, total) = mcodec_gpu::output_layout(model.tensors(), &sub);
    let mut dst = stream.alloc_zeros::<u8>(total as usize).expect("alloc");
    let group = model.group(&sub, &dst, &stream).expect("group");
    model.launch(&group, &mut dst, &stream).expect("launch");
    match model.check(&stream) {
        Err(GpuError::Corrupt(c)) => assert_eq!(c.tensor, model.tensors()[damaged].name),
        other => panic!("expected a corrupt chunk, got {other:?}"),
    }
    // The decoded-tensor check finds the damaged tensor's bytes wrong, the other's right.
    match model.verify(&group, &dst, &stream, Verify::All) {
        Err(GpuError::Mismatch(m)) => assert_eq!(m.tensor, model.tensors()[damaged].name),
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
}

#[test]
fn gpu_groups_run_only_on_their_model() {
    let Some(dec) = decoder() else { return };
    let stream = dec.context().default_stream();
    let mcz = pack_with(&generated_model(), EncodeOptions::default());
    let archive = Archive::open(&mcz).expect("open");
    let a = GpuModel::upload(&dec, &archive, None, &stream).expect("upload a");
    let b = GpuModel::upload(&dec, &archive, None, &stream).expect("upload b");
    let (_, total) = mcodec_gpu::output_layout(a.tensors(), &[0]);
    let mut dst = stream.alloc_zeros::<u8>(total as usize).expect("alloc");
    let group = a.group(&[0], &dst, &stream).expect("group");
    match b.launch(&group, &mut dst, &stream) {
        Err(GpuError::ForeignGroup { group_model, model }) => {
            assert_eq!((group_model, model), (a.id(), b.id()));
        }
        other => panic!("expected a foreign group, got {other:?}"),
    }
    let dropped = a.id();
    drop(a);
    let c = GpuModel::upload(&dec, &archive, None, &stream).expect("upload c");
    assert_ne!(c.id(), dropped);
    assert!(matches!(
        c.launch(&group, &mut dst, &stream),
        Err(GpuError::ForeignGroup { .. })
    ));
    let mut mine = stream.alloc_zeros::<u8>(total as usize).expect("alloc");
    let own = c.group(&[0], &mine, &stream).expect("group");
    c.launch(&own, &mut mine, &stream).expect("launch");
    assert_eq!(
        c.verify(&own, &mine, &stream, Verify::All).expect("verify"),
        1
    );
}

/// `decode_into_raw` (the Python `device="cuda"` path): a cubin made by `compile_cubin`
/// handed to `GpuDecoder::with_cubin`, each tensor decoded into a buffer of its own on a
/// second stream given as a raw handle, bit-identical to the CPU decoder.
#[test]
fn raw_targets_on_a_foreign_stream_are_bit_identical() {
    use cudarc::driver::DevicePtr;
    use mcodec_gpu::RawTarget;
    let Some(probe) = decoder() else { return };
    let (major, minor) = probe.context().compute_capability().expect("capability");
    let arch = format!("sm_{major}{minor}");
    let (image, _) = mcodec_gpu::compile_cubin(&arch).expect("cubin");
    let dec = GpuDecoder::with_cubin(0, image, &arch).expect("decoder from a cubin");
    let upload = dec.context().new_stream().expect("stream");
    let foreign = dec.context().new_stream().expect("stream");
    let mcz = pack_with(&generated_model(), EncodeOptions::default());
    let archive = Archive::open(&mcz).expect("open");
    let mut model = GpuModel::upload(&dec, &archive, None, &upload).expect("upload");
    let buffers: Vec<_> = model
        .tensors()
        .iter()
        .map(|t| {
            foreign
                .alloc_zeros::<u8>(t.out_len.max(1) as usize)
                .expect("alloc")
        })
        .collect();
    foreign.synchronize().expect("sync");
    let targets: Vec<RawTarget> = buffers
        .iter()
        .enumerate()
        .rev()
        .map(|(i, b)| RawTarget {
            tensor: i,
            address: b.device_ptr(&foreign).0,
            len: model.tensors()[i].out_len,
        })
        .collect();
    // SAFETY: the buffers are this context's, sized per tensor, and used by nothing else
    // until the call returns; `foreign` is a live stream of the same context.
    unsafe { model.decode_into_raw(&targets, foreign.cu_stream(), &upload) }.expect("decode");
    for (i, b) in buffers.iter().enumerate() {
        let t = &model.tensors()[i];
        let want = cpu_tensor(&archive, t.index);
        let got = foreign.clone_dtoh(b).expect("download");
        assert!(got[..want.len()] == want[..], "tensor {:?} differs", t.name);
    }
}
