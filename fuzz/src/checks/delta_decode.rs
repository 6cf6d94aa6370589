//! The delta decoder (`mcodec::delta::decode`: ULP layouts 1, 2 and 3, BitX) on arbitrary
//! delta bytes against a generated base must never panic, must write every output byte,
//! must give the same result on every code path the CPU has (scalar, AVX2, AVX-512) and
//! decoded a piece at a time (`DeltaPieces`, chunked ULP deltas), and whatever it decodes
//! must code again (with the same method) to a delta that decodes to the same bytes.
//!
//! Input layout: `dtype selector: u8 | base seed: u8 | elements: u16 LE |` then the
//! delta. The base is [`pair`]`(dtype, elements, seed)`'s first half (selector mod 8:
//! BF16, F16, F32, F64, F8_E4M3, F8_E5M2, then I32 and U8, which only BitX codes);
//! seed 0 gives exactly the base of the golden deltas (`fixtures/golden/delta`).

use mcodec::delta::{self, DeltaError};
use mcodec::Dtype;

/// The dtypes a selector byte picks from.
pub const DTYPES: [Dtype; 8] = [
    Dtype::BF16,
    Dtype::F16,
    Dtype::F32,
    Dtype::F64,
    Dtype::F8E4M3,
    Dtype::F8E5M2,
    Dtype::I32,
    Dtype::U8,
];

/// A deterministic fine-tune-shaped (base, target) pair of `n` elements plus, for
/// elements wider than a byte, a ragged tail of one byte: values of mixed binades,
/// untouched runs, small moves and some arbitrary bit patterns. With `seed` 0 it is the
/// pair the golden deltas were made from; other seeds start the generator elsewhere and
/// put an arbitrary bit pattern (NaN, infinity, subnormal...) at every 61st element.
pub fn pair(dtype: &Dtype, n: usize, seed: u8) -> (Vec<u8>, Vec<u8>) {
    let width = dtype.element_size().unwrap_or(1);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(seed).wrapping_mul(0x0100_0000_01B3);
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut base, mut target) = (Vec::new(), Vec::new());
    for i in 0..n {
        let r = next();
        let mut b: u64 = match width {
            1 => r & 0xB7,
            2 => (r & 0x83FF) | 0x3000,
            4 => (r & 0x83FF_FFFF) | 0x3C00_0000,
            _ => (r & 0x800F_FFFF_FFFF_FFFF) | 0x3F80_0000_0000_0000,
        };
        if seed != 0 && i % 61 == 7 {
            b = r.rotate_left(u32::from(seed));
        }
        let t = match (i / 50) % 4 {
            0 => b,
            1 | 2 => b.wrapping_add((r >> 40) % 9).wrapping_sub(4),
            _ if i % 97 == 0 => next(),
            _ => b ^ ((r >> 20) & 0xF),
        };
        base.extend_from_slice(&b.to_le_bytes()[..width]);
        target.extend_from_slice(&t.to_le_bytes()[..width]);
    }
    if width > 1 {
        base.push(0x5A);
        target.push(0xA5);
    }
    (base, target)
}

/// The input that decodes `delta` against the base of `pair(DTYPES[selector], n, seed)`.
pub fn input(selector: u8, seed: u8, n: u16, delta: &[u8]) -> Vec<u8> {
    let mut v = vec![selector, seed];
    v.extend_from_slice(&n.to_le_bytes());
    v.extend_from_slice(delta);
    v
}

/// Runs the check on one input; panics on a violated property.
pub fn check(data: &[u8]) {
    let [selector, seed, n0, n1, ref delta @ ..] = *data else {
        return;
    };
    let dtype = &DTYPES[usize::from(selector) % DTYPES.len()];
    let n = usize::from(u16::from_le_bytes([n0, n1]));
    let (base, _) = pair(dtype, n, seed);

    let mut zeros = vec![0x00u8; base.len()];
    let mut ones = vec![0xFFu8; base.len()];
    let rz = delta::decode(dtype, &base, delta, &mut zeros);
    let ro = delta::decode(dtype, &base, delta, &mut ones);
    assert_eq!(
        rz, ro,
        "the result depends on the output's previous content"
    );
    for level in mcodec::cpu::SimdLevel::supported() {
        let mut on_path = vec![0x5Au8; base.len()];
        let r = delta::decode_on(level, dtype, &base, delta, &mut on_path);
        assert_eq!(r, rz, "the {level} path's result differs");
        assert!(
            r.is_err() || on_path == zeros,
            "the {level} path decodes other bytes"
        );
    }
    // A chunked ULP delta decoded a piece at a time (whole chunks, in reverse order, as
    // the store's `get` does) gives the same bytes, or fails where the whole decode fails.
    match delta::DeltaPieces::new(dtype, delta, base.len()) {
        Ok(Some(p)) => {
            let unit = p.chunk_bytes();
            let mut out = vec![0x33u8; base.len()];
            let mut pieces = Ok(());
            for at in (0..base.len().max(1)).step_by(unit).rev() {
                let end = at.saturating_add(unit).min(base.len());
                pieces = p.decode_at(at, &base[at..end], &mut out[at..end]);
                if pieces.is_err() {
                    break;
                }
            }
            assert_eq!(pieces.is_ok(), rz.is_ok(), "pieces and the whole disagree");
            assert!(rz.is_err() || out == zeros, "pieces decode other bytes");
        }
        Ok(None) => {}
        Err(_) => assert!(
            rz.is_err(),
            "a delta that decodes whole does not parse for pieces"
        ),
    }
    // An output of the wrong length is refused before anything is decoded.
    let mut wrong = vec![0u8; base.len() + 1];
    assert!(matches!(
        delta::decode(dtype, &base, delta, &mut wrong),
        Err(DeltaError::LengthMismatch { .. })
    ));
    if rz.is_err() {
        return;
    }
    assert!(zeros == ones, "output bytes left unwritten");

    // What decoded is a target like any other: it codes and decodes back.
    let method = delta::method_of(delta).expect("a delta that decodes names its method");
    let again = delta::encode_with(method, dtype, &base, &zeros)
        .expect("a method that decoded the dtype codes it");
    let mut back = vec![0x77u8; base.len()];
    delta::decode(dtype, &base, &again, &mut back).expect("a fresh delta decodes");
    assert!(back == zeros, "re-coded delta decodes differently");
}
