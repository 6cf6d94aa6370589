//! Property tests: every float and integer tensor round-trips bit-exactly through the
//! tensor codec and through a `.mcz` container, whatever its bit patterns (NaN payloads,
//! ±Inf, -0.0, subnormals, every exponent), its length (0, 1, odd, several chunks) and the
//! encoder settings (small chunks so multi-chunk and multi-table paths run, and
//! `EncodeOptions::max()`).

use mcodec::container::{pack, Archive, PackOptions};
use mcodec::entropy::stream::MIN_BLOCK_LOG2;
use mcodec::tensor::{self, Codec, EncodeOptions, TensorDecoder, CHUNK_LOG2_RANGE};
use mcodec::Dtype;
use proptest::prelude::*;

/// A float format by its field widths.
#[derive(Clone, Copy, Debug)]
struct FloatFormat {
    name: &'static str,
    exp_bits: u32,
    man_bits: u32,
}

impl FloatFormat {
    fn bytes(self) -> usize {
        (1 + self.exp_bits + self.man_bits) as usize / 8
    }
    fn dtype(self) -> Dtype {
        Dtype::parse(self.name)
    }
}

const FLOATS: [FloatFormat; 5] = [
    FloatFormat {
        name: "BF16",
        exp_bits: 8,
        man_bits: 7,
    },
    FloatFormat {
        name: "F16",
        exp_bits: 5,
        man_bits: 10,
    },
    FloatFormat {
        name: "F32",
        exp_bits: 8,
        man_bits: 23,
    },
    FloatFormat {
        name: "F8_E4M3",
        exp_bits: 4,
        man_bits: 3,
    },
    FloatFormat {
        name: "F8_E5M2",
        exp_bits: 5,
        man_bits: 2,
    },
];

/// Integer dtypes and their element sizes.
const INTS: [(&str, usize); 6] = [
    ("I32", 4),
    ("I64", 8),
    ("U8", 1),
    ("I16", 2),
    ("U16", 2),
    ("BOOL", 1),
];

/// Builds one element of `fmt` from a selector and random bits.
///
/// Within a segment, a fraction `special_rate / 21` of the elements (`sel < 12 ·
/// special_rate`) are special values: NaN with a payload, ±Inf, ±0, subnormals, a
/// uniformly drawn exponent, or raw bits. The others are weight-like: their exponent stays
/// within −1..=+2 of the segment's `center` (so exponent fields compress and blocks of
/// different segments want different tables), and half of them keep only the top two
/// mantissa bits (so the low fields compress too).
fn element(fmt: FloatFormat, center: u32, special_rate: u8, sel: u8, raw: u64) -> u64 {
    let exp_max = (1u64 << fmt.exp_bits) - 1;
    let man_mask = (1u64 << fmt.man_bits) - 1;
    let sign = raw >> 63;
    let man = raw & man_mask;
    let spread = (raw >> 32) & 0x7FFF_FFFF;
    let (exp, man) = if sel >= 12 * special_rate {
        let e = (u64::from(center) % (exp_max + 1) + spread % 4).saturating_sub(1);
        let keep = fmt.man_bits.saturating_sub(2);
        let m = if sel & 1 == 0 {
            man
        } else {
            man >> keep << keep
        };
        (e.min(exp_max), m)
    } else {
        match sel % 6 {
            0 => (exp_max, man.max(1)),
            1 => (exp_max, 0),
            2 => (0, 0),
            3 => (0, man.max(1)),
            4 => (spread % (exp_max + 1), man),
            _ => return raw & ((1u64 << (fmt.bytes() * 8)) - 1),
        }
    };
    (sign << (fmt.exp_bits + fmt.man_bits)) | (exp << fmt.man_bits) | man
}

fn to_bytes(fmt: FloatFormat, elems: impl IntoIterator<Item = u64>) -> Vec<u8> {
    elems
        .into_iter()
        .flat_map(|e| e.to_le_bytes().into_iter().take(fmt.bytes()))
        .collect()
}

/// One run of elements with its own exponent centre and rate of special values.
type Segment = (u32, u8, Vec<(u8, u64)>);

/// Segments of elements: lengths from 0 up to several thousand elements, so with
/// 1024-element chunks a tensor spans up to nine chunks.
fn segments() -> impl Strategy<Value = Vec<Segment>> {
    let len = prop_oneof![2 => 0usize..4, 3 => 0usize..3000];
    let seg = (any::<u32>(), 0u8..4, len).prop_flat_map(|(center, rate, len)| {
        (
            Just(center),
            Just(rate),
            prop::collection::vec((any::<u8>(), any::<u64>()), len),
        )
    });
    prop_oneof![
        1 => prop::collection::vec(seg.clone(), 0..2),
        3 => prop::collection::vec(seg, 1..4),
    ]
}

