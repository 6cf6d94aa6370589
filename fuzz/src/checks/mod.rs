//! The property checks of the fuzz targets, one module per target, and their shared
//! helpers. They depend only on `mcodec` (and its own dependencies), so that
//! `codec/tests/fuzz_crashes.rs` can include this directory and replay crash inputs and
//! seeds through exactly the checks the fuzzers run.

pub mod bitpack;
pub mod container_open;
pub mod delta_decode;
pub mod poison;
pub mod rans_chunk;
pub mod round_trip;
pub mod safetensors_header;
pub mod stream_decode;
pub mod tensor_decode;

/// Runs the check of fuzz target `target` on `data`; false if there is no such target.
pub fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "bitpack" => bitpack::check(data),
        "container_open" => container_open::check(data),
        "delta_decode" => delta_decode::check(data),
        "poison" => poison::check(data),
        "rans_chunk" => rans_chunk::check(data),
        "round_trip" => round_trip::check(data),
        "safetensors_header" => safetensors_header::check(data),
        "stream_decode" => stream_decode::check(data),
        "tensor_decode" => tensor_decode::check(data),
        _ => return false,
    }
    true
}

use mcodec::container::{replace_index, Archive, ContainerError, Index, BLOCK};
use xxhash_rust::xxh3::xxh3_64;

/// Largest total original size a fuzz input may make the reader decode. A `.mcz` file may
/// legitimately expand without bound (a `Const` stream codes any number of elements in
/// three bytes), so the targets skip decoding beyond this instead of running out of memory.
pub const MAX_DECODED: u64 = 4 << 20;

/// Opens `bytes` as an archive and, if that works and the claimed size is small enough,
/// decodes everything it can. Must never panic; the result is ignored except for
/// invariants that hold for every successful read.
pub fn exercise_archive(bytes: &[u8]) -> Option<Archive<'_>> {
    let archive = Archive::open(bytes).ok()?;
    let index = archive.index();
    if index.original_len > MAX_DECODED {
        return Some(archive);
    }
    for (i, t) in index.tensors.iter().enumerate() {
        if let Ok(dec) = archive.tensor_decoder(i) {
            let _ = dec.stream_kinds();
            let _ = dec.first_field_entropy();
            let mut buf = vec![0xA5u8; t.original_len as usize];
            let _ = dec.decode(&mut buf);
            // A buffer of the wrong size must be refused, not written past.
            let mut wrong = vec![0u8; buf.len() + 1];
            assert!(dec.decode(&mut wrong).is_err());
        }
    }
    let mut out = Vec::new();
    if archive.unpack_to(&mut out, &|_| {}).is_ok() {
        assert_eq!(out.len() as u64, index.original_len, "unpacked size");
        // `verify` also checks the stream checksums, which decoding skips (FORMAT.md §6):
        // it may refuse damage that changes nothing decoded, and nothing else.
        match archive.verify(&|_| {}) {
            Ok(n) => assert_eq!(n, index.original_len, "verified size"),
            Err(ContainerError::Checksum {
                what: mcodec::container::Part::Stream { .. },
                ..
            }) => {}
            Err(e) => panic!("unpacks but does not verify: {e}"),
        }
    }
    Some(archive)
}

