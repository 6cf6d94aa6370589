use super::decode::SINK_STEP_BYTES;
use super::encode::encode_split;
use super::prefault::{first_unmapped_page, head_owned_by_earlier, page_size, prefault, Shares};
use super::*;
use crate::dtype::Dtype;
use crate::entropy::stream::{CodedStream, StreamKind};

fn round_trip(dtype: &Dtype, data: &[u8], opts: &EncodeOptions) -> EncodedTensor {
    let enc = encode(dtype, data, opts);
    let owned: Vec<Vec<u8>> = enc.streams.iter().map(CodedStream::to_vec).collect();
    let streams: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    let dec = TensorDecoder::new(enc.codec, enc.chunk_log2, data.len(), &streams).unwrap();
    let mut out = vec![0xA5u8; data.len()];
    dec.decode(&mut out).unwrap();
    assert_eq!(out, data, "{dtype} via {}", enc.codec.name());
    enc
}

fn gaussian_bf16(n: usize) -> Vec<u8> {
    let mut seed = 42u64;
    (0..n)
        .flat_map(|_| {
            let mut acc = 0.0f32;
            for _ in 0..4 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                acc += (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            let bits = (acc * 0.03).to_bits();
            ((bits >> 16) as u16).to_le_bytes()
        })
        .collect()
}

#[test]
fn bf16_weights_compress_and_round_trip() {
    let data = gaussian_bf16(300_001);
    let opts = EncodeOptions {
        chunk_log2: 14,
        ..Default::default()
    };
    let enc = round_trip(&Dtype::BF16, &data, &opts);
    assert_eq!(enc.codec, Codec::Split(Layout::Bf16));
    assert!(
        enc.coded_len() * 100 < data.len() * 72,
        "{} of {}",
        enc.coded_len(),
        data.len()
    );
}

/// How a piece test cuts a tensor: the unit's size in bytes (None where the codec has
/// no chunks), the decoder of whole units at an offset, units per piece, and the
/// element counts to try.
struct PieceUnit {
    unit_bytes: fn(&TensorDecoder<'_>) -> Option<usize>,
    decode: fn(&TensorDecoder<'_>, usize, &mut [u8]) -> Result<(), TensorError>,
    unit_elements: usize,
    units_per_piece: [usize; 2],
    lengths: &'static [usize],
}

/// Decodes every tensor of `unit`'s lengths piece by piece, last piece first, and checks
/// the result against the whole tensor; then that misaligned, oversized and
/// out-of-range pieces are refused.
fn check_pieces(unit: &PieceUnit) {
    let opts = EncodeOptions {
        chunk_log2: 10,
        block_log2: 10,
        ..EncodeOptions::default()
    };
    for dtype in [Dtype::BF16, Dtype::F16, Dtype::F32, Dtype::F8E4M3] {
        for &n in unit.lengths {
            let width = dtype.element_size().unwrap();
            let data: Vec<u8> = gaussian_bf16(n * width / 2 + 1)[..n * width].to_vec();
            let enc = round_trip(&dtype, &data, &opts);
            let owned: Vec<Vec<u8>> = enc.streams.iter().map(CodedStream::to_vec).collect();
            let streams: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
            let dec = TensorDecoder::new(enc.codec, enc.chunk_log2, data.len(), &streams).unwrap();
            let Some(unit_bytes) = (unit.unit_bytes)(&dec) else {
                assert!((unit.decode)(&dec, 0, &mut vec![0; data.len()]).is_err());
                continue;
            };
            assert_eq!(unit_bytes, unit.unit_elements * width);
            for units in unit.units_per_piece {
                let piece = unit_bytes * units;
                let mut out = vec![0xA5u8; data.len()];
                let starts: Vec<usize> = (0..data.len()).step_by(piece).collect();
                for &at in starts.iter().rev() {
                    let end = (at + piece).min(data.len());
                    (unit.decode)(&dec, at, &mut out[at..end]).unwrap();
                }
                assert!(out == data, "{dtype} n {n} units {units}");
            }
            let mut out = vec![0u8; unit_bytes + 2];
            if data.len() > unit_bytes + 2 {
                assert!((unit.decode)(&dec, 0, &mut out).is_err());
            }
            assert!((unit.decode)(&dec, unit_bytes / 2, &mut out[..unit_bytes]).is_err());
            assert!((unit.decode)(&dec, data.len(), &mut out[..2]).is_err());
        }
    }
}

/// Pieces of whole chunk pairs, decoded in any order on this thread, give what a whole
/// decode gives (every layout, a short last pair, a tensor shorter than one pair);
/// other ranges, and codecs without chunks, are refused.
#[test]
fn pieces_decode_what_the_whole_tensor_decodes() {
    check_pieces(&PieceUnit {
        unit_bytes: |dec| dec.pair_bytes(),
        decode: |dec, at, out| dec.decode_piece(at, out),
        unit_elements: 2 * 1024,
        units_per_piece: [1, 2],
        lengths: &[5000, 2048, 700],
    });
}

/// Pieces of whole chunks (not pairs), in any order, give what a whole decode gives
/// (every layout, a short last chunk, a tensor shorter than one chunk, pieces that
/// start on the second chunk of a pair); other ranges are refused.
#[test]
fn chunk_pieces_decode_what_the_whole_tensor_decodes() {
    check_pieces(&PieceUnit {
        unit_bytes: |dec| dec.chunk_bytes(),
        decode: |dec, at, out| dec.decode_chunks(at, out),
        unit_elements: 1024,
        units_per_piece: [1, 3],
        lengths: &[5000, 2048, 1024, 700],
    });
}

/// With one thread, `decode_overlapped` hands the output over in merge steps of at
/// most [`SINK_STEP_BYTES`] (an FP8 chunk pair coded straight into its bytes: the
/// pair), in order and all of it, and the bytes are the tensor's: every layout, coded
/// and packed byte fields, a short last pair and a tail that is no whole step; with
/// two threads, whole pieces as before.
#[test]
fn one_thread_overlapped_decode_hands_over_every_step_in_order() {
    let opts = EncodeOptions {
        chunk_log2: 14,
        ..EncodeOptions::default()
    };
    let n = 3 * (1 << 14) + 777;
    for (dtype, skew) in [
        (Dtype::BF16, false),
        (Dtype::F16, false),
        (Dtype::F32, false),
        (Dtype::F32, true),
        (Dtype::F8E4M3, false),
    ] {
        let width = dtype.element_size().unwrap();
        let mut data: Vec<u8> = gaussian_bf16(n * width / 2 + 1)[..n * width].to_vec();
        if skew {
            // Few values in both low mantissa bytes: the writer codes them, and the
            // decoder decodes them into bytes.
            for e in data.chunks_exact_mut(4) {
                e[0] &= 0x0F;
                e[1] &= 0x07;
            }
        }
        let enc = round_trip(&dtype, &data, &opts);
        assert!(matches!(enc.codec, Codec::Split(_)), "{dtype}");
        let owned: Vec<Vec<u8>> = enc.streams.iter().map(CodedStream::to_vec).collect();
        let streams: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let dec = TensorDecoder::new(enc.codec, enc.chunk_log2, data.len(), &streams).unwrap();
        if skew {
            let kinds = dec.stream_kinds();
            assert!(
                matches!(kinds[2], StreamKind::Rans(_)) && matches!(kinds[3], StreamKind::Rans(_)),
                "{kinds:?}"
            );
        }
        let pair = dec.pair_bytes().unwrap();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut out = vec![0xA5u8; data.len()];
            let out_start = out.as_ptr() as usize;
            let mut pieces: Vec<(usize, usize)> = Vec::new();
            pool.install(|| {
                dec.decode_overlapped(&mut out, &mut |piece| {
                    pieces.push((piece.as_ptr() as usize - out_start, piece.len()));
                })
            })
            .unwrap();
            assert!(out == data, "{dtype} {threads} threads");
            let mut at = 0;
            for &(start, len) in &pieces {
                assert_eq!(start, at, "{dtype} {threads} threads: out of order");
                at += len;
            }
            assert_eq!(at, data.len(), "{dtype} {threads} threads");
            let largest = pieces.iter().map(|p| p.1).max().unwrap();
            // FP8 takes no steps (its one field is decoded straight into the output)
            // and F32 none by choice (see `decode_overlapped`): one pair per piece.
            match (threads, matches!(dtype, Dtype::F8E4M3 | Dtype::F32)) {
                (1, false) => assert!(largest <= SINK_STEP_BYTES, "{dtype}: {largest}"),
                (1, true) => assert!(largest <= pair, "{dtype}: {largest}"),
                _ => assert!(largest > SINK_STEP_BYTES, "{dtype}: {largest}"),
            }
        }
    }
}

/// Byte fields with raw blocks (mode 5) amid coded ones: the merge reads the raw
/// runs where they lie in the payloads, in parts cut at the runs' ends, whole chunks,
/// one-thread steps and pieces alike (F32's two mantissa bytes, F16's first field).
#[test]
fn raw_runs_of_byte_fields_are_merged_in_place() {
    let opts = EncodeOptions {
        chunk_log2: 14,
        ..EncodeOptions::default()
    };
    let n = 3 * (1 << 14) + 777;
    let mut next = crate::entropy::xorshift(7);
    // Rows of 1,000 elements: every third one noise in the fields the decoder
    // reads as bytes (raw blocks), the others few values (coded blocks).
    let noisy = |i: usize| (i / 1000) % 3 == 1;
    let f32s: Vec<u8> = gaussian_bf16(2 * n)
        .chunks_exact(4)
        .enumerate()
        .flat_map(|(i, e)| {
            let r = next();
            let (lo, mid) = if noisy(i) {
                (r as u8, (r >> 8) as u8)
            } else {
                (r as u8 & 0x0F, (r >> 8) as u8 & 0x07)
            };
            [lo, mid, e[2], e[3]]
        })
        .collect();
    let f16s: Vec<u8> = gaussian_bf16(n)
        .chunks_exact(2)
        .enumerate()
        .flat_map(|(i, e)| {
            let r = next();
            let hi = if noisy(i) { r as u8 } else { e[1] };
            [e[0], hi]
        })
        .collect();
    for (dtype, data) in [(Dtype::F32, f32s), (Dtype::F16, f16s)] {
        let enc = round_trip(&dtype, &data, &opts);
        let owned: Vec<Vec<u8>> = enc.streams.iter().map(CodedStream::to_vec).collect();
        let streams: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let raw_fields = owned.iter().filter(|s| s.first() == Some(&5)).count();
        let expected = if dtype == Dtype::F32 { 2 } else { 1 };
        assert_eq!(raw_fields, expected, "{dtype}: streams with raw blocks");
        let dec = TensorDecoder::new(enc.codec, enc.chunk_log2, data.len(), &streams).unwrap();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut out = vec![0xA5u8; data.len()];
            pool.install(|| dec.decode(&mut out)).unwrap();
            assert!(out == data, "{dtype} {threads} threads: decode");
            let mut out = vec![0x5Au8; data.len()];
            let mut seen = 0;
            pool.install(|| dec.decode_overlapped(&mut out, &mut |p| seen += p.len()))
                .unwrap();
            assert!(
                out == data && seen == data.len(),
                "{dtype} {threads} threads"
            );
        }
    }
}

#[test]
fn every_dtype_round_trips_including_odd_sizes() {
    let data = gaussian_bf16(5000);
    for name in [
        "BF16", "F16", "F32", "F8_E4M3", "F8_E5M2", "I64", "U8", "BOOL", "F64", "X9",
    ] {
        for len in [0, 1, 2, 3, 4, 8, 63, 64, 1000, 9999, 10000] {
            for opts in [EncodeOptions::default(), EncodeOptions::fast()] {
                round_trip(&Dtype::parse(name), &data[..len], &opts);
            }
        }
    }
    round_trip(&Dtype::F32, &data, &EncodeOptions::max());
}

/// The tensor's stream kinds, from its encoded form.
fn kinds(enc: &EncodedTensor, len: usize) -> Vec<StreamKind> {
    let owned: Vec<Vec<u8>> = enc.streams.iter().map(CodedStream::to_vec).collect();
    let streams: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    TensorDecoder::new(enc.codec, enc.chunk_log2, len, &streams)
        .unwrap()
        .stream_kinds()
}

/// The fast level round-trips every float dtype bit-exactly over several chunks,
/// specials included (NaNs with payloads, ±0.0, ±inf, subnormals); it gives one table
/// to a field of steady statistics and keeps several for one whose scale drifts from
/// block to block, as the default level does.
#[test]
fn fast_level_round_trips_and_keeps_several_tables_where_they_pay() {
    let fast = EncodeOptions {
        chunk_log2: 14,
        ..EncodeOptions::fast()
    };
    // F32 weights whose scale changes every 2048 elements (period 3 blocks, so the
    // encoder's sample of every 16th block sees every scale).
    let noise = gaussian_bf16(128 * 2048);
    let mut f32s: Vec<u8> = noise
        .as_chunks::<2>()
        .0
        .iter()
        .enumerate()
        .flat_map(|(i, w)| {
            let low = (i as u32).wrapping_mul(2_654_435_761) >> 16;
            let x = f32::from_bits(u32::from(u16::from_le_bytes(*w)) << 16 | low);
            (x * [1.0f32, 1e-3, 30.0][(i / 2048) % 3]).to_le_bytes()
        })
        .collect();
    let specials: [u32; 8] = [
        0x7FC0_0000,
        0xFFC0_0001,
        0x7F80_0001,
        0x8000_0000,
        0x0000_0000,
        0x7F80_0000,
        0xFF80_0000,
        0x0000_0001,
    ];
    for (k, s) in specials.iter().enumerate() {
        let at = 4 * (k * 30_011 % (f32s.len() / 4));
        f32s[at..at + 4].copy_from_slice(&s.to_le_bytes());
    }
    let enc = round_trip(&Dtype::F32, &f32s, &fast);
    let multi = kinds(&enc, f32s.len());
    assert!(
        matches!(multi[0], StreamKind::Rans(t) if t >= 2),
        "{multi:?}"
    );
    let default = round_trip(&Dtype::F32, &f32s, &EncodeOptions::default());
    assert!(
        enc.coded_len() as f64 <= default.coded_len() as f64 * 1.01,
        "fast {} vs default {}",
        enc.coded_len(),
        default.coded_len()
    );
    // Steady statistics: one table, and no more than a percent over the default.
    let steady = gaussian_bf16(100_000);
    let enc = round_trip(&Dtype::BF16, &steady, &fast);
    assert_eq!(kinds(&enc, steady.len())[0], StreamKind::Rans(1));
    let default = round_trip(&Dtype::BF16, &steady, &EncodeOptions::default());
    assert!(enc.coded_len() as f64 <= default.coded_len() as f64 * 1.01);
    // Every dtype over the same bytes, odd tails cut off, specials included.
    for name in ["BF16", "F16", "F32", "F8_E4M3", "F8_E5M2"] {
        for len in [f32s.len(), f32s.len() - 3, 70_001, 4097] {
            let dtype = Dtype::parse(name);
            let len = len - len % dtype.element_size().unwrap();
            round_trip(&dtype, &f32s[..len], &fast);
            round_trip(&dtype, &f32s[..len], &EncodeOptions::fast());
        }
    }
}

#[test]
fn incompressible_data_is_stored() {
    let mut seed = 7u64;
    let data: Vec<u8> = (0..4096)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 56) as u8
        })
        .collect();
    assert_eq!(
        round_trip(&Dtype::F16, &data, &EncodeOptions::default()).codec,
        Codec::Stored
    );
    assert_eq!(
        round_trip(&Dtype::I32, &data, &EncodeOptions::default()).codec,
        Codec::Stored
    );
}

