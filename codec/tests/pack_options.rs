//! `PackOptions`' builder: every way in (bytes, any `Read + Seek`, a path) writes the same
//! file as the free `pack`, whatever the thread count, and the options reach the encoder.

mod common;

use std::io::{self, Cursor, Read, Seek, SeekFrom};

use common::every_dtype_model;
use mcodec::container::{pack, Archive, ContainerError, PackOptions};
use mcodec::{Dtype, Effort, EncodeOptions};

fn unpacked(file: &[u8]) -> Vec<u8> {
    common::unpack(file).unwrap()
}

#[test]
fn builder_packs_from_a_cursor_a_path_and_bytes_alike() {
    let model = every_dtype_model(1);
    let mut reference = Vec::new();
    pack(&model, &PackOptions::default(), &mut reference, &|_| {}).unwrap();
    assert_eq!(unpacked(&reference), model);

    let mut from_cursor = Vec::new();
    let stats = PackOptions::new()
        .pack_reader(Cursor::new(&model), &mut from_cursor)
        .unwrap();
    assert_eq!(from_cursor, reference, "Cursor input");
    assert_eq!(stats.original_len, model.len() as u64);
    assert_eq!(stats.packed_len, reference.len() as u64);

    // A reader positioned anywhere packs all of its input.
    let mut cursor = Cursor::new(&model);
    cursor.seek(SeekFrom::Start(17)).unwrap();
    let mut out = Vec::new();
    PackOptions::new().pack_reader(cursor, &mut out).unwrap();
    assert_eq!(out, reference, "reader not at its start");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, &model).unwrap();
    let mut from_path = Vec::new();
    PackOptions::new().pack_path(&path, &mut from_path).unwrap();
    assert_eq!(from_path, reference, "path input");

    for threads in [1, 3] {
        let mut out = Vec::new();
        PackOptions::new()
            .threads(threads)
            .pack(&model, &mut out)
            .unwrap();
        assert_eq!(out, reference, "{threads} threads");
    }
}

#[test]
fn builder_options_reach_the_encoder() {
    let weights: Vec<u8> = (0..50_000u32)
        .flat_map(|i| (((i * 2_654_435_761) >> 20) as f32 * 1e-3).to_le_bytes())
        .collect();
    let raw = |opts: PackOptions| {
        let mut out = Vec::new();
        opts.raw_dtype(Dtype::F32)
            .pack_reader(Cursor::new(&weights), &mut out)
            .unwrap();
        assert_eq!(unpacked(&out), weights);
        out
    };
    let by_builder = raw(PackOptions::new().effort(Effort::Max).chunk_log2(12));
    let by_fields = raw(PackOptions::new().encode(EncodeOptions {
        effort: Effort::Max,
        chunk_log2: 12,
        ..EncodeOptions::default()
    }));
    assert_eq!(by_builder, by_fields);
    let index = Archive::open(&by_builder).unwrap().index().clone();
    assert!(index.tensors.iter().all(|t| t.chunk_log2 == 12));
    assert_ne!(by_builder, raw(PackOptions::new()), "options ignored");

    // A chunk length outside the format's range is refused, not packed.
    let mut out = Vec::new();
    let bad = PackOptions::new()
        .chunk_log2(40)
        .raw_dtype(Dtype::F32)
        .pack(&weights, &mut out);
    assert!(
        matches!(bad, Err(ContainerError::Unsupported(_))),
        "{bad:?}"
    );
}

/// A reader that fails after `ok` bytes.
struct Failing {
    inner: Cursor<Vec<u8>>,
    ok: u64,
}

impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.inner.position() >= self.ok {
            return Err(io::Error::other("disk on fire"));
        }
        let room = (self.ok - self.inner.position()) as usize;
        let n = buf.len().min(room);
        self.inner.read(&mut buf[..n])
    }
}

impl Seek for Failing {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[test]
fn a_failing_reader_is_an_io_error() {
    let model = every_dtype_model(1);
    let input = Failing {
        inner: Cursor::new(model),
        ok: 100,
    };
    let mut out = Vec::new();
    match PackOptions::new().pack_reader(input, &mut out) {
        Err(ContainerError::Io(e)) => assert!(e.to_string().contains("disk on fire")),
        other => panic!("{other:?}"),
    }
    assert!(out.is_empty(), "wrote before the input was read");
}
