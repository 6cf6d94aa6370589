use super::super::model::FreqTable;
use super::decode::{
    decode_chunk_merged_on, decode_chunk_on, decode_chunk_pair_merged_on, decode_chunk_pair_on,
};
use super::encode::{encode_chunk_on, encode_group_scalar, encode_groups_portable};
use super::*;

use super::super::xorshift;

fn histogram(symbols: &[u16], bits: u32) -> Vec<u32> {
    let mut h = vec![0u32; 1 << bits];
    for &s in symbols {
        h[usize::from(s)] += 1;
    }
    h
}

fn round_trip(symbols: &[u16], bits: u32) -> Vec<u8> {
    let table = FreqTable::from_counts(&histogram(symbols, bits)).unwrap();
    let mut payload = Vec::new();
    let n_blocks = symbols.len().div_ceil(64).max(1);
    encode_chunk(
        symbols,
        &vec![&EncTable::new(&table, bits); n_blocks],
        64,
        &mut payload,
    )
    .unwrap();
    let mut back = vec![0u16; symbols.len()];
    decode_chunk(
        &payload,
        &vec![&DecTable::new(&table); n_blocks],
        64,
        &mut back,
    )
    .unwrap();
    assert_eq!(back, symbols);
    payload
}

#[test]
fn round_trips_skewed_and_uniform_data() {
    let mut next = xorshift(0x1234_5678_9abc_def0);
    let skewed: Vec<u16> = (0..100_003)
        .map(|_| (next().trailing_zeros() as u16).min(40) + 100)
        .collect();
    let payload = round_trip(&skewed, 9);
    // ~2 bits of entropy per symbol: the chunk must be far below 9 bits per symbol.
    assert!(
        payload.len() * 8 < skewed.len() * 3,
        "{} bytes",
        payload.len()
    );
    let uniform: Vec<u16> = (0..5000).map(|_| (next() & 0xFF) as u16).collect();
    round_trip(&uniform, 8);
    round_trip(&[7], 9);
    round_trip(&[3; 33], 9);
}

#[test]
fn vector_and_scalar_paths_agree() {
    let mut seed = 99u64;
    let symbols: Vec<u16> = (0..70_001)
        .map(|_| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((seed >> 33).trailing_zeros() as u16 * 3) % 200
        })
        .collect();
    // Two tables over alternating blocks, one of them with a single symbol's worth of
    // mass on the most common value (frequency up to the full scale).
    let table_a = FreqTable::from_counts(&histogram(&symbols, 8)).unwrap();
    let mut skewed = histogram(&symbols, 8);
    skewed[0] *= 1000;
    let table_b = FreqTable::from_counts(&skewed).unwrap();
    let enc = [EncTable::new(&table_a, 8), EncTable::new(&table_b, 8)];
    let dec = [DecTable::new(&table_a), DecTable::new(&table_b)];
    let block_len = 1024;
    let n_blocks = symbols.len().div_ceil(block_len);
    let enc_refs: Vec<&EncTable> = (0..n_blocks).map(|b| &enc[b % 2]).collect();
    let dec_refs: Vec<&DecTable> = (0..n_blocks).map(|b| &dec[b % 2]).collect();
    let mut reference = Vec::new();
    encode_chunk_on(
        SimdLevel::Scalar,
        &symbols,
        &enc_refs,
        block_len,
        &mut reference,
    );
    for level in SimdLevel::supported() {
        let mut payload = Vec::new();
        encode_chunk_on(level, &symbols, &enc_refs, block_len, &mut payload);
        assert!(payload == reference, "{level} and scalar encoders differ");
        let mut out = vec![0u16; symbols.len()];
        decode_chunk_on(level, &payload, &dec_refs, block_len, &mut out).unwrap();
        assert!(out == symbols, "{level} decoder");
        // Truncated words: every path must stop on the overrun, not read past it.
        let cut = &payload[..payload.len() - 2];
        assert!(decode_chunk_on(level, cut, &dec_refs, block_len, &mut out).is_err());
    }
    let single = FreqTable::from_counts(&[0, 5]).unwrap();
    let ones = vec![1u16; 100];
    for level in SimdLevel::supported() {
        let mut payload = Vec::new();
        encode_chunk_on(
            level,
            &ones,
            &[&EncTable::new(&single, 1)],
            128,
            &mut payload,
        );
        assert_eq!(payload.len(), STATE_BYTES, "a certain symbol costs nothing");
    }
}

#[test]
fn every_path_codes_random_tables_and_lengths_like_scalar() {
    let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
    for round in 0..40 {
        let bits = 1 + (round % 9) as u32;
        let alphabet = 1usize << bits;
        // Skewed counts: some symbols dominate, some occur once (frequency 1).
        let mut counts: Vec<u32> = (0..alphabet)
            .map(|_| match next() % 4 {
                0 => 0,
                1 => 1,
                2 => (next() % 50) as u32 + 1,
                _ => (next() % 100_000) as u32,
            })
            .collect();
        counts[(next() as usize) % alphabet] += 1;
        let present: Vec<u16> = (0..alphabet as u16)
            .filter(|&s| counts[usize::from(s)] > 0)
            .collect();
        let Some(table) = FreqTable::from_counts(&counts) else {
            continue;
        };
        let n = (next() % 6000) as usize;
        let symbols: Vec<u16> = (0..n)
            .map(|_| present[(next() as usize) % present.len()])
            .collect();
        let block_len = LANES << (next() % 4);
        let n_blocks = n.div_ceil(block_len).max(1);
        let enc = EncTable::new(&table, bits);
        let dec = DecTable::new(&table);
        codes_like_scalar_on_every_path(
            round,
            &symbols,
            &vec![&enc; n_blocks],
            &vec![&dec; n_blocks],
            block_len,
        );
    }
}

