//! Raw blocks (format 1.4, stream mode 5, FORMAT.md §5.5.1) on the kernel path: the
//! mirror decodes them bit-exactly against the CPU decoder and the original bytes
//! (all-raw, mixed and short last chunks; FP8's 8-bit field, BF16's 7-bit field and every
//! F32 field, F32 tensors through the kernel's `MODES_ANY` instance, `FLAG_F32_RAW`), no
//! tensor with raw blocks falls back to the CPU, and damaged mode-5 data gives the
//! kernel's error codes without an access outside the uploaded buffers (the mirror's
//! memory panics on one), in F32 tensors and the others.

use crate::common::*;
use crate::mirror::check_file;
use mcodec::container::Archive;
use mcodec::EncodeOptions;
use mcodec_fixtures::rng::SplitMix64;
use mcodec_fixtures::safetensors::{safetensors_bytes, Tensor};
use mcodec_gpu::plan::{
    Body, Fallback, FieldDesc, Prepared, TensorDesc, DEFAULT_MAX_TABLES, ERR_BAD_TABLE_ID,
    ERR_CORRUPT_CHUNK, FLAG_F32_RAW, MODE_RANS,
};
use std::collections::BTreeSet;

/// The kernel's F32 layouts (`LAYOUT_F32`, `LAYOUT_F32_JOINT`).
const F32_LAYOUTS: [u32; 2] = [2, 6];

/// What kinds of raw chunks a prepared model holds.
#[derive(Debug, Default)]
struct Coverage {
    /// (layout, field, bits) of every field with a raw block.
    fields: BTreeSet<(u32, usize, u32)>,
    /// Chunks that are their raw area alone, per layout.
    all_raw: BTreeSet<u32>,
    /// Chunks with raw and coded blocks: how many.
    mixed: usize,
    /// Layouts with short last chunks with raw blocks.
    short_last: BTreeSet<u32>,
    /// F32 tensors with raw blocks, all flagged for the kernel's `MODES_ANY` instance.
    f32_raw_tensors: usize,
}

