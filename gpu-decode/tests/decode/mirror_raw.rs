//! Raw blocks (format 1.4, stream mode 5, FORMAT.md §5.5.1) on the kernel path: the
//! mirror decodes them bit-exactly against the CPU decoder (all-raw, mixed and short last
//! chunks, FP8's 8-bit field, BF16's 7-bit field), F32 tensors with raw blocks go to the
//! CPU (`Fallback::RawBlocks`) and still match, and damaged mode-5 data gives the kernel's
//! error codes without an access outside the uploaded buffers (the mirror's memory
//! panics on one).

use crate::common::*;
use crate::mirror::check_file;
use mcodec::container::Archive;
use mcodec::Dtype;
use mcodec::EncodeOptions;
use mcodec_fixtures::rng::SplitMix64;
use mcodec_fixtures::safetensors::{safetensors_bytes, Tensor};
use mcodec_gpu::plan::{
    Body, Fallback, FieldDesc, Prepared, TensorDesc, DEFAULT_MAX_TABLES, ERR_BAD_TABLE_ID,
    ERR_CORRUPT_CHUNK, MODE_RANS,
};
use std::collections::BTreeSet;

/// What kinds of raw chunks a prepared model holds.
#[derive(Debug, Default)]
struct Coverage {
    /// (layout, field, bits) of every field with a raw block.
    fields: BTreeSet<(u32, usize, u32)>,
    /// Chunks that are their raw area alone.
    all_raw: usize,
    /// Chunks with raw and coded blocks.
    mixed: usize,
    /// Short last chunks with raw blocks.
    short_last: usize,
}

/// A rANS field's chunk `c`: (payload length, raw area length) from the chunk index.
fn lens(p: &Prepared, f: &FieldDesc, c: u64) -> (u32, u32) {
    let at = (f.chunk_index + 16 * c + 8) as usize;
    let w = u64::from_le_bytes(p.arena[at..at + 8].try_into().expect("8 bytes"));
    (w as u32, (w >> 32) as u32)
}

/// The kernel tensors' rANS fields: (tensor index, descriptor, field index).
fn rans_fields(p: &Prepared) -> Vec<(usize, TensorDesc, usize)> {
    let mut out = Vec::new();
    for (i, t) in p.tensors.iter().enumerate() {
        if let Body::Split(d) = &t.body {
            for k in 0..d.n_fields as usize {
                if d.fields[k].mode == MODE_RANS {
                    out.push((i, *d, k));
                }
            }
        }
    }
    out
}

fn coverage(p: &Prepared) -> Coverage {
    let mut cov = Coverage::default();
    for (_, d, k) in rans_fields(p) {
        let f = &d.fields[k];
        let ids = &p.arena[f.block_ids as usize..][..d.n.div_ceil(1 << f.block_log2) as usize];
        if ids.iter().any(|&id| u32::from(id) == f.n_tables) {
            cov.fields.insert((d.layout, k, f.bits));
        }
        let chunks = d.n_chunks();
        for c in 0..chunks {
            let (len, area) = lens(p, f, c);
            if area == 0 {
                continue;
            }
            if len == area {
                cov.all_raw += 1;
            } else {
                cov.mixed += 1;
            }
            if c == chunks - 1 && d.n % (1 << d.chunk_log2) != 0 {
                cov.short_last += 1;
            }
        }
    }
    cov
}

