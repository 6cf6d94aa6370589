//! The CUDA side: compile the kernel with NVRTC, upload prepared tensors, launch.
//!
//! Libraries are loaded at run time (cudarc's dynamic loading): without libcuda or a
//! device every entry point returns [`GpuError::NoDevice`], without libnvrtc
//! [`GpuError::NvrtcMissing`]; nothing panics.

use std::ffi::{CStr, CString};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute, CUresult};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DriverError,
    LaunchConfig, PushKernelArg,
};
use mcodec::container::Archive;

use crate::plan::{
    self, Body, PlanError, Prepared, PreparedTensor, TensorDesc, STAGE_BYTES_PER_WARP,
    STATIC_SHARED_BYTES, TABLE_BYTES, WARPS,
};
use crate::{CorruptChunk, DecodedMismatch, RawTarget, Verify, KERNEL_NAME, KERNEL_SOURCE};

/// Errors of the GPU decoder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// No CUDA driver or no device.
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    /// libnvrtc could not be loaded.
    #[error("NVRTC not found (libnvrtc.so.12 or libnvrtc.so on the library path): {0}")]
    NvrtcMissing(String),
    /// NVRTC refused the kernel source.
    #[error("NVRTC failed to compile the kernel for {arch}: {log}")]
    Compile {
        /// Target architecture.
        arch: String,
        /// Compiler log.
        log: String,
    },
    /// Device memory ran out.
    #[error("out of GPU memory allocating {bytes} bytes for {what}")]
    OutOfMemory {
        /// What was being allocated.
        what: &'static str,
        /// Bytes asked for.
        bytes: usize,
    },
    /// A CUDA driver call failed.
    #[error("CUDA {what} failed: {source:?}")]
    Driver {
        /// What was being done.
        what: &'static str,
        /// The driver's error.
        source: DriverError,
    },
    /// The file or a tensor was refused on the host, before upload.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The file could not be opened.
    #[error("{path}: {source}")]
    Open {
        /// File.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The kernel found a corrupt chunk.
    #[error(transparent)]
    Corrupt(#[from] CorruptChunk),
    /// An output buffer does not fit the group.
    #[error("output buffer: {0}")]
    BadOutput(String),
    /// A group was launched on a model other than the one that made it (or made by a
    /// model since dropped).
    #[error("decode group made by model #{group_model} launched on model #{model}")]
    ForeignGroup {
        /// Id of the model that made the group.
        group_model: u64,
        /// Id of the model asked to launch it.
        model: u64,
    },
    /// A decoded tensor does not hash to the original's checksum.
    #[error(transparent)]
    Mismatch(#[from] DecodedMismatch),
    /// The kernel needs more shared memory than the device has.
    #[error("a launch needs {need} bytes of shared memory, the device allows {have}")]
    SharedMemory {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
}

fn driver(what: &'static str) -> impl FnOnce(DriverError) -> GpuError {
    move |source| GpuError::Driver { what, source }
}

fn alloc_error(what: &'static str, bytes: usize) -> impl FnOnce(DriverError) -> GpuError {
    move |source| {
        if source.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            GpuError::OutOfMemory { what, bytes }
        } else {
            GpuError::Driver { what, source }
        }
    }
}

fn nvrtc_present() -> Result<(), GpuError> {
    // SAFETY: only probes whether the library can be loaded.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(GpuError::NvrtcMissing(
            "set LD_LIBRARY_PATH to the folder of libnvrtc".into(),
        ))
    }
}

/// The version (major, minor) of the NVRTC library found at run time.
pub fn nvrtc_version() -> Result<(i32, i32), GpuError> {
    nvrtc_present()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two valid out-pointers; NVRTC writes two ints.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| GpuError::NvrtcMissing(format!("nvrtcVersion: {e:?}")))?;
    Ok((major, minor))
}

