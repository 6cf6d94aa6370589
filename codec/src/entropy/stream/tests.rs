use super::super::xorshift;
use super::encode::Mode;
use super::plan::{
    assign_in_runs, assign_in_runs_any, change_charge, corrected_entropy_bits, fit_tables,
    fit_tables_runs, level_choices, level_choices_in_order, level_choices_pairwise, sparse,
    sums_are_exact, Switches,
};
use super::*;
use crate::entropy::EntropyError;

/// Block costs as the refinement sees them: a few to thousands of bits, some
/// infinite (a table without one of the block's symbols).
fn block_costs(n: usize, k: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut x = seed;
    (0..n * k)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = (x >> 40) as u32;
            if r.is_multiple_of(23) {
                f32::INFINITY
            } else {
                scale * (1.0 + (r % 100_000) as f32 * 0.0371)
            }
        })
        .collect()
}

#[test]
fn pairwise_level_sums_choose_as_block_by_block_sums() {
    for k in 2..=8usize {
        for n in [1usize, 2, 3, 7, 64, 1000, 1025, 2048] {
            for levels in [1u8, 3, 7, 10] {
                let costs = block_costs(n, k, (n * 31 + k) as u64, 1.0);
                assert!(sums_are_exact(&costs, k << levels, k), "k {k} n {n}");
                let want = level_choices_in_order(&costs, k, levels);
                let got = level_choices_pairwise(&costs, k, levels);
                assert_eq!(got.len(), want.len());
                for ((gi, gb), (wi, wb)) in got.iter().zip(&want) {
                    assert_eq!(gi, wi, "k {k} n {n} levels {levels}");
                    assert_eq!(gb.to_bits(), wb.to_bits(), "k {k} n {n} levels {levels}");
                }
                assert_eq!(level_choices(&costs, k, levels), want);
            }
        }
    }
    // Costs so small that a group's sum could round: not exact, summed in order.
    let mut costs = block_costs(1000, 4, 7, 1.0);
    costs[5] = 1e-9;
    assert!(!sums_are_exact(&costs, 4 << 10, 4));
    assert_eq!(
        level_choices(&costs, 4, 10),
        level_choices_in_order(&costs, 4, 10)
    );
    // Totals far above the smallest cost's last place: not exact either.
    let mut costs = block_costs(1000, 4, 9, 1e12);
    costs[3] = 1.0;
    assert!(!sums_are_exact(&costs, 4 << 10, 4));
    assert_eq!(
        level_choices(&costs, 4, 10),
        level_choices_in_order(&costs, 4, 10)
    );
    assert!(!sums_are_exact(&[f32::NAN, 1.0], 2, 2));
    assert!(!sums_are_exact(&[-1.0, 1.0], 2, 2));
    assert!(sums_are_exact(&[f32::INFINITY, 0.0], 2, 2));
}

#[test]
fn run_assignment_per_table_count_matches_the_general_one() {
    for k in 2..=8usize {
        for n in [0usize, 1, 5, 300] {
            for scale in [1.0f32, 40.0] {
                let costs = block_costs(n, k, (n + 7 * k) as u64, scale);
                for bits in [0.0, 200.0] {
                    let switches = Switches { bits };
                    assert_eq!(
                        assign_in_runs(&costs, k, switches),
                        assign_in_runs_any(&costs, k, change_charge(k, switches)),
                        "k {k} n {n} switch bits {bits}"
                    );
                }
            }
        }
    }
}