#[test]
fn both_slot_layouts_decode_alike_on_every_path() {
    let mut seed = 7u64;
    let symbols: Vec<u16> = (0..40_000)
        .map(|_| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((seed >> 40) % 200) as u16 + 200
        })
        .collect();
    let flat = FreqTable::from_counts(&histogram(&symbols, 9)).unwrap();
    let mut counts = histogram(&symbols, 9);
    counts[250] *= 5000;
    let peaked = FreqTable::from_counts(&counts).unwrap();
    let (inline, general) = (DecTable::new(&flat), DecTable::new(&peaked));
    assert!(inline.is_inline() && !general.is_inline());
    let block_len = 2048;
    let n_blocks = symbols.len().div_ceil(block_len);
    let enc = [EncTable::new(&flat, 9), EncTable::new(&peaked, 9)];
    // Chunk A uses the inline table only; chunk B alternates, so the pair decoder meets
    // both layouts side by side.
    let pick_a = |_: usize| 0;
    let pick_b = |b: usize| b % 2;
    let payload = |pick: &dyn Fn(usize) -> usize| {
        let tables: Vec<&EncTable> = (0..n_blocks).map(|b| &enc[pick(b)]).collect();
        let mut p = Vec::new();
        encode_chunk(&symbols, &tables, block_len, &mut p).unwrap();
        p
    };
    let (pa, pb) = (payload(&pick_a), payload(&pick_b));
    let dec = [&inline, &general];
    let ta: Vec<&DecTable> = (0..n_blocks).map(|b| dec[pick_a(b)]).collect();
    let tb: Vec<&DecTable> = (0..n_blocks).map(|b| dec[pick_b(b)]).collect();
    for level in SimdLevel::supported() {
        let (mut a, mut b) = (vec![0u16; symbols.len()], vec![0u16; symbols.len()]);
        decode_chunk_pair_on(level, [&pa, &pb], [&ta, &tb], block_len, [&mut a, &mut b]).unwrap();
        let mut single = vec![0u16; symbols.len()];
        decode_chunk_on(level, &pa, &ta, block_len, &mut single).unwrap();
        assert!(a == symbols && b == symbols, "{level} pair decoder");
        assert!(single == symbols, "{level} decoder");
    }
}

/// FP8 fields decode into bytes: every path, single chunks and pairs, both slot layouts
/// (a peaked table takes the general one), lengths off the group size, must give the
/// symbols the `u16` decoder gives, and fail where it fails.
#[test]
fn byte_outputs_decode_like_u16_on_every_path() {
    let mut next = xorshift(0xD1B5_4A32_D192_ED03);
    let mut layouts_seen = [false; 2];
    for round in 0..48 {
        let bits = 1 + (round % 8) as u32;
        let alphabet = 1usize << bits;
        let mut counts: Vec<u32> = (0..alphabet)
            .map(|_| match next() % 3 {
                0 => 0,
                1 => (next() % 40) as u32 + 1,
                _ => (next() % 50_000) as u32,
            })
            .collect();
        let top = (next() as usize) % alphabet;
        counts[top] += if round % 2 == 0 { 1 } else { 5_000_000 };
        let present: Vec<u16> = (0..alphabet as u16)
            .filter(|&s| counts[usize::from(s)] > 0)
            .collect();
        let Some(table) = FreqTable::from_counts(&counts) else {
            continue;
        };
        let (enc, dec) = (EncTable::new(&table, bits), DecTable::new(&table));
        layouts_seen[usize::from(dec.is_inline())] = true;
        let block_len = LANES << (next() % 4);
        let lens = [(next() % 9000) as usize, (next() % 9000) as usize];
        let symbols = lens.map(|n| -> Vec<u16> {
            (0..n)
                .map(|_| {
                    // Mostly the peak, so the peaked tables' runs are long.
                    if next().is_multiple_of(3) {
                        top as u16
                    } else {
                        present[(next() as usize) % present.len()]
                    }
                })
                .collect()
        });
        let tables = lens.map(|n| vec![&dec; n.div_ceil(block_len).max(1)]);
        let payloads = [0, 1].map(|k| {
            let mut p = Vec::new();
            let enc_tables = vec![&enc; tables[k].len()];
            encode_chunk(&symbols[k], &enc_tables, block_len, &mut p).unwrap();
            p
        });
        let bytes = [0, 1].map(|k| symbols[k].iter().map(|&s| s as u8).collect::<Vec<_>>());
        let mut cut = payloads[1].clone();
        cut.truncate(cut.len() - 2);
        for level in SimdLevel::supported() {
            let mut single = vec![0u8; lens[0]];
            decode_chunk_on(level, &payloads[0], &tables[0], block_len, &mut single).unwrap();
            assert!(single == bytes[0], "round {round}: {level} byte decoder");
            let (mut a, mut b) = (vec![0u8; lens[0]], vec![0u8; lens[1]]);
            decode_chunk_pair_on(
                level,
                [&payloads[0], &payloads[1]],
                [&tables[0], &tables[1]],
                block_len,
                [&mut a, &mut b],
            )
            .unwrap();
            assert!(
                a == bytes[0] && b == bytes[1],
                "round {round}: {level} byte pair"
            );
            let (mut wide_a, mut wide_b) = (vec![0u16; lens[0]], vec![0u16; lens[1]]);
            let wide = decode_chunk_pair_on(
                level,
                [&payloads[0], &cut],
                [&tables[0], &tables[1]],
                block_len,
                [&mut wide_a, &mut wide_b],
            );
            let narrow = decode_chunk_pair_on(
                level,
                [&payloads[0], &cut],
                [&tables[0], &tables[1]],
                block_len,
                [&mut a, &mut b],
            );
            assert_eq!(
                wide.map_err(|e| e.to_string()),
                narrow.map_err(|e| e.to_string()),
                "round {round}: {level} truncated"
            );
        }
    }
    assert_eq!(layouts_seen, [true, true], "both slot layouts met");
}

