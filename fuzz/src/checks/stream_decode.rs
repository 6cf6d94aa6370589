//! The field-stream parser and decoder (mode dispatch: packed, const, rANS) alone, on
//! arbitrary bytes with arbitrary declared symbol widths, counts and chunk lengths:
//! never panics, allocates only what the declared count needs, writes every symbol of
//! every chunk, and decodes chunk pairs exactly as single chunks.
//!
//! Input layout: `bits: u8 | chunk_log2: u8 | n: u24 LE (mod 2^18 + 1) | stream bytes`.

use mcodec::entropy::bitpack;
use mcodec::entropy::model::MAX_SYMBOL_BITS;
use mcodec::entropy::stream::{StreamDecoder, StreamKind};

const MAX_SYMBOLS: usize = 1 << 18;

/// Runs the check on one input; panics on a violated property.
pub fn check(data: &[u8]) {
    let [b0, b1, n0, n1, n2, stream @ ..] = data else {
        return;
    };
    // One value in 16 is out of range on purpose: the parser must refuse it.
    let bits = u32::from(*b0) % (MAX_SYMBOL_BITS + 2);
    let chunk_len = 1usize << (b1 % 24);
    let n = (u32::from_le_bytes([*n0, *n1, *n2, 0]) as usize) % (MAX_SYMBOLS + 1);
    let Ok(dec) = StreamDecoder::parse(stream, bits, n, chunk_len) else {
        return;
    };
    assert!(
        (1..=MAX_SYMBOL_BITS).contains(&bits),
        "parse accepted width {bits}"
    );
    assert_eq!(dec.n_chunks(), n.div_ceil(chunk_len));
    let kind = dec.kind();
    if let StreamKind::Rans(tables) = kind {
        assert!((1..=255).contains(&tables));
    }
    let mut singles: Vec<Option<Vec<u16>>> = Vec::new();
    let len_of = |c: usize| chunk_len.min(n - c * chunk_len);
    // Decode the first few chunks only: the time per input stays bounded.
    for c in 0..dec.n_chunks().min(8) {
        let len = len_of(c);
        let mut a = vec![0xFFFFu16; len];
        let mut b = vec![0u16; len];
        let ra = dec.decode_chunk(c, &mut a);
        let rb = dec.decode_chunk(c, &mut b);
        assert_eq!(ra, rb, "result depends on the output buffer");
        if ra.is_ok() {
            assert!(a == b, "chunk {c}: unwritten output survives");
            assert!(a.iter().all(|&s| u32::from(s) < 1 << bits));
            if let Some(packed) = dec.packed_chunk(c, len) {
                let mut u = vec![0u16; len];
                bitpack::unpack(packed, bits, &mut u);
                assert!(u == a, "packed_chunk disagrees with decode_chunk");
            }
            singles.push(Some(a));
        } else {
            singles.push(None);
        }
    }
    for c in (0..singles.len().saturating_sub(1)).step_by(2) {
        let mut a = vec![0x5A5Au16; len_of(c)];
        let mut b = vec![0xA5A5u16; len_of(c + 1)];
        let r = dec.decode_chunk_pair(c, &mut a, &mut b);
        match (&singles[c], &singles[c + 1]) {
            (Some(x), Some(y)) => {
                r.expect("pair decode fails where single decodes succeed");
                assert!(
                    &a == x && &b == y,
                    "pair decode differs from single decodes"
                );
            }
            _ => assert!(
                r.is_err(),
                "pair decode succeeds where a single decode fails"
            ),
        }
    }
}