#[test]
fn planning_block_entropy_table_and_long_block_refits_change_nothing() {
    let mut next = xorshift(0x2545_F491_4F6C_DD1Du64);
    // Blocks of exactly PLAN_BLOCK_N symbols (the table's case) and of one fewer:
    // bit-identical to the dense reference's logarithms.
    for round in 0..300 {
        let alphabet = 1usize << (1 + round % 9);
        let len = if round % 2 == 0 { 2048 } else { 2047 };
        let mut dense = vec![0u32; alphabet];
        let skew = 1 + next() % 4;
        for _ in 0..len {
            let r = (next() % alphabet as u64) >> (next() % skew);
            dense[r as usize] += 1;
        }
        assert_eq!(
            sparse_entropy_bits(&sparse(&dense)).to_bits(),
            corrected_entropy_bits(&dense).to_bits(),
            "round {round}"
        );
    }
    // Short blocks in runs of tables (some runs covering long blocks, some not, a
    // short last long block): the same tables from the long blocks' sums.
    for round in 0..40 {
        let shift = 1 + (round % 4) as u8;
        let n_fine = 1 + (next() % 200) as usize;
        let fine: Vec<Sparse> = (0..n_fine)
            .map(|_| {
                let mut h = vec![0u32; 512];
                for _ in 0..64 {
                    h[(next() % 512) as usize] += 1 + (next() % 9) as u32;
                }
                sparse(&h)
            })
            .collect();
        let coarse: Vec<Sparse> = fine
            .chunks(1 << shift)
            .map(|run| {
                let mut h = vec![0u32; 512];
                for &(s, c) in run.iter().flatten() {
                    h[usize::from(s)] += c;
                }
                sparse(&h)
            })
            .collect();
        let k = 1 + (next() % 4) as usize;
        let mut assign = Vec::with_capacity(n_fine);
        while assign.len() < n_fine {
            let t = (next() % k as u64) as u8;
            let run = 1 + (next() % 20) as usize;
            assign.extend(std::iter::repeat_n(t, run.min(n_fine - assign.len())));
        }
        let long = Coarse {
            hists: &coarse,
            shift,
        };
        assert_eq!(
            fit_tables_runs(&fine, Some(long), &assign, k, 512),
            fit_tables(fine.iter(), &assign, k, 512),
            "round {round}"
        );
    }
}

/// The sparse entropy the encoder uses is bit for bit the dense one it replaced, and
/// planning from sparse histograms gives the plan the dense ones give.
#[test]
fn sparse_entropy_and_plan_match_the_dense_ones() {
    let mut next = xorshift(0x9E37_79B9_7F4A_7C15u64);
    for round in 0..200 {
        let bits = 1 + (round % 9) as u32;
        let blocks: Vec<Vec<u32>> = (0..1 + round % 37)
            .map(|_| {
                (0..1usize << bits)
                    .map(|_| match next() % 4 {
                        0 => (next() % 5000) as u32,
                        1 => (next() % 3) as u32,
                        _ => 0,
                    })
                    .collect()
            })
            .collect();
        for h in &blocks {
            assert_eq!(
                corrected_entropy_bits(h).to_bits(),
                sparse_entropy_bits(&sparse(h)).to_bits()
            );
        }
        for h in &blocks {
            let (exact, fast) = (
                sparse_entropy_bits(&sparse(h)),
                sparse_entropy_bits_fast(&sparse(h)),
            );
            assert!(
                (exact - fast).abs() <= 1e-9 * exact.max(1.0),
                "{exact} {fast}"
            );
        }
        let sparse_blocks: Vec<Sparse> = blocks.iter().map(|h| sparse(h)).collect();
        for effort in [Effort::Default, Effort::Max] {
            let dense = StreamEncoder::plan(&blocks, bits, 5, 10, effort);
            let from_sparse = StreamEncoder::plan_sparse(&sparse_blocks, bits, 5, 10, effort, 0.0);
            assert_eq!(
                format!("{dense:?}"),
                format!("{from_sparse:?}"),
                "round {round}"
            );
        }
    }
}

fn hist(symbols: &[u16], bits: u32) -> Vec<u32> {
    let mut h = vec![0u32; 1 << bits];
    for &s in symbols {
        h[usize::from(s)] += 1;
    }
    h
}

fn round_trip(
    symbols: &[u16],
    bits: u32,
    block_log2: u8,
    chunk_log2: u8,
    effort: Effort,
) -> (Vec<u8>, StreamKind) {
    round_trip_with(symbols, bits, block_log2, chunk_log2, effort, false)
}

