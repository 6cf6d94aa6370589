//! Writes the seed corpus of the fuzz targets in `fuzz/` (see docs/FUZZING.md).
//!
//! Ignored by default; run it with
//! `cargo test -p mcodec --test fuzz_seeds -- --ignored` to regenerate
//! `fuzz/corpus/<target>/seed-*`. The seeds are small, valid inputs that reach the
//! interesting paths (multi-chunk rANS streams, several tables, constant and packed
//! streams, zstd, stored) so the fuzzers start from inside the format.
//!
//! Seeds whose bytes depend on the format version (`.mcz` files, coded streams) are named
//! for it, `seed-v1.2-*` while the writer writes 1.2: a format change adds a set next to
//! the older ones, which stay, so the fuzzers keep starting from every layout a reader
//! must still read. The unversioned `.mcz` and stream seeds are those of 1.0 and 1.1.

mod common;

use std::path::PathBuf;

use common::safetensors;
use mcodec::container::{pack, PackOptions, VERSION_MAJOR, VERSION_MINOR};
use mcodec::tensor::{self, EncodeOptions};
use mcodec::Dtype;

fn rng(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

/// `n` bf16 values of a narrow bell curve: compressible exponents, noisy mantissas.
fn bf16_weights(n: usize, seed: &mut u64) -> Vec<u8> {
    (0..n)
        .flat_map(|_| {
            let acc: f32 = (0..4)
                .map(|_| rng(seed) as f32 / (1u64 << 31) as f32 - 0.5)
                .sum();
            (((acc * 0.02).to_bits() >> 16) as u16).to_le_bytes()
        })
        .collect()
}

/// `n` weights from N(1.08 σ, σ), the negative ones scaled by 1/8, as F32 (`kind` 4), F16
/// (3) or BF16 (2): 86 % positive, the sign tied to the magnitude, which the writer codes
/// with the joint split codecs (ids 6..=8).
fn skewed_weights(n: usize, kind: usize, seed: &mut u64) -> Vec<u8> {
    (0..n)
        .flat_map(|_| {
            let acc: f32 = (0..4)
                .map(|_| rng(seed) as f32 / (1u64 << 31) as f32 - 0.5)
                .sum();
            let v = 0.0216 + acc * 0.035;
            let x = (if v < 0.0 { v * 0.125 } else { v }).to_bits();
            match kind {
                4 => x.to_le_bytes().to_vec(),
                // F16 from the F32 bits: sign, rebased exponent, top mantissa bits (the
                // values stay far inside the normal range).
                3 => {
                    let exp = (((x >> 23) & 0xFF) as i32 - 112).clamp(0, 31) as u32;
                    let h = ((x >> 16) & 0x8000) | (exp << 10) | ((x >> 13) & 0x3FF);
                    (h as u16).to_le_bytes().to_vec()
                }
                _ => ((x >> 16) as u16).to_le_bytes().to_vec(),
            }
        })
        .collect()
}

fn small_model() -> Vec<u8> {
    let mut seed = 7;
    let f8: Vec<u8> = (0..2100)
        .map(|i| {
            if i < 1024 {
                (rng(&mut seed) % 5) as u8
            } else {
                0x40 + (rng(&mut seed) % 3) as u8
            }
        })
        .collect();
    let ints: Vec<u8> = (0..32u32).flat_map(|i| (i % 3).to_le_bytes()).collect();
    safetensors(&[
        ("w", "BF16", vec![20, 30], bf16_weights(600, &mut seed)),
        ("q", "F8_E4M3", vec![2100], f8),
        ("z", "F16", vec![40], vec![0; 80]),
        ("i", "I32", vec![32], ints),
        ("b", "U8", vec![3], vec![1, 2, 3]),
        ("e", "F32", vec![0, 4], vec![]),
    ])
}

/// A safetensors file of `tensors` as the fixtures crate writes them.
fn fixture_file(tensors: &[mcodec_fixtures::Tensor]) -> Vec<u8> {
    let views: Vec<_> = tensors.iter().map(|t| t.view()).collect();
    mcodec_fixtures::safetensors_bytes(&views, None, 0).unwrap()
}

/// A tensor of `fixtures/data/special-values.safetensors`.
fn special(name: &str) -> mcodec_fixtures::Tensor {
    mcodec_fixtures::generate::special_values()
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no special value tensor {name:?}"))
}

/// Every dtype the fixtures have, small: the tensors of `fixtures/data/mixed.safetensors`
/// (unsorted, an escaped non-ASCII name, an empty tensor, FP8 with its scale), each
/// matrix cut to its first rows of at most 512 elements, and the I8, I16, U16, U32 and
/// U64 tensors of `special-values.safetensors`.
fn fixture_dtypes() -> Vec<u8> {
    let mut tensors = mcodec_fixtures::generate::mixed();
    for t in &mut tensors {
        if let [rows, cols] = t.shape[..] {
            let kept = rows.min(512 / cols.max(1));
            t.data.truncate(t.data.len() / rows.max(1) * kept);
            t.shape[0] = kept;
        }
    }
    for name in [
        "i8.all_values",
        "i16.values",
        "u16.values",
        "u32.values",
        "u64.values",
    ] {
        tensors.push(special(name));
    }
    fixture_file(&tensors)
}

/// 105 tensors of one to four elements, of every dtype in turn: an index much larger
/// than the streams, and many tensors below every codec's threshold.
fn many_tiny_tensors() -> Vec<u8> {
    const DTYPES: [&str; 15] = [
        "BF16", "F16", "F32", "F64", "F8_E4M3", "F8_E5M2", "BOOL", "U8", "I8", "I16", "U16", "I32",
        "U32", "I64", "U64",
    ];
    let mut rng = mcodec_fixtures::SplitMix64::new(mcodec_fixtures::generate::SEED);
    let tensors: Vec<_> = (0..105)
        .map(|i| {
            let dtype = DTYPES[i % DTYPES.len()];
            let n = 1 + i % 4;
            let shape = if n == 1 && i % 8 == 0 {
                vec![]
            } else {
                vec![n]
            };
            let bytes = n * mcodec_fixtures::dtype_size(dtype).unwrap();
            let data = (0..bytes)
                .map(|_| match dtype {
                    "BOOL" => (rng.next_u32() & 1) as u8,
                    _ => rng.next_u32() as u8,
                })
                .collect();
            let name = format!("blocks.{}.{}", i / 15, dtype.to_lowercase());
            mcodec_fixtures::Tensor::new(name, dtype, &shape, data)
        })
        .collect();
    fixture_file(&tensors)
}

/// The empty tensors (`[0]`, `[3, 0]`, `[0, 4]`) and 0-dim scalars of
/// `special-values.safetensors`: nothing for a codec to split.
fn empty_and_0dim() -> Vec<u8> {
    let tensors: Vec<_> = mcodec_fixtures::generate::special_values()
        .into_iter()
        .filter(|t| t.name.starts_with("empty.") || t.name.starts_with("scalar."))
        .collect();
    assert_eq!(tensors.len(), 9);
    fixture_file(&tensors)
}

/// Writes `fuzz/corpus/<target>/seed-<name>`, unless another seed there has the same
/// bytes (a stream the format change left alone keeps its older name).
fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    let file = format!("seed-{name}");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let other = path.file_name().unwrap().to_str().unwrap();
        if other.starts_with("seed-") && other != file && std::fs::read(&path).unwrap() == bytes {
            return;
        }
    }
    std::fs::write(dir.join(file), bytes).unwrap();
}