/// F16 merged by the AVX-512 kernel as it decodes the first field (8-bit symbols; the
/// other paths take no merge and decode the symbols): on every path, single chunks and
/// pairs, plain and joint fields, lengths off the group size and merges shorter than the
/// chunk, the merged leading elements are the F16 words of the symbols and the second
/// field's bytes, the symbols after them are decoded as without a merge, and nothing past
/// the merged elements of the output is written.
#[test]
fn f16_merges_in_the_kernel_give_the_merged_words_on_every_path() {
    let mut next = xorshift(0x5DEE_CE66_D1CE_4E5B);
    let word = |e: u8, l: u8, joint: bool| -> [u8; 2] {
        if joint {
            [l, e.rotate_right(1)]
        } else {
            [(e << 7) | (l & 0x7F), (e >> 1) | (l & 0x80)]
        }
    };
    for round in 0..24 {
        let mut counts: Vec<u32> = (0..256).map(|_| (next() % 3000) as u32).collect();
        counts[(next() % 256) as usize] += 200_000;
        let table = FreqTable::from_counts(&counts).unwrap();
        let (enc, dec) = (EncTable::new(&table, 8), DecTable::new(&table));
        let block_len = LANES << (next() % 4);
        let lens = [(next() % 5000) as usize, (next() % 5000) as usize];
        let symbols = lens.map(|n| -> Vec<u16> {
            (0..n)
                .map(|_| loop {
                    let s = (next() % 256) as u16;
                    if counts[usize::from(s)] > 0 {
                        break s;
                    }
                })
                .collect()
        });
        let tables = lens.map(|n| vec![&dec; n.div_ceil(block_len).max(1)]);
        let payloads = [0, 1].map(|k| {
            let mut p = Vec::new();
            encode_chunk(&symbols[k], &vec![&enc; tables[k].len()], block_len, &mut p).unwrap();
            p
        });
        let lows = lens.map(|n| (0..n).map(|_| next() as u8).collect::<Vec<_>>());
        // Some merges end short of their chunk: the kernel stops there.
        let reach = lens.map(|n| if round % 3 == 0 { n / 2 } else { n });
        let joint = round % 2 == 1;
        let check = |level, k: usize, merged: usize, bytes: &[u8], dst: &[u8]| {
            assert!(
                merged <= reach[k] && merged.is_multiple_of(LANES),
                "{level} {round}"
            );
            for i in 0..lens[k] {
                let e = symbols[k][i] as u8;
                if i < merged {
                    let w = word(e, lows[k][i], joint);
                    assert_eq!(
                        dst[2 * i..2 * i + 2],
                        w,
                        "{level} round {round} chunk {k} {i}"
                    );
                } else {
                    assert_eq!(bytes[i], e, "{level} round {round} chunk {k} symbol {i}");
                }
            }
            assert!(
                dst[2 * merged..].iter().all(|&b| b == 0xEE),
                "{level} {round}"
            );
        };
        for level in SimdLevel::supported() {
            let mut dst = [0, 1].map(|k| vec![0xEEu8; 2 * lens[k]]);
            let mut bytes = [0, 1].map(|k| vec![0u8; lens[k]]);
            let merged = {
                let [da, db] = &mut dst;
                let merges = [
                    F16Merge::new(&lows[0][..reach[0]], da, joint),
                    F16Merge::new(&lows[1][..reach[1]], db, joint),
                ];
                let [a, b] = &mut bytes;
                decode_chunk_pair_merged_on(
                    level,
                    [&payloads[0], &payloads[1]],
                    [&tables[0], &tables[1]],
                    block_len,
                    [a, b],
                    Some(merges),
                )
                .unwrap()
            };
            if level == SimdLevel::Avx512 && reach.iter().all(|&r| r >= LANES) {
                assert!(
                    merged.iter().all(|&m| m > 0),
                    "{level} round {round}: no merge"
                );
            }
            for k in 0..2 {
                check(level, k, merged[k], &bytes[k], &dst[k]);
            }
            let mut single = vec![0xEEu8; 2 * lens[0]];
            let mut single_bytes = vec![0u8; lens[0]];
            let merge = F16Merge::new(&lows[0][..reach[0]], &mut single, joint);
            let merged = decode_chunk_merged_on(
                level,
                &payloads[0],
                &tables[0],
                block_len,
                &mut single_bytes,
                Some(merge),
            )
            .unwrap();
            check(level, 0, merged, &single_bytes, &single);
        }
    }
}

/// The vector encoders take `y / freq` as `trunc(f32(y) · f32(1 / freq))` and correct
/// it by at most one either way: check that bound in the same IEEE single arithmetic
/// for every frequency, at the top of the state range (where the error is largest),
/// next to exact multiples, and at random states.
#[test]
fn reciprocal_quotient_is_within_one() {
    let mut next = xorshift(0x2545_F491_4F6C_DD1D);
    for freq in 1..=PROB_SCALE {
        let inv = 1.0f32 / freq as f32;
        let top = u64::from(freq) << (32 - PROB_BITS);
        let mut ys: Vec<u64> = (1..=64).map(|d| top - d).collect();
        for k in [1u64, 2, 3, 1 << 10, (top / u64::from(freq)) - 1] {
            let m = k * u64::from(freq);
            ys.extend([m - 1, m, m + 1].into_iter().filter(|&y| y < top));
        }
        ys.extend((0..64).map(|_| next() % top));
        for y in ys {
            let q = (y as u32 as f32 * inv) as u64;
            let exact = y / u64::from(freq);
            assert!(q.abs_diff(exact) <= 1, "freq {freq}, y {y}: {q} vs {exact}");
        }
    }
}

/// The AVX-512 encoder takes `y / freq` as `trunc(f32(y) · f32(1 / freq))` with every
/// operation rounded toward zero, and corrects it only upward: check, in the same
/// instructions, that it is exact or one short for every frequency, at the top of the
/// state range, next to exact multiples and at random states. (Skipped where the CPU
/// lacks AVX-512; the encoders' comparisons with scalar cover the rest.)
#[cfg(target_arch = "x86_64")]
#[test]
fn truncated_reciprocal_quotient_is_exact_or_one_short() {
    if !SimdLevel::Avx512.is_supported() {
        return;
    }
    #[target_feature(enable = "avx512f")]
    fn quotients(ys: &[u32; 16], freq: u32) -> [u32; 16] {
        use std::arch::x86_64::*;
        const RZ: i32 = _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC;
        let f = _mm512_set1_epi32(freq as i32);
        let inv = _mm512_div_round_ps::<RZ>(_mm512_set1_ps(1.0), _mm512_cvtepu32_ps(f));
        // SAFETY: 16 u32 in and out, unaligned access allowed.
        let y = unsafe { _mm512_loadu_si512(ys.as_ptr().cast()) };
        let q = _mm512_cvttps_epu32(_mm512_mul_round_ps::<RZ>(
            _mm512_cvt_roundepu32_ps::<RZ>(y),
            inv,
        ));
        let mut out = [0u32; 16];
        // SAFETY: as above.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), q) };
        out
    }
    let mut next = xorshift(0x9E6C_63D0_676A_9A99);
    for freq in 1..=PROB_SCALE {
        let top = u64::from(freq) << (32 - PROB_BITS);
        let mut ys: Vec<u64> = (1..=64).map(|d| top - d).collect();
        for k in [1u64, 2, 3, 1 << 10, (top / u64::from(freq)) - 1] {
            let m = k * u64::from(freq);
            ys.extend([m - 1, m, m + 1].into_iter().filter(|&y| y < top));
        }
        ys.extend((0..64).map(|_| next() % top));
        ys.resize(ys.len().next_multiple_of(16), 0);
        for sixteen in ys.chunks_exact(16) {
            let y: [u32; 16] = std::array::from_fn(|k| sixteen[k] as u32);
            // SAFETY: the CPU has AVX-512 (checked above).
            let q = unsafe { quotients(&y, freq) };
            for (&y, &q) in y.iter().zip(&q) {
                let exact = y / freq;
                assert!(
                    q == exact || q + 1 == exact,
                    "freq {freq}, y {y}: {q} vs {exact}"
                );
            }
        }
    }
}

