"""The ``device="cuda"`` path's parts that run without a GPU: compiling the decoder kernel
with the NVRTC that PyTorch ships (``nvidia-cuda-nvrtc``, no device needed), the kernel
cache, and the fallback to the CPU, which says why once or, under
``MCODEC_GPU_REQUIRED=1``, fails. The decode itself runs on a device in
``test_load.py::test_cuda_device`` and ``gpu-decode/run-on-gpu.sh``."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from conftest import REQUIRED, need

import mcodec
from mcodec import _gpu

torch = need("torch")


def nvrtc_or_skip() -> _gpu.Nvrtc:
    try:
        return _gpu.Nvrtc.find()
    except mcodec.GpuUnavailableError as e:
        if REQUIRED:
            raise
        pytest.skip(f"no NVRTC here ({e}); PyTorch's CUDA wheels ship it")


def test_kernel_compiles_to_a_cubin_and_is_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nvrtc = nvrtc_or_skip()
    print(f"NVRTC {nvrtc.version} from {nvrtc.path}")
    monkeypatch.setenv("MCODEC_CACHE", str(tmp_path))
    monkeypatch.setattr(_gpu, "_images", {})
    image, arch = _gpu.image_for("sm_90")
    assert arch == "sm_90"
    assert image[:4] == b"\x7fELF", "not a cubin"
    cached = list((tmp_path / "kernels").iterdir())
    assert [p.read_bytes() == image for p in cached] == [True], cached
    assert f"nvrtc{nvrtc.version}" in cached[0].name
    # A second process would read the file: nothing is compiled again.
    monkeypatch.setattr(_gpu, "_images", {})

    def no_compile(*args: object) -> bytes:
        raise AssertionError("compiled again despite the cache")

    monkeypatch.setattr(_gpu.Nvrtc, "compile", no_compile)
    assert _gpu.image_for("sm_90") == (image, "sm_90")


def test_a_kernel_that_does_not_compile_is_unavailable_not_a_crash() -> None:
    nvrtc = nvrtc_or_skip()
    with pytest.raises(mcodec.GpuUnavailableError, match="compiling the kernel"):
        nvrtc.compile("this is not CUDA;", "sm_90")


def test_missing_nvrtc_is_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(
        _gpu.Nvrtc, "candidates", staticmethod(lambda: [str(tmp_path / "libnope.so")])
    )
    with pytest.raises(mcodec.GpuUnavailableError, match="NVRTC not found"):
        _gpu.Nvrtc.find()


def test_cpu_fallback_says_why_once_or_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = torch.device("cuda")
    monkeypatch.setattr(_gpu, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _gpu.to_device({}, cuda, "no NVRTC")
        _gpu.to_device({}, cuda, "no NVRTC")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "no NVRTC" in messages[0], messages
    monkeypatch.setenv("MCODEC_GPU_REQUIRED", "1")
    with pytest.raises(mcodec.GpuUnavailableError, match="MCODEC_GPU_REQUIRED"):
        _gpu.to_device({}, cuda, "no NVRTC")


def test_without_a_device_the_gpu_path_declines(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: test_load.py::test_cuda_device decodes on it")
    mcodec.torch.save_file({"w": torch.ones(4)}, tmp_path / "m.mcz")
    with mcodec.safe_open(tmp_path / "m.mcz", framework="pt") as f:
        out, why = _gpu.load(f._archive, ["w"], f._entries, f._empty, torch.device("cuda"))
    assert out is None and "no CUDA device" in why
