//! Inference-shaped use of the GPU decoder.
//!
//! `cargo run --release -p mcodec-gpu --example infer -- MODEL.mcz [--iters N]`
//!
//! 1. Load: host-to-GPU upload of the packed model plus one decode of all of it, against
//!    uploading the raw BF16 bytes (the same layout), both from host memory.
//! 2. Per layer (tensors named `<prefix>.<number>.…`): decode the layer's weights into one
//!    reusable scratch buffer, then run a cuBLAS BF16 GEMM `Y = X · Wᵀ` with every 2-D
//!    weight, for batch sizes 1 to 256; CUDA events time the decode and the GEMMs. The same
//!    GEMMs on weights kept decoded in memory ("resident") are the baseline.
//!
//! Prints tables; with no CUDA device (or NVRTC, or cuBLAS) it says "skipped" and why and
//! exits successfully, unless `MCODEC_GPU_REQUIRED` is set: then it fails.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaEvent, CudaSlice, CudaStream, DevicePtr};
use mcodec::container::Archive;
use mcodec_gpu::bench::{median, timing_event};
use mcodec_gpu::plan::{Prepared, PreparedTensor};
use mcodec_gpu::{GpuDecoder, GpuError, GpuModel};

const BATCHES: [usize; 6] = [1, 8, 32, 64, 128, 256];