/// Prepares `mcz`, checks that nothing but F32 tensors with raw blocks falls back to the
/// CPU and that the mirror matches the CPU decoder; returns the raw coverage of the kernel
/// tensors and the names of the F32 tensors sent to the CPU for their raw blocks.
fn check_raw(mcz: &[u8], what: &str) -> (Coverage, Vec<String>) {
    let archive = Archive::open(mcz).expect("open");
    let prepared = Prepared::new(&archive, None, DEFAULT_MAX_TABLES).expect("prepare");
    let split = prepared
        .tensors
        .iter()
        .filter(|t| matches!(t.body, Body::Split(_)))
        .count();
    let fallbacks: Vec<_> = prepared
        .fallbacks()
        .map(|(t, why)| (&t.name, why))
        .collect();
    let raw_f32: Vec<String> = prepared
        .fallbacks()
        .filter(|(t, why)| matches!(why, Fallback::RawBlocks { .. }) && t.dtype == Dtype::F32)
        .map(|(t, _)| t.name.clone())
        .collect();
    // Only F32 tensors with raw blocks leave the kernel path among the split ones.
    let (kernel, _, _) = check_file(mcz, what);
    assert_eq!(kernel, split, "{what}");
    assert!(
        prepared.fallbacks().all(|(t, why)| match why {
            Fallback::NotSplit(_) => true,
            Fallback::RawBlocks { .. } => t.dtype == Dtype::F32,
            Fallback::TooManyTables { .. } => false,
        }),
        "{what}: fallbacks {fallbacks:?}"
    );
    let cov = coverage(&prepared);
    println!("{what}: {cov:?}, F32 with raw blocks on the CPU: {raw_f32:?}");
    (cov, raw_f32)
}

/// Rows that defeat a table amid rows that do not: F32 rows of FP16 precision (zero low
/// mantissa bytes) among full-precision rows, and a stretch of full-precision rows alone; FP8 E4M3 rows of uniform bytes among rows
/// of few values; BF16 rows of uniform mantissas among rows of 2-bit mantissas. Lengths
/// are not multiples of a chunk (short last chunks).
fn raw_rows_model() -> Vec<u8> {
    let f32_rows: Vec<f32> = drifting(200_000, 7)
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            // No FP16 rows from 80,000 to 160,000: chunks there are all raw.
            if !(80_000..160_000).contains(&i) && (i / 384) % 7 == 3 {
                f32::from_bits(v.to_bits() & !0x1FFF)
            } else {
                v
            }
        })
        .collect();
    let mut rng = SplitMix64::new(21);
    let f8: Vec<u8> = (0..150_001)
        .map(|i| {
            if (i / 4096) % 3 == 1 {
                rng.next_u32() as u8
            } else {
                [0x30u8, 0x38, 0xB0, 0xB8, 0x28, 0xA8, 0x34][rng.below(7) as usize]
            }
        })
        .collect();
    let bf16: Vec<f32> = drifting(120_003, 9)
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if (i / 2048) % 3 == 1 {
                v
            } else {
                f32::from_bits(v.to_bits() & 0xFFE0_0000)
            }
        })
        .collect();
    let tensors = [
        Tensor::from_f32("rows.f32", "F32", &[200_000], &f32_rows),
        Tensor::new("rows.f8e4m3", "F8_E4M3", &[150_001], f8),
        Tensor::from_f32("rows.bf16", "BF16", &[120_003], &bf16),
        Tensor::from_f32("w.bf16", "BF16", &[70_003], &drifting(70_003, 2)),
    ];
    let views: Vec<_> = tensors.iter().map(Tensor::view).collect();
    safetensors_bytes(&views, Some(&[("format", "pt")]), 8).expect("safetensors")
}

#[test]
fn raw_blocks_decode_on_the_kernel_path_bit_exactly_f32_on_the_cpu() {
    let model = raw_rows_model();
    let mut total = Coverage::default();
    let mut raw_f32 = Vec::new();
    for (name, settings) in encode_settings() {
        let (cov, f32s) = check_raw(&pack_with(&model, settings), name);
        raw_f32.extend(f32s);
        total.fields.extend(cov.fields);
        total.all_raw += cov.all_raw;
        total.mixed += cov.mixed;
        total.short_last += cov.short_last;
    }
    println!("all settings: {total:?}");
    assert!(
        total.all_raw > 0 && total.mixed > 0 && total.short_last > 0,
        "{total:?}"
    );
    // BF16's 7-bit field and FP8's 8-bit field on the kernel path; the F32 tensor's raw
    // low mantissa bytes on the CPU.
    assert!(total.fields.contains(&(0, 1, 7)), "{total:?}");
    assert!(raw_f32.iter().any(|n| n == "rows.f32"), "{raw_f32:?}");
    assert!(
        total.fields.iter().any(|&(l, _, b)| l == 3 && b == 8),
        "{total:?}"
    );
}