/// The portable whole-group encoder (the scalar path) writes exactly what coding one
/// group at a time with the reference step writes, block tables and all.
#[test]
fn portable_encoder_matches_the_group_reference() {
    let mut next = xorshift(0x0123_4567_89AB_CDEF);
    for round in 0..20 {
        // Up to 256 symbols: what one table holds.
        let bits = 1 + (round % 8) as u32;
        let counts: Vec<u32> = (0..1usize << bits)
            .map(|_| (next() % 1000) as u32 + 1)
            .collect();
        let mut skewed = counts.clone();
        skewed[0] *= 3000;
        let tables = [
            EncTable::new(&FreqTable::from_counts(&counts).unwrap(), bits),
            EncTable::new(&FreqTable::from_counts(&skewed).unwrap(), bits),
        ];
        let n = LANES * (1 + (next() % 300) as usize);
        let symbols: Vec<u16> = (0..n).map(|_| (next() % (1 << bits)) as u16).collect();
        let block_len = LANES << (next() % 3);
        let refs: Vec<&EncTable> = (0..n.div_ceil(block_len)).map(|b| &tables[b % 2]).collect();
        let mut words = vec![[0u8; 2]; n + LANES];
        let (mut states, mut start) = ([RANS_L; LANES], words.len());
        let g = n / LANES;
        assert_eq!(
            encode_groups_portable(
                &mut states,
                &symbols,
                &refs,
                block_len,
                g,
                &mut words,
                &mut start
            ),
            (g, true)
        );
        let mut ref_words = vec![[0u8; 2]; n + LANES];
        let (mut ref_states, mut ref_start) = ([RANS_L; LANES], ref_words.len());
        for group in (0..g).rev() {
            let (next_start, present) = encode_group_scalar(
                &mut ref_states,
                &symbols[group * LANES..][..LANES],
                refs[group * LANES / block_len],
                &mut ref_words,
                ref_start,
            );
            assert!(present);
            ref_start = next_start;
        }
        assert_eq!((states, start), (ref_states, ref_start), "round {round}");
        assert!(words[start..] == ref_words[ref_start..], "round {round}");
    }
}

#[test]
fn corrupt_payloads_fail_cleanly() {
    let symbols: Vec<u16> = (0..4000u32).map(|i| ((i * 7919) % 13) as u16).collect();
    let table = FreqTable::from_counts(&histogram(&symbols, 4)).unwrap();
    let mut payload = Vec::new();
    encode_chunk(&symbols, &[&EncTable::new(&table, 4)], 4096, &mut payload).unwrap();
    let dec = [&DecTable::new(&table)];
    let mut out = vec![0u16; symbols.len()];
    for cut in [0, 10, STATE_BYTES, payload.len() - 2] {
        assert!(
            decode_chunk(&payload[..cut], &dec, 4096, &mut out).is_err(),
            "cut at {cut}"
        );
    }
    let mut flipped = payload.clone();
    flipped[STATE_BYTES + 100] ^= 0x10;
    assert!(decode_chunk(&flipped, &dec, 4096, &mut out).is_err());
}

/// Symbols outside their table (zero frequency, or past the table's end) are refused
/// with an error before any code path runs (the vector encoders gather table entries
/// by symbol value). Before the check, the scalar path panicked on an index out of
/// bounds and the AVX-512/AVX2 paths read past the table.
#[test]
fn symbols_outside_their_table_are_refused() {
    let table = FreqTable::from_counts(&[5, 0, 7, 1]).unwrap();
    let enc = EncTable::new(&table, 2);
    let good: Vec<u16> = (0..256u32).map(|i| [0, 2, 3][i as usize % 3]).collect();
    for (bad_at, bad) in [(0, 1u16), (200, 4), (255, 0xFFFF), (100, 1000)] {
        let mut symbols = good.clone();
        symbols[bad_at] = bad;
        let mut out = vec![9u8];
        assert_eq!(
            encode_chunk(&symbols, &[&enc; 4], 64, &mut out),
            Err(EntropyError::SymbolNotInModel {
                index: bad_at,
                symbol: bad
            })
        );
        assert_eq!(out, [9], "nothing appended");
    }
    let mut out = Vec::new();
    assert_eq!(
        encode_chunk(&good, &[&enc, &enc], 64, &mut out),
        Err(EntropyError::MissingTables { needed: 4, have: 2 })
    );
    assert_eq!(
        encode_chunk(&good, &[&enc; 8], 48, &mut out),
        Err(EntropyError::BlockLength {
            block_len: 48,
            lanes: LANES
        })
    );
    assert_eq!(
        encode_chunk(&good, &[&enc], 0, &mut out),
        Err(EntropyError::BlockLength {
            block_len: 0,
            lanes: LANES
        })
    );
    assert!(out.is_empty());
    encode_chunk(&good, &[&enc; 4], 64, &mut out).unwrap();
    assert!(!out.is_empty());
}

/// Every path refuses a chunk with a symbol absent from its table (zero frequency, past
/// `1 << symbol_bits` but within 9 bits, or wider than 9 bits: the portable encoder
/// indexes its table by the low 9 bits), appending nothing, wherever the symbol sits.
#[test]
fn every_path_refuses_absent_and_wide_symbols() {
    let table = FreqTable::from_counts(&[5, 0, 7, 1]).unwrap();
    let enc = EncTable::new(&table, 2);
    let good: Vec<u16> = (0..4096u32).map(|i| [0, 2, 3][i as usize % 3]).collect();
    for level in SimdLevel::supported() {
        for bad_at in [0, 31, 32, 2000, 4095] {
            for bad in [1u16, 4, 511, 512, 512 + 2, 1000, 0xFFFF] {
                let mut symbols = good.clone();
                symbols[bad_at] = bad;
                let mut out = vec![9u8];
                assert!(
                    !encode_chunk_on(level, &symbols, &[&enc; 64], 64, &mut out),
                    "{level}: symbol {bad} at {bad_at}"
                );
                assert_eq!(out, [9], "nothing appended");
            }
        }
        let mut out = Vec::new();
        assert!(encode_chunk_on(level, &good, &[&enc; 64], 64, &mut out));
    }
}

