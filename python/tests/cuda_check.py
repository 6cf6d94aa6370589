"""The Python package's device="cuda" path on a real GPU, without pytest (the device
machines have torch but maybe not pytest): loads a packed model onto the GPU through
mcodec.torch.load_file, safe_open and mcodec.transformers, and compares every tensor bit
for bit with the CPU load. Prints "skipped" (which gpu-decode/run-on-gpu.sh counts as a
failure) when torch sees no CUDA device.

Usage: python cuda_check.py FILE.mcz
"""

from __future__ import annotations

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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        gpu = mcodec.torch.load_file(path, device="cuda")
        torch.cuda.synchronize()
        secs = time.perf_counter() - t0
    for w in caught:
        print(f"python cuda: warning: {w.message}")
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
    print(
        f"python cuda: load_file(device='cuda') {nbytes / 1e6:.1f} MB in {secs:.3f} s "
        f"({nbytes / 1e9 / secs:.2f} GB/s), bit-exact {verdict}"
    )
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