/// [`round_trip`] with the blocks marked raw where packing costs as much
/// ([`StreamEncoder::mark_raw`], as the tensor encoder does after planning).
fn round_trip_raw(
    symbols: &[u16],
    bits: u32,
    block_log2: u8,
    chunk_log2: u8,
    effort: Effort,
) -> (Vec<u8>, StreamKind) {
    round_trip_with(symbols, bits, block_log2, chunk_log2, effort, true)
}

/// Plans, codes (raw blocks marked when `raw`), parses and decodes `symbols`, checks
/// the round trip, and returns the stream with what it stores.
fn round_trip_with(
    symbols: &[u16],
    bits: u32,
    block_log2: u8,
    chunk_log2: u8,
    effort: Effort,
    raw: bool,
) -> (Vec<u8>, StreamKind) {
    let chunk_len = 1usize << chunk_log2;
    let hists: Vec<Vec<u32>> = symbols
        .chunks(1 << block_log2)
        .map(|b| hist(b, bits))
        .collect();
    let mut enc = StreamEncoder::plan(&hists, bits, block_log2, chunk_log2, effort);
    if raw {
        let sparse_hists: Vec<SparseHist> = hists.iter().map(|h| sparse(h)).collect();
        enc.mark_raw(&sparse_hists, block_log2);
    }
    let pieces: Vec<Vec<u8>> = symbols
        .chunks(chunk_len)
        .enumerate()
        .map(|(c, s)| enc.encode_chunk(c, s).unwrap())
        .collect();
    let bytes = enc.assemble(pieces).to_vec();
    let dec = StreamDecoder::parse(&bytes, bits, symbols.len(), chunk_len).unwrap();
    let mut back = vec![0u16; symbols.len()];
    for (c, out) in back.chunks_mut(chunk_len).enumerate() {
        dec.decode_chunk(c, out).unwrap();
    }
    assert_eq!(back, symbols);
    let kind = dec.kind();
    drop(dec);
    (bytes, kind)
}

#[test]
fn modes_are_chosen_by_content() {
    assert_eq!(
        round_trip(&[5; 100], 9, 5, 6, Effort::Default).1,
        StreamKind::Const
    );
    let uniform: Vec<u16> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 20) as u16 & 0x7F)
        .collect();
    assert_eq!(
        round_trip(&uniform, 7, 8, 10, Effort::Default).1,
        StreamKind::Packed
    );
    assert_eq!(
        round_trip(&[], 9, 5, 6, Effort::Default).1,
        StreamKind::Packed
    );
    let wide: Vec<u16> = (0..2000u16).map(|i| i % 300).collect();
    assert_eq!(
        round_trip(&wide, 9, 8, 8, Effort::Default).1,
        StreamKind::Packed
    );
}