/// A table wider than 9 bits (never the codec's) is coded by the scalar path too: the
/// portable encoder leaves it to the group-at-a-time coder, symbols past 511 included.
#[test]
fn scalar_path_codes_tables_wider_than_nine_bits() {
    let mut next = xorshift(0x5151_7777_0000_1234);
    let alphabet: Vec<u16> = (0..200u16).map(|k| k * 5).collect();
    let symbols: Vec<u16> = (0..10_000)
        .map(|_| alphabet[(next() % 200) as usize])
        .collect();
    let table = FreqTable::from_counts(&histogram(&symbols, 10)).unwrap();
    let enc = EncTable::new(&table, 10);
    let n_blocks = symbols.len().div_ceil(64);
    let mut payload = Vec::new();
    assert!(encode_chunk_on(
        SimdLevel::Scalar,
        &symbols,
        &vec![&enc; n_blocks],
        64,
        &mut payload
    ));
    let mut back = vec![0u16; symbols.len()];
    decode_chunk(
        &payload,
        &vec![&DecTable::new(&table); n_blocks],
        64,
        &mut back,
    )
    .unwrap();
    assert_eq!(back, symbols);
}

/// The write-ahead window: a vector decoder takes it, walks it one group's share at a
/// time and stops at its end, hands the rest back for the next block, and the window is
/// cleared when the decode returns.
#[cfg(target_arch = "x86_64")]
#[test]
fn write_ahead_walks_its_window_and_is_cleared_after() {
    let out = vec![0u8; 1000];
    let start = out.as_ptr() as usize;
    let packed = vec![0u8; 500];
    let from = packed.as_ptr() as usize;
    write_ahead(
        out.as_ptr_range(),
        4,
        Some((packed.as_ptr_range(), 7)),
        || {
            let mut ahead = WriteAhead::take();
            assert_eq!(
                (ahead.next, ahead.end, ahead.step),
                (start, start + 1000, 4 * LANES)
            );
            assert_eq!(ahead.read, (from, from + 500, 7 * LANES / 8));
            for _ in 0..3 {
                ahead.group();
            }
            ahead.put();
            let mut ahead = WriteAhead::take();
            assert_eq!(ahead.next, start + 3 * 4 * LANES, "the next block goes on");
            assert_eq!(
                ahead.read.0,
                from + 3 * 7 * LANES / 8,
                "so does the read window"
            );
            for _ in 0..10 {
                ahead.group();
            }
            // 1000 bytes are 7.8 groups' shares: the eighth is the last prefetched.
            assert_eq!(ahead.next, start + 8 * 4 * LANES);
            // 500 bytes are 17.9 groups' shares of 28: 13 taken so far.
            assert_eq!(ahead.read.0, from + 13 * 7 * LANES / 8);
            ahead.put();
        },
    );
    let after = WriteAhead::take();
    assert!(after.next >= after.end, "window left behind");
    assert!(after.read.0 >= after.read.1, "read window left behind");
}

/// Damaged chunks (words cut off the end, words flipped) decode on every path exactly as on
/// the scalar one: the same symbols up to the failure and the same error. The vector paths
/// finish a chunk's last groups from a zero-padded copy of its last words
/// (`with_padded_tail`), which must read like the scalar reader past the end: zeros, with
/// the position counting on.
#[test]
fn damaged_chunks_fail_alike_on_every_path() {
    let mut next = xorshift(0x2545_F491_4F6C_DD1D);
    for (len, bits) in [(40usize, 9u32), (384, 9), (1000, 8), (4097, 9), (3000, 4)] {
        let symbols: Vec<u16> = (0..len)
            .map(|_| {
                let r = next();
                ((r & 0xFF).trailing_zeros() as u16 * 5 + (r >> 40) as u16 % 3) & ((1 << bits) - 1)
            })
            .collect();
        let table = FreqTable::from_counts(&histogram(&symbols, bits)).unwrap();
        let (enc, dec) = (EncTable::new(&table, bits), DecTable::new(&table));
        let blocks = len.div_ceil(4096);
        let mut payload = Vec::new();
        encode_chunk_on(
            SimdLevel::Scalar,
            &symbols,
            &vec![&enc; blocks],
            4096,
            &mut payload,
        );
        let dec = vec![&dec; blocks];
        let words = (payload.len() - STATE_BYTES) / 2;
        let mut damaged: Vec<Vec<u8>> = (1..=words.min(40))
            .map(|cut| payload[..payload.len() - 2 * cut].to_vec())
            .collect();
        // (A chunk of one certain symbol has no words to flip.)
        for k in 0..if words == 0 { 0 } else { 8 } {
            let mut flipped = payload.clone();
            let at = STATE_BYTES + next() as usize % (2 * words);
            flipped[at] ^= 1 << (k % 8);
            damaged.push(flipped);
        }
        damaged.push(payload.clone());
        for bytes in &damaged {
            let mut expected = vec![0u16; len];
            let want = decode_chunk_on(SimdLevel::Scalar, bytes, &dec, 4096, &mut expected);
            for level in SimdLevel::supported() {
                let mut out = vec![0u16; len];
                let got = decode_chunk_on(level, bytes, &dec, 4096, &mut out);
                assert_eq!(
                    format!("{got:?}"),
                    format!("{want:?}"),
                    "{level}, {len} symbols, {} bytes",
                    bytes.len()
                );
                assert!(out == expected, "{level}, {len} symbols: symbols differ");
            }
        }
    }
}

