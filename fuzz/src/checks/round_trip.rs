//! Arbitrary bytes encoded as each dtype must decode to exactly themselves, both through
//! the tensor codec and through a raw `.mcz` pack + unpack.
//!
//! Input layout: `dtype selector: u8 | options: u8 | data`. The options byte picks the
//! chunk length exponent (10..=22), the effort and the zstd level; the high bits of the
//! selector pick the block length exponent (from the smallest allowed up to the chunk's).

use mcodec::container::{pack, Archive, PackOptions};
use mcodec::entropy::stream::{Effort, MIN_BLOCK_LOG2};
use mcodec::tensor::{self, EncodeOptions, TensorDecoder, CHUNK_LOG2_RANGE};
use mcodec::Dtype;

const DTYPES: [Dtype; 6] = [
    Dtype::BF16,
    Dtype::F16,
    Dtype::F32,
    Dtype::F8E4M3,
    Dtype::F8E5M2,
    Dtype::I32,
];

/// Runs the check on one input; panics on a violated property.
pub fn check(input: &[u8]) {
    let [sel, opt, data @ ..] = input else {
        return;
    };
    let dtype = &DTYPES[usize::from(*sel) % DTYPES.len()];
    let span = CHUNK_LOG2_RANGE.end() - CHUNK_LOG2_RANGE.start() + 1;
    let chunk_log2 = CHUNK_LOG2_RANGE.start() + (opt & 0x0F) % span;
    let block_log2 = MIN_BLOCK_LOG2 + (sel >> 3) % (chunk_log2 - MIN_BLOCK_LOG2 + 1);
    let opts = EncodeOptions {
        chunk_log2,
        block_log2,
        effort: if opt & 0x80 != 0 {
            Effort::Fast
        } else if opt & 0x10 != 0 {
            Effort::Max
        } else {
            Effort::Default
        },
        zstd_level: if opt & 0x20 != 0 { 19 } else { 1 },
    };

    let enc = tensor::encode(dtype, data, &opts);
    assert!(enc.coded_len() <= data.len(), "encode expanded the data");
    let owned: Vec<Vec<u8>> = enc.streams.iter().map(|s| s.to_vec()).collect();
    let streams: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    let dec = TensorDecoder::new(enc.codec, enc.chunk_log2, data.len(), &streams)
        .expect("decoder accepts what the encoder wrote");
    let mut out = vec![0xA5u8; data.len()];
    dec.decode(&mut out).expect("decode what the encoder wrote");
    assert!(
        out == data,
        "{dtype} round trip via {} differs",
        enc.codec.name()
    );

    if opt & 0x40 != 0 {
        let popts = PackOptions::new().encode(opts).raw_dtype(dtype.clone());
        let mut packed = Vec::new();
        pack(data, &popts, &mut packed, &|_| {}).expect("pack raw");
        let archive = Archive::open(&packed).expect("open what pack wrote");
        let mut back = Vec::new();
        archive.unpack_to(&mut back, &|_| {}).expect("unpack");
        assert!(back == data, "raw {dtype} pack/unpack differs");
    }
}