fn word(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Rewrites the trailer of `file` so that its magic, index checksum, original length and
/// own checksum are right for the index bytes it points at. Returns false when the trailer
/// does not point at a plausible index.
pub fn repair_trailer(file: &mut [u8]) -> bool {
    let len = file.len();
    if len < 2 * BLOCK as usize {
        return false;
    }
    let t = len - BLOCK as usize;
    let (offset, index_len) = (word(file, t), word(file, t + 8));
    if offset.checked_add(index_len) != Some(t as u64) {
        return false;
    }
    let index = &file[offset as usize..t];
    let sum = xxh3_64(index);
    // Since 1.2 the index may be zstd-coded (trailer bytes 32..41): read the length from
    // its decoded bytes.
    let trailer_bytes: &[u8; BLOCK as usize] = file[t..].try_into().expect("64 bytes");
    let decoded = mcodec::container::StoredForm::from_trailer(trailer_bytes)
        .ok()
        .and_then(|form| form.index_bytes(index).ok());
    let raw = decoded.as_deref().unwrap_or(index);
    let original_len = raw.get(1..9).map(|b| word(b, 0)).unwrap_or(0);
    file[t + 16..t + 24].copy_from_slice(&sum.to_le_bytes());
    file[t + 24..t + 32].copy_from_slice(&original_len.to_le_bytes());
    file[t + 48..t + 56].copy_from_slice(&mcodec::container::TRAILER_MAGIC);
    let check = xxh3_64(&file[t..t + 56]);
    file[t + 56..t + 64].copy_from_slice(&check.to_le_bytes());
    true
}

/// Given a file whose index parses, recomputes every stream checksum, the prefix checksum
/// and every tensor checksum (from what the streams decode to), so that the whole decode
/// path runs on the mutated stream contents. Returns `None` if the index cannot be rebuilt.
pub fn repair_checksums(file: &[u8]) -> Option<Vec<u8>> {
    let archive = Archive::open(file).ok()?;
    let mut index: Index = archive.index().clone();
    if index.original_len > MAX_DECODED {
        return None;
    }
    let sum_of = |s: &mcodec::container::StreamRef| {
        xxh3_64(&file[s.offset as usize..(s.offset + s.len) as usize])
    };
    index.prefix.stream.checksum = sum_of(&index.prefix.stream);
    for t in &mut index.tensors {
        for s in &mut t.streams {
            s.checksum = sum_of(s);
        }
    }
    let mut out = file.to_vec();
    replace_index(&mut out, &index).ok()?;
    // Now the streams check; fill in the checksums of what they decode to.
    let archive = Archive::open(&out).ok()?;
    let p = &index.prefix;
    let stored = &out[p.stream.offset as usize..(p.stream.offset + p.stream.len) as usize];
    let raw = if p.zstd {
        zstd::bulk::decompress(stored, p.raw_len as usize).ok()
    } else {
        Some(stored.to_vec())
    };
    if let Some(raw) = raw {
        index.prefix.raw_checksum = xxh3_64(&raw);
    }
    for (i, t) in index.tensors.iter_mut().enumerate() {
        if let Ok(dec) = archive.tensor_decoder(i) {
            let mut buf = vec![0u8; t.original_len as usize];
            if dec.decode(&mut buf).is_ok() {
                t.checksum = xxh3_64(&buf);
            }
        }
    }
    drop(archive);
    replace_index(&mut out, &index).ok()?;
    Some(out)
}

/// Decodes every tensor of `archive` several ways, each into a buffer pre-filled with a
/// different poison value: whole (twice, poisons 0x00 and 0xFF), in pieces of a few sizes,
/// and the whole file in parallel (`unpack_into`) and streamed (`unpack_to`). Whatever
/// succeeds must give identical bytes, so no output byte can be left unwritten.
pub fn decode_with_poison(archive: &Archive<'_>) {
    let index = archive.index();
    if index.original_len > MAX_DECODED {
        return;
    }
    for (i, t) in index.tensors.iter().enumerate() {
        let len = t.original_len as usize;
        let mut zeros = vec![0x00u8; len];
        let mut ones = vec![0xFFu8; len];
        let rz = archive.decode_tensor(i, &mut zeros);
        let ro = archive.decode_tensor(i, &mut ones);
        assert_eq!(
            rz.is_ok(),
            ro.is_ok(),
            "tensor {i}: success depends on the poison"
        );
        if rz.is_err() {
            continue;
        }
        assert!(
            zeros == ones,
            "tensor {i}: unwritten bytes survive decoding"
        );
        let dec = match archive.tensor_decoder(i) {
            Ok(dec) => dec,
            // Decoding skips the stream checksums and checks the output instead (FORMAT.md
            // §6): damage to stream bytes that changes nothing decoded is caught only by
            // the stream checksum, which `tensor_decoder` checks.
            Err(ContainerError::Checksum { .. }) => continue,
            Err(e) => panic!("tensor {i} decoded but its decoder fails: {e}"),
        };
        for piece in [1usize, 777, 1 << 16] {
            let mut pieces = vec![0x77u8; len];
            let mut next = 0;
            dec.decode_pieces(piece, &mut |bytes, range| {
                assert_eq!(range.start, next, "pieces out of order");
                assert_eq!(range.len(), bytes.len());
                next = range.end;
                pieces[range].copy_from_slice(bytes);
                Ok(())
            })
            .expect("piecewise decode fails where a whole decode succeeds");
            assert_eq!(next, len, "pieces do not cover the tensor");
            assert!(
                pieces == zeros,
                "tensor {i}: pieces of {piece} bytes differ"
            );
        }
    }
    let len = index.original_len as usize;
    let mut streamed = Vec::new();
    let rs = archive.unpack_to(&mut streamed, &|_| {});
    let mut a = vec![0x00u8; len];
    let mut b = vec![0xFFu8; len];
    let ra = archive.unpack_into(&mut a);
    let rb = archive.unpack_into(&mut b);
    assert_eq!(
        ra.is_ok(),
        rb.is_ok(),
        "unpack_into: success depends on the poison"
    );
    assert_eq!(ra.is_ok(), rs.is_ok(), "unpack_into and unpack_to disagree");
    if ra.is_ok() {
        assert!(a == b, "unpack_into leaves bytes unwritten");
        assert!(
            a == streamed,
            "unpack_into and unpack_to give different bytes"
        );
    }
}