/// Chunks whose blocks switch among several tables of one slot layout, as format 1.3's
/// multi-table streams do every few blocks: the vector loops run across the blocks in one
/// call (single chunks and pairs of different lengths and table sequences) and must decode
/// what the scalar path decodes; block lengths that are not a power of two groups take
/// the call-per-run fallback.
#[test]
fn tables_switching_block_by_block_decode_alike_on_every_path() {
    let mut next = xorshift(0xD1B5_4A32_D192_ED03);
    let alphabet = 64usize;
    let tables: Vec<FreqTable> = (0..5)
        .map(|_| {
            let counts: Vec<u32> = (0..alphabet).map(|_| (next() % 1000) as u32 + 1).collect();
            FreqTable::from_counts(&counts).unwrap()
        })
        .collect();
    let enc: Vec<EncTable> = tables.iter().map(|t| EncTable::new(t, 6)).collect();
    let dec: Vec<DecTable> = tables.iter().map(DecTable::new).collect();
    assert!(dec.iter().all(|d| d.is_inline()));
    for round in 0..24 {
        let block_len = [32, 64, 96, 256, 512][round % 5];
        let lens = [(next() % 9000) as usize + 1, (next() % 9000) as usize + 1];
        let chunks: Vec<(Vec<u16>, Vec<usize>)> = lens
            .iter()
            .map(|&n| {
                let symbols: Vec<u16> = (0..n).map(|_| (next() % 64) as u16).collect();
                // Runs of 1–3 blocks per table.
                let mut picks = Vec::new();
                while picks.len() < n.div_ceil(block_len) {
                    let t = (next() % 5) as usize;
                    for _ in 0..1 + next() % 3 {
                        picks.push(t);
                    }
                }
                picks.truncate(n.div_ceil(block_len));
                (symbols, picks)
            })
            .collect();
        let payloads: Vec<Vec<u8>> = chunks
            .iter()
            .map(|(symbols, picks)| {
                let t: Vec<&EncTable> = picks.iter().map(|&p| &enc[p]).collect();
                let mut p = Vec::new();
                encode_chunk(symbols, &t, block_len, &mut p).unwrap();
                p
            })
            .collect();
        let dec_tables: Vec<Vec<&DecTable>> = chunks
            .iter()
            .map(|(_, picks)| picks.iter().map(|&p| &dec[p]).collect())
            .collect();
        for level in SimdLevel::supported() {
            let mut a = vec![0u16; lens[0]];
            let mut b = vec![0u16; lens[1]];
            decode_chunk_pair_on(
                level,
                [&payloads[0], &payloads[1]],
                [&dec_tables[0], &dec_tables[1]],
                block_len,
                [&mut a, &mut b],
            )
            .unwrap();
            assert!(
                a == chunks[0].0 && b == chunks[1].0,
                "round {round}: {level} pair"
            );
            let mut single = vec![0u16; lens[1]];
            decode_chunk_on(level, &payloads[1], &dec_tables[1], block_len, &mut single).unwrap();
            assert!(single == chunks[1].0, "round {round}: {level} single");
        }
    }
}

