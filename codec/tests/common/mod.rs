//! Helpers shared by the robustness tests: a small model of every dtype, and rebuilding
//! a file around an edited index with every checksum it needs fixed up, so that a test
//! reaches the check it is about rather than a checksum; and where the golden-file tests
//! find their fixtures.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use mcodec::container::{pack, Archive, Index, PackOptions, BLOCK};
use mcodec::tensor::EncodeOptions;
use xxhash_rust::xxh3::xxh3_64;

/// The fixtures with golden files of every format version (`chunk16`, `v1.0`, ...,
/// current).
pub const FIXTURES_1_0: &[&str] = &[
    "tiny-bf16.safetensors",
    "tiny-f16.safetensors",
    "tiny-f32.safetensors",
    "tiny-f8e4m3.safetensors",
    "tiny-f8e5m2.safetensors",
    "special-values.safetensors",
    "mixed.safetensors",
];

/// Skewed signs: the writer's joint split codecs (format 1.1).
pub const SKEWED: &str = "skewed-signs.safetensors";

/// F32 rows of FP16 precision amid full-precision ones: raw blocks (format 1.4).
pub const RAW_ROWS: &str = "raw-rows.safetensors";

/// The workspace's `fixtures/` folder: `data/` the inputs, `golden/` their packed files.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// Deterministic pseudo-random numbers (a 64-bit LCG's high bits).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    /// A bell-shaped weight around 0 with standard deviation about `scale`.
    pub fn weight(&mut self, scale: f32) -> f32 {
        let acc: f32 = (0..4)
            .map(|_| self.next() as f32 / (1u64 << 31) as f32 - 0.5)
            .sum();
        acc * scale * 1.7
    }
}

/// A safetensors file of the given tensors (name, dtype, shape, bytes), in order.
pub fn safetensors<N: AsRef<str>>(tensors: &[(N, &str, Vec<u64>, Vec<u8>)]) -> Vec<u8> {
    let mut header = String::from("{\"__metadata__\":{\"format\":\"pt\"}");
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let name = name.as_ref();
        let shape: Vec<String> = shape.iter().map(u64::to_string).collect();
        header += &format!(
            ",\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            shape.join(","),
            data.len(),
            data.len() + bytes.len()
        );
        data.extend_from_slice(bytes);
    }
    header += "}";
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut f = (header.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(header.as_bytes());
    f.extend_from_slice(&data);
    f
}

fn f8(v: f32, mantissa_bits: u32, bias: i32) -> u8 {
    // Round a float to an 8-bit float with the given mantissa width (no NaN handling:
    // the values stay small).
    let bits = v.to_bits();
    let sign = ((bits >> 31) as u8) << 7;
    let exp = ((bits >> 23) & 0xFF) as i32 - 127 + bias;
    if exp <= 0 {
        return sign;
    }
    let exp_bits = 7 - mantissa_bits;
    let exp = exp.min((1 << exp_bits) - 2) as u8;
    sign | (exp << mantissa_bits)
        | ((bits >> (23 - mantissa_bits)) as u8 & ((1 << mantissa_bits) - 1))
}