fn float_tensor() -> impl Strategy<Value = (FloatFormat, Vec<u8>)> {
    let mixed = (0..FLOATS.len(), segments()).prop_map(|(f, segs)| {
        let fmt = FLOATS[f];
        let elems = segs.iter().flat_map(|(center, rate, es)| {
            es.iter()
                .map(move |&(sel, raw)| element(fmt, *center, *rate, sel, raw))
        });
        (fmt, to_bytes(fmt, elems))
    });
    // One value repeated (constant streams), or two values alternating in runs.
    let repeated = (0..FLOATS.len(), any::<[u64; 2]>(), 0usize..6, 0usize..5000).prop_map(
        |(f, [a, b], run_log2, n)| {
            let fmt = FLOATS[f];
            let elems = (0..n).map(|i| {
                if (i >> (run_log2 + 5)) % 2 == 0 || run_log2 == 0 {
                    a
                } else {
                    b
                }
            });
            (fmt, to_bytes(fmt, elems))
        },
    );
    prop_oneof![6 => mixed, 1 => repeated]
}

fn int_tensor() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    (
        0..INTS.len(),
        0u32..4,
        prop::collection::vec(any::<u64>(), 0..1200),
    )
        .prop_map(|(i, magnitude, vals)| {
            let (name, size) = INTS[i];
            // Small magnitudes compress (zstd path); large ones are stored.
            let mask = [1u64, 0xFF, 0xFFFF, u64::MAX][magnitude as usize];
            let bytes = vals
                .iter()
                .flat_map(|v| (v & mask).to_le_bytes().into_iter().take(size))
                .collect();
            (name, bytes)
        })
}

/// `base` with a smaller chunk length, its block length clamped to fit in a chunk.
fn with_chunks(base: EncodeOptions, chunk_log2: u8) -> EncodeOptions {
    EncodeOptions {
        chunk_log2,
        block_log2: base.block_log2.min(chunk_log2),
        ..base
    }
}

fn options() -> impl Strategy<Value = EncodeOptions> {
    prop_oneof![
        Just(with_chunks(EncodeOptions::default(), 10)),
        Just(with_chunks(EncodeOptions::max(), 10)),
        Just(with_chunks(EncodeOptions::fast(), 10)),
        Just(with_chunks(EncodeOptions::default(), 11)),
        // The smallest blocks: one symbol per lane, many table ids per chunk.
        Just(EncodeOptions {
            block_log2: MIN_BLOCK_LOG2,
            ..with_chunks(EncodeOptions::default(), 10)
        }),
        Just(EncodeOptions::max()),
        Just(EncodeOptions::default()),
        Just(EncodeOptions::fast()),
    ]
}

/// Encodes and decodes one tensor, checking the result and the encoder's promises.
fn tensor_round_trip(
    dtype: &Dtype,
    data: &[u8],
    opts: &EncodeOptions,
) -> Result<(), TestCaseError> {
    let enc = tensor::encode(dtype, data, opts);
    prop_assert!(
        enc.coded_len() <= data.len(),
        "{dtype}: {} > {}",
        enc.coded_len(),
        data.len()
    );
    if let Codec::Split(layout) = enc.codec {
        // The dtype's layout, or its joint variant (sign coded with the exponent).
        let base = mcodec::float_split::Layout::for_dtype(dtype);
        prop_assert!(
            Some(layout) == base || Some(layout) == base.and_then(|b| b.joint()),
            "{dtype}: {layout:?}"
        );
        prop_assert!(CHUNK_LOG2_RANGE.contains(&enc.chunk_log2));
        prop_assert_eq!(enc.chunk_log2, opts.chunk_log2);
    }
    prop_assert_eq!(enc.streams.len(), enc.codec.stream_count());
    let owned: Vec<Vec<u8>> = enc.streams.iter().map(|s| s.to_vec()).collect();
    let streams: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    let dec = TensorDecoder::new(enc.codec, enc.chunk_log2, data.len(), &streams)
        .map_err(|e| TestCaseError::fail(format!("{dtype} via {}: {e}", enc.codec.name())))?;
    let mut out = vec![0xA5u8; data.len()];
    dec.decode(&mut out)
        .map_err(|e| TestCaseError::fail(format!("{dtype} via {}: {e}", enc.codec.name())))?;
    prop_assert!(
        out == data,
        "{} via {} changed the bytes",
        dtype,
        enc.codec.name()
    );
    Ok(())
}

/// A safetensors file holding `tensors` back to back, shapes 1-D (a 0-dim scalar for one
/// element).
fn safetensors(tensors: &[(Dtype, usize, Vec<u8>)]) -> Vec<u8> {
    let mut header = String::from(r#"{"__metadata__":{"format":"pt"}"#);
    let mut data = Vec::new();
    for (i, (dtype, esize, bytes)) in tensors.iter().enumerate() {
        let n = bytes.len() / esize;
        let shape = if n == 1 { String::new() } else { n.to_string() };
        header += &format!(
            r#","t{i}":{{"dtype":"{dtype}","shape":[{shape}],"data_offsets":[{},{}]}}"#,
            data.len(),
            data.len() + bytes.len()
        );
        data.extend_from_slice(bytes);
    }
    header.push('}');
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&data);
    file
}