#[test]
fn raw_rows_golden_matches_the_original() {
    let mcz = std::fs::read(golden_dir().join("raw-rows.safetensors.mcz")).expect("golden");
    // Its raw blocks are F32 low mantissa bytes: decoded on the CPU.
    let (_, raw_f32) = check_raw(&mcz, "raw-rows golden");
    assert!(!raw_f32.is_empty());
    // The mirror's bytes are the original file's tensors.
    let original =
        std::fs::read(mcodec_fixtures::data_dir().join("raw-rows.safetensors")).expect("data");
    let archive = Archive::open(&mcz).expect("open");
    let prepared = Prepared::new(&archive, None, DEFAULT_MAX_TABLES).expect("prepare");
    let all: Vec<usize> = (0..prepared.tensors.len()).collect();
    let (out, offsets) = mcodec_gpu::mirror_decode(&prepared, &all).expect("mirror");
    for (i, t) in prepared.tensors.iter().enumerate() {
        let at = archive.index().tensors[t.index].original_offset as usize;
        let len = t.out_len as usize;
        let got = &out[offsets[i] as usize..][..len];
        assert!(got == &original[at..at + len], "tensor {}", t.name);
    }
}

#[test]
fn minilm_f32_raw_blocks_match_cpu_when_present() {
    let path = "/work/main/benches/data/minilm-f32.safetensors";
    let Ok(input) = std::fs::read(path) else {
        skip(&format!(
            "{path} absent; bench data is not in the repository"
        ));
        return;
    };
    let (_, raw_f32) = check_raw(&pack_with(&input, EncodeOptions::default()), "minilm f32");
    assert!(!raw_f32.is_empty());
}

/// Runs the mirror on `p`; returns the kernel error code (0 for none).
fn error_code(p: &Prepared) -> u32 {
    let all: Vec<usize> = (0..p.tensors.len()).collect();
    match mcodec_gpu::mirror_decode(p, &all) {
        Ok(_) => 0,
        Err(e) => e.code,
    }
}

fn copy(p: &Prepared) -> Prepared {
    Prepared {
        arena: p.arena.clone(),
        tables: p.tables.clone(),
        tensors: p.tensors.clone(),
    }
}

/// A mode 5 field's chunk: (field, chunk, its blocks' ids as arena offsets, payload
/// length, raw area length).
type RawChunk = (FieldDesc, u64, std::ops::Range<usize>, u32, u32);

#[test]
fn damaged_raw_blocks_give_kernel_errors_in_bounds() {
    // Blocks of 2^12 give an all-raw chunk (BF16's 7-bit field), blocks of 2^8 mixed ones
    // and chunks without raw blocks in mode 5 streams.
    let model = raw_rows_model();
    let mut met = [0usize; 3];
    for (chunk_log2, block_log2) in [(12, 12), (12, 8)] {
        let mcz = pack_with(
            &model,
            EncodeOptions {
                chunk_log2,
                block_log2,
                ..Default::default()
            },
        );
        let archive = Archive::open(&mcz).expect("open");
        let clean = Prepared::new(&archive, None, DEFAULT_MAX_TABLES).expect("prepare");
        assert_eq!(error_code(&clean), 0);
        let found = damage(&clean);
        for (m, f) in met.iter_mut().zip(found) {
            *m += f;
        }
    }
    assert!(
        met.iter().all(|&m| m > 0),
        "all-raw, mixed, no-raw chunks damaged: {met:?}"
    );
}