#[test]
fn decoder_rejects_mismatched_parameters() {
    let data = gaussian_bf16(10_000);
    let enc = encode(&Dtype::BF16, &data, &EncodeOptions::default());
    let owned: Vec<Vec<u8>> = enc.streams.iter().map(CodedStream::to_vec).collect();
    let streams: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    assert!(TensorDecoder::new(enc.codec, 30, data.len(), &streams).is_err());
    assert!(TensorDecoder::new(enc.codec, enc.chunk_log2, data.len() + 2, &streams).is_err());
    assert!(TensorDecoder::new(enc.codec, enc.chunk_log2, data.len() + 1, &streams).is_err());
    assert!(TensorDecoder::new(
        Codec::Split(Layout::F32),
        enc.chunk_log2,
        data.len(),
        &streams
    )
    .is_err());
    assert!(TensorDecoder::new(Codec::Stored, 0, data.len(), &streams[..1]).is_err());
}

/// `n` Gaussian-like weights of mean `mean` and standard deviation `std` as `dtype`
/// (F16, BF16 or F32; the narrow ones truncated), the negative ones scaled by
/// `negative_scale`. A mean of 1.08 σ makes 86 % of them positive, and the sign then
/// depends on the magnitude, as in a real embedding with skewed signs.
fn skewed(dtype: &Dtype, n: usize, mean: f32, std: f32, negative_scale: f32) -> Vec<u8> {
    let mut seed = 0x5157_u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut out = Vec::with_capacity(n * 4);
    for _ in 0..n {
        // Irwin–Hall: six uniforms have variance 1/2.
        let value = mean + ((0..6).map(|_| next()).sum::<f32>() - 3.0) * std * 1.41;
        let value = if value < 0.0 {
            value * negative_scale
        } else {
            value
        };
        let x = value.to_bits();
        match dtype {
            Dtype::F32 => out.extend_from_slice(&x.to_le_bytes()),
            Dtype::F16 => {
                // F16: normal values only (weights this small never overflow).
                let exp = ((x >> 23) & 0xFF) as i32 - 127 + 15;
                let h = if exp <= 0 {
                    (x >> 16) as u16 & 0x8000
                } else {
                    let mantissa = ((x >> 13) & 0x3FF) as u16;
                    ((x >> 16) as u16 & 0x8000) | ((exp as u16) << 10) | mantissa
                };
                out.extend_from_slice(&h.to_le_bytes());
            }
            _ => out.extend_from_slice(&((x >> 16) as u16).to_le_bytes()),
        }
    }
    out
}