impl Coverage {
    fn add(&mut self, other: Coverage) {
        self.fields.extend(other.fields);
        self.all_raw.extend(other.all_raw);
        self.mixed += other.mixed;
        self.short_last.extend(other.short_last);
        self.f32_raw_tensors += other.f32_raw_tensors;
    }
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

/// Whether rANS field `f` of `d` has a raw block.
fn has_raw(p: &Prepared, d: &TensorDesc, f: &FieldDesc) -> bool {
    let ids = &p.arena[f.block_ids as usize..][..d.n.div_ceil(1 << f.block_log2) as usize];
    ids.iter().any(|&id| u32::from(id) == f.n_tables)
}

fn coverage(p: &Prepared) -> Coverage {
    let mut cov = Coverage::default();
    let mut f32_raw = BTreeSet::new();
    for (i, d, k) in rans_fields(p) {
        let f = &d.fields[k];
        if has_raw(p, &d, f) {
            cov.fields.insert((d.layout, k, f.bits));
            // The planner flags exactly the F32 tensors with raw blocks.
            assert_eq!(
                d.flags & FLAG_F32_RAW != 0,
                F32_LAYOUTS.contains(&d.layout),
                "{}",
                p.tensors[i].name
            );
            if F32_LAYOUTS.contains(&d.layout) {
                f32_raw.insert(i);
            }
        }
        let chunks = d.n_chunks();
        for c in 0..chunks {
            let (len, area) = lens(p, f, c);
            if area == 0 {
                continue;
            }
            if len == area {
                cov.all_raw.insert(d.layout);
            } else {
                cov.mixed += 1;
            }
            if c == chunks - 1 && d.n % (1 << d.chunk_log2) != 0 {
                cov.short_last.insert(d.layout);
            }
        }
    }
    // An F32 tensor without raw blocks keeps the specialised instances.
    for (i, t) in p.tensors.iter().enumerate() {
        if let Body::Split(d) = &t.body {
            if d.flags & FLAG_F32_RAW != 0 {
                assert!(
                    f32_raw.contains(&i),
                    "{} flagged without raw blocks",
                    t.name
                );
            }
        }
    }
    cov.f32_raw_tensors = f32_raw.len();
    cov
}

/// Prepares `mcz`, checks that no split tensor leaves the kernel path, that the mirror
/// matches the CPU decoder and, where `original` (the safetensors file packed) is given,
/// the original tensors' bytes; returns the raw coverage of the kernel tensors.
fn check_raw(mcz: &[u8], original: Option<&[u8]>, what: &str) -> Coverage {
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
    let (kernel, _, _) = check_file(mcz, what);
    assert_eq!(kernel, split, "{what}");
    assert!(
        prepared
            .fallbacks()
            .all(|(_, why)| matches!(why, Fallback::NotSplit(_))),
        "{what}: fallbacks {fallbacks:?}"
    );
    if let Some(original) = original {
        let all: Vec<usize> = (0..prepared.tensors.len()).collect();
        let (out, offsets) = mcodec_gpu::mirror_decode(&prepared, &all).expect("mirror");
        for (i, t) in prepared.tensors.iter().enumerate() {
            let at = archive.index().tensors[t.index].original_offset as usize;
            let len = t.out_len as usize;
            let got = &out[offsets[i] as usize..][..len];
            assert!(got == &original[at..at + len], "{what}: tensor {}", t.name);
        }
    }
    let cov = coverage(&prepared);
    println!("{what}: {cov:?}");
    cov
}

/// Rows that defeat a table amid rows that do not: F32 rows of FP16 precision (zero low
/// mantissa bytes) among full-precision rows, and a stretch of full-precision rows alone;
/// F32 rows of random bits (the low three fields near-uniform) amid rows of powers of two
/// with a coarse mantissa and full-precision rows, and a stretch of random rows alone; F32
/// weights with one chunk in 16 of exponents spread over 0…127 (under one table, as the
/// fast level at 2^12-element chunks plans it, those chunks of field 0 are raw); FP8 E4M3
/// rows of uniform bytes among rows of few values; BF16 rows of uniform mantissas among
/// rows of 2-bit mantissas. Lengths are not multiples of a chunk (short last chunks).
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
    let mut rng = SplitMix64::new(33);
    let f32_fields: Vec<f32> = drifting(180_001, 8)
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            // Random bits (fields 1 to 3 raw; field 0 has more than a table's 256
            // symbols: packed) in every fourth row of 512 and from 100,000 to 140,000
            // (all-raw chunks); full precision (the low fields raw) in every fourth row
            // but one; else a power of two with 1 mantissa bit.
            let random = (100_000..140_000).contains(&i) || (i / 512) % 4 == 2;
            if random {
                f32::from_bits(rng.next_u32())
            } else if (i / 512) % 4 == 3 {
                v
            } else {
                f32::from_bits(v.to_bits() & 0xFFC0_0000)
            }
        })
        .collect();
    let mut rng = SplitMix64::new(34);
    let f32_exps: Vec<f32> = (0..65_537)
        .map(|i| {
            if (i / 4096) % 16 == 5 {
                // 256 symbols of field 0, uniform: exponents 0…127, bit 22 random.
                let e = rng.below(128) as u32;
                f32::from_bits((rng.next_u32() & 0x807F_FFFF) | e << 23)
            } else {
                (rng.gaussian() * 0.02) as f32
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
        Tensor::from_f32("fields.f32", "F32", &[180_001], &f32_fields),
        Tensor::from_f32("exps.f32", "F32", &[65_537], &f32_exps),
        Tensor::new("rows.f8e4m3", "F8_E4M3", &[150_001], f8),
        Tensor::from_f32("rows.bf16", "BF16", &[120_003], &bf16),
        Tensor::from_f32("w.bf16", "BF16", &[70_003], &drifting(70_003, 2)),
    ];
    let views: Vec<_> = tensors.iter().map(Tensor::view).collect();
    safetensors_bytes(&views, Some(&[("format", "pt")]), 8).expect("safetensors")
}

/// The encoder settings of `common.rs` and the fast level at 2^12-element chunks (one
/// table for `exps.f32`'s field 0, whose odd chunks it then stores raw).
fn raw_settings() -> Vec<(&'static str, EncodeOptions)> {
    let mut settings = encode_settings();
    settings.push((
        "fast, chunk 2^12",
        EncodeOptions {
            chunk_log2: 12,
            ..EncodeOptions::fast()
        },
    ));
    settings
}

#[test]
fn raw_blocks_decode_on_the_kernel_path_bit_exactly_f32_included() {
    let model = raw_rows_model();
    let mut total = Coverage::default();
    for (name, settings) in raw_settings() {
        total.add(check_raw(&pack_with(&model, settings), Some(&model), name));
    }
    println!("all settings: {total:?}");
    assert!(total.mixed > 0, "{total:?}");
    // All-raw and short last chunks with raw blocks in BF16 (or FP8) and F32 tensors.
    for kinds in [&total.all_raw, &total.short_last] {
        assert!(kinds.contains(&2), "{total:?}");
        assert!(kinds.contains(&0) || kinds.contains(&3), "{total:?}");
    }
    // BF16's 7-bit field and FP8's 8-bit field; every F32 field (9, 7, 8 and 8 bits).
    assert!(total.fields.contains(&(0, 1, 7)), "{total:?}");
    assert!(total.fields.contains(&(3, 0, 8)), "{total:?}");
    for (k, bits) in [9, 7, 8, 8].into_iter().enumerate() {
        assert!(
            total.fields.contains(&(2, k, bits)),
            "F32 field {k}: {total:?}"
        );
    }
    assert!(total.f32_raw_tensors >= raw_settings().len(), "{total:?}");
}

#[test]
fn raw_rows_golden_matches_the_original() {
    let mcz = std::fs::read(golden_dir().join("raw-rows.safetensors.mcz")).expect("golden");
    let original =
        std::fs::read(mcodec_fixtures::data_dir().join("raw-rows.safetensors")).expect("data");
    // Its raw blocks are F32 low mantissa bytes: decoded by the kernel's F32 MODES_ANY
    // instance, bit-exactly the original file's tensors.
    let cov = check_raw(&mcz, Some(&original), "raw-rows golden");
    assert!(cov.f32_raw_tensors > 0, "{cov:?}");
}

#[test]
fn minilm_f32_raw_blocks_match_the_original_when_present() {
    let path = "/work/main/benches/data/minilm-f32.safetensors";
    let Ok(input) = std::fs::read(path) else {
        skip(&format!(
            "{path} absent; bench data is not in the repository"
        ));
        return;
    };
    let mcz = pack_with(&input, EncodeOptions::default());
    let cov = check_raw(&mcz, Some(&input), "minilm f32");
    assert!(cov.f32_raw_tensors > 0, "{cov:?}");
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
    // Blocks of 2^12 give all-raw chunks, blocks of 2^8 mixed ones and chunks without raw
    // blocks in mode 5 streams; damaged apart in the F32 tensors (the kernel's F32
    // MODES_ANY instance) and in the others.
    let model = raw_rows_model();
    let mut met = [[0usize; 3]; 2];
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
        for (met, f32) in met.iter_mut().zip([true, false]) {
            let found = damage(&clean, f32);
            for (m, f) in met.iter_mut().zip(found) {
                *m += f;
            }
        }
    }
    assert!(
        met.iter().flatten().all(|&m| m > 0),
        "all-raw, mixed, no-raw chunks damaged (F32, others): {met:?}"
    );
}

/// Damages `clean`'s mode 5 streams of F32 tensors (`f32`) or of the others in targeted
/// and random ways; returns how many of their all-raw, mixed and raw-free chunks were
/// targeted.
fn damage(clean: &Prepared, f32: bool) -> [usize; 3] {
    let mut all_raw: Option<RawChunk> = None;
    let mut mixed: Option<RawChunk> = None;
    let mut coded_no_raw: Option<RawChunk> = None;
    let mut ranges = Vec::new();
    for (_, d, k) in rans_fields(clean) {
        if F32_LAYOUTS.contains(&d.layout) != f32 {
            continue;
        }
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
    if ranges.is_empty() {
        return [0; 3];
    }
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