/// A charge per change of table keeps runs of one table where the tables code the
/// blocks almost alike, and the plan so made codes and decodes as any other.
#[test]
fn switch_charge_keeps_runs_of_one_table() {
    // Two tables, each 20 bits better on every other block.
    let per_block: Vec<f32> = (0..64)
        .flat_map(|b| {
            if b % 2 == 0 {
                [100.0, 120.0]
            } else {
                [120.0, 100.0]
            }
        })
        .collect();
    let changes = |ids: &[u8]| ids.windows(2).filter(|w| w[0] != w[1]).count();
    let free = assign_in_runs(&per_block, 2, Switches { bits: 0.0 });
    assert_eq!(changes(&free), 63);
    let charged = assign_in_runs(&per_block, 2, Switches { bits: 200.0 });
    assert_eq!(changes(&charged), 0);
    // A stream of 8-bit symbols drifting between two close distributions in runs of
    // 1 to 4 blocks of 256, and a far one every 64 blocks.
    let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
    let mut symbols = Vec::new();
    let mut b = 0;
    while b < 512 {
        let run = 1 + (next() % 4) as usize;
        let far = b % 64 == 0;
        let shift = if far { 100 } else { 8 * (b / run % 2) as u16 };
        for _ in 0..run * 256 {
            let r = next();
            symbols.push(shift + (r % 16) as u16 + ((r >> 8) % 3) as u16 * (r >> 20 & 1) as u16);
        }
        b += run;
    }
    let (block_log2, chunk_log2) = (8, 14);
    let hists: Vec<SparseHist> = symbols
        .chunks(1 << block_log2)
        .map(|blk| sparse(&hist(blk, 8)))
        .collect();
    let plan = |bits: f64| {
        StreamEncoder::plan_sparse(&hists, 8, block_log2, chunk_log2, Effort::Default, bits)
    };
    let ids_changes = |enc: &StreamEncoder| match &enc.mode {
        Mode::Rans {
            block_tables,
            blocks_per_chunk,
            ..
        } => block_tables
            .chunks(*blocks_per_chunk)
            .map(&changes)
            .sum::<usize>(),
        _ => 0,
    };
    let (by_size, by_speed) = (plan(0.0), plan(1000.0));
    assert!(matches!(by_size.mode, Mode::Rans { ref tables, .. } if tables.len() >= 2));
    assert!(
        ids_changes(&by_speed) < ids_changes(&by_size),
        "{} vs {}",
        ids_changes(&by_speed),
        ids_changes(&by_size)
    );
    let chunk_len = 1usize << chunk_log2;
    let pieces: Vec<Vec<u8>> = symbols
        .chunks(chunk_len)
        .enumerate()
        .map(|(c, s)| by_speed.encode_chunk(c, s).unwrap())
        .collect();
    let bytes = by_speed.assemble(pieces).to_vec();
    let dec = StreamDecoder::parse(&bytes, 8, symbols.len(), chunk_len).unwrap();
    let mut back = vec![0u16; symbols.len()];
    for (c, out) in back.chunks_mut(chunk_len).enumerate() {
        dec.decode_chunk(c, out).unwrap();
    }
    assert_eq!(back, symbols);
}

#[test]
fn drifting_statistics_use_several_tables() {
    // Blocks alternate between symbols skewed low and skewed high.
    let mut symbols = Vec::new();
    for b in 0..64u32 {
        for i in 0..1024u32 {
            let r = (i.wrapping_mul(2654435761) >> 28) as u16;
            symbols.push(if b % 2 == 0 { r % 3 } else { 60 + r % 3 });
        }
    }
    let (bytes, kind) = round_trip(&symbols, 9, 10, 14, Effort::Default);
    assert!(matches!(kind, StreamKind::Rans(t) if t >= 2), "{kind:?}");
    let (one_table, _) = round_trip(&symbols, 9, 14, 14, Effort::Default);
    assert!(
        bytes.len() < one_table.len() * 2 / 3,
        "{} vs {}",
        bytes.len(),
        one_table.len()
    );
    round_trip(&symbols[..50_001], 9, 7, 12, Effort::Max);
}

