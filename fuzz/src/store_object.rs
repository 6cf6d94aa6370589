//! The `store_object` fuzz target's check: the hub store's object parser and payload
//! decoders (`mcodec_store::object`, STORE.md §3) on arbitrary bytes as an object must
//! never panic, never size anything by an unchecked claim, write every byte of what they
//! decode, and give back what re-encoding the decoded content gives.
//!
//! Input: arbitrary bytes as one object (the whole file the store would read). A delta
//! object is decoded against [`delta_base`] of its claimed length. Objects claiming more
//! than [`MAX_DECODED`] are parsed and checked against the expansion limit, not decoded.
//! Kept apart from `checks` (which depend on `mcodec` alone); replayed by the store's
//! `fuzz_replay` test.

use mcodec::delta;
use mcodec_store::object::{self, Header, MAX_EXPANSION};

/// Largest decoded size the check decodes.
pub const MAX_DECODED: u64 = 4 << 20;

/// The base a delta object of `len` bytes is decoded against: weight-like BF16/F32
/// values, whatever the dtype (any bytes are a valid base).
pub fn delta_base(len: usize) -> Vec<u8> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..len)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Every other byte low-entropy (an exponent), the rest noise.
            if i % 2 == 1 {
                0x3C | (state & 0x80) as u8
            } else {
                state as u8
            }
        })
        .collect()
}

/// Runs the check on one input; panics on a violated property.
pub fn check(data: &[u8]) {
    let parsed = Header::parse(data);
    let Ok((header, payload)) = object::split(data) else {
        return;
    };
    let (parsed, header_len) = parsed.expect("split accepts what parse refuses");
    assert_eq!(parsed, header, "split and parse disagree");
    assert!(header_len + payload.len() <= data.len());
    let raw_len = header.raw_len();
    if !matches!(header, Header::Delta { .. }) {
        assert!(
            raw_len <= (data.len() as u64).saturating_mul(MAX_EXPANSION),
            "claim of {raw_len} bytes from {} accepted",
            data.len()
        );
    }
    if raw_len > MAX_DECODED {
        return;
    }
    let len = raw_len as usize;
    match header {
        Header::Blob { zstd, raw_len } => {
            let Ok(bytes) = object::decode_blob(zstd, raw_len, payload) else {
                return;
            };
            assert_eq!(bytes.len(), len, "blob of the wrong length");
            let again = object::encode_blob(&bytes);
            let (h, p) = object::split(&again).expect("an encoded blob splits");
            let Header::Blob { zstd, raw_len } = h else {
                panic!("a blob encodes as {h:?}");
            };
            assert_eq!(object::decode_blob(zstd, raw_len, p).unwrap(), bytes);
        }
        Header::Plain {
            meta,
            codec,
            chunk_log2,
            stream_lens,
        } => {
            let raw_len = meta.raw_len;
            let decode_len = |n: usize, poison: u8| {
                let mut out = vec![poison; n];
                object::decode_plain_into(
                    codec,
                    chunk_log2,
                    &stream_lens,
                    payload,
                    raw_len,
                    &mut out,
                )
                .map(|()| out)
            };
            let decode = |poison: u8| decode_len(len, poison);
            let (zeros, ones) = (decode(0x00), decode(0xFF));
            assert_eq!(
                zeros, ones,
                "plain object: unwritten bytes or poison-dependent"
            );
            assert!(
                decode_len(len + 1, 0).is_err(),
                "plain object decodes into a buffer of the wrong length"
            );
            if let Ok(bytes) = zeros {
                // What decoded is a tensor of its dtype like any other: it codes again.
                let enc = mcodec::tensor::encode(&meta.dtype, &bytes, &Default::default());
                let again = object::encode_plain(meta, &enc);
                let Ok((
                    Header::Plain {
                        codec,
                        chunk_log2,
                        stream_lens,
                        ..
                    },
                    p,
                )) = object::split(&again)
                else {
                    panic!("a re-encoded plain object does not split");
                };
                let mut back = vec![0x77u8; len];
                object::decode_plain_into(codec, chunk_log2, &stream_lens, p, raw_len, &mut back)
                    .expect("a re-encoded plain object decodes");
                assert!(
                    back == bytes,
                    "a re-encoded plain object decodes differently"
                );
            }
        }
        Header::Delta {
            meta,
            base,
            plain_len,
        } => {
            let base_bytes = delta_base(len);
            let decode = |poison: u8| {
                let mut out = vec![poison; len];
                delta::decode(&meta.dtype, &base_bytes, payload, &mut out).map(|()| out)
            };
            let (zeros, ones) = (decode(0x00), decode(0xFF));
            assert_eq!(
                zeros, ones,
                "delta object: unwritten bytes or poison-dependent"
            );
            // The header and payload survive a re-encoding.
            let again = object::encode_delta(meta.clone(), base, plain_len, payload);
            let (h, p) = object::split(&again).expect("a re-encoded delta object splits");
            assert_eq!(
                h,
                Header::Delta {
                    meta,
                    base,
                    plain_len
                }
            );
            assert_eq!(p, payload);
        }
    }
}
