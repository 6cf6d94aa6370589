"""Decoding onto a CUDA device: ``device="cuda"`` loads.

Tensors are allocated by PyTorch on the device and decoded there by mcodec's GPU kernel
(the ``mcodec-gpu`` crate), on PyTorch's current stream: the compressed streams go up,
the decoded bytes never cross the bus. The kernel is compiled at first use by the NVRTC
that PyTorch ships (``nvidia-cuda-nvrtc``) for the device's own architecture and cached
as a cubin under ``$MCODEC_CACHE`` (default ``~/.cache/mcodec``)/``kernels``.

Where that cannot run (no NVRTC, a driver that refuses the image, ...) tensors are
decoded on the CPU and copied, and the first such load says why (``warnings``);
``MCODEC_GPU_REQUIRED=1`` makes that an error instead. Tensors the kernel does not take
(stored or zstd-coded ones) are decoded on the CPU at upload and copied from device
memory, also said once. ``MCODEC_GPU=0`` always decodes on the CPU.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import importlib.util
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

from . import _native
from .errors import GpuUnavailableError

# Must match gpu-decode's `compile_options` (src/gpu.rs) but for the architecture.
_OPTIONS = ("--std=c++17", "--generate-line-info")
# Compressed streams of at most this many decoded bytes are on the device at a time.
_BATCH_BYTES = 1 << 30

_warned: set[str] = set()
_lock = threading.Lock()
_images: dict[str, tuple[bytes, str]] = {}


def _env_on(name: str) -> bool:
    value = os.environ.get(name, "")
    return value not in ("", "0")


def _warn_once(key: str, message: str) -> None:
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(message, RuntimeWarning, stacklevel=5)


def to_device(tensors: dict[str, Any], device: Any, why: str) -> dict[str, Any]:
    """Moves CPU-decoded ``tensors`` to ``device``, saying once per process why."""
    if device.type == "cuda":
        if _env_on("MCODEC_GPU_REQUIRED"):
            raise GpuUnavailableError(
                f"GPU decoding unavailable ({why}) and MCODEC_GPU_REQUIRED is set"
            )
        _warn_once("cpu", f"mcodec: decoding on the CPU and copying to {device}: {why}")
    return {name: t.to(device) for name, t in tensors.items()}


def load(
    archive: Any,
    names: list[str],
    entries: dict[str, tuple[str, list[int], int]],
    empty: Callable[[str, Any], Any],
    device: Any,
) -> tuple[Optional[dict[str, Any]], str]:
    """Decodes ``names`` of ``archive`` on ``device`` (a CUDA ``torch.device``).

    Returns the tensors, or ``None`` and why the GPU path cannot run (the caller then
    decodes on the CPU and copies).
    """
    import torch

    if os.environ.get("MCODEC_GPU", "") == "0":
        return None, "MCODEC_GPU=0"
    if not torch.cuda.is_available():
        return None, "torch sees no CUDA device"
    index = device.index if device.index is not None else torch.cuda.current_device()
    device = torch.device("cuda", index)
    try:
        image, arch = kernel_image(index)
    except GpuUnavailableError as e:
        return None, str(e)
    out = {name: empty(name, device) for name in names}
    targets = []
    for name, t in out.items():
        nbytes = entries[name][2]
        targets.append((name, t.data_ptr() if nbytes else 0, nbytes))
    stream = torch.cuda.current_stream(device).cuda_stream
    try:
        with torch.cuda.device(device):
            fallbacks = archive.gpu_decode_into(targets, stream, index, image, arch, _BATCH_BYTES)
    except GpuUnavailableError as e:
        return None, str(e)
    if fallbacks:
        shown = ", ".join(f"{n} ({why})" for n, why in fallbacks[:3])
        more = f" and {len(fallbacks) - 3} more" if len(fallbacks) > 3 else ""
        count = len(fallbacks)
        message = f"mcodec: {count} tensor(s) decoded on the CPU, not the GPU: {shown}{more}"
        _warn_once("fallback", message)
    return out, ""


def kernel_image(index: int) -> tuple[bytes, str]:
    """The decoder kernel compiled for CUDA device ``index``: ``(cubin, "sm_XY")``.

    Read from the cache when there, else compiled with NVRTC and cached.
    """
    import torch

    major, minor = torch.cuda.get_device_capability(index)
    return image_for(f"sm_{major}{minor}")


def image_for(arch: str) -> tuple[bytes, str]:
    """The decoder kernel compiled for ``arch`` (``"sm_90"``).

    From this process's memory, the cache, or NVRTC (then cached).
    """
    with _lock:
        if arch in _images:
            return _images[arch]
    nvrtc = Nvrtc.find()
    key = hashlib.sha256(
        "\0".join([_native.KERNEL_SOURCE, *_OPTIONS, arch, nvrtc.version]).encode()
    ).hexdigest()[:20]
    path = cache_dir() / "kernels" / f"mcz_decode-{arch}-nvrtc{nvrtc.version}-{key}.cubin"
    try:
        image = path.read_bytes()
    except OSError:
        image = nvrtc.compile(_native.KERNEL_SOURCE, arch)
        _store(path, image)
    with _lock:
        _images[arch] = (image, arch)
    return image, arch


def cache_dir() -> Path:
    """Where mcodec caches compiled kernels: ``$MCODEC_CACHE``, else the user cache."""
    root = os.environ.get("MCODEC_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "mcodec" if xdg else Path.home() / ".cache" / "mcodec"


def _store(path: Path, image: bytes) -> None:
    """Writes ``image`` to ``path`` atomically; a cache that cannot be written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(image)
        os.replace(tmp, path)
    except OSError:
        pass


