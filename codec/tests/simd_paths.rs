//! Every code path this CPU has (scalar, AVX2, AVX-512) must write and read exactly the
//! bytes the portable scalar path does: the golden files (format identity) and round trips
//! of every float dtype at odd sizes. This test binary holds a single test because the
//! path switch is process-wide.
//!
//! The test fails, rather than skips, when a path the CPU supports did not run: each path's
//! kernel counters must have moved while it was selected. It prints the paths that ran.

mod common;

use std::io::Write;

use common::{fixtures_dir as fixtures, unpack, FIXTURES_1_0, RAW_ROWS, SKEWED};
use mcodec::container::{pack, PackOptions};
use mcodec::cpu::{kernel_runs, set_simd_level, simd_level, SimdLevel};
use mcodec::{tensor, Dtype, EncodeOptions, StreamKind, TensorDecoder};

/// Weight-like elements (a narrow exponent range, random mantissas, a few specials) of
/// `esize` bytes each: xorshift, deterministic.
fn weights(n: usize, esize: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut out = Vec::with_capacity(n * esize);
    for _ in 0..n {
        let r = next();
        let bits: u64 = match esize {
            2 => {
                let exp = 0x3C00 + ((r.trailing_zeros() as u64).min(12) << 7);
                (exp ^ (r >> 48) & 0x807F) | if r % 997 == 0 { 0x7F81 } else { 0 }
            }
            4 => {
                let exp = 0x3C00_0000 + ((r.trailing_zeros() as u64).min(12) << 23);
                exp ^ (r >> 32) & 0x807F_FFFF
            }
            _ => r >> 56,
        };
        out.extend_from_slice(&bits.to_le_bytes()[..esize]);
    }
    out
}

/// [`weights`] whose sign follows the magnitude: only the elements of the smallest
/// exponent keep a random sign, all others are positive (about 75 % in all), as in a
/// shifted embedding. The writer then codes the sign with the exponent (the joint split
/// codecs); a sign skewed independently of the magnitude would not pay for them.
fn skewed(n: usize, esize: usize, seed: u64) -> Vec<u8> {
    let mut data = weights(n, esize, seed);
    for e in data.chunks_exact_mut(esize) {
        let smallest = e[esize - 1] & 0x7F == 0x3C && e[esize - 2] & 0x80 == 0;
        if !smallest {
            e[esize - 1] &= 0x7F;
        }
    }
    data
}

