//! Tests of the element keys, the tokens and the varints.

use super::wire::{read_varint, write_varint};
use super::*;

#[test]
fn key_orders_values_and_inverts() {
    let layout = Layout::of(&Dtype::F32).unwrap();
    let values = [
        f32::NEG_INFINITY,
        -1e30,
        -1.5,
        -1e-40,
        -0.0,
        0.0,
        1e-45,
        1.0,
        1.0000001,
        f32::INFINITY,
    ];
    let keys: Vec<u64> = values
        .iter()
        .map(|v| layout.key(u64::from(v.to_bits())))
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    assert_eq!(keys[5] - keys[4], 1, "-0 and +0 are one step apart");
    assert_eq!(keys[8] - keys[7], 1, "one ULP is one step");
    for bits in [0u64, 0x7FC0_0001, 0xFFC0_1234, 0x8000_0000, 0xFFFF_FFFF] {
        assert_eq!(layout.unkey(layout.key(bits)), bits);
    }
    // Every 16-bit pattern against the definition (FORMAT.md §9.3).
    let layout = Layout::of(&Dtype::BF16).unwrap();
    for bits in 0..=0xFFFFu64 {
        let key = if bits & 0x8000 != 0 {
            !bits & 0xFFFF
        } else {
            bits | 0x8000
        };
        assert_eq!(layout.key(bits), key, "{bits:#x}");
        assert_eq!(layout.unkey(key), bits, "{bits:#x}");
    }
}

#[test]
fn tokens_round_trip_for_every_width() {
    for dtype in [Dtype::F8E4M3, Dtype::BF16, Dtype::F32, Dtype::F64] {
        let layout = Layout::of(&dtype).unwrap();
        let mut diffs = vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 100, layout.sign(), layout.mask()];
        diffs.extend((1..layout.bits).map(|s| (1u64 << s) - 1));
        diffs.extend((1..layout.bits).map(|s| (1u64 << s) + 1));
        diffs.extend((1..layout.bits).map(|s| layout.mask() - (1u64 << s)));
        for d in diffs {
            let d = d & layout.mask();
            let t = tokenize(layout, d);
            assert!(usize::from(t.symbol) < layout.alphabet(), "{dtype}: {d}");
            let expected_bits = if t.symbol == 0 {
                0
            } else {
                extra_bits_of(t.symbol)
            };
            assert_eq!(t.extra_bits, expected_bits, "{dtype}: {d}");
            assert_eq!(untokenize(layout, t.symbol, t.extra), d, "{dtype}: {d}");
        }
    }
}

#[test]
fn tokenize_fast_matches_tokenize() {
    for dtype in [
        Dtype::F8E4M3,
        Dtype::BF16,
        Dtype::F16,
        Dtype::F32,
        Dtype::F64,
    ] {
        let layout = Layout::of(&dtype).unwrap();
        let mut diffs: Vec<u64> = (0..300).collect();
        for s in 0..layout.bits {
            let p = 1u64 << s;
            diffs.extend([p - 1, p, p + 1, p | (p >> 1), layout.mask() - p + 1]);
        }
        let mut r = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..10_000 {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            diffs.push(r >> (r % 64));
        }
        for d in diffs {
            let d = d & layout.mask();
            assert_eq!(
                tokenize_fast(layout, d),
                tokenize(layout, d),
                "{dtype}: {d:#x}"
            );
        }
    }
}

#[test]
fn varints_reject_overlong_and_oversized() {
    let mut buf = Vec::new();
    write_varint(&mut buf, 300);
    assert_eq!(read_varint(&mut &buf[..], "x", 300), Ok(300));
    assert!(read_varint(&mut &buf[..], "x", 299).is_err());
    assert!(read_varint(&mut &[0x80u8, 0x00][..], "x", 10).is_err());
    assert!(read_varint(&mut &[0x80u8][..], "x", 10).is_err());
    assert!(read_varint(&mut &[0xFFu8; 11][..], "x", u64::MAX).is_err());
}
