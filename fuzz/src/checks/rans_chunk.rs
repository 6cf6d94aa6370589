//! The rANS chunk decoder alone on arbitrary payloads: never panics, never reads out of
//! bounds, writes every output symbol, and the vector, scalar and pair decoders agree.
//!
//! Input layout: `bits: u8 | tables_and_block: u8 | n: u16 LE (mod 4097) |`
//! `n_tables × 8 count bytes | one table id byte per block | payload`. The tables are
//! built from the counts (so they are always valid); the payload is the attack surface.

use mcodec::entropy::model::{DecTable, EncTable, FreqTable, MAX_SYMBOL_BITS};
use mcodec::entropy::rans::{self, LANES};

const MAX_SYMBOLS: usize = 4096;

/// Runs the check on one input; panics on a violated property.
pub fn check(data: &[u8]) {
    let [b0, b1, n_lo, n_hi, rest @ ..] = data else {
        return;
    };
    let bits = 1 + u32::from(*b0) % MAX_SYMBOL_BITS;
    let n_tables = 1 + usize::from(b1 & 3);
    let block_len = LANES << ((b1 >> 2) & 3);
    let n = usize::from(u16::from_le_bytes([*n_lo, *n_hi])) % (MAX_SYMBOLS + 1);
    let Some((counts, rest)) = rest.split_at_checked(8 * n_tables) else {
        return;
    };
    let alphabet = 1usize << bits;
    let mut freq_tables = Vec::new();
    for c in counts.chunks_exact(8) {
        // Spread the 8 counts over the alphabet so high symbols are reachable too.
        let mut h = vec![0u32; alphabet];
        for (i, &k) in c.iter().enumerate() {
            h[(i * 67 + usize::from(c[0] >> 4)) % alphabet] += u32::from(k);
        }
        let Some(t) = FreqTable::from_counts(&h) else {
            return;
        };
        freq_tables.push(t);
    }
    let dec: Vec<DecTable> = freq_tables.iter().map(DecTable::new).collect();
    let n_blocks = n.div_ceil(block_len);
    let Some((ids, payload)) = rest.split_at_checked(n_blocks) else {
        return;
    };
    let tables: Vec<&DecTable> = ids
        .iter()
        .map(|&i| &dec[usize::from(i) % n_tables])
        .collect();

    let mut a = vec![0xFFFFu16; n];
    let ra = rans::decode_chunk(payload, &tables, block_len, &mut a);
    let mut b = vec![0u16; n];
    let rb = rans::decode_chunk(payload, &tables, block_len, &mut b);
    assert_eq!(ra, rb, "result depends on the output buffer");
    if ra.is_ok() {
        assert!(
            a == b,
            "decoded symbols depend on the poison: unwritten output"
        );
        assert!(
            a.iter().all(|&s| usize::from(s) < alphabet),
            "symbol wider than {bits} bits"
        );
    }

    // The pair decoder (vector path when available) must agree with the single one,
    // for the pair in either order and with a second chunk of another length.
    let half = n / 2;
    let mut p = vec![0x5555u16; n];
    let mut q = vec![0xAAAAu16; half];
    let rp = rans::decode_chunk_pair(
        [payload, payload],
        [&tables, &tables[..half.div_ceil(block_len)]],
        block_len,
        [&mut p, &mut q],
    );
    let mut single_q = vec![0u16; half];
    let rq = rans::decode_chunk(
        payload,
        &tables[..half.div_ceil(block_len)],
        block_len,
        &mut single_q,
    );
    assert_eq!(
        rp.is_ok(),
        ra.is_ok() && rq.is_ok(),
        "pair and single decoders disagree"
    );
    if rp.is_ok() {
        assert!(
            p == a && q == single_q,
            "pair decode differs from single decode"
        );
    }

    // Every other code path the CPU has must agree with the default one.
    let default = mcodec::cpu::simd_level();
    for level in mcodec::cpu::SimdLevel::supported() {
        if level == default {
            continue;
        }
        mcodec::cpu::set_simd_level(level).expect("a supported path");
        let mut s = vec![0x1234u16; n];
        let rs = rans::decode_chunk(payload, &tables, block_len, &mut s);
        mcodec::cpu::reset_simd_level();
        assert_eq!(rs, ra, "{level} and {default} decoders disagree");
        if rs.is_ok() {
            assert!(
                s == a,
                "{level} and {default} decoders produce different symbols"
            );
        }
    }

    // Whatever decodes re-encodes to a payload that decodes to the same symbols.
    if ra.is_ok() {
        let enc: Vec<EncTable> = freq_tables.iter().map(|t| EncTable::new(t, bits)).collect();
        let enc_tables: Vec<&EncTable> = ids
            .iter()
            .map(|&i| &enc[usize::from(i) % n_tables])
            .collect();
        let mut again = Vec::new();
        rans::encode_chunk(&a, &enc_tables, block_len, &mut again)
            .expect("decoded symbols are in their tables");
        let mut back = vec![0u16; n];
        rans::decode_chunk(&again, &tables, block_len, &mut back).expect("re-encoded chunk");
        assert!(back == a, "re-encoded chunk decodes differently");
    }
}