/// A stream of near-uniform bytes with runs of blocks of one value (F32's low mantissa
/// bytes, with rows of FP16 precision): those are coded, the rest raw (mode 5), and
/// it round-trips through every decode entry (single chunks, pairs, bytes), with all-
/// raw and mixed chunks, on blocks of 256 and on whole chunks (one table).
#[test]
fn raw_blocks_round_trip_in_mode_5() {
    let mut next = xorshift(0x9E37_79B9_7F4A_7C15u64);
    let n = 70_000;
    let symbols: Vec<u16> = (0..n)
        .map(|i| {
            // Blocks 40..60 and 200..210 are all zeros; chunk 0 (4096 symbols) is raw.
            let b = i / 256;
            if (40..60).contains(&b) || (200..210).contains(&b) {
                0
            } else {
                (next() & 0xFF) as u16
            }
        })
        .collect();
    let (bytes, kind) = round_trip_raw(&symbols, 8, 8, 12, Effort::Default);
    assert_eq!(bytes[0], MODE_RANS_RAW);
    assert!(matches!(kind, StreamKind::Rans(_)));
    // The zero blocks cost nothing: the stream is about the raw bytes.
    let raw_bytes = n - 30 * 256;
    assert!(bytes.len() < raw_bytes + 2000, "{} bytes", bytes.len());
    let dec = StreamDecoder::parse(&bytes, 8, n, 4096).unwrap();
    let chunks = n.div_ceil(4096);
    let mut back = vec![0u16; n];
    let mut by_pairs = back.chunks_mut(4096).collect::<Vec<_>>();
    for c in (0..chunks - 1).step_by(2) {
        let (a, b) = by_pairs.split_at_mut(c + 1);
        dec.decode_chunk_pair(c, a[c], b[0]).unwrap();
    }
    if chunks % 2 == 1 {
        dec.decode_chunk(chunks - 1, by_pairs[chunks - 1]).unwrap();
    }
    assert!(back == symbols);
    let mut bytes_back = vec![0u8; n];
    for c in (0..chunks).step_by(2) {
        let (a, rest) = bytes_back[c * 4096..].split_at_mut(4096.min(n - c * 4096));
        let rest_len = rest.len();
        let b = &mut rest[..4096.min(rest_len)];
        dec.decode_chunks_to_bytes(c, a, b).unwrap().unwrap();
    }
    assert!(bytes_back
        .iter()
        .zip(&symbols)
        .all(|(&b, &s)| u16::from(b) == s));
    // The layout names raw blocks by the id equal to the table count.
    let StreamLayout::Rans {
        tables, block_ids, ..
    } = dec.layout()
    else {
        panic!("not rANS")
    };
    assert!(block_ids.contains(&(tables.len() as u8)));
    // Blocks as long as chunks (the fast level's one-table plans): whole chunks raw.
    round_trip_raw(&symbols, 8, 12, 12, Effort::Fast);
}

/// Damaged mode 5 streams give typed errors, never a panic: every truncation, every
/// single flipped byte of the header and index, a raw id in a mode 4 stream.
#[test]
fn damaged_mode_5_streams_are_errors() {
    let symbols: Vec<u16> = (0..9000u32)
        .map(|i| {
            if (i / 256) % 4 == 0 {
                (i % 3) as u16
            } else {
                (i.wrapping_mul(2_654_435_761) >> 24) as u16
            }
        })
        .collect();
    let (bytes, _) = round_trip_raw(&symbols, 8, 8, 12, Effort::Default);
    assert_eq!(bytes[0], MODE_RANS_RAW);
    let decode = |b: &[u8]| -> Result<Vec<u16>, EntropyError> {
        let dec = StreamDecoder::parse(b, 8, symbols.len(), 4096)?;
        let mut out = vec![0u16; symbols.len()];
        for (c, o) in out.chunks_mut(4096).enumerate() {
            dec.decode_chunk(c, o)?;
        }
        Ok(out)
    };
    assert!(decode(&bytes).unwrap() == symbols);
    for len in 0..bytes.len() {
        assert!(decode(&bytes[..len]).is_err(), "{len} bytes");
    }
    let dec = StreamDecoder::parse(&bytes, 8, symbols.len(), 4096).unwrap();
    let first = dec.chunks_payload(1).start;
    for at in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x41;
        let res = decode(&bad);
        // Header and index bytes are all checked; a flipped raw byte is the
        // checksum's to catch.
        if at < first {
            assert!(res.is_err() || res.unwrap() != symbols, "flip at {at}");
        }
    }
    let mut as_mode_4 = bytes.clone();
    as_mode_4[0] = MODE_RANS_RUN_IDS;
    assert!(decode(&as_mode_4).is_err());
}

#[test]
fn hostile_headers_are_refused() {
    let symbols: Vec<u16> = (0..3000u32).map(|i| (i % 7) as u16).collect();
    let (bytes, _) = round_trip(&symbols, 9, 8, 10, Effort::Default);
    assert!(StreamDecoder::parse(&bytes[..bytes.len() - 1], 9, 3000, 1024).is_err());
    assert!(StreamDecoder::parse(&bytes, 9, 4097, 1024).is_err());
    assert!(StreamDecoder::parse(&bytes, 9, 3000, 2048).is_err());
    let mut bad_mode = bytes.clone();
    bad_mode[0] = 9;
    assert!(StreamDecoder::parse(&bad_mode, 9, 3000, 1024).is_err());
    let mut no_tables = bytes.clone();
    no_tables[1] = 0;
    assert!(StreamDecoder::parse(&no_tables, 9, 3000, 1024).is_err());
    for bad_block in [4, 11, 255] {
        let mut b = bytes.clone();
        b[2] = bad_block;
        assert!(
            StreamDecoder::parse(&b, 9, 3000, 1024).is_err(),
            "block_log2 {bad_block}"
        );
    }
    assert!(StreamDecoder::parse(&[], 9, 0, 1024).is_err());
    assert!(StreamDecoder::parse(&[MODE_CONST, 0, 2], 9, 10, 1024).is_err());
}