/// Bits of an optimal Huffman code of the histogram's symbols (a static code over
/// single symbols can be no shorter).
fn huffman_bits(hist: &[u64]) -> u64 {
    use std::cmp::Reverse;
    let mut heap: std::collections::BinaryHeap<Reverse<u64>> = hist
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| Reverse(c))
        .collect();
    let mut bits = 0;
    while heap.len() > 1 {
        let (Reverse(a), Reverse(b)) = (heap.pop().unwrap(), heap.pop().unwrap());
        bits += a + b;
        heap.push(Reverse(a + b));
    }
    bits
}

/// A lower bound of what ZipNN stores for `data` (`esize`-byte floats): it groups the
/// bytes of each 256 KiB chunk by position in the element (with or without first
/// rotating the sign next to the mantissa; the bound takes the smaller) and Huffman
/// codes each group. Here each group costs its optimal Huffman code under its own
/// histogram, with no header or table: no such coder does better.
fn zipnn_lower_bound(data: &[u8], esize: usize) -> usize {
    let grouped_bits = |rotate: bool| -> u64 {
        data.chunks(256 << 10)
            .map(|chunk| {
                let mut hists = vec![vec![0u64; 256]; esize];
                for e in chunk.chunks_exact(esize) {
                    let mut w = [0u8; 4];
                    w[..esize].copy_from_slice(e);
                    let mut x = u32::from_le_bytes(w);
                    if rotate {
                        let top = 8 * esize as u32 - 1;
                        x = ((x << 1) | (x >> top)) & (((1u64 << (top + 1)) - 1) as u32);
                    }
                    for (g, h) in hists.iter_mut().enumerate() {
                        h[((x >> (8 * g)) & 0xFF) as usize] += 1;
                    }
                }
                hists.iter().map(|h| huffman_bits(h)).sum::<u64>()
            })
            .sum()
    };
    (grouped_bits(false).min(grouped_bits(true)) / 8) as usize
}

