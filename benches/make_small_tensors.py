#!/usr/bin/env python3
"""Write a SYNTHETIC model of many small tensors, for per-tensor fixed costs (issue #12).

480 tensors of 4,096 to 65,536 elements (sizes drawn log-uniformly, seeded), each a
Gaussian with its own scale (1e-3 to 0.1) plus a few outliers, like the many small norm,
bias and adapter tensors of a real checkpoint. Written once per dtype:
benches/data/synthetic-small-{bf16,f32}.safetensors (about 41 MB F32, 21 MB BF16). The data is
synthetic: its ratios say nothing about real weights; its speed figures measure
what a tensor costs beyond its bytes.

Usage: python3 benches/make_small_tensors.py [--tensors N] [--seed S] [--out-dir DIR]
"""

import argparse
from pathlib import Path

import numpy as np

from st_io import TensorSpec, write_safetensors

BENCH_DIR = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tensors", type=int, default=480)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--out-dir", type=Path, default=BENCH_DIR / "data")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    tensors = []
    for i in range(args.tensors):
        n = round(float(np.exp(rng.uniform(np.log(4096), np.log(65536)))))
        scale = float(np.exp(rng.uniform(np.log(1e-3), np.log(0.1))))
        x = rng.standard_normal(n).astype(np.float32) * scale
        x[rng.integers(0, n, size=max(1, n // 1000))] *= 20.0  # a few outliers
        tensors.append((f"layers.{i // 8}.part{i % 8}.weight", x))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for dtype in ("BF16", "F32"):
        def raw(x: np.ndarray, dtype: str = dtype) -> bytes:
            if dtype == "F32":
                return x.astype("<f4").tobytes()
            bits = x.astype("<f4").view("<u4").astype(np.uint64)
            # Round to nearest even, as torch's cast does (no NaN in this data).
            rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
            return rounded.astype("<u2").tobytes()

        specs = [TensorSpec(name, dtype, [x.size], lambda x=x: [raw(x)]) for name, x in tensors]
        path = args.out_dir / f"synthetic-small-{dtype.lower()}.safetensors"
        size = write_safetensors(path, specs, metadata={"synthetic": "make_small_tensors.py"})
        print(f"{path}: {len(specs)} tensors, {size} bytes (SYNTHETIC)")


if __name__ == "__main__":
    main()