/// Every mode refuses symbols its model cannot code, and chunks past the plan, with an
/// error instead of a panic or a wrong stream.
#[test]
fn encoders_refuse_symbols_outside_the_model() {
    let not_in = |index, symbol| Err(EntropyError::SymbolNotInModel { index, symbol });
    let packed = StreamEncoder::packed(7);
    assert_eq!(packed.encode_chunk(0, &[1, 127, 128]), not_in(2, 128));
    let symbols: Vec<u16> = (0..2048u32).map(|i| (i % 5 == 0) as u16 * 3).collect();
    let plan = |s: &[u16]| {
        let hists: Vec<Vec<u32>> = s.chunks(1 << 10).map(|b| hist(b, 9)).collect();
        StreamEncoder::plan(&hists, 9, 10, 10, Effort::Default)
    };
    let rans = plan(&symbols);
    assert!(matches!(rans.mode, Mode::Rans { .. }));
    let mut bad = symbols[..1024].to_vec();
    bad[700] = 2;
    assert_eq!(rans.encode_chunk(1, &bad), not_in(700, 2));
    bad[700] = 511;
    assert_eq!(rans.encode_chunk(0, &bad), not_in(700, 511));
    assert_eq!(
        rans.encode_chunk(2, &symbols[..1024]),
        Err(EntropyError::NoSuchChunk {
            chunk: 2,
            chunks: 2
        })
    );
    assert!(rans.encode_chunk(1, &symbols[1024..]).is_ok());
    let constant = plan(&[4; 1024]);
    assert!(matches!(constant.mode, Mode::Const(4)));
    assert_eq!(constant.encode_chunk(0, &[4, 4, 5]), not_in(2, 5));
}

/// Nonzero padding between two payloads: parsing leaves it (a loader may decode the
/// stream while it is being read), the chunk before it refuses to decode, every
/// other chunk decodes, and the layout handed to other decoders refuses the stream;
/// the padding before the first payload is refused when parsing.
#[test]
fn nonzero_padding_between_payloads_fails_the_chunk_before_it() {
    let mut next = xorshift(0x2545_F491_4F6C_DD1D);
    let symbols: Vec<u16> = (0..40_000)
        .map(|_| {
            let seed = next();
            // Skewed, so that chunks code to different lengths.
            (seed % 64).trailing_zeros() as u16 + (seed >> 60) as u16 % 3
        })
        .collect();
    let (bits, chunk_log2) = (9, 10);
    let chunk_len = 1usize << chunk_log2;
    let (bytes, kind) = round_trip(&symbols, bits, 8, chunk_log2, Effort::Default);
    assert!(matches!(kind, StreamKind::Rans(_)), "{kind:?}");
    let StreamLayout::Rans { payloads, .. } =
        StreamLayout::parse(&bytes, bits, symbols.len(), chunk_len).unwrap()
    else {
        unreachable!()
    };
    let c = (0..payloads.len() - 1)
        .find(|&c| payloads[c].0 + payloads[c].1 < payloads[c + 1].0)
        .unwrap_or_else(|| panic!("a payload whose length leaves a gap: {payloads:?}"));
    let mut damaged = bytes.clone();
    damaged[payloads[c].0 + payloads[c].1] = 1;
    let dec = StreamDecoder::parse(&damaged, bits, symbols.len(), chunk_len).unwrap();
    for (k, want) in symbols.chunks(chunk_len).enumerate() {
        let mut got = vec![0u16; want.len()];
        match dec.decode_chunk(k, &mut got) {
            Err(EntropyError::ChunkPadding { chunk, at }) => {
                assert_eq!((k, chunk, at), (c, c + 1, payloads[c].0 + payloads[c].1));
            }
            Ok(()) => assert!(k != c && got == want, "chunk {k}"),
            Err(e) => panic!("chunk {k}: {e}"),
        }
    }
    let (mut a, mut b) = (vec![0u16; chunk_len], vec![0u16; chunk_len]);
    assert!(dec.decode_chunk_pair(c & !1, &mut a, &mut b).is_err());
    assert!(matches!(
        StreamLayout::parse(&damaged, bits, symbols.len(), chunk_len),
        Err(EntropyError::ChunkPadding { .. })
    ));
    // Before the first payload: when parsing.
    let first = payloads[0].0;
    let header_end = (0..first)
        .rev()
        .find(|&i| bytes[i] != 0)
        .map_or(0, |i| i + 1);
    if header_end < first {
        let mut damaged = bytes.clone();
        damaged[first - 1] = 1;
        assert!(matches!(
            StreamDecoder::parse(&damaged, bits, symbols.len(), chunk_len),
            Err(EntropyError::ChunkPadding { chunk: 0, .. })
        ));
    }
}

