//! `mcodec._native.Archive`: an open `.mcz` file, its index, and decoding of chosen
//! tensors straight into memory the caller allocated.

use std::path::PathBuf;
use std::sync::Mutex;

use mcodec::container::{Archive, SourceKind, TensorEntry};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::{container, error, Kind};
use crate::{gpu, pool};

/// One tensor of the index, as Python sees it: name, dtype name, shape, byte length.
type Entry = (String, String, Vec<u64>, u64);

/// An open `.mcz` file (memory-mapped; the index is checked on open, every stream and
/// tensor checksum when decoded).
#[pyclass(frozen, module = "mcodec._native", name = "Archive")]
pub struct PyArchive {
    archive: Archive<'static>,
    path: PathBuf,
}

/// Memory a decode writes into: a tensor's position in the index and a buffer of exactly
/// its length.
struct Target {
    tensor: usize,
    address: usize,
    len: usize,
}

/// Tensors decoded whose compressed pages are still to be released, with their coded
/// bytes. Dropping mapped pages interrupts every other CPU running the load's threads
/// for a TLB flush, once per system call: released one stream at a time (254 calls in a
/// 2-thread load of all-MiniLM BF16), that took 7.5 % of the load's CPU. In batches, a
/// few calls cover many small tensors lying together in the file; the pages held back
/// (a batch at most: 1/64 of the load's coded bytes, 256 KiB to 8 MiB) are resident a little longer.
#[derive(Default)]
struct Pending(Mutex<PendingState>);

#[derive(Default)]
struct PendingState {
    /// The batch not released yet, and its coded bytes.
    batch: Vec<usize>,
    coded: u64,
    /// Every tensor decoded so far, with its streams' byte range in the file.
    done: Vec<(u64, u64, usize)>,
}

/// How far around a batch's tensors [`Pending`] releases the pages of tensors decoded
/// before. Reading a page of a file map maps the pages around it that are in the page
/// cache too: Linux maps the whole large folio holding it (up to 2 MiB, aligned), or a
/// 64 KiB window, at once. A tensor decoded after its neighbour's pages were released
/// so maps some of them back, and nothing released them again: in a 2-thread load of
/// all-MiniLM BF16, 5.3 MB of the file (1/8 of the decoded model) was resident at the
/// end, most of the load's peak above the tensors themselves.
const REMAP_REACH: u64 = 2 << 20;

impl Pending {
    /// Notes tensor `i` as decoded, and releases the batch once it holds `batch` coded
    /// bytes.
    fn add(&self, archive: &Archive<'static>, i: usize, batch: u64) {
        let full = {
            let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let t = &archive.index().tensors[i];
            if let Some(span) = span(t) {
                p.done.push((span.0, span.1, i));
            }
            p.batch.push(i);
            p.coded += t.coded_len();
            (p.coded >= batch).then(|| {
                p.coded = 0;
                let batch = std::mem::take(&mut p.batch);
                p.with_neighbours(archive, &batch)
            })
        };
        if let Some(tensors) = full {
            archive.release_tensors(&tensors);
        }
    }

    /// Releases what is left.
    fn flush(&self, archive: &Archive<'static>) {
        let tensors = {
            let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let batch = std::mem::take(&mut p.batch);
            p.with_neighbours(archive, &batch)
        };
        archive.release_tensors(&tensors);
    }
}

/// The bytes of the file that tensor `t`'s streams span (`None`: it has none).
fn span(t: &TensorEntry) -> Option<(u64, u64)> {
    let start = t.streams.iter().map(|s| s.offset).min()?;
    let end = t.streams.iter().map(|s| s.offset + s.len).max()?;
    Some((start, end))
}

impl PendingState {
    /// `batch` and the tensors decoded before whose streams lie within
    /// [`REMAP_REACH`] of one of its tensors' (whose pages its decoding may have mapped
    /// back). Releasing pages that are not mapped costs no TLB flush, and the ranges
    /// merge with the batch's, so this adds few if any system calls.
    fn with_neighbours(&self, archive: &Archive<'static>, batch: &[usize]) -> Vec<usize> {
        let mut near: Vec<(u64, u64)> = batch
            .iter()
            .filter_map(|&i| span(&archive.index().tensors[i]))
            .map(|(start, end)| {
                (
                    start.saturating_sub(REMAP_REACH),
                    end.saturating_add(REMAP_REACH),
                )
            })
            .collect();
        near.sort_unstable();
        // Disjoint and sorted, so that one binary search finds the only range that can
        // overlap a given one.
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(near.len());
        for (start, end) in near {
            match merged.last_mut() {
                Some((_, last)) if start <= *last => *last = (*last).max(end),
                _ => merged.push((start, end)),
            }
        }
        let mut tensors = batch.to_vec();
        tensors.extend(self.done.iter().filter_map(|&(start, end, i)| {
            let before = merged.partition_point(|&(a, _)| a < end);
            (before > 0 && merged[before - 1].1 > start).then_some(i)
        }));
        tensors.sort_unstable();
        tensors.dedup();
        tensors
    }
}