/// `name` prefixed with the format version the writer writes: `v1.2-name`.
fn versioned(name: &str) -> String {
    format!("v{VERSION_MAJOR}.{VERSION_MINOR}-{name}")
}

/// The `.mcz` targets, which all start from the same packed files.
const MCZ_TARGETS: [&str; 3] = ["container_open", "poison", "gpu_plan"];

/// Writes `packed` as `seed-v<version>-<name>` of every `.mcz` target.
fn write_mcz(name: &str, packed: &[u8]) {
    for target in MCZ_TARGETS {
        write(target, &versioned(name), packed);
    }
}

fn packed(input: &[u8], raw: Option<Dtype>) -> Vec<u8> {
    let mut opts = PackOptions::new().encode(EncodeOptions {
        chunk_log2: 10,
        // Small blocks so the seeds carry several table ids per chunk.
        block_log2: 8,
        ..Default::default()
    });
    opts.raw_dtype = raw;
    let mut out = Vec::new();
    pack(input, &opts, &mut out, &|_| {}).unwrap();
    out
}

#[test]
#[ignore = "writes fuzz/corpus; run explicitly"]
fn write_fuzz_seeds() {
    let model = small_model();
    write("safetensors_header", "model", &model);
    let no_tensors = safetensors::<&str>(&[]);
    write("safetensors_header", "empty", &no_tensors);
    write_mcz("model", &packed(&model, None));
    write_mcz("no-tensors", &packed(&no_tensors, None));
    for (name, input) in [
        ("dtypes", fixture_dtypes()),
        ("many-tiny", many_tiny_tensors()),
        ("empty-0dim", empty_and_0dim()),
    ] {
        write("safetensors_header", name, &input);
        write_mcz(name, &packed(&input, None));
    }
    let mut seed = 11;
    let f32s: Vec<u8> = (0..300u32)
        .flat_map(|i| ((i % 7) as f32 * 0.001 + rng(&mut seed) as f32 * 1e-12).to_le_bytes())
        .collect();
    write_mcz("raw-f32", &packed(&f32s, Some(Dtype::F32)));
    let mut joint_seed = 13;
    let skewed = safetensors(&[
        (
            "s",
            "F16",
            vec![1200],
            skewed_weights(1200, 3, &mut joint_seed),
        ),
        (
            "t",
            "BF16",
            vec![1100],
            skewed_weights(1100, 2, &mut joint_seed),
        ),
    ]);
    write_mcz("joint", &packed(&skewed, None));

    let opts = EncodeOptions {
        chunk_log2: 10,
        block_log2: 8,
        ..Default::default()
    };
    // The joint codecs' seeds draw from their own generator: the older seeds stay as
    // they were.
    // F32 whose every other row of 256 has FP16 precision: the other rows' low mantissa
    // bytes are stored in raw blocks (format 1.4, stream mode 5). Its own generator too.
    let mut raw_seed = 17;
    let raw_rows: Vec<u8> = (0..4096u32)
        .flat_map(|i| {
            let exp = 0x3C00_0000 | ((rng(&mut raw_seed) as u32 % 8) << 23);
            let bits = exp | (rng(&mut raw_seed) as u32 & 0x807F_FFFF);
            let bits = if (i / 256) % 2 == 0 {
                bits & !0x1FFF
            } else {
                bits
            };
            bits.to_le_bytes()
        })
        .collect();
    let cases: [(&str, Dtype, Vec<u8>); 9] = [
        (
            "bf16-joint",
            Dtype::BF16,
            skewed_weights(4000, 2, &mut joint_seed),
        ),
        (
            "f16-joint",
            Dtype::F16,
            skewed_weights(4000, 3, &mut joint_seed),
        ),
        (
            "f32-joint",
            Dtype::F32,
            skewed_weights(4000, 4, &mut joint_seed),
        ),
        ("bf16", Dtype::BF16, bf16_weights(1500, &mut seed)),
        ("f16-const", Dtype::F16, vec![0x3c; 200]),
        ("f32", Dtype::F32, f32s.clone()),
        (
            "f8",
            Dtype::F8E5M2,
            (0..1500).map(|i| (i % 3) as u8 * 0x10).collect(),
        ),
        (
            "i32-zstd",
            Dtype::I32,
            (0..100u32).flat_map(|i| (i / 10).to_le_bytes()).collect(),
        ),
        ("f32-raw-rows", Dtype::F32, raw_rows),
    ];
    for (name, dtype, data) in cases {
        let enc = tensor::encode(&dtype, &data, &opts);
        if name.ends_with("-joint") {
            assert!(enc.codec.id() >= 6, "{name}: {}", enc.codec.name());
        }
        if name == "f32-raw-rows" {
            let modes: Vec<u8> = enc.streams.iter().map(|s| s.to_vec()[0]).collect();
            assert!(
                modes.contains(&5),
                "{name}: no stream with raw blocks ({}, modes {modes:?})",
                enc.codec.name()
            );
        }
        let mut input = vec![enc.codec.id(), enc.chunk_log2];
        input.extend_from_slice(&(data.len() as u32).to_le_bytes()[..3]);
        for (k, s) in enc.streams.iter().enumerate() {
            if k + 1 < enc.streams.len() {
                input.extend_from_slice(&(s.len() as u16).to_le_bytes());
            }
            input.extend_from_slice(&s.to_vec());
        }
        write("tensor_decode", &versioned(name), &input);
        if let tensor::Codec::Split(layout) = enc.codec {
            for (k, (s, &bits)) in enc.streams.iter().zip(layout.field_bits()).enumerate() {
                let mut input = vec![bits as u8, enc.chunk_log2];
                input.extend_from_slice(
                    &((data.len() / layout.element_size()) as u32).to_le_bytes()[..3],
                );
                input.extend_from_slice(&s.to_vec());
                write("stream_decode", &versioned(&format!("{name}-{k}")), &input);
            }
        }
        let sel = [
            Dtype::BF16,
            Dtype::F16,
            Dtype::F32,
            Dtype::F8E4M3,
            Dtype::F8E5M2,
            Dtype::I32,
        ]
        .iter()
        .position(|d| *d == dtype)
        .unwrap() as u8;
        let mut rt = vec![sel, 0x40];
        rt.extend_from_slice(&data);
        write("round_trip", name, &rt);
    }
    write_entropy_seeds(&mut seed);
    write_delta_seeds();
}