/// `chunks_payload(c)` holds nothing that decoding chunks `c..` reads: overwriting it
/// leaves them decoding as before; the ranges grow chunk by chunk and reach the end
/// of the stream's payloads.
#[test]
fn chunk_payloads_hold_nothing_later_chunks_read() {
    let coded: Vec<u16> = (0..5000u32)
        .map(|i| ((i.wrapping_mul(2654435761) >> 27) % 9) as u16)
        .collect();
    let uniform: Vec<u16> = (0..4099u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 20) as u16 & 0x7F)
        .collect();
    for (symbols, bits, chunk_log2, kind) in [
        (&coded[..], 9, 10, "rans"),
        (&coded[..4097], 9, 8, "rans"),
        (&uniform[..], 7, 10, "packed"),
        (&uniform[..4096], 7, 6, "packed"),
        (&[3u16; 3000][..], 4, 9, "const"),
    ] {
        let chunk_len = 1usize << chunk_log2;
        let (bytes, found) = round_trip(
            symbols,
            bits,
            chunk_log2.min(8),
            chunk_log2,
            Effort::Default,
        );
        let expected = match kind {
            "rans" => matches!(found, StreamKind::Rans(_)),
            "packed" => found == StreamKind::Packed,
            _ => found == StreamKind::Const,
        };
        assert!(expected, "{kind}: {found:?}");
        let dec = StreamDecoder::parse(&bytes, bits, symbols.len(), chunk_len).unwrap();
        let n = dec.n_chunks();
        assert_eq!(dec.chunks_payload(0).len(), 0, "{kind}");
        let all = dec.chunks_payload(n);
        assert_eq!(dec.chunks_payload(n + 5), all, "{kind}: capped");
        if kind == "const" {
            assert_eq!(all, 0..0);
        } else {
            assert_eq!(all.end, bytes.len(), "{kind}: reaches the end");
        }
        for c in 0..=n {
            let r = dec.chunks_payload(c);
            if c > 0 {
                let before = dec.chunks_payload(c - 1);
                assert!(before.start == r.start && before.end <= r.end, "{kind} {c}");
            }
            // Damaged where nonzero (the zero padding between payloads is left as it
            // is: each gap is checked when the chunk before it decodes).
            let mut damaged = bytes.clone();
            damaged[r.clone()]
                .iter_mut()
                .filter(|b| **b != 0)
                .for_each(|b| *b ^= 0xA5);
            let d = StreamDecoder::parse(&damaged, bits, symbols.len(), chunk_len).unwrap();
            for k in c..n {
                let want = &symbols[k * chunk_len..((k + 1) * chunk_len).min(symbols.len())];
                let mut got = vec![0u16; want.len()];
                d.decode_chunk(k, &mut got).unwrap();
                assert_eq!(got, want, "{kind}: chunk {k} after damage to chunks ..{c}");
            }
        }
    }
}