/// A model with a multi-chunk tensor of every float dtype (at chunk length 1024), the
/// same dtypes as constant and odd-sized tensors, and non-float tensors (zstd, stored,
/// empty). `scale` multiplies the element counts.
pub fn every_dtype_model(scale: usize) -> Vec<u8> {
    let mut rng = Rng(0x5eed);
    let n = 2500 * scale + 3;
    let mut tensors: Vec<(String, &str, Vec<u64>, Vec<u8>)> = Vec::new();
    let weights = |rng: &mut Rng, n: usize| -> Vec<f32> {
        // Two scales, so the blocks of one stream want different tables.
        (0..n)
            .map(|i| rng.weight(if (i / 512) % 2 == 0 { 0.02 } else { 0.3 }))
            .collect()
    };
    let w = weights(&mut rng, n);
    tensors.push((
        "bf16".into(),
        "BF16",
        vec![n as u64],
        w.iter()
            .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
            .collect(),
    ));
    let w = weights(&mut rng, n);
    tensors.push((
        "f16".into(),
        "F16",
        vec![n as u64],
        w.iter()
            .flat_map(|v| {
                let b = v.to_bits();
                let e = (((b >> 23) & 0xFF) as i32 - 127 + 15).clamp(0, 30) as u16;
                let h = ((b >> 16) & 0x8000) as u16 | (e << 10) | ((b >> 13) & 0x3FF) as u16;
                h.to_le_bytes()
            })
            .collect(),
    ));
    let w = weights(&mut rng, n);
    tensors.push((
        "f32".into(),
        "F32",
        vec![n as u64],
        w.iter().flat_map(|v| v.to_le_bytes()).collect(),
    ));
    let w = weights(&mut rng, 2 * n);
    tensors.push((
        "f8e4m3".into(),
        "F8_E4M3",
        vec![2, n as u64],
        w.iter().map(|&v| f8(v, 3, 7)).collect(),
    ));
    let w = weights(&mut rng, 2 * n);
    tensors.push((
        "f8e5m2".into(),
        "F8_E5M2",
        vec![2, n as u64],
        w.iter().map(|&v| f8(v, 2, 15)).collect(),
    ));
    tensors.push((
        "bf16-const".into(),
        "BF16",
        vec![1500],
        [0x80, 0x3f].repeat(1500),
    ));
    tensors.push(("f32-odd".into(), "F32", vec![7], vec![0x11; 28]));
    let ints: Vec<u8> = (0..3000u32).flat_map(|i| (i / 7).to_le_bytes()).collect();
    tensors.push(("i32".into(), "I32", vec![3000], ints));
    tensors.push(("u8".into(), "U8", vec![5], vec![9, 8, 7, 6, 5]));
    tensors.push(("empty".into(), "F16", vec![0], vec![]));
    safetensors(&tensors)
}

/// Packs with chunks of 1024 elements and blocks of 256, so small tensors have several
/// chunks and tables.
pub fn pack_small_chunks(input: &[u8]) -> Vec<u8> {
    let opts = PackOptions::new().encode(EncodeOptions {
        chunk_log2: 10,
        block_log2: 8,
        ..Default::default()
    });
    let mut out = Vec::new();
    pack(input, &opts, &mut out, &|_| {}).unwrap();
    out
}

/// Where the index of a well-formed trailer starts.
pub fn index_offset(file: &[u8]) -> usize {
    let t = file.len() - BLOCK as usize;
    u64::from_le_bytes(file[t..t + 8].try_into().unwrap()) as usize
}

/// How `file` (with a well-formed trailer) stores its index.
pub fn stored_form(file: &[u8]) -> mcodec::container::StoredForm {
    let t: &[u8; BLOCK as usize] = file[file.len() - BLOCK as usize..].try_into().unwrap();
    mcodec::container::StoredForm::from_trailer(t).unwrap()
}

/// The index of `file`, however it is stored, or `None` if it does not parse.
pub fn parse_index(file: &[u8]) -> Option<Index> {
    let at = index_offset(file);
    let end = file.len() - BLOCK as usize;
    Index::parse_stored(file.get(at..end)?, at as u64, stored_form(file)).ok()
}

/// The stream area of `file` (everything before its index) followed by `index`, stored
/// as `file` stores its own, and a correct trailer: the file a writer would produce for
/// that index.
pub fn with_index(file: &[u8], index: &Index) -> Vec<u8> {
    let mut out = file.to_vec();
    mcodec::container::replace_index(&mut out, index).unwrap();
    out
}

/// Recomputes every stream checksum of `file` (whose index must parse) and the index and
/// trailer checksums, leaving the tensor and prefix checksums alone: a damaged stream then
/// reaches its decoder, and only the checksum of what it decodes to can catch it.
pub fn repair_stream_checksums(file: &[u8]) -> Option<Vec<u8>> {
    let mut index = parse_index(file)?;
    let sum = |s: &mcodec::container::StreamRef| {
        xxh3_64(&file[s.offset as usize..(s.offset + s.len) as usize])
    };
    index.prefix.stream.checksum = sum(&index.prefix.stream);
    for t in &mut index.tensors {
        for s in &mut t.streams {
            s.checksum = sum(s);
        }
    }
    Some(with_index(file, &index))
}

/// Opens and unpacks `file`: the original bytes, or the error as text.
pub fn unpack(file: &[u8]) -> Result<Vec<u8>, String> {
    let archive = Archive::open(file).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    archive
        .unpack_to(&mut out, &|_| {})
        .map_err(|e| e.to_string())?;
    Ok(out)
}
