//! `TensorDecoder::new` + `decode` on arbitrary streams must never panic.
//!
//! Input layout: `codec id: u8 | chunk_log2: u8 | out_len: u24 LE (capped at 1 MiB) |`
//! then, for every stream but the last, `len: u16 LE | bytes`; the last stream takes the
//! rest.

use mcodec::tensor::{Codec, TensorDecoder};

const MAX_OUT: usize = 1 << 20;
const POISON: u8 = 0xA5;

/// Runs the check on one input; panics on a violated property.
pub fn check(data: &[u8]) {
    if data.len() < 5 {
        return;
    }
    let Some(codec) = Codec::from_id(data[0]) else {
        return;
    };
    let chunk_log2 = data[1];
    let out_len = (u32::from_le_bytes([data[2], data[3], data[4], 0]) as usize) % (MAX_OUT + 1);
    let mut rest = &data[5..];
    let mut streams: Vec<&[u8]> = Vec::new();
    for k in 0..codec.stream_count() {
        if k + 1 == codec.stream_count() {
            streams.push(rest);
            break;
        }
        let len = match rest {
            [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])),
            _ => 0,
        };
        rest = rest.get(2..).unwrap_or(&[]);
        let len = len.min(rest.len());
        streams.push(&rest[..len]);
        rest = &rest[len..];
    }
    let Ok(dec) = TensorDecoder::new(codec, chunk_log2, out_len, &streams) else {
        return;
    };
    assert_eq!(dec.codec(), codec);
    let _ = dec.stream_kinds();
    let _ = dec.first_field_entropy();
    let mut out = vec![POISON; out_len];
    if dec.decode(&mut out).is_ok() {
        // Decoding is a pure function of the streams.
        let mut again = vec![!POISON; out_len];
        dec.decode(&mut again).expect("second decode");
        assert!(out == again, "decode is not deterministic");
    }
    let mut short = vec![POISON; out_len.saturating_sub(1)];
    if out_len > 0 {
        assert!(dec.decode(&mut short).is_err());
    }
}