/// Packs `input`, unpacks and verifies it, decodes every tensor on its own; returns the
/// number of tensors in the index.
fn container_round_trip(input: &[u8], opts: PackOptions) -> Result<usize, TestCaseError> {
    let mut packed = Vec::new();
    pack(input, &opts, &mut packed, &|_| {}).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let archive = Archive::open(&packed).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut back = Vec::new();
    archive
        .unpack_to(&mut back, &|_| {})
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(back == input, "unpacked file differs");
    prop_assert_eq!(
        archive
            .verify(&|_| {})
            .map_err(|e| TestCaseError::fail(e.to_string()))?,
        input.len() as u64
    );
    for (i, t) in archive.index().tensors.iter().enumerate() {
        let mut out = vec![0u8; t.original_len as usize];
        archive
            .decode_tensor(i, &mut out)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let range = t.original_offset as usize..(t.original_offset + t.original_len) as usize;
        prop_assert!(out == input[range], "tensor {} differs", t.name);
    }
    Ok(archive.index().tensors.len())
}

fn cases(n: u32) -> ProptestConfig {
    // Debug builds are an order of magnitude slower; keep both under their time budget.
    let n = if cfg!(debug_assertions) {
        n.div_ceil(2)
    } else {
        n
    };
    ProptestConfig {
        cases: n,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases(384))]

    #[test]
    fn float_tensors_round_trip((fmt, data) in float_tensor(), opts in options()) {
        tensor_round_trip(&fmt.dtype(), &data, &opts)?;
    }

    #[test]
    fn int_tensors_round_trip((name, data) in int_tensor(), opts in options()) {
        tensor_round_trip(&Dtype::parse(name), &data, &opts)?;
    }
}

proptest! {
    #![proptest_config(cases(96))]

    #[test]
    fn safetensors_files_round_trip_through_mcz(
        floats in prop::collection::vec(float_tensor(), 0..4),
        ints in prop::collection::vec(int_tensor(), 0..2),
        opts in options(),
    ) {
        let mut tensors: Vec<(Dtype, usize, Vec<u8>)> = floats
            .into_iter()
            .map(|(f, d)| (f.dtype(), f.bytes(), d))
            .collect();
        for (name, data) in ints {
            let dtype = Dtype::parse(name);
            let size = dtype.element_size().unwrap();
            tensors.push((dtype, size, data));
        }
        let input = safetensors(&tensors);
        let count = container_round_trip(&input, PackOptions::new().encode(opts))?;
        prop_assert_eq!(count, tensors.len());
    }

    #[test]
    fn raw_files_with_odd_tails_round_trip_through_mcz(
        (fmt, mut data) in float_tensor(),
        tail in prop::collection::vec(any::<u8>(), 0..4),
        opts in options(),
    ) {
        data.extend_from_slice(&tail[..tail.len().min(fmt.bytes() - 1)]);
        let count = container_round_trip(&data, PackOptions::new().encode(opts).raw_dtype(fmt.dtype()))?;
        let has_tail = data.len() % fmt.bytes() != 0;
        prop_assert_eq!(count, 1 + usize::from(has_tail));
    }
}

/// Every exponent of every float format, with both signs and several mantissas (including
/// NaN payloads and subnormals), in one multi-chunk tensor.
#[test]
fn every_exponent_round_trips() {
    for fmt in FLOATS {
        let exp_max = (1u64 << fmt.exp_bits) - 1;
        let man_max = (1u64 << fmt.man_bits) - 1;
        let mut elems = Vec::new();
        for exp in 0..=exp_max {
            for man in [0, 1, man_max / 2, man_max, man_max & 0x55] {
                for sign in 0..2u64 {
                    elems.push(
                        (sign << (fmt.exp_bits + fmt.man_bits)) | (exp << fmt.man_bits) | man,
                    );
                }
            }
        }
        // Repeat with a drift so chunks differ and several tables pay off.
        let repeated: Vec<u64> = (0..4)
            .flat_map(|r| elems.iter().map(move |e| e ^ r))
            .collect();
        let data = to_bytes(fmt, repeated);
        for opts in [
            with_chunks(EncodeOptions::default(), 10),
            with_chunks(EncodeOptions::max(), 10),
            with_chunks(EncodeOptions::fast(), 10),
            EncodeOptions::max(),
            EncodeOptions::fast(),
        ] {
            tensor_round_trip(&fmt.dtype(), &data, &opts).unwrap();
        }
    }
}

/// Every 16-bit pattern as BF16 and F16, every byte as FP8, through the whole codec.
#[test]
fn every_narrow_bit_pattern_round_trips() {
    let all16: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
    let all8: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let opts = with_chunks(EncodeOptions::default(), 10);
    for (name, data) in [
        ("BF16", &all16),
        ("F16", &all16),
        ("F8_E4M3", &all8),
        ("F8_E5M2", &all8),
    ] {
        tensor_round_trip(&Dtype::parse(name), data, &opts).unwrap();
    }
}
