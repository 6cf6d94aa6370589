//! `Archive.gpu_decode_into`: decodes tensors on an NVIDIA GPU with `mcodec-gpu`, straight
//! into CUDA memory that PyTorch allocated, on PyTorch's current stream.
//!
//! The kernel image comes from Python (`mcodec/_gpu.py` compiles [`KERNEL_SOURCE`] with
//! the NVRTC that PyTorch ships and caches the cubin), because the NVRTC that `mcodec-gpu`
//! finds by itself, if any, need not match the CUDA that PyTorch runs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::CudaStream;
use mcodec::container::Archive;
use mcodec_gpu::{GpuDecoder, GpuError, GpuModel, PlanError, RawTarget};
use pyo3::prelude::*;

use crate::errors::{container, error, Kind};

/// The kernel's source, which `mcodec/_gpu.py` compiles.
pub(crate) const KERNEL_SOURCE: &str = mcodec_gpu::KERNEL_SOURCE;

/// A device's compiled kernel and the stream that uploads to it, kept for the process.
struct Device {
    decoder: GpuDecoder,
    upload: Arc<CudaStream>,
}

/// Devices opened so far, by (ordinal, architecture of the image).
fn device(ordinal: usize, image: Vec<u8>, arch: &str) -> Result<Arc<Mutex<Device>>, GpuError> {
    type Devices = HashMap<(usize, String), Arc<Mutex<Device>>>;
    static DEVICES: OnceLock<Mutex<Devices>> = OnceLock::new();
    let mut devices = DEVICES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(d) = devices.get(&(ordinal, arch.to_owned())) {
        return Ok(d.clone());
    }
    let decoder = GpuDecoder::with_cubin(ordinal, image, arch)?;
    let upload = decoder
        .context()
        .new_stream()
        .map_err(|source| GpuError::Driver {
            what: "stream creation",
            source,
        })?;
    let d = Arc::new(Mutex::new(Device { decoder, upload }));
    devices.insert((ordinal, arch.to_owned()), d.clone());
    Ok(d)
}

/// One tensor to decode: index in the archive, device address, length.
pub(crate) struct GpuTarget {
    pub tensor: usize,
    pub address: u64,
    pub len: u64,
}

/// What a GPU decode reports: tensors the kernel did not take (decoded on the CPU at
/// upload and copied), as `(name, reason)`.
pub(crate) type Fallbacks = Vec<(String, String)>;

/// Decodes `targets` of `archive` on device `ordinal` into their device memory, on the raw
/// stream `stream`, in batches of at most `batch_bytes` decoded bytes (the compressed
/// streams of one batch are on the device at a time). Runs without the GIL.
///
/// # Safety
/// `stream` must be a live CUDA stream of the device's primary context (or 0), and each
/// target device memory of that context of at least its length, untouched by others until
/// this returns.
pub(crate) unsafe fn decode(
    archive: &Archive<'_>,
    targets: &[GpuTarget],
    stream: usize,
    ordinal: usize,
    image: Vec<u8>,
    arch: &str,
    batch_bytes: u64,
) -> Result<Fallbacks, GpuError> {
    let device = device(ordinal, image, arch)?;
    let mut device = device
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let Device { decoder, upload } = &mut *device;
    let mut fallbacks = Vec::new();
    let mut start = 0;
    while start < targets.len() {
        // At least one tensor per batch, however large.
        let mut end = start + 1;
        let mut bytes = targets[start].len;
        while end < targets.len() && bytes + targets[end].len <= batch_bytes {
            bytes += targets[end].len;
            end += 1;
        }
        let batch = &targets[start..end];
        let select: Vec<usize> = batch.iter().map(|t| t.tensor).collect();
        let mut model = GpuModel::upload(decoder, archive, Some(&select), upload)?;
        fallbacks.extend(
            model
                .fallbacks()
                .into_iter()
                .map(|(name, why)| (name, why.to_string())),
        );
        let raw: Vec<RawTarget> = batch
            .iter()
            .enumerate()
            .map(|(at, t)| RawTarget {
                tensor: at,
                address: t.address,
                len: t.len,
            })
            .collect();
        // SAFETY: the caller vouches for `stream` and the targets (see above).
        unsafe { model.decode_into_raw(&raw, stream as cudarc::driver::sys::CUstream, upload) }?;
        start = end;
    }
    Ok(fallbacks)
}

/// The exception for a GPU decode failure: `GpuUnavailable` (the caller falls back to the
/// CPU) for a missing or unusable device, driver or kernel image; the data's own error
/// for damaged data.
pub(crate) fn to_py(path: &Path, e: GpuError) -> PyErr {
    let e = match e {
        GpuError::Plan(PlanError::Container(c)) => return container(path, c),
        other => other,
    };
    let kind = match &e {
        GpuError::Plan(PlanError::TooLarge { .. })
        | GpuError::NoDevice(_)
        | GpuError::NvrtcMissing(_)
        | GpuError::Compile { .. }
        | GpuError::SharedMemory { .. } => Kind::GpuUnavailable,
        GpuError::Plan(PlanError::Stream { .. }) | GpuError::Corrupt(_) | GpuError::Mismatch(_) => {
            Kind::Corrupt
        }
        GpuError::OutOfMemory { .. } => Kind::Limit,
        // A failed driver call while opening the device is a device we cannot use.
        GpuError::Driver { what, .. }
            if matches!(
                *what,
                "context creation"
                    | "device query"
                    | "loading the kernel"
                    | "kernel lookup"
                    | "setting the kernel's shared memory"
                    | "stream creation"
            ) =>
        {
            Kind::GpuUnavailable
        }
        _ => Kind::Gpu,
    };
    error(kind, format!("{}: GPU decode: {e}", path.display()))
}