/// Options of every compile: line info costs no instructions and lets `nvdisasm` and
/// `compute-sanitizer` name source lines. `MCODEC_GPU_PREFETCH` = 0, 1 or 2 (an experiment
/// knob for A/B runs on a device; unset: the kernel's default, 1) sets the group loop's
/// prefetch (`MCZ_PREFETCH` in the kernel: none, into L1, into L2); decoded bytes do not
/// depend on it.
fn compile_options(arch: &str) -> Vec<String> {
    let mut options = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".into(),
        "--generate-line-info".into(),
    ];
    if let Ok(v) = std::env::var("MCODEC_GPU_PREFETCH") {
        if matches!(v.as_str(), "0" | "1" | "2") {
            options.push(format!("-DMCZ_PREFETCH={v}"));
        }
    }
    options
}

/// Compiles the kernel source to PTX for `arch` (e.g. `compute_90`) with NVRTC.
pub fn compile_ptx(arch: &str) -> Result<String, GpuError> {
    nvrtc_present()?;
    compile(arch).map(|ptx| ptx.to_src())
}

fn compile(arch: &str) -> Result<cudarc::nvrtc::Ptx, GpuError> {
    let opts = cudarc::nvrtc::CompileOptions {
        options: compile_options(arch),
        name: Some("mcz_decode.cu".into()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(KERNEL_SOURCE, opts).map_err(|e| GpuError::Compile {
        arch: arch.into(),
        log: match e {
            cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                log.to_string_lossy().into_owned()
            }
            other => format!("{other:?}"),
        },
    })
}

/// Compiles the kernel source to a cubin (device code, no PTX JIT at load) for `arch`
/// (e.g. `sm_90`) with NVRTC; returns the image and the compiler's log (`ptxas -v`:
/// registers, spills, shared memory).
pub fn compile_cubin(arch: &str) -> Result<(Vec<u8>, String), GpuError> {
    use cudarc::nvrtc::{result, sys};
    nvrtc_present()?;
    let fail = |log: String| GpuError::Compile {
        arch: arch.into(),
        log,
    };
    let src = CString::new(KERNEL_SOURCE).map_err(|_| fail("NUL in the kernel source".into()))?;
    let prog = result::create_program(&src, Some(c"mcz_decode.cu"))
        .map_err(|e| fail(format!("nvrtcCreateProgram: {e:?}")))?;
    let mut options = compile_options(arch);
    options.push("--ptxas-options=-v".into());
    // SAFETY: `prog` was created above and is destroyed once, at the end; every buffer
    // handed to NVRTC is sized by the size NVRTC reported for it.
    let out = unsafe {
        let compiled = result::compile_program(prog, &options);
        let log = result::get_program_log(prog)
            .map(|l| CStr::from_ptr(l.as_ptr()).to_string_lossy().into_owned())
            .unwrap_or_default();
        match compiled {
            Err(e) => Err(fail(format!("{e:?}: {log}"))),
            Ok(()) => {
                let mut size = 0usize;
                match sys::nvrtcGetCUBINSize(prog, &mut size).result() {
                    Err(e) => Err(fail(format!("nvrtcGetCUBINSize: {e:?}"))),
                    Ok(()) if size == 0 => Err(fail(format!(
                        "no cubin (was {arch} a virtual architecture?)"
                    ))),
                    Ok(()) => {
                        let mut image = vec![0u8; size];
                        sys::nvrtcGetCUBIN(prog, image.as_mut_ptr().cast())
                            .result()
                            .map(|()| (image, log))
                            .map_err(|e| fail(format!("nvrtcGetCUBIN: {e:?}")))
                    }
                }
            }
        }
    };
    // SAFETY: `prog` is live and not used after this.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

/// What the device runs: a cubin built for its own architecture, or PTX compiled by the
/// driver when no cubin could be built or loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodeKind {
    /// A cubin for `arch` (e.g. `sm_90`).
    Cubin {
        /// Architecture.
        arch: String,
    },
    /// PTX for `arch` (e.g. `compute_90`) of ISA `isa`, JIT-compiled by the driver.
    Ptx {
        /// Virtual architecture.
        arch: String,
        /// The PTX ISA version (`.version`).
        isa: String,
        /// Why no cubin was used.
        why: String,
    },
}

impl std::fmt::Display for CodeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cubin { arch } => write!(f, "{arch} cubin"),
            Self::Ptx { arch, isa, why } => {
                write!(
                    f,
                    "{arch} PTX ISA {isa}, JIT by the driver (no cubin: {why})"
                )
            }
        }
    }
}