#[test]
fn skewed_signs_are_coded_with_the_exponent_and_no_larger_than_zipnn() {
    let n = 600_000;
    let cases = [
        // The case: an F16 embedding 86 % positive.
        (
            Dtype::F16,
            skewed(&Dtype::F16, n, 0.0216, 0.02, 1.0),
            Layout::F16Joint,
        ),
        // Signs balanced but tied to the magnitude: negatives 8 times smaller.
        (
            Dtype::BF16,
            skewed(&Dtype::BF16, n, 0.0, 0.04, 0.125),
            Layout::Bf16Joint,
        ),
        (
            Dtype::F32,
            skewed(&Dtype::F32, n / 2, 0.0216, 0.02, 1.0),
            Layout::F32Joint,
        ),
    ];
    for (dtype, data, joint) in cases {
        let opts = EncodeOptions::default();
        let enc = round_trip(&dtype, &data, &opts);
        let bound = zipnn_lower_bound(&data, joint.element_size());
        let base = Layout::for_dtype(&dtype).unwrap();
        let plain = encode_split(base, false, &data, &opts).unwrap();
        eprintln!(
            "{dtype}: {} {} plain {} bytes {:?}, ZipNN at least {bound} (of {})",
            enc.codec.name(),
            enc.coded_len(),
            plain.coded_len(),
            plain.streams.iter().map(|s| s.len()).collect::<Vec<_>>(),
            data.len()
        );
        assert_eq!(enc.codec, Codec::Split(joint), "{dtype}");
        assert!(
            enc.coded_len() <= bound,
            "{dtype}: {} > {bound}",
            enc.coded_len()
        );
        assert!(
            plain.coded_len() > enc.coded_len(),
            "{dtype}: the sign cost nothing"
        );
    }
    // The case is real: with the sign stored raw, F16 is larger than ZipNN.
    let data = skewed(&Dtype::F16, n, 0.0216, 0.02, 1.0);
    let plain = encode_split(Layout::F16, false, &data, &EncodeOptions::default()).unwrap();
    assert!(plain.coded_len() > zipnn_lower_bound(&data, 2));
}