/// F32 [`weights`] whose lowest mantissa byte is zero in about three elements of four (a
/// rounded tensor): the writer codes that byte and keeps the one above it packed, so the
/// decoder merges a decoded field with one it reads in place.
fn low_byte_skewed(n: usize, seed: u64) -> Vec<u8> {
    let mut data = weights(n, 4, seed);
    for (i, e) in data.chunks_exact_mut(4).enumerate() {
        if (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 62 != 0 {
            e[0] = 0;
        }
    }
    data
}

/// [`weights`] with special values sprinkled in (about one element in 16): NaNs with
/// payloads and both signs, ±0, ±infinity, subnormals (smallest and largest), the largest
/// finite values.
fn with_specials(n: usize, esize: usize, seed: u64) -> Vec<u8> {
    let specials: &[u32] = &[
        0x7FC0_1234,
        0xFF80_0001,
        0x7F80_0001,
        0xFFFF_FFFF,
        0x8000_0000,
        0x0000_0000,
        0x7F80_0000,
        0xFF80_0000,
        0x0000_0001,
        0x807F_FFFF,
        0x0040_0000,
        0x7F7F_FFFF,
        0xFF7F_FFFF,
        0x7E00_7C01,
        0xFC01_8001,
        0x03FF_83FF,
    ];
    let mut data = weights(n, esize, seed);
    for (i, e) in data.chunks_exact_mut(esize).enumerate() {
        let h = (i as u64 ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56;
        if h < 16 {
            let v = specials[(h as usize + i) % specials.len()];
            // 16-bit elements take the top half (BF16-like) or the low half (F16 patterns).
            let v = match esize {
                2 if h.is_multiple_of(2) => v >> 16,
                _ => v,
            };
            e.copy_from_slice(&v.to_le_bytes()[..esize]);
        }
    }
    data
}

/// F32 [`weights`] whose two low mantissa bytes are zero in about three elements of four
/// (values rounded to BF16-like precision, as in MiniLM's word embedding): the writer codes
/// both bytes, and the decoder decodes them straight into bytes for the merge.
fn low_bytes_skewed(n: usize, seed: u64) -> Vec<u8> {
    let mut data = weights(n, 4, seed);
    for (i, e) in data.chunks_exact_mut(4).enumerate() {
        if (i as u64 ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 62 != 0 {
            e[0] = 0;
            e[1] = 0;
        }
    }
    data
}

/// F16 [`weights`] whose second field (sign and the low seven mantissa bits) is zero in
/// about three elements of four: the writer codes that field, and the decoder decodes it
/// straight into bytes for the merge.
fn f16_low_skewed(n: usize, seed: u64) -> Vec<u8> {
    let mut data = weights(n, 2, seed);
    for (i, e) in data.chunks_exact_mut(2).enumerate() {
        if (i as u64 ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 62 != 0 {
            e[0] &= 0x80;
            e[1] &= 0x7F;
        }
    }
    data
}

#[test]
fn every_supported_path_writes_and_reads_the_scalar_paths_bytes() {
    let supported = SimdLevel::supported();
    let mut ran = Vec::new();
    // Small chunks so that the sizes below span many chunks and odd tails.
    let opts = EncodeOptions {
        chunk_log2: *tensor::CHUNK_LOG2_RANGE.start(),
        // At most the chunk length: with the default (2^12) the options were invalid and
        // every tensor below was stored raw, testing no coder at all.
        block_log2: 8,
        ..EncodeOptions::default()
    };
    assert!(opts.validate().is_ok());
    let tensors: Vec<(Dtype, Vec<u8>)> = [0usize, 1, 31, 33, 1000, 4097, 70_001]
        .into_iter()
        .enumerate()
        .flat_map(|(i, n)| {
            [
                (Dtype::BF16, weights(n, 2, 11 + i as u64)),
                (Dtype::F16, weights(n, 2, 23 + i as u64)),
                (Dtype::F32, weights(n, 4, 37 + i as u64)),
                (Dtype::F8E4M3, weights(n, 1, 41 + i as u64)),
                (Dtype::BF16, skewed(n, 2, 53 + i as u64)),
                (Dtype::F16, skewed(n, 2, 59 + i as u64)),
                (Dtype::F32, skewed(n, 4, 61 + i as u64)),
                (Dtype::F32, low_byte_skewed(n, 67 + i as u64)),
            ]
        })
        .collect();
    let mut reference: Vec<Vec<Vec<u8>>> = Vec::new();
    for &level in &supported {
        set_simd_level(level).unwrap();
        assert_eq!(simd_level(), level);
        let before = kernel_runs();
        for name in FIXTURES_1_0.iter().chain([SKEWED, RAW_ROWS].iter()) {
            let input = std::fs::read(fixtures().join("data").join(name)).unwrap();
            let golden = std::fs::read(fixtures().join("golden").join(format!("{name}.mcz")));
            let golden = golden.unwrap();
            let mut packed = Vec::new();
            pack(&input, &PackOptions::default(), &mut packed, &|_| {}).unwrap();
            assert!(
                packed == golden,
                "{name}: {level} encoder differs from golden"
            );
            assert!(
                unpack(&golden).unwrap() == input,
                "{name}: {level} decode of golden"
            );
            for old in ["chunk16", "v1.0"] {
                if !FIXTURES_1_0.contains(name) {
                    continue;
                }
                let path = fixtures().join("golden").join(old);
                let old_file = std::fs::read(path.join(format!("{name}.mcz")));
                assert!(
                    unpack(&old_file.unwrap()).unwrap() == input,
                    "{name}: {level} {old} decode"
                );
            }
        }
        let mut streams_of_level = Vec::new();
        let mut joint = 0;
        let mut split = 0;
        // F32 tensors with one mantissa byte coded and the other packed.
        let mut mixed_bytes = 0;
        for (dtype, data) in &tensors {
            let enc = tensor::encode(dtype, data, &opts);
            joint += usize::from(enc.codec.id() >= 6);
            split += usize::from(matches!(enc.codec, tensor::Codec::Split(_)));
            let owned: Vec<Vec<u8>> = enc.streams.iter().map(|s| s.to_vec()).collect();
            let views: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
            let dec = TensorDecoder::new(enc.codec, enc.chunk_log2, data.len(), &views).unwrap();
            if let [_, _, mid, low] = dec.stream_kinds()[..] {
                mixed_bytes +=
                    usize::from((mid == StreamKind::Packed) != (low == StreamKind::Packed));
            }
            let mut out = vec![0xA5u8; data.len()];
            dec.decode(&mut out).unwrap();
            assert!(out == *data, "{dtype} × {}: {level} round trip", data.len());
            streams_of_level.push(owned.concat());
        }
        // The skewed tensors take the joint codecs (the large ones at least, one per dtype).
        assert!(joint >= 3, "{level}: {joint} joint tensors");
        assert!(split >= 15, "{level}: {split} split-coded tensors");
        assert!(
            mixed_bytes >= 2,
            "{level}: {mixed_bytes} F32 tensors with mixed byte fields"
        );
        // Longer chunks than above, of many blocks (32 to 4,096 elements) or of one
        // (8,192), short last chunks and odd lengths, special values.
        // F32 tensors with both mantissa bytes coded beside a packed residual, F16 with a
        // coded second field: the fields the decoder decodes straight into bytes.
        let mut coded_bytes = [0usize; 2];
        for (chunk_log2, block_log2) in [(14, 5), (14, 12), (13, 13), (15, 9)] {
            let opts = EncodeOptions {
                chunk_log2,
                block_log2,
                ..EncodeOptions::default()
            };
            for (i, n) in [9_000usize, 40_961, 70_001].into_iter().enumerate() {
                let seed = 100 + 10 * i as u64 + u64::from(block_log2);
                for (dtype, data) in [
                    (Dtype::BF16, with_specials(n, 2, seed)),
                    (Dtype::F16, with_specials(n, 2, seed + 1)),
                    (Dtype::F32, with_specials(n, 4, seed + 2)),
                    (Dtype::F32, skewed(n, 4, seed + 3)),
                    (Dtype::F32, low_byte_skewed(n, seed + 4)),
                    (Dtype::BF16, skewed(n, 2, seed + 5)),
                    (Dtype::F16, skewed(n, 2, seed + 6)),
                    (Dtype::F32, low_bytes_skewed(n, seed + 7)),
                    (Dtype::F16, f16_low_skewed(n, seed + 8)),
                ] {
                    let enc = tensor::encode(&dtype, &data, &opts);
                    let owned: Vec<Vec<u8>> = enc.streams.iter().map(|s| s.to_vec()).collect();
                    let views: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
                    let dec =
                        TensorDecoder::new(enc.codec, enc.chunk_log2, data.len(), &views).unwrap();
                    match (&dtype, &dec.stream_kinds()[..]) {
                        (Dtype::F32, [_, StreamKind::Packed, m, l]) => {
                            coded_bytes[0] += usize::from(
                                matches!(m, StreamKind::Rans(_))
                                    && matches!(l, StreamKind::Rans(_)),
                            );
                        }
                        (Dtype::F16, [_, StreamKind::Rans(_)]) => coded_bytes[1] += 1,
                        _ => {}
                    }
                    let mut out = vec![0xA5u8; data.len()];
                    dec.decode(&mut out).unwrap();
                    assert!(
                        out == data,
                        "{dtype} × {n}, chunk 2^{chunk_log2}, block 2^{block_log2}: {level} \
                         round trip ({})",
                        enc.codec.name()
                    );
                    streams_of_level.push(owned.concat());
                }
            }
        }
        assert!(
            coded_bytes[0] >= 3 && coded_bytes[1] >= 3,
            "{level}: coded byte fields (F32, F16): {coded_bytes:?}"
        );
        if let Some(first) = reference.first() {
            assert!(*first == streams_of_level, "{level} tensor streams differ");
        }
        reference.push(streams_of_level);
        if kernel_runs()[level as usize] > before[level as usize] {
            ran.push(level);
        }
    }
    mcodec::cpu::reset_simd_level();
    let names = |v: &[SimdLevel]| v.iter().map(|l| l.name()).collect::<Vec<_>>().join(", ");
    // Written to stderr directly, not with `println!`, so that the harness does not
    // capture it: CI logs show which paths ran.
    writeln!(
        std::io::stderr(),
        "simd_paths: code paths supported by this CPU: {}; paths that ran: {}",
        names(&supported),
        names(&ran)
    )
    .unwrap();
    assert_eq!(
        ran,
        supported,
        "a path this CPU supports did not run (supported: {}, ran: {})",
        names(&supported),
        names(&ran)
    );
}