#[path = "../../fuzz/src/checks/delta_decode.rs"]
#[allow(dead_code)]
mod delta_decode;

/// Seeds of `delta_decode`: the golden layout-1 and layout-2 ULP deltas, and deltas of the
/// current layout 3 (one chunk, and chunks of 64 elements) and BitX for every dtype. (The
/// `seed-ulp2-*` files of the corpus are what the layout-2 writer made of these pairs.)
fn write_delta_seeds() {
    use delta_decode::{input, pair, DTYPES};
    use mcodec::delta::{encode_ulp_chunked, encode_with, DeltaMethod};
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/golden/delta");
    for (sel, name) in ["bf16", "f16", "f32", "f64", "f8e4m3", "f8e5m2"]
        .iter()
        .enumerate()
    {
        for layout in ["ulp1", "ulp2"] {
            let delta = std::fs::read(golden.join(format!("{layout}-{name}.bin"))).unwrap();
            let seed_name = match layout {
                "ulp1" => format!("ulp1-{name}"),
                _ => format!("golden-{layout}-{name}"),
            };
            write(
                "delta_decode",
                &seed_name,
                &input(sel as u8, 0, 5003, &delta),
            );
        }
    }
    for (sel, dtype) in DTYPES.iter().enumerate() {
        let sel = sel as u8;
        let n = 700;
        let (base, target) = pair(dtype, n, 3);
        let name = dtype.to_string().to_lowercase();
        let bitx = encode_with(DeltaMethod::BitX, dtype, &base, &target).unwrap();
        write(
            "delta_decode",
            &format!("bitx-{name}"),
            &input(sel, 3, n as u16, &bitx),
        );
        if DeltaMethod::Ulp.supports(dtype) {
            let one = encode_with(DeltaMethod::Ulp, dtype, &base, &target).unwrap();
            write(
                "delta_decode",
                &format!("ulp3-{name}"),
                &input(sel, 3, n as u16, &one),
            );
            let chunked = encode_ulp_chunked(dtype, &base, &target, 64).unwrap();
            write(
                "delta_decode",
                &format!("ulp3-chunks-{name}"),
                &input(sel, 3, n as u16, &chunked),
            );
        }
    }
}