fn load_error(arch: &str) -> impl FnOnce(DriverError) -> GpuError + '_ {
    move |source| {
        if source.0 == CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION {
            GpuError::Compile {
                arch: arch.into(),
                log: "the driver cannot load PTX from this NVRTC, which is newer than the \
                      driver: put the NVRTC of the driver's CUDA version first on \
                      LD_LIBRARY_PATH"
                    .into(),
            }
        } else {
            GpuError::Driver {
                what: "loading the kernel",
                source,
            }
        }
    }
}

/// Loads the kernel for compute capability `major.minor`: a cubin for `sm_XY` when NVRTC
/// builds one and the driver loads it (no PTX ISA version can then stop the run), else
/// PTX for `compute_XY`.
fn load_kernel(
    ctx: &Arc<CudaContext>,
    major: i32,
    minor: i32,
) -> Result<(Arc<cudarc::driver::CudaModule>, CodeKind), GpuError> {
    let sm = format!("sm_{major}{minor}");
    let why = match compile_cubin(&sm) {
        Ok((image, _)) => match ctx.load_module(cudarc::nvrtc::Ptx::from_binary(image)) {
            Ok(module) => return Ok((module, CodeKind::Cubin { arch: sm })),
            Err(e) => format!("the driver refused the cubin: {e:?}"),
        },
        Err(e) => e.to_string(),
    };
    let arch = format!("compute_{major}{minor}");
    let ptx = compile(&arch)?.to_src();
    let isa = ptx
        .lines()
        .find_map(|l| l.trim().strip_prefix(".version "))
        .unwrap_or("?")
        .to_owned();
    let module = ctx
        .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
        .map_err(load_error(&arch))?;
    Ok((module, CodeKind::Ptx { arch, isa, why }))
}

/// The primary context of device `ordinal` (the one the CUDA runtime, and so PyTorch,
/// uses), or why there is none.
fn open_device(ordinal: usize) -> Result<Arc<CudaContext>, GpuError> {
    // SAFETY: only probes whether the library can be loaded.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(GpuError::NoDevice(
            "the CUDA driver (libcuda) is not installed".into(),
        ));
    }
    let count = CudaContext::device_count()
        .map_err(|e| GpuError::NoDevice(format!("the driver reports {e:?}")))?;
    if count <= ordinal as i32 {
        return Err(GpuError::NoDevice(format!(
            "device {ordinal} asked for, {count} present"
        )));
    }
    CudaContext::new(ordinal).map_err(driver("context creation"))
}

/// The compiled kernel on one device.
#[derive(Debug)]
pub struct GpuDecoder {
    ctx: Arc<CudaContext>,
    func: CudaFunction,
    max_shared: usize,
    code: CodeKind,
    warp_slots: usize,
}

impl GpuDecoder {
    /// Opens device `ordinal` and compiles the kernel for it.
    pub fn new(ordinal: usize) -> Result<Self, GpuError> {
        let ctx = open_device(ordinal)?;
        let (major, minor) = ctx.compute_capability().map_err(driver("device query"))?;
        nvrtc_present()?;
        let (module, code) = load_kernel(&ctx, major, minor)?;
        Self::finish(ctx, &module, code)
    }