type Error = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: infer MODEL.mcz [--iters N]");
        return ExitCode::from(2);
    };
    let iters = args
        .iter()
        .position(|a| a == "--iters")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(5usize)
        .max(1);
    let dec = match GpuDecoder::new(0) {
        Ok(d) => d,
        Err(e @ (GpuError::NoDevice(_) | GpuError::NvrtcMissing(_))) => {
            return skip(&e.to_string());
        }
        Err(e) => {
            eprintln!("infer: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&dec, path, iters) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(why)) => skip(&why),
        Err(e) => {
            eprintln!("infer: {path}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A step that could not run: "skipped" and success, or a failure when a GPU run is
/// required.
fn skip(why: &str) -> ExitCode {
    if mcodec_gpu::gpu_required() {
        eprintln!(
            "infer: FAILED: {why} ({} is set: nothing may be skipped)",
            mcodec_gpu::GPU_REQUIRED_ENV
        );
        ExitCode::FAILURE
    } else {
        println!("infer: skipped: {why}");
        ExitCode::SUCCESS
    }
}

fn event(stream: &Arc<CudaStream>) -> Result<CudaEvent, Error> {
    Ok(timing_event(stream)?)
}

/// Runs the measurements; `Some(why)` when a part was skipped.
fn run(dec: &GpuDecoder, path: &str, iters: usize) -> Result<Option<String>, Error> {
    let bytes = std::fs::read(path)?;
    let archive = Archive::open(&bytes)?;
    let stream = dec.context().default_stream();
    println!("device: {}\nmodel:  {path}", dec.describe());

    // ---- 1. Load: packed upload + decode against raw upload -----------------------------
    let t = Instant::now();
    let prepared = Prepared::new(&archive, None, dec.max_tables())?;
    let host_prep_s = t.elapsed().as_secs_f64();
    for (t, why) in prepared.fallbacks() {
        println!("note: {} decoded on the CPU, not the GPU: {why}", t.name);
    }
    let all: Vec<usize> = (0..prepared.tensors.len()).collect();
    let (offsets, total) = mcodec_gpu::output_layout(&prepared.tensors, &all);
    let mut raw = vec![0u8; total as usize];
    for (t, &off) in prepared.tensors.iter().zip(&offsets) {
        archive.decode_tensor(t.index, &mut raw[off as usize..(off + t.out_len) as usize])?;
    }
    let packed_bytes = prepared.arena.len() + prepared.tables.len();
    let mut packed_s = Vec::new();
    let mut raw_s = Vec::new();
    let mut model = None;
    for _ in 0..3 {
        let copy = Prepared {
            arena: prepared.arena.clone(),
            tables: prepared.tables.clone(),
            tensors: prepared.tensors.clone(),
        };
        stream.synchronize()?;
        let t = Instant::now();
        let mut m = GpuModel::upload_prepared(dec, copy, &stream)?;
        let (buf, _) = m.decode_all(&stream)?;
        packed_s.push(t.elapsed().as_secs_f32());
        drop(buf);
        model = Some(m);

        let t = Instant::now();
        let dev = stream.clone_htod(&raw)?;
        stream.synchronize()?;
        raw_s.push(t.elapsed().as_secs_f32());
        drop(dev);
    }
    let mut model = model.expect("three loads ran");
    let (p, r) = (median(&packed_s), median(&raw_s));
    println!("\nload to GPU (median of 3, from host memory; host parse+checksums {host_prep_s:.3} s not included)");
    println!("| path | bytes over PCIe | seconds | GB/s of weights |");
    println!("|---|---:|---:|---:|");
    println!(
        "| packed upload + GPU decode | {packed_bytes} | {p:.4} | {:.1} |",
        total as f64 / 1e9 / f64::from(p)
    );
    println!(
        "| raw BF16 upload | {total} | {r:.4} | {:.1} |",
        total as f64 / 1e9 / f64::from(r)
    );
    println!("packed/raw time: {:.2}", p / r);

    // ---- 2. Per-layer decode + GEMM --------------------------------------------------------
    let layers = layers(model.tensors());
    if layers.is_empty() {
        return Ok(Some(
            "no numbered layers in this model: no per-layer loop".into(),
        ));
    }
    let mut scratch_len = 0u64;
    for l in layers.values() {
        scratch_len = scratch_len.max(mcodec_gpu::output_layout(model.tensors(), l).1);
    }
    let mut scratch = stream.alloc_zeros::<u8>(scratch_len as usize)?;
    let groups = layers
        .values()
        .map(|l| model.group(l, &scratch, &stream))
        .collect::<Result<Vec<_>, _>>()?;
    let (resident, resident_offsets) = model.decode_all(&stream)?;
    // GEMM shapes of each layer: (offset in its group's output, rows = out, cols = in).
    let shapes: Vec<Vec<(u64, u64, usize, usize)>> = layers
        .values()
        .zip(&groups)
        .map(|(l, g)| {
            l.iter()
                .zip(g.offsets())
                .filter_map(|(&t, &off)| {
                    let p = &model.tensors()[t];
                    (p.dtype == mcodec::Dtype::BF16 && p.shape.len() == 2).then(|| {
                        (
                            off,
                            resident_offsets[t],
                            p.shape[0] as usize,
                            p.shape[1] as usize,
                        )
                    })
                })
                .collect()
        })
        .collect();
    let max_in = shapes.iter().flatten().map(|s| s.3).max().unwrap_or(1);
    let max_out = shapes.iter().flatten().map(|s| s.2).max().unwrap_or(1);
    let batch_max = *BATCHES.last().expect("batches");
    // Activations: small varied BF16 values (zeros would flatter the GEMM).
    let x_host: Vec<u16> = (0..batch_max * max_in)
        .map(|i| 0x3C00 | ((i as u16).wrapping_mul(2654) & 0x7F))
        .collect();
    let x = stream.clone_htod(&x_host)?;
    let mut y = stream.alloc_zeros::<u16>(batch_max * max_out)?;
    // SAFETY: only probes whether the library can be loaded.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Ok(Some(
            "cuBLAS not found (libcublas on the library path): no GEMM loop".into(),
        ));
    }
    let blas = CudaBlas::new(stream.clone())?;
    let gemm = |w: u64,
                rows: usize,
                cols: usize,
                batch: usize,
                y: &mut CudaSlice<u16>|
     -> Result<(), Error> {
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (xp, _rx) = x.device_ptr(&stream);
        let (yp, _ry) = y.device_ptr(&stream);
        // Row-major W [rows, cols] is column-major Wᵀ; Y (column-major [rows, batch]) =
        // op(W) · X with X column-major [cols, batch].
        // SAFETY: W lies in a buffer of at least rows·cols BF16 at `w` (the layer's output
        // layout or the resident model), X holds batch_max·max_in, Y batch_max·max_out.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *blas.handle(),
                cublasOperation_t::CUBLAS_OP_T,
                cublasOperation_t::CUBLAS_OP_N,
                rows as i32,
                batch as i32,
                cols as i32,
                (&alpha as *const f32).cast(),
                w as *const _,
                cudaDataType::CUDA_R_16BF,
                cols as i32,
                xp as *const _,
                cudaDataType::CUDA_R_16BF,
                cols as i32,
                (&beta as *const f32).cast(),
                yp as *mut _,
                cudaDataType::CUDA_R_16BF,
                rows as i32,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )?;
        }
        Ok(())
    };
    let scratch_base = scratch.device_ptr(&stream).0;
    let resident_base = resident.device_ptr(&stream).0;
    let n_layers = layers.len();
    let layer_bytes: u64 = groups.iter().map(|g| g.output_len()).sum::<u64>() / n_layers as u64;
    println!(
        "\nper layer ({n_layers} layers, {:.1} MB of weights each on average; medians of {iters} passes after one warm-up)",
        layer_bytes as f64 / 1e6
    );
    println!("| batch | decode ms/layer | GEMM ms/layer | decode/GEMM | decode+GEMM ms | resident GEMM ms | slowdown vs resident |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let events: Vec<[CudaEvent; 4]> = (0..n_layers)
        .map(|_| {
            Ok([
                event(&stream)?,
                event(&stream)?,
                event(&stream)?,
                event(&stream)?,
            ])
        })
        .collect::<Result<_, Error>>()?;
    for &batch in &BATCHES {
        let (mut dec_ms, mut gemm_ms, mut res_ms) = (Vec::new(), Vec::new(), Vec::new());
        for pass in 0..=iters {
            for (l, (g, sh)) in groups.iter().zip(&shapes).enumerate() {
                let [a, b, c, d] = &events[l];
                a.record(&stream)?;
                model.launch(g, &mut scratch, &stream)?;
                b.record(&stream)?;
                for &(off, _, rows, cols) in sh {
                    gemm(scratch_base + off, rows, cols, batch, &mut y)?;
                }
                c.record(&stream)?;
                for &(_, roff, rows, cols) in sh {
                    gemm(resident_base + roff, rows, cols, batch, &mut y)?;
                }
                d.record(&stream)?;
            }
            stream.synchronize()?;
            if pass > 0 {
                let (mut dm, mut gm, mut rm) = (0.0, 0.0, 0.0);
                for [a, b, c, d] in &events {
                    dm += a.elapsed_ms(b)?;
                    gm += b.elapsed_ms(c)?;
                    rm += c.elapsed_ms(d)?;
                }
                dec_ms.push(dm / n_layers as f32);
                gemm_ms.push(gm / n_layers as f32);
                res_ms.push(rm / n_layers as f32);
            }
        }
        model.check(&stream)?;
        let (dm, gm, rm) = (median(&dec_ms), median(&gemm_ms), median(&res_ms));
        println!(
            "| {batch} | {dm:.4} | {gm:.4} | {:.2} | {:.4} | {rm:.4} | {:.2}× |",
            dm / gm,
            dm + gm,
            (dm + gm) / rm
        );
    }
    // The scratch buffer holds the last layer's decode: check it against the originals.
    let last = groups.last().expect("at least one layer");
    let checked = model.verify(last, &scratch, &stream, mcodec_gpu::Verify::All)?;
    println!("\nlast layer's {checked} decoded tensors match the originals' xxh3-64");
    Ok(None)
}

/// Tensors grouped by layer: the name up to its first all-digit component
/// (`model.layers.12`, `encoder.layer.3`); tensors without one are left out.
fn layers(tensors: &[PreparedTensor]) -> BTreeMap<(String, u64), Vec<usize>> {
    let mut out: BTreeMap<(String, u64), Vec<usize>> = BTreeMap::new();
    for (i, t) in tensors.iter().enumerate() {
        let parts: Vec<&str> = t.name.split('.').collect();
        if let Some(k) = parts
            .iter()
            .position(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            let number = parts[k].parse().unwrap_or(u64::MAX);
            out.entry((parts[..k].join("."), number))
                .or_default()
                .push(i);
        }
    }
    out
}