impl PyArchive {
    /// The index of tensor `name`, checked to decode to `len` bytes at `address` (not
    /// null unless empty).
    fn target(&self, name: &str, address: u64, len: u64) -> PyResult<usize> {
        let Some(tensor) = self.archive.find(name) else {
            return Err(error(
                Kind::NoTensor,
                format!("{}: no tensor named {name:?}", self.path.display()),
            ));
        };
        let want = self.archive.index().tensors[tensor].original_len;
        if want != len {
            return Err(error(
                Kind::Argument,
                format!("tensor {name:?} has {want} bytes, the buffer {len}"),
            ));
        }
        if len > 0 && address == 0 {
            return Err(error(
                Kind::Argument,
                format!("tensor {name:?}: null buffer"),
            ));
        }
        Ok(tensor)
    }
}

#[pymethods]
impl PyArchive {
    /// Opens the `.mcz` file at `path`.
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let archive = py
            .detach(|| Archive::open_path(&path))
            .map_err(|e| container(&path, e))?;
        Ok(Self { archive, path })
    }

    /// Opens an `.mcz` file held in `data` (copied into the archive); `name` stands for
    /// the path in error messages.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8], name: PathBuf) -> PyResult<Self> {
        let owned = data.to_vec();
        let archive = py
            .detach(|| Archive::from_vec(owned))
            .map_err(|e| container(&name, e))?;
        Ok(Self {
            archive,
            path: name,
        })
    }

    /// The file's path.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Whether the file was packed from a safetensors file (`False`: raw elements).
    #[getter]
    fn is_safetensors(&self) -> bool {
        self.archive.index().source == SourceKind::Safetensors
    }

    /// Every tensor in file order: `(name, dtype, shape, nbytes)`.
    fn entries(&self) -> Vec<Entry> {
        self.archive
            .index()
            .tensors
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.dtype.name().to_owned(),
                    t.shape.clone(),
                    t.original_len,
                )
            })
            .collect()
    }

    /// The original file's bytes before the first tensor (a safetensors file's length
    /// prefix and JSON header), checked against their checksum.
    fn header<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = self
            .archive
            .prefix()
            .map_err(|e| container(&self.path, e))?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Decodes the named tensors into the memory at each `(name, address, nbytes)`, in
    /// parallel on `threads` threads (`None`: all cores) with the GIL released, checking
    /// every checksum. With `release`, each tensor's compressed pages leave the resident
    /// set as it is decoded. On error the buffers hold partial data: callers drop them.
    ///
    /// The addresses must be writable memory of `nbytes` bytes each, not overlapping and
    /// kept alive and untouched by others until this returns: the package's own Python
    /// modules pass freshly allocated tensors they own.
    #[pyo3(signature = (targets, threads=None, release=false))]
    fn decode_into(
        &self,
        py: Python<'_>,
        targets: Vec<(String, usize, usize)>,
        threads: Option<usize>,
        release: bool,
    ) -> PyResult<()> {
        let mut work = Vec::with_capacity(targets.len());
        for (name, address, len) in targets {
            work.push(Target {
                tensor: self.target(&name, address as u64, len as u64)?,
                address,
                len,
            });
        }
        let archive = &self.archive;
        if release {
            // A whole-file load: decode in file order, behind the read-ahead below (from
            // a cold page cache the disk sets the pace); a large tensor decodes on every
            // thread anyway.
            work.sort_by_key(|t| {
                archive.index().tensors[t.tensor]
                    .streams
                    .first()
                    .map_or(0, |s| s.offset)
            });
        } else {
            // Largest first, so that the last tensors to finish are small ones.
            work.sort_by_key(|t| std::cmp::Reverse(t.len));
        }
        // The compressed pages of the tensors decoded between the big ones are released
        // in batches of about `batch` coded bytes (see `Pending`).
        let total_coded: u64 = work
            .iter()
            .map(|t| archive.index().tensors[t.tensor].coded_len())
            .sum();
        let batch = (total_coded / 64).clamp(256 << 10, 8 << 20);
        let pending = Pending::default();
        let pool = pool::get(threads)?;
        py.detach(|| {
            if release {
                // Queues the reads of the whole file (returns in about a millisecond;
                // measured faster, warm and cold, than issuing it from a thread of its
                // own beside the decoders).
                archive.prefetch();
            }
            let targets = work
                .iter()
                .map(|t| {
                    let out: &mut [u8] = if t.len == 0 {
                        &mut []
                    } else {
                        // SAFETY: the caller guarantees (see the method's docs) that
                        // `address` points to `len` writable bytes that nothing else reads
                        // or writes until this call returns, and that targets do not
                        // overlap; `address` is not null (checked above) and a byte slice
                        // needs no alignment.
                        unsafe { std::slice::from_raw_parts_mut(t.address as *mut u8, t.len) }
                    };
                    (t.tensor, out)
                })
                .collect();
            // Released as they are decoded: each tensor's compressed pages leave the
            // resident set piece by piece as it decodes (a big tensor's would otherwise
            // stay mapped until it is done: the 1.33 GB model's 170 MB `lm_head`, decoded
            // last, took the peak from 1.05x to 1.13x the model), the rest in batches
            // with others' (`Pending`).
            let on_done = |i: usize| {
                if release {
                    pending.add(archive, i, batch);
                }
            };
            // Every tensor's pieces in one list that the pool's threads work through
            // (`Archive::decode_many`): the threads meet once per load. Decoding a
            // tensor a run or a piece at a time (each a parallel call), they met 20-odd
            // times per warm 2-thread all-MiniLM load, and each time the thread that
            // waited gave its core away (rayon's idle loop yields): under `chrt`
            // 27.7 -> 22.6 ms (BENCHMARKS.md, twenty-second session).
            let decoded = archive.decode_many(
                targets,
                release,
                |f| pool::each(pool.as_deref(), f),
                &on_done,
            );
            pending.flush(archive);
            decoded
        })
        .map_err(|e| container(&self.path, e))
    }

    /// Decodes the named tensors on CUDA device `ordinal` straight into the device memory
    /// at each `(name, address, nbytes)`, on the raw CUDA stream `stream` (PyTorch's
    /// current stream), after the work queued there, and waits for it. `image` is the
    /// kernel compiled for `arch` (see `mcodec/_gpu.py`). The compressed streams of at
    /// most `batch_bytes` decoded bytes are on the device at a time. Returns the tensors
    /// that the kernel does not take, as `(name, reason)` (decoded on the CPU, copied).
    ///
    /// Raises `GpuUnavailableError` when the device, driver or image cannot be used (the
    /// caller then decodes on the CPU), `CorruptError` for damaged data.
    ///
    /// The addresses must be device memory of that device's primary context, `nbytes`
    /// each, 16-byte aligned, not overlapping, untouched by others until this returns,
    /// and `stream` a live stream of that context or 0: the package's own modules pass
    /// freshly allocated PyTorch tensors and `torch.cuda.current_stream().cuda_stream`.
    #[allow(clippy::too_many_arguments)]
    fn gpu_decode_into(
        &self,
        py: Python<'_>,
        targets: Vec<(String, u64, u64)>,
        stream: usize,
        ordinal: usize,
        image: Vec<u8>,
        arch: String,
        batch_bytes: u64,
    ) -> PyResult<Vec<(String, String)>> {
        let mut work = Vec::with_capacity(targets.len());
        for (name, address, len) in targets {
            work.push(gpu::GpuTarget {
                tensor: self.target(&name, address, len)?,
                address,
                len,
            });
        }
        let archive = &self.archive;
        // SAFETY: the caller guarantees the stream and the targets (see the docs above).
        py.detach(|| unsafe {
            gpu::decode(archive, &work, stream, ordinal, image, &arch, batch_bytes)
        })
        .map_err(|e| gpu::to_py(&self.path, e))
    }

    fn __repr__(&self) -> String {
        format!(
            "<mcodec Archive {:?}: {} tensors>",
            self.path,
            self.archive.index().tensors.len()
        )
    }
}