/// Damages `clean`'s mode 5 streams in targeted and random ways; returns how many of its
/// all-raw, mixed and raw-free chunks were targeted.
fn damage(clean: &Prepared) -> [usize; 3] {
    let mut all_raw: Option<RawChunk> = None;
    let mut mixed: Option<RawChunk> = None;
    let mut coded_no_raw: Option<RawChunk> = None;
    let mut ranges = Vec::new();
    for (_, d, k) in rans_fields(clean) {
        let f = d.fields[k];
        let ids = f.block_ids as usize;
        let n_ids = d.n.div_ceil(1 << f.block_log2) as usize;
        if !clean.arena[ids..ids + n_ids]
            .iter()
            .any(|&id| u32::from(id) == f.n_tables)
        {
            continue;
        }
        ranges.push((ids, ids + n_ids));
        let per_chunk = 1usize << (d.chunk_log2 - f.block_log2);
        for c in 0..d.n_chunks() {
            let (len, area) = lens(clean, &f, c);
            let first = ids + c as usize * per_chunk;
            let blocks = first..(first + per_chunk).min(ids + n_ids);
            let off = u64::from_le_bytes(
                clean.arena[(f.chunk_index + 16 * c) as usize..][..8]
                    .try_into()
                    .expect("8"),
            );
            let payload = (f.stream + off) as usize;
            ranges.push((payload, payload + len as usize));
            let item = (f, c, blocks, len, area);
            if area > 0 && len == area && len >= 128 {
                all_raw.get_or_insert(item);
            } else if area > 0 && len != area {
                mixed.get_or_insert(item);
            } else if area == 0 {
                coded_no_raw.get_or_insert(item);
            }
        }
    }
    let raw_id = |f: &FieldDesc| f.n_tables as u8;

    if let Some((f, c, blocks, _, area)) = &all_raw {
        // A raw block's id past the table count: a bad table id.
        let mut p = copy(clean);
        p.arena[blocks.start] = raw_id(f) + 1;
        assert_eq!(error_code(&p), ERR_BAD_TABLE_ID);
        // Raw blocks made coded (no states, no words), a raw area shorter than its blocks:
        // in bounds, whatever is reported.
        let mut p = copy(clean);
        for b in blocks.clone() {
            p.arena[b] = 0;
        }
        error_code(&p);
        let mut p = copy(clean);
        let at = (f.chunk_index + 16 * c) as usize;
        p.arena[at + 8..at + 12].copy_from_slice(&(area / 2).to_le_bytes());
        p.arena[at + 12..at + 16].copy_from_slice(&(area / 2).to_le_bytes());
        error_code(&p);
    }
    if let Some((f, c, _, len, area)) = &mixed {
        // A mixed chunk taken for an all-raw one, a raw area as long as the payload.
        let mut p = copy(clean);
        let at = (f.chunk_index + 16 * c + 8) as usize;
        p.arena[at..at + 4].copy_from_slice(&area.to_le_bytes());
        error_code(&p);
        let mut p = copy(clean);
        p.arena[at + 4..at + 8].copy_from_slice(&len.to_le_bytes());
        error_code(&p);
    }
    // A coded block made raw where the raw area is used up (a mixed chunk) or empty (a
    // chunk without raw blocks): the raw reads overrun the area.
    for (f, _, blocks, _, _) in [&mixed, &coded_no_raw].into_iter().flatten() {
        let coded = blocks
            .clone()
            .find(|&b| clean.arena[b] != raw_id(f))
            .expect("a coded block");
        let mut p = copy(clean);
        p.arena[coded] = raw_id(f);
        assert_eq!(error_code(&p), ERR_CORRUPT_CHUNK);
    }
    // A raw area longer than the payload (a corrupt device copy of the chunk index).
    for (f, c, _, _, _) in [&all_raw, &mixed].into_iter().flatten() {
        let mut p = copy(clean);
        let at = (f.chunk_index + 16 * c + 12) as usize;
        p.arena[at..at + 4].copy_from_slice(&0xFFFF_0000u32.to_le_bytes());
        assert_eq!(error_code(&p), ERR_CORRUPT_CHUNK);
    }

    // Random bit flips in the mode 5 streams' ids and payloads.
    let mut rng = SplitMix64::new(5);
    let mut reported = 0;
    for _ in 0..60 {
        let mut p = copy(clean);
        let (from, to) = ranges[rng.below(ranges.len() as u64) as usize];
        for _ in 0..4 {
            let at = from + rng.below((to - from) as u64) as usize;
            p.arena[at] ^= 1 << rng.below(8);
        }
        let code = error_code(&p);
        assert!(code <= ERR_BAD_TABLE_ID, "code {code}");
        reported += usize::from(code != 0);
    }
    // Flips in a raw area change symbols, not the decode's shape: the file's checksums
    // catch those (the host checks them before upload).
    println!("{reported} of 60 damaged arenas reported by the kernel");
    [
        usize::from(all_raw.is_some()),
        usize::from(mixed.is_some()),
        usize::from(coded_no_raw.is_some()),
    ]
}