#[test]
fn symmetric_signs_keep_the_plain_layouts() {
    for (dtype, data) in [
        (Dtype::BF16, gaussian_bf16(200_000)),
        (Dtype::F16, skewed(&Dtype::F16, 200_000, 0.0, 0.02, 1.0)),
        (Dtype::F32, skewed(&Dtype::F32, 100_000, 0.0, 0.02, 1.0)),
    ] {
        let enc = round_trip(&dtype, &data, &EncodeOptions::default());
        assert_eq!(
            enc.codec,
            Codec::Split(Layout::for_dtype(&dtype).unwrap()),
            "{dtype}"
        );
    }
}

#[test]
fn joint_codecs_have_their_own_ids_and_minor_version() {
    for id in 0..=255u8 {
        if let Some(codec) = Codec::from_id(id) {
            assert_eq!(codec.id(), id);
            let joint = matches!(codec, Codec::Split(l) if l.is_joint());
            assert_eq!(codec.minor_version(), u16::from(joint), "{}", codec.name());
            assert_eq!(joint, (6..=8).contains(&id));
        } else {
            assert!(id > 8);
        }
    }
}

/// A fresh private anonymous read-write mapping of `len` bytes (no page mapped yet),
/// which the caller unmaps.
#[cfg(target_os = "linux")]
fn fresh_anonymous_map(len: usize) -> *mut libc::c_void {
    // SAFETY: a new mapping at an address the kernel picks: nothing else is affected.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED);
    base
}