    /// Opens device `ordinal` with a kernel image the caller compiled from
    /// [`KERNEL_SOURCE`] (a cubin from [`compile_cubin`], or from an NVRTC that this
    /// crate's loader does not find, as the Python package does with the NVRTC that
    /// PyTorch ships). `arch` names what the image was built for (`sm_90`); the driver
    /// refuses an image for another architecture.
    pub fn with_cubin(ordinal: usize, image: Vec<u8>, arch: &str) -> Result<Self, GpuError> {
        let ctx = open_device(ordinal)?;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(image))
            .map_err(load_error(arch))?;
        Self::finish(
            ctx,
            &module,
            CodeKind::Cubin {
                arch: arch.to_owned(),
            },
        )
    }

    /// Looks the kernel up in `module` and sizes its shared memory for the device.
    fn finish(
        ctx: Arc<CudaContext>,
        module: &Arc<cudarc::driver::CudaModule>,
        code: CodeKind,
    ) -> Result<Self, GpuError> {
        let func = module
            .load_function(KERNEL_NAME)
            .map_err(driver("kernel lookup"))?;
        let sms = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver("device query"))?;
        // `__launch_bounds__(256, 4)`: 4 CTAs of WARPS warps per SM.
        let warp_slots = (sms.max(1) as usize) * 4 * WARPS;
        let optin = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(driver("device query"))?;
        // The kernel's static shared memory (the descriptor, the raw bases and word
        // counts) comes out of the same budget.
        let max_shared = (optin as usize).saturating_sub(STATIC_SHARED_BYTES + 16);
        func.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            max_shared as i32,
        )
        .map_err(driver("setting the kernel's shared memory"))?;
        Ok(Self {
            ctx,
            func,
            max_shared,
            code,
            warp_slots,
        })
    }

    /// The CUDA context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// Device name, what the kernel was built as (cubin or PTX) and the NVRTC version.
    pub fn describe(&self) -> String {
        let name = self.ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let nvrtc = nvrtc_version().map_or_else(|e| e.to_string(), |(a, b)| format!("{a}.{b}"));
        let knob = compile_options("")
            .into_iter()
            .find(|o| o.starts_with("-DMCZ_PREFETCH="))
            .map_or_else(String::new, |o| format!("; {}", &o[2..]));
        format!("{name} ({}; NVRTC {nvrtc}{knob})", self.code)
    }

    /// What the device runs: a cubin for its architecture, or PTX (and why).
    pub fn code(&self) -> &CodeKind {
        &self.code
    }

    /// Most tables one tensor may have to be decoded here (more fall back to the CPU).
    pub fn max_tables(&self) -> usize {
        (self.max_shared - WARPS * STAGE_BYTES_PER_WARP) / TABLE_BYTES
    }
}

/// Compressed tensors resident in device memory, ready to decode.
#[derive(Debug)]
pub struct GpuModel {
    tensors: Vec<PreparedTensor>,
    arena: CudaSlice<u8>,
    tables: CudaSlice<u8>,
    err: CudaSlice<u32>,
    arena_base: u64,
    table_base: u64,
    func: CudaFunction,
    max_shared: usize,
    warp_slots: usize,
    id: u64,
}

/// Ids of models, never reused, so that a group names its model even after it is dropped.
static NEXT_MODEL_ID: AtomicU64 = AtomicU64::new(1);

/// The kernel work of decoding a fixed set of tensors into a fixed buffer, uploaded once
/// and launched as often as needed (a transformer block, say).
#[derive(Debug)]
pub struct DecodeGroup {
    launches: Vec<DeviceLaunch>,
    copies: Vec<(u64, u64, u64)>,
    offsets: Vec<u64>,
    total: u64,
    dst: u64,
    tensors: Vec<usize>,
    model: u64,
}

/// One kernel launch of a group, its work list on the device (`plan::Launch`).
#[derive(Debug)]
struct DeviceLaunch {
    descs: CudaSlice<u8>,
    tasks: CudaSlice<u8>,
    n_tasks: u32,
    shared: u32,
}

impl DecodeGroup {
    /// Byte offset of each tensor of the group in the output buffer.
    pub fn offsets(&self) -> &[u64] {
        &self.offsets
    }

    /// Bytes of output the group needs.
    pub fn output_len(&self) -> u64 {
        self.total
    }

    /// The model's tensor indexes in the group, in order.
    pub fn tensors(&self) -> &[usize] {
        &self.tensors
    }
}

/// Views `items` (plain-old-data `#[repr(C)]` structs without padding) as bytes.
fn as_bytes<T: Copy>(items: &[T]) -> &[u8] {
    // SAFETY: `TensorDesc` and `Task` (the only callers' types) are `repr(C)`, all-integer
    // and without padding (their sizes are asserted in `plan`), so every byte is
    // initialised; the length is the slice's size in bytes.
    unsafe { std::slice::from_raw_parts(items.as_ptr().cast::<u8>(), std::mem::size_of_val(items)) }
}

