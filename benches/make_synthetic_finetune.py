#!/usr/bin/env python3
"""Makes a SYNTHETIC base / fine-tune pair of model directories for store throughput.

The base is the first tensors (about --bytes in total) of a BF16 safetensors file, copied
bit for bit; the fine-tune perturbs every element by a small number of ULPs (the low
mantissa bits), drawn from a two-sided geometric distribution with mostly 0 and +-1, the
way a short fine-tune moves weights. Both get the same config.json. This is synthetic
data: use it for throughput, not for ratios.

    python3 benches/make_synthetic_finetune.py SRC.safetensors OUT_DIR [--bytes 1e9]
"""
import argparse
import json
import os
import struct

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--bytes", type=float, default=1e9)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    with open(a.src, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    tensors = sorted(
        ((k, v) for k, v in header.items() if k != "__metadata__"),
        key=lambda kv: kv[1]["data_offsets"][0],
    )
    data = np.memmap(a.src, dtype=np.uint8, mode="r", offset=8 + n)
    chosen, total = [], 0
    for k, v in tensors:
        if v["dtype"] != "BF16":
            continue
        b, e = v["data_offsets"]
        if total + (e - b) > a.bytes and chosen:
            break
        chosen.append((k, v))
        total += e - b
    rng = np.random.default_rng(a.seed)
    for variant in ["base", "ft"]:
        d = os.path.join(a.out, variant)
        os.makedirs(d, exist_ok=True)
        hdr, off = {"__metadata__": {"format": "pt", "note": "SYNTHETIC"}}, 0
        for k, v in chosen:
            b, e = v["data_offsets"]
            hdr[k] = {"dtype": "BF16", "shape": v["shape"], "data_offsets": [off, off + e - b]}
            off += e - b
        hb = json.dumps(hdr, separators=(",", ":")).encode()
        hb += b" " * (-len(hb) % 8)
        with open(os.path.join(d, "model.safetensors"), "wb") as f:
            f.write(struct.pack("<Q", len(hb)))
            f.write(hb)
            for k, v in chosen:
                b, e = v["data_offsets"]
                x = np.array(data[b:e]).view(np.uint16)
                if variant == "ft":
                    # Two-sided geometric ULP steps: P(0) = 0.5, then halving.
                    steps = rng.geometric(0.5, size=x.size).astype(np.int32) - 1
                    sign = rng.integers(0, 2, size=x.size, dtype=np.int32) * 2 - 1
                    mag = (x & 0x7FFF).astype(np.int32) + steps * sign
                    mag = np.clip(mag, 0, 0x7F7F)
                    x = ((x & 0x8000) | mag.astype(np.uint16)).astype(np.uint16)
                f.write(x.tobytes())
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"note": "SYNTHETIC fine-tune pair for store throughput"}, f)
    print(f"{len(chosen)} tensors, {total} bytes per model under {a.out}")


if __name__ == "__main__":
    main()