/// Whether `MADV_POPULATE_WRITE` maps pages here, probed on a mapping of its own
/// (independently of [`prefault`], which the test below checks).
#[cfg(target_os = "linux")]
fn populate_write_works(page: usize) -> bool {
    let len = 4 * page;
    let base = fresh_anonymous_map(len);
    // SAFETY: the fresh mapping just made, advised, probed and unmapped here.
    unsafe {
        let advised = libc::madvise(base, len, libc::MADV_POPULATE_WRITE) == 0;
        let mapped = first_unmapped_page(base as usize, base as usize + len, page).is_none();
        assert_eq!(libc::munmap(base, len), 0);
        advised && mapped
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_huge_block_is_left_to_the_share_it_starts_in() {
    const B: usize = 2 << 20;
    const M: usize = 1 << 20;
    const J: usize = 64 * 4096;
    // A slice of 1 MiB shares starting 1.5 MiB + 16 bytes past a block boundary (like a
    // tensor's memory from malloc), in an output ending far beyond.
    let piece = 5 * B + M + M / 2 + 16;
    let shares = |output_end| Shares {
        start: piece,
        len: M,
        output_end,
    };
    let all = shares(piece + 64 * M);
    // The first share starts the slice: the block before it is an earlier call's.
    assert_eq!(head_owned_by_earlier(piece, M, all, B, J), 0);
    // The second, 1 MiB in, lies wholly in the block starting at 6 B, which begins in
    // the first share, half a MiB before its end.
    assert_eq!(head_owned_by_earlier(piece + M, M, all, B, J), M);
    // A shorter last share: all of it.
    assert_eq!(head_owned_by_earlier(piece + M, 4096, all, B, J), 4096);
    // The third starts in the same block and keeps what lies past it.
    let third = piece + 2 * M;
    assert_eq!(head_owned_by_earlier(third, M, all, B, J), 7 * B - third);
    // A block that runs past the output's end was not advised: populate it all.
    assert_eq!(
        head_owned_by_earlier(piece + M, M, shares(7 * B - 1), B, J),
        0
    );
    // A share starting on a block boundary owns its block.
    let aligned = Shares {
        start: 6 * B,
        ..all
    };
    assert_eq!(head_owned_by_earlier(7 * B, M, aligned, B, J), 0);
    // A block that began before the slice was mapped by an earlier call.
    let late = Shares {
        start: 6 * B + 8,
        ..all
    };
    assert_eq!(head_owned_by_earlier(6 * B + 8 + M, M, late, B, J), 0);
    // The owner would ask for under `judged` bytes of the block (it starts 16 bytes
    // before the owner's end): its populate would not be judged, so populate here too.
    let tight = Shares {
        start: 6 * B - M + 16,
        ..all
    };
    assert_eq!(head_owned_by_earlier(6 * B + 16, M, tight, B, J), 0);
}

/// The resident check finds the first page not yet mapped, and prefaulting maps the
/// rest without changing a byte, also across more pages than one `mincore` window.
#[cfg(target_os = "linux")]
#[test]
fn prefault_maps_only_what_is_missing_and_keeps_contents() {
    let page = page_size();
    let pages = 2500;
    let len = pages * page;
    // Unmapped at the end of the test and used only through the slice below meanwhile.
    let base = fresh_anonymous_map(len);
    // SAFETY: `base` maps `len` writable bytes, zero-filled, owned by this test.
    let buf = unsafe { std::slice::from_raw_parts_mut(base.cast::<u8>(), len) };
    let at = |p: usize| base as usize + p * page;
    let end = at(pages);
    assert_eq!(first_unmapped_page(at(0), end, page), Some(at(0)));
    // Pages 0..1100 written (past the first window of 1024 pages).
    for p in 0..1100 {
        buf[p * page + 7] = (p % 251) as u8 + 1;
    }
    assert_eq!(first_unmapped_page(at(0), end, page), Some(at(1100)));
    prefault(&mut buf[5..]);
    // Every whole page inside the slice is mapped now, unless an emulator (qemu-user
    // ignores most `madvise` advice) or a kernel before 5.14 leaves the pages to fault
    // in, which this test then says; nothing written changed either way.
    if populate_write_works(page) {
        assert_eq!(first_unmapped_page(at(1), end, page), None);
    } else {
        eprintln!(
            "prefault_maps_only_what_is_missing_and_keeps_contents: SKIPPED the mapping \
             check: MADV_POPULATE_WRITE had no effect here (kernel < 5.14 or emulator)"
        );
    }
    for p in 0..pages {
        let expect = if p < 1100 { (p % 251) as u8 + 1 } else { 0 };
        assert_eq!(buf[p * page + 7], expect, "page {p}");
    }
    assert!(buf[pages * page - 1] == 0 && buf[6] == 0);
    // A mapped range is left alone (no error, nothing changes).
    prefault(buf);
    assert_eq!(buf[7], 1);
    // SAFETY: the mapping made above; `buf` is not used after this.
    assert_eq!(unsafe { libc::munmap(base, len) }, 0);
}

/// An F32 embedding-like tensor of `rows` × `cols`: Gaussian values, the first
/// `short_rows` rows with only their top `kept_bits` mantissa bits set (the rows of
/// MiniLM's word embedding that training never touched hold half-precision values, their
/// two low bytes mostly zero, the others near-uniform bytes).
fn embedding_with_short_rows(
    rows: usize,
    cols: usize,
    short_rows: usize,
    kept_bits: u32,
) -> Vec<u8> {
    let mut seed = 7u64;
    let mut uniform = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let cut = !((1u32 << (23 - kept_bits)) - 1);
    (0..rows * cols)
        .flat_map(|i| {
            let v = (0..4).map(|_| uniform()).sum::<f32>() * 0.05;
            let bits = if i / cols < short_rows {
                v.to_bits() & cut
            } else {
                v.to_bits()
            };
            bits.to_le_bytes()
        })
        .collect()
}

/// The max level is never larger than the default: its longer table search can cost more
/// in tables than it saves on near-uniform fields (MiniLM F32's word embedding: 36 KB), so
/// the default's plan is one of its candidates. Without that candidate max came out 266,
/// 900 and 868 bytes larger than the default on these three tensors.
#[test]
fn max_level_is_never_larger_than_the_default() {
    for (rows, short) in [(1024, 307), (2048, 410), (1024, 205)] {
        let data = embedding_with_short_rows(rows, 384, short, 10);
        let default = round_trip(&Dtype::F32, &data, &EncodeOptions::default()).coded_len();
        let max = round_trip(&Dtype::F32, &data, &EncodeOptions::max()).coded_len();
        assert!(
            max <= default,
            "{rows} rows, {short} short: max {max} > default {default} bytes"
        );
    }
}