class Nvrtc:
    """The NVRTC library (``libnvrtc``), through ctypes."""

    def __init__(self, lib: ctypes.CDLL, path: str) -> None:
        self._lib = lib
        self.path = path
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        self.version = f"{major.value}.{minor.value}"

    @staticmethod
    def candidates() -> list[str]:
        """Libraries to try, best first.

        ``$MCODEC_NVRTC``, the NVRTC of PyTorch's CUDA (the ``nvidia`` wheels), then the
        system's.
        """
        found = []
        if os.environ.get("MCODEC_NVRTC"):
            found.append(os.environ["MCODEC_NVRTC"])
        spec = importlib.util.find_spec("nvidia")
        roots = list(spec.submodule_search_locations or []) if spec else []
        wheels = []
        for root in roots:
            for pattern in ("*/lib/libnvrtc.so.*", "cuda_nvrtc/lib/libnvrtc.so.*"):
                wheels += [p for p in glob.glob(os.path.join(root, pattern)) if "builtins" not in p]
        try:
            import torch

            cuda_major = (torch.version.cuda or "").split(".")[0]
        except ImportError:
            cuda_major = ""
        # The NVRTC of the CUDA major version PyTorch runs first, newest name last.
        wheels.sort(key=lambda p: (not p.endswith(f".so.{cuda_major}"), p))
        found += list(dict.fromkeys(wheels))
        found += ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"]
        return found

    @classmethod
    def find(cls) -> Nvrtc:
        """Loads the first NVRTC of :meth:`candidates` that loads."""
        tried = []
        for name in cls.candidates():
            try:
                return cls(ctypes.CDLL(name), name)
            except OSError as e:
                tried.append(f"{name}: {e}")
        raise GpuUnavailableError(
            "NVRTC not found (pip install nvidia-cuda-nvrtc, or set MCODEC_NVRTC to libnvrtc): "
            + "; ".join(tried[:3])
        )

    def _check(self, result: int, what: str, log: str = "") -> None:
        if result != 0:
            raise GpuUnavailableError(
                f"{what} failed with NVRTC error {result}{': ' + log if log else ''}"
            )

    def compile(self, source: str, arch: str) -> bytes:
        """Compiles ``source`` to a cubin for ``arch`` (``sm_90``)."""
        lib = self._lib
        prog = ctypes.c_void_p()
        self._check(
            lib.nvrtcCreateProgram(
                ctypes.byref(prog), source.encode(), b"mcz_decode.cu", 0, None, None
            ),
            "nvrtcCreateProgram",
        )
        try:
            options = [f"--gpu-architecture={arch}".encode(), *(o.encode() for o in _OPTIONS)]
            argv = (ctypes.c_char_p * len(options))(*options)
            result = lib.nvrtcCompileProgram(prog, len(options), argv)
            if result != 0:
                self._check(result, f"compiling the kernel for {arch}", self._log(prog))
            size = ctypes.c_size_t()
            self._check(lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "nvrtcGetCUBINSize")
            if size.value == 0:
                raise GpuUnavailableError(f"NVRTC {self.version} made no cubin for {arch}")
            image = ctypes.create_string_buffer(size.value)
            self._check(lib.nvrtcGetCUBIN(prog, image), "nvrtcGetCUBIN")
            return image.raw
        finally:
            lib.nvrtcDestroyProgram(ctypes.byref(prog))

    def _log(self, prog: ctypes.c_void_p) -> str:
        size = ctypes.c_size_t()
        if self._lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)) != 0 or size.value == 0:
            return ""
        log = ctypes.create_string_buffer(size.value)
        self._lib.nvrtcGetProgramLog(prog, log)
        return log.value.decode(errors="replace").strip()[-2000:]
