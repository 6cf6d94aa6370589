"""The Python package's device="cuda" path on a real GPU, without pytest (the device
machines have torch but maybe not pytest): loads a packed model onto the GPU through
mcodec.torch.load_file, safe_open and mcodec.transformers, and compares every tensor bit
for bit with the CPU load. Fails when the load fell back to the CPU (the GPU decoder
did not run), and times the GPU decode beside the CPU decode + copy. Prints "skipped"
(which gpu-decode/run-on-gpu.sh counts as a failure) when torch sees no CUDA device.

Usage: python cuda_check.py FILE.mcz
"""

from __future__ import annotations

import os
import sys
import time
import warnings


def main() -> int:
    import torch

    import mcodec
    import mcodec.torch

    path = sys.argv[1]
    if not torch.cuda.is_available():
        print("python cuda: skipped (torch sees no CUDA device)")
        return 1
    cpu = mcodec.torch.load_file(path)
    # The first load compiles the kernel with PyTorch's NVRTC (cached after): not timed.
    t0 = time.perf_counter()
    mcodec.torch.load_file(path, device="cuda")
    torch.cuda.synchronize()
    print(
        f"python cuda: first load (kernel compile or cache read) {time.perf_counter() - t0:.2f} s"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        gpu = mcodec.torch.load_file(path, device="cuda")
        torch.cuda.synchronize()
        secs = time.perf_counter() - t0
    for w in caught:
        print(f"python cuda: warning: {w.message}")
    went_cpu = any("copying to" in str(w.message) for w in caught)
    # The CPU decode + copy for comparison (MCODEC_GPU_REQUIRED, which run-on-gpu.sh
    # sets, would refuse it).
    required = os.environ.pop("MCODEC_GPU_REQUIRED", None)
    os.environ["MCODEC_GPU"] = "0"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        mcodec.torch.load_file(path, device="cuda")
        torch.cuda.synchronize()
        cpu_secs = time.perf_counter() - t0
    del os.environ["MCODEC_GPU"]
    if required is not None:
        os.environ["MCODEC_GPU_REQUIRED"] = required
    nbytes = sum(t.numel() * t.element_size() for t in cpu.values())
    bad = [
        k
        for k, t in cpu.items()
        if gpu[k].device.type != "cuda"
        or gpu[k].dtype != t.dtype
        or gpu[k].shape != t.shape
        or not torch.equal(
            gpu[k].cpu().reshape(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8)
        )
    ]
    with mcodec.safe_open(path, framework="pt", device="cuda:0") as f:
        name = f.keys()[0]
        one = f.get_tensor(name)
        bad += [] if one.device.type == "cuda" and torch.equal(one.cpu(), cpu[name]) else [name]
    print(
        f"python cuda: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
        f"mcodec {mcodec.__version__}"
    )
    verdict = "yes" if not bad else "NO: " + ", ".join(bad[:5])
    how = "CPU decode + copy (GPU path unavailable)" if went_cpu else "GPU decode"
    print(
        f"python cuda: load_file(device='cuda') by {how}: {nbytes / 1e6:.1f} MB in {secs:.3f} s "
        f"({nbytes / 1e9 / secs:.2f} GB/s), bit-exact {verdict}; "
        f"CPU decode + copy (MCODEC_GPU=0) {cpu_secs:.3f} s ({nbytes / 1e9 / cpu_secs:.2f} GB/s)"
    )
    return 0 if not bad and not went_cpu else 1


if __name__ == "__main__":
    sys.exit(main())
