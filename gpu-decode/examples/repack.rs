//! Packs a safetensors file with a chosen chunk length, for GPU decoding: the GPU decodes
//! one chunk per warp, so small models need short chunks to fill it (gpu-decode/NOTES.md).
//!
//! `repack IN.safetensors OUT.mcz CHUNK_LOG2` (10..=22; the default encoder uses 18)

use std::process::ExitCode;

use mcodec::container::{pack, PackOptions};
use mcodec::EncodeOptions;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, log2] = &args[..] else {
        eprintln!("usage: repack IN.safetensors OUT.mcz CHUNK_LOG2");
        return ExitCode::from(2);
    };
    let Ok(chunk_log2) = log2.parse::<u8>() else {
        eprintln!("repack: chunk length exponent {log2:?} is not a number");
        return ExitCode::from(2);
    };
    let encode = EncodeOptions {
        chunk_log2,
        block_log2: EncodeOptions::default().block_log2.min(chunk_log2),
        ..Default::default()
    };
    if let Err(e) = encode.validate() {
        eprintln!("repack: {e}");
        return ExitCode::from(2);
    }
    let result = std::fs::read(input)
        .map_err(|e| e.to_string())
        .and_then(|data| {
            let mut out = Vec::new();
            let opts = PackOptions::new().encode(encode);
            pack(&data, &opts, &mut out, &|_| {}).map_err(|e| e.to_string())?;
            std::fs::write(output, &out).map_err(|e| e.to_string())
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("repack: {input}: {e}");
            ExitCode::FAILURE
        }
    }
}