impl GpuModel {
    /// Opens an `.mcz` file (memory-mapped), validates the chosen tensors (`None`: all)
    /// on the host and uploads their compressed streams on `stream`.
    pub fn open(
        dec: &GpuDecoder,
        path: &Path,
        select: Option<&[usize]>,
        stream: &Arc<CudaStream>,
    ) -> Result<Self, GpuError> {
        let open_error = |source| GpuError::Open {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(open_error)?;
        // SAFETY: the map is read-only and lives only for this call; a file changed
        // underneath is caught by the stream checksums.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(open_error)?;
        let archive = Archive::open(&map).map_err(PlanError::from)?;
        Self::upload(dec, &archive, select, stream)
    }

    /// Validates and prepares tensors `select` of `archive` (`None`: all) on the host,
    /// then uploads them on `stream` and waits for the upload.
    pub fn upload(
        dec: &GpuDecoder,
        archive: &Archive<'_>,
        select: Option<&[usize]>,
        stream: &Arc<CudaStream>,
    ) -> Result<Self, GpuError> {
        let prepared = Prepared::new(archive, select, dec.max_tables())?;
        Self::upload_prepared(dec, prepared, stream)
    }

    /// Uploads host-prepared tensors on `stream` and waits for the upload.
    pub fn upload_prepared(
        dec: &GpuDecoder,
        mut prepared: Prepared,
        stream: &Arc<CudaStream>,
    ) -> Result<Self, GpuError> {
        let arena = upload_bytes(stream, &prepared.arena, "compressed streams")?;
        let tables = upload_bytes(stream, &prepared.tables, "decode tables")?;
        let err = stream
            .alloc_zeros::<u32>(4)
            .map_err(alloc_error("error flag", 16))?;
        stream.synchronize().map_err(driver("upload"))?;
        let arena_base = arena.device_ptr(stream).0;
        let table_base = tables.device_ptr(stream).0;
        let tensors = std::mem::take(&mut prepared.tensors);
        Ok(Self {
            tensors,
            arena,
            tables,
            err,
            arena_base,
            table_base,
            func: dec.func.clone(),
            max_shared: dec.max_shared,
            warp_slots: dec.warp_slots,
            id: NEXT_MODEL_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The uploaded tensors, in the order they were asked for.
    pub fn tensors(&self) -> &[PreparedTensor] {
        &self.tensors
    }

    /// Device bytes held: compressed streams (with fallbacks kept uncompressed) and tables.
    pub fn device_bytes(&self) -> usize {
        self.arena.len() + self.tables.len()
    }

    /// Tensors that the kernel does not decode, with the reason (they were decoded on the
    /// CPU at upload and are copied on decode). Callers should log them.
    pub fn fallbacks(&self) -> Vec<(String, plan::Fallback)> {
        self.tensors
            .iter()
            .filter_map(|t| match &t.body {
                Body::Raw { reason, .. } => Some((t.name.clone(), reason.clone())),
                _ => None,
            })
            .collect()
    }

    /// Prepares the decoding of `tensors` (indexes into [`Self::tensors`]) into `dst`,
    /// each tensor after the one before at a multiple of [`OUTPUT_ALIGN`](crate::OUTPUT_ALIGN)
    /// ([`DecodeGroup::offsets`]); uploads its work list on `stream`.
    pub fn group(
        &self,
        tensors: &[usize],
        dst: &CudaSlice<u8>,
        stream: &Arc<CudaStream>,
    ) -> Result<DecodeGroup, GpuError> {
        if let Some(&bad) = tensors.iter().find(|&&t| t >= self.tensors.len()) {
            return Err(PlanError::NoSuchTensor {
                index: bad,
                count: self.tensors.len(),
            }
            .into());
        }
        let (offsets, total) = crate::work::output_layout(&self.tensors, tensors);
        if (dst.len() as u64) < total {
            return Err(GpuError::BadOutput(format!(
                "{} bytes, the group needs {total}",
                dst.len()
            )));
        }
        let dst_ptr = dst.device_ptr(stream).0;
        if !dst_ptr.is_multiple_of(16) {
            return Err(GpuError::BadOutput(format!(
                "address {dst_ptr:#x} not 16-byte aligned"
            )));
        }
        let (descs, copies) = crate::work::launch_work(
            &self.tensors,
            tensors,
            &offsets,
            self.arena_base,
            self.table_base,
            dst_ptr,
        );
        let launches = self.upload_launches(&descs, stream)?;
        Ok(DecodeGroup {
            launches,
            copies,
            offsets,
            total,
            dst: dst_ptr,
            tensors: tensors.to_vec(),
            model: self.id,
        })
    }

    /// Splits `descs` into launches (by table count, work by chunk count against the
    /// device's warp slots) and uploads their work lists on `stream`.
    fn upload_launches(
        &self,
        descs: &[TensorDesc],
        stream: &Arc<CudaStream>,
    ) -> Result<Vec<DeviceLaunch>, GpuError> {
        plan::launches(descs, self.warp_slots)
            .into_iter()
            .map(|l| {
                if l.shared > self.max_shared {
                    return Err(GpuError::SharedMemory {
                        need: l.shared,
                        have: self.max_shared,
                    });
                }
                Ok(DeviceLaunch {
                    descs: upload_bytes(stream, as_bytes(&l.descs), "tensor descriptors")?,
                    tasks: upload_bytes(stream, as_bytes(&l.tasks), "work list")?,
                    n_tasks: l.tasks.len() as u32,
                    shared: l.shared as u32,
                })
            })
            .collect()
    }

    /// Refuses a group made by another model, or a buffer it was not made for.
    fn check_group(
        &self,
        group: &DecodeGroup,
        dst: &CudaSlice<u8>,
        stream: &Arc<CudaStream>,
    ) -> Result<(), GpuError> {
        if group.model != self.id {
            return Err(GpuError::ForeignGroup {
                group_model: group.model,
                model: self.id,
            });
        }
        if (dst.len() as u64) < group.total || dst.device_ptr(stream).0 != group.dst {
            return Err(GpuError::BadOutput(
                "not the buffer the group was made for".into(),
            ));
        }
        Ok(())
    }

    /// Decodes a group into `dst` (the buffer it was made for) on `stream`, asynchronously:
    /// one kernel launch for every kernel-decoded tensor, one copy per fallback tensor.
    /// Call [`Self::check`] to learn whether the kernel found a corrupt chunk.
    pub fn launch(
        &self,
        group: &DecodeGroup,
        dst: &mut CudaSlice<u8>,
        stream: &Arc<CudaStream>,
    ) -> Result<(), GpuError> {
        self.check_group(group, dst, stream)?;
        for &(from, to, len) in &group.copies {
            let (from, to, len) = (from as usize, to as usize, len as usize);
            stream
                .memcpy_dtod(
                    &self.arena.slice(from..from + len),
                    &mut dst.slice_mut(to..to + len),
                )
                .map_err(driver("device copy"))?;
        }
        for l in &group.launches {
            let cfg = LaunchConfig {
                grid_dim: (l.n_tasks, 1, 1),
                block_dim: ((WARPS * 32) as u32, 1, 1),
                shared_mem_bytes: l.shared,
            };
            let (dst_ptr, _record) = dst.device_ptr_mut(stream);
            let mut builder = stream.launch_builder(&self.func);
            builder
                .arg(&l.descs)
                .arg(&l.tasks)
                .arg(&l.n_tasks)
                .arg(&self.arena)
                .arg(&self.tables)
                .arg(&dst_ptr);
            // The kernel takes the error flag last; arena, tables and the destination are
            // passed (and ignored by the kernel's signature order below) so that cudarc
            // orders this launch after their writes.
            builder.arg(&self.err);
            // SAFETY: the descriptors were built by `group` from this model's arena and
            // tables and the destination checked above to be the buffer they point into,
            // large enough for every tensor; the kernel's argument list is
            // (descs, tasks, n_tasks, arena, tables, dst, err).
            unsafe { builder.launch(cfg) }.map_err(driver("kernel launch"))?;
        }
        Ok(())
    }

    /// Decodes tensor `t` (an index into [`Self::tensors`]) into the start of `dst` on
    /// `stream`, asynchronously (its small work list is uploaded and freed in stream
    /// order). For repeated decodes of the same tensors, make a [`DecodeGroup`] once.
    pub fn decode_tensor(
        &self,
        t: usize,
        dst: &mut CudaSlice<u8>,
        stream: &Arc<CudaStream>,
    ) -> Result<(), GpuError> {
        let group = self.group(&[t], dst, stream)?;
        self.launch(&group, dst, stream)
    }

    /// Decodes tensors into device memory the caller allocated (a PyTorch CUDA tensor,
    /// say), on the caller's stream `stream` (a raw `CUstream`, e.g. PyTorch's current
    /// stream), after the work already queued there; returns once the decode is complete
    /// and checked ([`Self::check`]). `upload` (a stream of this model's context) carries
    /// the small work lists, which are freed on return.
    ///
    /// Each target's length must be its tensor's decoded length and its address 16-byte
    /// aligned (where non-empty); tensors the kernel does not take are copied from their
    /// CPU-decoded bytes ([`Self::fallbacks`]).
    ///
    /// # Safety
    /// `stream` must be a live stream of this model's context (or null, the legacy default
    /// stream), and each target must be device memory of this context of at least its
    /// length, which nothing else reads or writes until this returns.
    pub unsafe fn decode_into_raw(
        &mut self,
        targets: &[RawTarget],
        stream: cudarc::driver::sys::CUstream,
        upload: &Arc<CudaStream>,
    ) -> Result<(), GpuError> {
        let (descs, copies) =
            crate::work::raw_work(&self.tensors, targets, self.arena_base, self.table_base)?;
        let launches = self.upload_launches(&descs, upload)?;
        // The work lists and the error flag's last clear must be on the device before
        // the caller's stream, which knows nothing of `upload`, runs the kernel.
        upload.synchronize().map_err(driver("upload"))?;
        upload
            .context()
            .bind_to_thread()
            .map_err(driver("binding the context"))?;
        let queued = self.queue_raw(&copies, &launches, stream, upload);
        // Wait even when queueing failed part-way: the work lists are freed below and
        // must outlive every kernel already queued.
        // SAFETY: the caller vouches for `stream`.
        let finished = unsafe { cudarc::driver::result::stream::synchronize(stream) }
            .map_err(driver("synchronize"));
        drop(launches);
        queued?;
        finished?;
        self.check(upload)
    }

    /// Queues the copies of CPU-decoded tensors and the kernel launches of a raw decode on
    /// the caller's `stream` (see [`Self::decode_into_raw`], whose checks they rely on).
    fn queue_raw(
        &self,
        copies: &[crate::work::RawCopy],
        launches: &[DeviceLaunch],
        stream: cudarc::driver::sys::CUstream,
        upload: &Arc<CudaStream>,
    ) -> Result<(), GpuError> {
        for &(from, to, len) in copies {
            let from = self.arena_base + from;
            // SAFETY: `from..from + len` lies in this model's arena (the plan placed the
            // CPU-decoded tensor there), `to` is the caller's buffer of `len` bytes and
            // `stream` a stream of this context (`decode_into_raw`'s contract).
            unsafe { cudarc::driver::result::memcpy_dtod_async(to, from, len as usize, stream) }
                .map_err(driver("device copy"))?;
        }
        let (arena, tables, err) = (self.arena_base, self.table_base, self.err_ptr(upload));
        for l in launches {
            let descs_ptr = l.descs.device_ptr(upload).0;
            let tasks_ptr = l.tasks.device_ptr(upload).0;
            let out: u64 = 0;
            let mut n_tasks = l.n_tasks;
            let mut args = [descs_ptr, tasks_ptr, arena, tables, out, err];
            let [a_descs, a_tasks, a_arena, a_tables, a_out, a_err] = &mut args;
            let mut params: [*mut std::ffi::c_void; 7] = [
                (a_descs as *mut u64).cast(),
                (a_tasks as *mut u64).cast(),
                (&mut n_tasks as *mut u32).cast(),
                (a_arena as *mut u64).cast(),
                (a_tables as *mut u64).cast(),
                (a_out as *mut u64).cast(),
                (a_err as *mut u64).cast(),
            ];
            // SAFETY: the parameters match the kernel's signature (descs, tasks, n_tasks,
            // arena, tables, out, err), each pointing at a live local of the parameter's
            // size; the descriptors address this model's arena and tables and the
            // caller's targets, checked by `raw_work` for length and alignment.
            unsafe {
                cudarc::driver::result::launch_kernel(
                    self.func.cu_function(),
                    (l.n_tasks, 1, 1),
                    ((WARPS * 32) as u32, 1, 1),
                    l.shared,
                    stream,
                    &mut params,
                )
            }
            .map_err(driver("kernel launch"))?;
        }
        Ok(())
    }

    /// Device address of the error flag.
    fn err_ptr(&self, stream: &Arc<CudaStream>) -> u64 {
        self.err.device_ptr(stream).0
    }

    /// Waits for `stream` and reports (and clears) a corrupt chunk the kernel found.
    pub fn check(&mut self, stream: &Arc<CudaStream>) -> Result<(), GpuError> {
        let err = stream
            .clone_dtoh(&self.err)
            .map_err(driver("reading the error flag"))?;
        stream.synchronize().map_err(driver("synchronize"))?;
        if err[0] == 0 {
            return Ok(());
        }
        stream
            .memset_zeros(&mut self.err)
            .map_err(driver("clearing the error flag"))?;
        // The kernel reports the descriptor's tag, the tensor's index in this model,
        // whichever group was launched.
        let words = [err[0], err[1], err[2]];
        let e: Option<CorruptChunk> = crate::work::corrupt_chunk(&self.tensors, words);
        e.map_or(Ok(()), |e| Err(e.into()))
    }

    /// This model's id (what [`GpuError::ForeignGroup`] reports).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Checks decoded tensors of `group` in `dst` against the originals' xxh3-64 on the
    /// host: downloads the tensors `which` chooses (after waiting for `stream`) and hashes
    /// them. Returns how many were checked. The stream checksums verified at upload and
    /// the kernel's end checks do not cover device memory changed after upload or a
    /// kernel fault; this does, for the tensors it checks.
    pub fn verify(
        &self,
        group: &DecodeGroup,
        dst: &CudaSlice<u8>,
        stream: &Arc<CudaStream>,
        which: Verify,
    ) -> Result<usize, GpuError> {
        self.check_group(group, dst, stream)?;
        let chosen = which.positions(group.tensors.len());
        for &k in &chosen {
            let t = &self.tensors[group.tensors[k]];
            let at = group.offsets[k] as usize;
            if t.out_len == 0 {
                crate::work::check_tensor(t, &[])?;
                continue;
            }
            let host = stream
                .clone_dtoh(&dst.slice(at..at + t.out_len as usize))
                .map_err(driver("download for verification"))?;
            stream.synchronize().map_err(driver("synchronize"))?;
            crate::work::check_tensor(t, &host)?;
        }
        Ok(chosen.len())
    }

    /// Decodes every uploaded tensor into a new buffer in one launch and waits; returns
    /// the buffer and each tensor's offset in it.
    pub fn decode_all(
        &mut self,
        stream: &Arc<CudaStream>,
    ) -> Result<(CudaSlice<u8>, Vec<u64>), GpuError> {
        let all: Vec<usize> = (0..self.tensors.len()).collect();
        let (_, total) = crate::work::output_layout(&self.tensors, &all);
        let mut dst = stream
            .alloc_zeros::<u8>(total.max(1) as usize)
            .map_err(alloc_error("decoded tensors", total as usize))?;
        let group = self.group(&all, &dst, stream)?;
        self.launch(&group, &mut dst, stream)?;
        self.check(stream)?;
        Ok((dst, group.offsets))
    }
}

fn upload_bytes(
    stream: &Arc<CudaStream>,
    bytes: &[u8],
    what: &'static str,
) -> Result<CudaSlice<u8>, GpuError> {
    // SAFETY: every byte is written by the copy below before anything reads it.
    let mut slice = unsafe { stream.alloc::<u8>(bytes.len().max(16)) }
        .map_err(alloc_error(what, bytes.len()))?;
    if !bytes.is_empty() {
        stream
            .memcpy_htod(bytes, &mut slice.slice_mut(..bytes.len()))
            .map_err(driver("host-to-device copy"))?;
    }
    Ok(slice)
}