/// Seeds of the `rans_chunk` and `bitpack` targets, in the input layouts their sources
/// describe.
fn write_entropy_seeds(seed: &mut u64) {
    use mcodec::entropy::model::{EncTable, FreqTable};
    use mcodec::entropy::{bitpack, rans};
    let bits = 9u32;
    let counts: [[u8; 8]; 2] = [[200, 50, 10, 3, 1, 1, 1, 1], [16, 1, 1, 1, 100, 100, 1, 1]];
    // The target spreads count i of a table to symbol (67 i + c[0] / 16) mod 2^bits.
    let tables: Vec<(FreqTable, Vec<u16>, Vec<u32>)> = counts
        .iter()
        .map(|c| {
            let mut h = vec![0u32; 1 << bits];
            let syms: Vec<u16> = (0..8)
                .map(|i| ((i * 67 + usize::from(c[0] >> 4)) % (1 << bits)) as u16)
                .collect();
            for (i, &k) in c.iter().enumerate() {
                h[usize::from(syms[i])] += u32::from(k);
            }
            let weights = c.iter().map(|&k| u32::from(k)).collect();
            (FreqTable::from_counts(&h).unwrap(), syms, weights)
        })
        .collect();
    let (n, block_len) = (1000usize, 128usize);
    let ids: Vec<u8> = (0..n.div_ceil(block_len)).map(|b| (b % 2) as u8).collect();
    let symbols: Vec<u16> = (0..n)
        .map(|i| {
            let (_, syms, weights) = &tables[usize::from(ids[i / block_len])];
            let total: u32 = weights.iter().sum();
            let mut r = (rng(seed) % u64::from(total)) as u32;
            let k = weights
                .iter()
                .position(|&w| {
                    let hit = r < w;
                    r = r.saturating_sub(w);
                    hit
                })
                .unwrap();
            syms[k]
        })
        .collect();
    let enc: Vec<EncTable> = tables.iter().map(|t| EncTable::new(&t.0, bits)).collect();
    let per_block: Vec<&EncTable> = ids.iter().map(|&t| &enc[usize::from(t)]).collect();
    let mut payload = Vec::new();
    rans::encode_chunk(&symbols, &per_block, block_len, &mut payload).unwrap();
    // bits selector 8 -> 9 bits; two tables, block length 32 << 2.
    let mut input = vec![8u8, 1 | (2 << 2)];
    input.extend_from_slice(&(n as u16).to_le_bytes());
    input.extend(counts.iter().flatten());
    input.extend_from_slice(&ids);
    input.extend_from_slice(&payload);
    write("rans_chunk", "two-tables", &input);

    for width in [3u32, 7, 9, 16] {
        let syms: Vec<u16> = (0..100u64)
            .map(|_| (rng(seed) & ((1 << width) - 1)) as u16)
            .collect();
        let mut input = vec![(width - 1) as u8];
        input.extend_from_slice(&100u16.to_le_bytes());
        bitpack::pack(&syms, width, &mut input);
        write("bitpack", &format!("w{width}"), &input);
    }
}
