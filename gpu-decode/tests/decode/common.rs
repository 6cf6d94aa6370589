//! Test models shared by the mirror and GPU tests.
#![allow(dead_code)]

use mcodec::container::{pack, Archive, PackOptions};
use mcodec::EncodeOptions;
use mcodec_fixtures::rng::SplitMix64;
use mcodec_fixtures::safetensors::{safetensors_bytes, Tensor};

/// A test that cannot run here: says "skipped" and why ([`mcodec_fixtures::skip`]), or,
/// when a GPU run is required (`MCODEC_GPU_REQUIRED`, set by `run-on-gpu.sh`), fails
/// saying so.
pub fn skip(why: &str) {
    assert!(
        !mcodec_gpu::gpu_required(),
        "FAILED instead of skipped ({} is set): {why}",
        mcodec_gpu::GPU_REQUIRED_ENV
    );
    mcodec_fixtures::skip(why);
}

/// Real MiniLM weights, when the bench data is present.
pub const MINILM: &str = "/work/main/benches/data/minilm-bf16.safetensors";

/// The golden .mcz fixtures: `$MCODEC_GOLDEN_DIR`, or `fixtures/golden` of this checkout
/// (test binaries carried to another machine set the variable).
pub fn golden_dir() -> std::path::PathBuf {
    std::env::var_os("MCODEC_GOLDEN_DIR")
        .map(Into::into)
        .unwrap_or_else(|| mcodec_fixtures::data_dir().join("../golden"))
}

/// MiniLM packed with the default settings: `$MCODEC_MINILM_MCZ` if set, else [`MINILM`]
/// packed now; `None` (with the reason) when neither is there.
pub fn minilm_mcz() -> Result<Vec<u8>, String> {
    if let Some(path) = std::env::var_os("MCODEC_MINILM_MCZ") {
        return std::fs::read(&path).map_err(|e| format!("{}: {e}", path.to_string_lossy()));
    }
    let input = std::fs::read(MINILM).map_err(|e| format!("{MINILM}: {e}"))?;
    Ok(pack_with(&input, EncodeOptions::default()))
}

/// Packs `input` (a safetensors file) with `encode`.
pub fn pack_with(input: &[u8], encode: EncodeOptions) -> Vec<u8> {
    let mut out = Vec::new();
    let opts = PackOptions::new().encode(encode);
    pack(input, &opts, &mut out, &|_| {}).expect("pack");
    out
}

/// Weight-like values whose scale drifts along the tensor (so blocks pick different
/// tables), with rare outliers, zeros and a run of one repeated value.
pub fn drifting(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|i| {
            let scale = 0.02 * (1.0 + 8.0 * ((i as f64 / 40_000.0).sin().abs()));
            let mut v = rng.gaussian() * scale;
            if rng.below(1000) == 0 {
                v *= 50.0;
            }
            if (100_000..100_300).contains(&i) {
                v = 0.0;
            }
            v as f32
        })
        .collect()
}

/// A safetensors file with multi-chunk tensors of every float dtype (odd lengths, so the
/// last chunk and the last staging group are partial), a constant tensor and an integer
/// tensor (not split: decoded on the CPU).
pub fn generated_model() -> Vec<u8> {
    let tensors = [
        Tensor::from_f32("big.bf16", "BF16", &[300_001], &drifting(300_001, 1)),
        Tensor::from_f32("w.f16", "F16", &[70_003], &drifting(70_003, 2)),
        Tensor::from_f32("w.f32", "F32", &[40_000], &drifting(40_000, 3)),
        Tensor::from_f32("w.f8e4m3", "F8_E4M3", &[66_000], &drifting(66_000, 4)),
        Tensor::from_f32("w.f8e5m2", "F8_E5M2", &[5_000], &drifting(5_000, 5)),
        Tensor::from_f32("ones.bf16", "BF16", &[4_096], &[1.0; 4_096]),
        Tensor::new(
            "ids",
            "I64",
            &[512],
            (0..512u64).flat_map(|i| (i % 7).to_le_bytes()).collect(),
        ),
    ];
    let views: Vec<_> = tensors.iter().map(Tensor::view).collect();
    safetensors_bytes(&views, Some(&[("format", "pt")]), 8).expect("safetensors")
}

/// Encoder settings that exercise the format's corners: default, archival (more
/// tables), fast (one table per stream, or up to four on blocks
/// of 2048), small chunks with the smallest blocks, and blocks as long as chunks.
pub fn encode_settings() -> Vec<(&'static str, EncodeOptions)> {
    vec![
        ("default", EncodeOptions::default()),
        ("max", EncodeOptions::max()),
        ("fast", EncodeOptions::fast()),
        (
            "chunk 2^10, block 2^5",
            EncodeOptions {
                chunk_log2: 10,
                block_log2: 5,
                ..Default::default()
            },
        ),
        (
            "chunk 2^12, block 2^12",
            EncodeOptions {
                chunk_log2: 12,
                block_log2: 12,
                ..Default::default()
            },
        ),
    ]
}

/// The CPU decoder's bytes of tensor `i`.
pub fn cpu_tensor(archive: &Archive<'_>, i: usize) -> Vec<u8> {
    let len = archive.index().tensors[i].original_len as usize;
    let mut out = vec![0u8; len];
    archive.decode_tensor(i, &mut out).expect("CPU decode");
    out
}
