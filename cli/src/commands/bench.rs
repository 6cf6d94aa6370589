//! `mcodec bench`: compression ratio and in-memory encode/decode throughput, without
//! disk I/O in the timed part.

use std::borrow::Cow;
use std::path::Path;
use std::time::Instant;

use mcodec::container::{pack, Archive, ContainerError, PackOptions, SourceKind, MAGIC};
use serde_json::json;

use super::{emit, mb_per_s, ratio};
use crate::error::{CliError, Context, Failure};
use crate::fsutil::{input_name, read_input};
use crate::progress::Bar;
use crate::{BenchArgs, Global};

/// Runs `bench`.
pub fn run(a: &BenchArgs, g: &Global) -> Result<(), CliError> {
    let data = read_input(&a.file)?;
    let file = input_name(&a.file);
    let mut raw_dtype = a.dtype.clone();
    let original: Cow<[u8]> = if data.starts_with(&MAGIC) {
        let archive = Archive::open(&data).at(file)?;
        let index = archive.index();
        if index.source == SourceKind::Raw && raw_dtype.is_none() {
            // Repack as it was packed: raw elements of the dtype of its first tensor.
            raw_dtype = index.tensors.first().map(|t| t.dtype.clone());
        }
        let mut v = Vec::new();
        v.try_reserve_exact(usize::try_from(index.original_len).unwrap_or(usize::MAX))
            .map_err(|_| {
                CliError::at_kind(file, Failure::Limit, "original too large to hold in memory")
            })?;
        archive.unpack_to(&mut v, &|_| {}).at(file)?;
        Cow::Owned(v)
    } else {
        Cow::Borrowed(&data)
    };
    let mut opts = PackOptions::new().encode(a.level.options(a.chunk_log2));
    opts.raw_dtype = raw_dtype;
    let repeats = a.repeat as usize;
    let bar = Bar::steps(2 * repeats as u64, g.quiet);

    bar.message("encode");
    let mut packed = Vec::new();
    let mut encode_s = Vec::with_capacity(repeats);
    for r in 0..repeats {
        packed.clear();
        let t = Instant::now();
        pack(&original, &opts, &mut packed, &|_| {}).at(file)?;
        encode_s.push(t.elapsed().as_secs_f64());
        bar.set(r as u64 + 1);
    }

    bar.message("decode");
    let archive = Archive::open(&packed).at(file)?;
    let tensor_bytes: u64 = archive.index().tensors.iter().map(|t| t.original_len).sum();
    // Warm: one output buffer, reused by every repeat (its pages are mapped after the
    // first). Cold: a fresh allocation per repeat, as a loader gets it, so the page
    // faults of first touch are timed too; freeing it is not.
    let mut buf = vec![0u8; original.len()];
    let mut decode_s = Vec::with_capacity(repeats);
    let mut cold_s = Vec::with_capacity(repeats);
    for r in 0..repeats {
        let t = Instant::now();
        decode_all(&packed, &mut buf).at(file)?;
        decode_s.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut fresh = vec![0u8; original.len()];
        decode_all(&packed, &mut fresh).at(file)?;
        cold_s.push(t.elapsed().as_secs_f64());
        check_exact(&packed, &original, &fresh, file)?;
        drop(fresh);
        bar.set((repeats + r) as u64 + 1);
    }
    drop(bar);
    check_exact(&packed, &original, &buf, file)?;

    let (enc, dec, cold) = (median(&encode_s), median(&decode_s), median(&cold_s));
    let original_bytes = original.len() as u64;
    let packed_bytes = packed.len() as u64;
    let ratio = ratio(packed_bytes, original_bytes);
    let threads = rayon::current_num_threads();
    let simd = mcodec::simd::simd_level().name();
    let text = if a.json {
        let v = json!({
            "file": file.to_string_lossy(),
            "level": a.level.name(),
            "threads": threads,
            "simd": simd,
            "repeats": repeats,
            "original_bytes": original_bytes,
            "tensor_bytes": tensor_bytes,
            "packed_bytes": packed_bytes,
            "ratio": ratio,
            "encode_mb_s": mb_per_s(tensor_bytes, enc),
            "decode_mb_s": mb_per_s(tensor_bytes, dec),
            "decode_cold_mb_s": mb_per_s(tensor_bytes, cold),
            "encode_median_s": enc,
            "decode_median_s": dec,
            "decode_cold_median_s": cold,
            "encode_s": encode_s,
            "decode_s": decode_s,
            "decode_cold_s": cold_s,
        });
        format!("{v:#}\n")
    } else {
        format!(
            "file      {}\nlevel     {}\nthreads   {threads}\nsimd      {simd}\noriginal  {original_bytes} bytes ({tensor_bytes} bytes of tensors)\npacked    {packed_bytes} bytes\nratio     {}\nencode    {:.1} MB/s (median of {repeats}: {enc:.4} s)\ndecode    {:.1} MB/s warm, reused output buffer (median of {repeats}: {dec:.4} s)\ndecode    {:.1} MB/s cold, fresh output buffer (median of {repeats}: {cold:.4} s)\n",
            file.display(),
            a.level.name(),
            ratio.map_or("-".to_owned(), |r| format!("{r:.4}")),
            mb_per_s(tensor_bytes, enc),
            mb_per_s(tensor_bytes, dec),
            mb_per_s(tensor_bytes, cold),
        )
    };
    emit(&text)
}

/// One timed decode: open the archive and decode the whole original into `buf` (tensors
/// in parallel), checking every checksum, as `unpack` does minus the writing.
fn decode_all(packed: &[u8], buf: &mut [u8]) -> Result<(), ContainerError> {
    Archive::open(packed)?.unpack_into(buf)
}

/// Compares the last decode (the whole original, in `decoded`) with the original, byte
/// for byte (untimed), naming the first tensor that differs.
fn check_exact(
    packed: &[u8],
    original: &[u8],
    decoded: &[u8],
    file: &Path,
) -> Result<(), CliError> {
    if decoded == original {
        return Ok(());
    }
    let archive = Archive::open(packed).at(file)?;
    let first = original
        .iter()
        .zip(decoded)
        .position(|(a, b)| a != b)
        .unwrap_or(original.len()) as u64;
    let what = archive
        .index()
        .tensors
        .iter()
        .find(|t| (t.original_offset..t.original_offset + t.original_len).contains(&first))
        .map_or_else(|| "header".to_owned(), |t| format!("tensor {:?}", t.name));
    Err(CliError::at_kind(
        file,
        Failure::Other,
        format!("decoded {what} differs from the original"),
    ))
}

/// The median; the mean of the middle two for an even count.
fn median(times: &[f64]) -> f64 {
    let mut v = times.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