/// A chunk payload with raw blocks (format 1.4, FORMAT.md §5.5.1) built as the format
/// describes it: the coded blocks, taken together, coded as one chunk; the raw blocks'
/// symbols bit-packed into the raw area after that chunk's states; an all-raw chunk is
/// its raw area alone.
fn raw_payload(
    symbols: &[u16],
    picks: &[Option<usize>],
    enc: &[EncTable],
    bits: u32,
    block_len: usize,
) -> Vec<u8> {
    let (mut coded, mut tables, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    for (block, pick) in symbols.chunks(block_len).zip(picks) {
        match pick {
            Some(t) => {
                coded.extend_from_slice(block);
                tables.push(&enc[*t]);
            }
            None => raw.extend_from_slice(block),
        }
    }
    let mut area = Vec::new();
    crate::entropy::bitpack::pack(&raw, bits, &mut area);
    area.resize(raw_area_len(raw.len(), bits), 0);
    if coded.is_empty() {
        return area;
    }
    let mut p = Vec::new();
    encode_chunk(&coded, &tables, block_len, &mut p).unwrap();
    [&p[..STATE_BYTES], &area, &p[STATE_BYTES..]].concat()
}

/// Chunks mixing raw and coded blocks (runs of each, all-raw and all-coded chunks, raw
/// first or last blocks, short last blocks of either kind) decode alike on every path,
/// for 8-bit symbols (a copy) and narrower and wider ones (bit-packed), as `u16` and,
/// for 8-bit symbols, as `u8`.
#[test]
fn raw_blocks_decode_alike_on_every_path() {
    use super::decode::decode_chunk_raw_on;
    let mut next = xorshift(0x5DEE_CE66_D1CE_4E5B);
    for round in 0..40 {
        let bits = [8, 8, 6, 7, 9, 1][round % 6];
        let alphabet = 1usize << bits;
        // A table holds at most 256 symbols: 9-bit coded symbols stay below 256, raw ones
        // take the whole alphabet.
        let coded_alphabet = alphabet.min(256);
        let tables: Vec<FreqTable> = (0..3)
            .map(|_| {
                let counts: Vec<u32> = (0..coded_alphabet)
                    .map(|_| (next() % 1000) as u32 + 1)
                    .collect();
                FreqTable::from_counts(&counts).unwrap()
            })
            .collect();
        let enc: Vec<EncTable> = tables.iter().map(|t| EncTable::new(t, bits)).collect();
        let dec: Vec<DecTable> = tables.iter().map(DecTable::new).collect();
        let block_len = [32, 64, 96, 256, 512][round % 5];
        let n = match round % 4 {
            0 => block_len * (1 + (next() % 20) as usize),
            _ => (next() % 9000) as usize + 1,
        };
        let mut symbols: Vec<u16> = (0..n)
            .map(|_| (next() % coded_alphabet as u64) as u16)
            .collect();
        let blocks = n.div_ceil(block_len);
        let mut picks: Vec<Option<usize>> = Vec::new();
        while picks.len() < blocks {
            let pick = match (round % 8, next() % 3) {
                // All raw, all coded.
                (0, _) => None,
                (1, _) => Some(0),
                (_, 0) => None,
                (_, t) => Some(t as usize),
            };
            for _ in 0..1 + next() % 3 {
                picks.push(pick);
            }
        }
        picks.truncate(blocks);
        for (block, pick) in symbols.chunks_mut(block_len).zip(&picks) {
            if pick.is_none() {
                block.fill_with(|| (next() % alphabet as u64) as u16);
            }
        }
        let payload = raw_payload(&symbols, &picks, &enc, bits, block_len);
        let raw: Vec<bool> = picks.iter().map(Option::is_none).collect();
        let dec_tables: Vec<&DecTable> = picks.iter().map(|p| &dec[p.unwrap_or(0)]).collect();
        for level in SimdLevel::supported() {
            let mut out = vec![0xFFFFu16; n];
            decode_chunk_raw_on(
                level,
                &payload,
                &dec_tables,
                &raw,
                bits,
                block_len,
                &mut out,
                None,
            )
            .unwrap();
            assert!(out == symbols, "round {round}: {level} u16, bits {bits}");
            if bits <= 8 {
                let mut bytes = vec![0xFFu8; n];
                decode_chunk_raw_on(
                    level,
                    &payload,
                    &dec_tables,
                    &raw,
                    bits,
                    block_len,
                    &mut bytes,
                    None,
                )
                .unwrap();
                assert!(
                    bytes.iter().zip(&symbols).all(|(&b, &s)| u16::from(b) == s),
                    "round {round}: {level} u8, bits {bits}"
                );
            }
            if !raw.contains(&true) {
                // Without raw blocks the chunk is a mode 4 chunk.
                let mut plain = vec![0u16; n];
                decode_chunk_on(level, &payload, &dec_tables, block_len, &mut plain).unwrap();
                assert!(plain == symbols);
            }
        }
    }
}

/// Damaged chunks with raw blocks are refused with a typed error on every path, never a
/// panic: truncated or lengthened payloads, flipped bytes in the states, the raw area and
/// the words, and the raw flags of another chunk.
#[test]
fn damaged_chunks_with_raw_blocks_are_errors() {
    use super::decode::decode_chunk_raw_on;
    let mut next = xorshift(0x2545_F491_4F6C_DD1D);
    let counts: Vec<u32> = (0..256).map(|s| if s < 16 { 1000 } else { 1 }).collect();
    let table = FreqTable::from_counts(&counts).unwrap();
    let enc = [EncTable::new(&table, 8)];
    let dec = DecTable::new(&table);
    let block_len = 256usize;
    let n = 10 * block_len + 77;
    let symbols: Vec<u16> = (0..n)
        .map(|i| {
            if (i / block_len) % 3 == 1 {
                (next() % 256) as u16
            } else {
                (next() % 16) as u16
            }
        })
        .collect();
    let picks: Vec<Option<usize>> = (0..n.div_ceil(block_len))
        .map(|b| (b % 3 != 1).then_some(0))
        .collect();
    let payload = raw_payload(&symbols, &picks, &enc, 8, block_len);
    let raw: Vec<bool> = picks.iter().map(Option::is_none).collect();
    let tables = vec![&dec; picks.len()];
    let all_raw = vec![true; picks.len()];
    for level in SimdLevel::supported() {
        let decode = |payload: &[u8], raw: &[bool]| {
            let mut out = vec![0u16; n];
            decode_chunk_raw_on(level, payload, &tables, raw, 8, block_len, &mut out, None)
                .map(|()| out)
        };
        assert!(decode(&payload, &raw).unwrap() == symbols);
        for len in [0, 1, 127, 128, 200, payload.len() - 2, payload.len() - 1] {
            assert!(
                decode(&payload[..len], &raw).is_err(),
                "{level}: {len} bytes"
            );
        }
        let mut longer = payload.clone();
        longer.extend_from_slice(&[0, 0]);
        assert!(decode(&longer, &raw).is_err(), "{level}: longer");
        assert!(decode(&payload, &all_raw).is_err(), "{level}: all raw");
        assert!(
            decode(&payload, &raw[..2]).is_err(),
            "{level}: too few flags"
        );
        // A flipped byte in the states or the words is caught by the end state or the
        // word count; one in the raw area decodes to other symbols (the checksum's job).
        let area = raw_area_len(raw_symbols(&raw, block_len, n), 8);
        for at in [0, 5, 127, STATE_BYTES + area, payload.len() - 1] {
            let mut bad = payload.clone();
            bad[at] ^= 0x5A;
            if let Ok(out) = decode(&bad, &raw) {
                assert!(out != symbols, "{level}: flip at {at} unnoticed");
            }
        }
        let mut bad = payload.clone();
        bad[STATE_BYTES + 3] ^= 1;
        assert!(decode(&bad, &raw).is_ok_and(|out| out != symbols));
    }
}

/// Codes `symbols` (tables per block of `block_len`) on every path the CPU has: each
/// writes the scalar path's bytes and decodes them back to `symbols`.
fn codes_like_scalar_on_every_path(
    round: usize,
    symbols: &[u16],
    enc_refs: &[&EncTable],
    dec_refs: &[&DecTable],
    block_len: usize,
) {
    let mut reference = Vec::new();
    assert!(encode_chunk_on(
        SimdLevel::Scalar,
        symbols,
        enc_refs,
        block_len,
        &mut reference
    ));
    for level in SimdLevel::supported() {
        let mut payload = Vec::new();
        assert!(encode_chunk_on(
            level,
            symbols,
            enc_refs,
            block_len,
            &mut payload
        ));
        assert!(
            payload == reference,
            "round {round}: {level} encoder differs"
        );
        let mut out = vec![0u16; symbols.len()];
        decode_chunk_on(level, &payload, dec_refs, block_len, &mut out).unwrap();
        assert!(out == symbols, "round {round}: {level} decoder");
    }
}

/// `symbols` with `bad` (absent from its block's table) put in the middle: every path
/// refuses the chunk.
fn refused_mid_chunk_on_every_path(
    round: usize,
    symbols: &[u16],
    bad: u16,
    enc_refs: &[&EncTable],
    block_len: usize,
) {
    let mut symbols = symbols.to_vec();
    let mid = symbols.len() / 2;
    symbols[mid] = bad;
    for level in SimdLevel::supported() {
        let mut out = Vec::new();
        assert!(
            !encode_chunk_on(level, &symbols, enc_refs, block_len, &mut out),
            "round {round}: {level} coded absent symbol {bad}"
        );
    }
}

/// The vector encoders look the symbols of a table's two heaviest windows of values up
/// in registers and gather the rest: symbols in the windows, below and above them
/// (rare, or in every group), next to absent ones in a window, with one peak or two
/// (FP8's signs), across blocks whose tables have different windows and odd chunk
/// lengths, all code as on the scalar path.
#[test]
fn window_lookups_and_outliers_code_like_scalar() {
    let mut next = xorshift(0x0DDC_0FFE_E0DD_F00D);
    for round in 0..24 {
        // A peak of ~40 values somewhere in 9 bits, plus outliers at `rate` per 1024.
        let rate = [0u64, 1, 30, 1024][round % 4];
        let tables: Vec<(EncTable, DecTable, Vec<u16>)> = (0..3)
            .map(|_| {
                let base = (next() % 470) as u16;
                let mut counts = vec![0u32; 512];
                for k in 0..40u16 {
                    // Every other value of the peak absent in some tables.
                    if round % 3 != 0 || k % 2 == 0 {
                        counts[usize::from(base + k)] = 1 + (next() % 5000) as u32;
                    }
                }
                if round % 2 == 1 {
                    // A second peak, 128 values off (wrapping within 9 bits).
                    for k in 0..30u16 {
                        counts[usize::from(base + k + 128) % 512] += 1 + (next() % 3000) as u32;
                    }
                }
                for _ in 0..20 {
                    counts[(next() % 512) as usize] += 1;
                }
                let table = FreqTable::from_counts(&counts).unwrap();
                let present: Vec<u16> = (0..512).filter(|&s| counts[s as usize] > 0).collect();
                (EncTable::new(&table, 9), DecTable::new(&table), present)
            })
            .collect();
        // Two peaks always make the second window pay.
        assert!(round % 2 == 0 || tables.iter().all(|t| t.0.second_window));
        let block_len = LANES << (next() % 4);
        let n = (next() % 9000) as usize + 1;
        let symbols: Vec<u16> = (0..n)
            .map(|i| {
                let (enc, _, present) = &tables[(i / block_len) % 3];
                if next() % 1024 < rate {
                    present[(next() as usize) % present.len()]
                } else {
                    // A present value in one of the windows.
                    let lo = enc.window_lo[(next() % 2) as usize] as usize;
                    *present
                        .iter()
                        .filter(|&&s| (lo..lo + 64).contains(&usize::from(s)))
                        .nth((next() % 8) as usize)
                        .unwrap_or(&present[0])
                }
            })
            .collect();
        let n_blocks = n.div_ceil(block_len);
        let enc_refs: Vec<&EncTable> = (0..n_blocks).map(|b| &tables[b % 3].0).collect();
        let dec_refs: Vec<&DecTable> = (0..n_blocks).map(|b| &tables[b % 3].1).collect();
        codes_like_scalar_on_every_path(round, &symbols, &enc_refs, &dec_refs, block_len);
        // An absent value in the window, and one below it, refuse the chunk everywhere.
        let enc = enc_refs[n / 2 / block_len];
        let [lo, lo2] = enc.window_lo;
        let absent_in_window =
            (lo..lo + 64).find(|&s| s < 512 && enc.entries[s as usize].freq == 0);
        let absent_in_second =
            (lo2..lo2 + 64).find(|&s| s < 512 && enc.entries[s as usize].freq == 0);
        let absent_below = (0..lo).find(|&s| enc.entries[s as usize].freq == 0);
        for bad in [absent_in_window, absent_in_second, absent_below]
            .into_iter()
            .flatten()
        {
            refused_mid_chunk_on_every_path(round, &symbols, bad as u16, &enc_refs, block_len);
        }
    }
}

/// The AVX2 encoder looks the symbols of a table whose frequency lies nearly all within
/// [`NARROW_WINDOW`] values up in registers and gathers the rare rest: narrow peaks
/// (BF16-like exponents) with outliers below and above them, tables that qualify and
/// tables that do not, side by side in one chunk, code as on the scalar path, and an
/// absent value in or outside the window refuses the chunk on every path.
#[test]
fn narrow_window_lookups_and_outliers_code_like_scalar() {
    use crate::entropy::model::{NARROW_OUTSIDE_MAX, NARROW_WINDOW};
    let mut next = xorshift(0x5DEE_CE66_D1CE_4E5B);
    let mut used_seen = [false; 2];
    for round in 0..24 {
        // Outliers at `rate` per 4096 symbols.
        let rate = [0u64, 1, 8, 200][round % 4];
        let tables: Vec<(EncTable, DecTable, Vec<u16>)> = (0..3)
            .map(|t| {
                let base = (next() % 490) as u16;
                let mut counts = vec![0u32; 512];
                // A peak of 10–30 values, every third absent in some rounds.
                let width = 10 + (next() % 21) as u16;
                for k in 0..width.min(512 - base) {
                    if round % 3 != 0 || k % 3 != 1 {
                        counts[usize::from(base + k)] = 1_000 + (next() % 100_000) as u32;
                    }
                }
                // A few rare outliers; in one table of three, enough to spread it.
                let outliers = if t == 2 { 150 } else { 3 };
                for _ in 0..outliers {
                    counts[(next() % 512) as usize] += 1;
                }
                let table = FreqTable::from_counts(&counts).unwrap();
                let present: Vec<u16> = (0..512).filter(|&s| counts[s as usize] > 0).collect();
                (EncTable::new(&table, 9), DecTable::new(&table), present)
            })
            .collect();
        for (enc, _, _) in &tables {
            used_seen[usize::from(enc.narrow.used)] = true;
            let lo = enc.narrow.lo as usize;
            let outside: u32 = (enc.entries.iter().enumerate())
                .filter(|(s, _)| !(lo..lo + NARROW_WINDOW).contains(s))
                .map(|(_, e)| e.freq)
                .sum();
            assert_eq!(enc.narrow.used, outside <= NARROW_OUTSIDE_MAX);
        }
        let block_len = LANES << (next() % 4);
        let n = (next() % 9000) as usize + 1;
        let symbols: Vec<u16> = (0..n)
            .map(|i| {
                let (enc, _, present) = &tables[(i / block_len) % 3];
                if next() % 4096 < rate {
                    present[(next() as usize) % present.len()]
                } else {
                    let lo = enc.narrow.lo as usize;
                    *present
                        .iter()
                        .filter(|&&s| (lo..lo + NARROW_WINDOW).contains(&usize::from(s)))
                        .nth((next() % 12) as usize)
                        .unwrap_or(&present[0])
                }
            })
            .collect();
        let n_blocks = n.div_ceil(block_len);
        let enc_refs: Vec<&EncTable> = (0..n_blocks).map(|b| &tables[b % 3].0).collect();
        let dec_refs: Vec<&DecTable> = (0..n_blocks).map(|b| &tables[b % 3].1).collect();
        codes_like_scalar_on_every_path(round, &symbols, &enc_refs, &dec_refs, block_len);
        // An absent value in the window, below it and above it refuses the chunk.
        let enc = enc_refs[n / 2 / block_len];
        let lo = enc.narrow.lo as usize;
        let absent = |r: std::ops::Range<usize>| r.into_iter().find(|&s| enc.entries[s].freq == 0);
        let bad = [
            absent(lo..(lo + NARROW_WINDOW).min(512)),
            absent(0..lo),
            absent((lo + NARROW_WINDOW).min(512)..512),
        ];
        for bad in bad.into_iter().flatten() {
            refused_mid_chunk_on_every_path(round, &symbols, bad as u16, &enc_refs, block_len);
        }
    }
    assert_eq!(
        used_seen,
        [true, true],
        "tables with and without the window"
    );
}
