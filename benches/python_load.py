#!/usr/bin/env python3
"""Time to get a model's tensors into PyTorch, side by side, one fresh process per run.

Loaders (each timed on the same model, in the same run):
  mcodec-1t / mcodec-all   mcodec.torch.load_file(file.mcz, threads=1 / all cores)
  safetensors              safetensors.torch.load_file(file.safetensors) on the raw file
  zipnn                    ZipNN's own loading path: its safetensors plugin class
                           (zipnn.zipnn.SafeOpen, what zipnn_safetensors() installs) reading
                           a safetensors file of ZipNN-compressed tensors, ZipNN's default
                           threads
  fresh-pages              not a loader: the floor under any loader that writes the
                           model into new memory. The same tensors as mcodec allocates
                           them (mcodec.safe_open on the .mcz, torch.empty each), every
                           byte then written by torch's fill_ on all cores, nothing read
                           or decoded. Where this alone takes most of safetensors' time,
                           the fresh memory, not the decoder, sets the pace (on a VM whose
                           host backs guest memory lazily, a first touch costs several
                           microseconds per 4 KiB page).

Every run is a new Python process (imports not timed), the loaders taking turns run by
run; the timed part is the load call plus touching one byte per 4 KiB page of every
tensor, so that loaders returning lazily mapped tensors (safetensors) pay for their reads
too. "warm": the file was read just before; "cold": its pages were dropped from the page
cache first with posix_fadvise(POSIX_FADV_DONTNEED) (no root needed; the machine's disk is
then read).
Peak RSS is the process's peak resident set (VmHWM, reset just before the load) during
load+touch minus its resident set just before the load (torch itself), next to the
decoded model's size; the touch's own code is paged in before (on a small tensor), so
that it is not counted as the loader's.

Usage: python3 benches/python_load.py FILE.safetensors [...] [--repeat N] [--json OUT]
Writes FILE.mcz (mcodec) and FILE.znn.safetensors (ZipNN) beside each input if missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

LOADERS = ["safetensors", "mcodec-1t", "mcodec-all", "zipnn", "fresh-pages"]


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith(field + ":"))


def reset_peak_rss() -> None:
    # getrusage's ru_maxrss survives exec (a child inherits its parent's peak): use the
    # per-process VmHWM, reset here ("5" to clear_refs resets the peak to the current RSS).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def child(loader: str, path: str) -> None:
    import torch

    if loader.startswith("mcodec"):
        import mcodec.torch

        threads = 1 if loader == "mcodec-1t" else None

        def load():
            return mcodec.torch.load_file(path, threads=threads)
    else:
        import safetensors.torch

        def load():
            return safetensors.torch.load_file(path)

    if loader == "fresh-pages":
        import mcodec

        torch.set_num_threads(os.cpu_count() or 1)

        def load():
            with mcodec.safe_open(path, framework="pt") as f:
                tensors = {name: f._empty(name) for name in f.offset_keys()}
            for t in tensors.values():
                t.reshape(-1).view(torch.uint8).fill_(0x5A)
            return tensors

    if loader == "zipnn":
        # zipnn_safetensors() swaps safetensors.torch.safe_open for ZipNN's SafeOpen, whose
        # __init__ lacks the `backend` argument safetensors >= 0.7's load_file passes: call
        # what load_file does with ZipNN's class directly.
        from zipnn.zipnn import SafeOpen

        def load():
            with SafeOpen(path, "pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (no __iter__)

    # The touch below runs a reduction whose code (libtorch's) is paged in on first use:
    # 3.7 MB of file pages that went into every loader's peak as if the load held them.
    # Touch a small tensor first, so that the peak counts the load's memory only.
    int(torch.zeros(1 << 16, dtype=torch.uint8)[:: 4096].sum())
    # That reduction starts torch's OpenMP workers, which then busy-wait for more work
    # (libgomp's spin before sleeping: ~8 ms of a CPU here). A load timed right after
    # shared the cores with them: on 2 vCPUs a 2-thread load lost most of a core for its
    # first milliseconds (BENCHMARKS.md, twenty-fourth session). Let them go to sleep.
    time.sleep(0.1)
    reset_peak_rss()
    before = status_kb("VmRSS") * 1024
    t0 = time.perf_counter()
    tensors = load()
    t1 = time.perf_counter()
    touched = 0
    for t in tensors.values():
        flat = t.reshape(-1).view(torch.uint8) if t.dim() else t.reshape(1).view(torch.uint8)
        if flat.numel():
            touched += int(flat[:: 4096].sum())
    t2 = time.perf_counter()
    peak = status_kb("VmHWM") * 1024
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    print(json.dumps({"load_s": t1 - t0, "total_s": t2 - t0, "peak_rss": peak - before,
                      "bytes": nbytes, "touched": touched % 7}))


def make_zipnn(src: Path, dst: Path) -> None:
    """A safetensors file of ZipNN-compressed tensors, as its safetensors plugin reads."""
    import safetensors.torch
    import torch
    from zipnn import ZipNN
    from zipnn.util_safetensors import (
        COMPRESSED_DTYPE,
        COMPRESSION_METHOD,
        build_compressed_tensor_info,
        set_compressed_tensors_metadata,
    )

    tensors = safetensors.torch.load_file(src)
    out, infos = {}, {}
    for name, t in tensors.items():
        if not t.is_floating_point():
            out[name] = t  # ZipNN compresses float tensors; others stay plain
            continue
        znn = ZipNN(input_format="torch", bytearray_dtype=COMPRESSED_DTYPE,
                    method=COMPRESSION_METHOD)
        data = znn.compress(t.clone())  # compress() mutates its input: give it a copy
        out[name] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        infos[name] = build_compressed_tensor_info(t)
    metadata = {"format": "pt"}
    set_compressed_tensors_metadata(infos, metadata)
    safetensors.torch.save_file(out, dst, metadata=metadata)


def run(loader: str, path: Path, cache: str) -> dict:
    if cache == "cold":
        drop_cache(path)
    else:
        warm(path)
    r = subprocess.run([sys.executable, __file__, "--child", loader, str(path)],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="*")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json")
    ap.add_argument("--child", nargs=2)
    a = ap.parse_args()
    if a.child:
        child(*a.child)
        return
    import mcodec

    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                   platform.processor())
    print(f"# {cpu}, {os.cpu_count()} CPUs, repeat {a.repeat}, medians")
    results = []
    for f in a.files:
        src = Path(f)
        mcz = src.with_name(src.name + ".mcz")
        znn = src.with_name(src.stem + ".znn.safetensors")
        if not mcz.exists():
            mcodec.pack(src, mcz)
        if not znn.exists():
            make_zipnn(src, znn)
        files = {"safetensors": src, "mcodec-1t": mcz, "mcodec-all": mcz, "zipnn": znn,
                 "fresh-pages": mcz}
        for cache in ("warm", "cold"):
            # The loaders take turns, one run each per round, so that a change in what
            # else the machine runs (other processes' builds) falls on every loader alike:
            # one loader's runs all in a row once met a busier machine than the next's.
            by_loader: dict[str, list[dict]] = {loader: [] for loader in LOADERS}
            load_avg = []
            for _ in range(a.repeat):
                load_avg.append(os.getloadavg()[0])
                for loader in LOADERS:
                    by_loader[loader].append(run(loader, files[loader], cache))
            for loader in LOADERS:
                runs = by_loader[loader]
                row = {
                    "model": src.name, "cache": cache, "loader": loader,
                    "file_bytes": files[loader].stat().st_size,
                    "model_bytes": runs[0]["bytes"],
                    "load_s": statistics.median(r["load_s"] for r in runs),
                    "total_s": statistics.median(r["total_s"] for r in runs),
                    "peak_rss": statistics.median(r["peak_rss"] for r in runs),
                    "load_avg": [min(load_avg), max(load_avg)],
                }
                results.append(row)
                print(f"{src.name:32} {cache:4} {loader:11} "
                      f"file {row['file_bytes'] / 1e6:8.1f} MB  load+touch {row['total_s']:7.3f} s "
                      f"({row['model_bytes'] / 1e6 / row['total_s']:7.0f} MB/s)  "
                      f"peak RSS {row['peak_rss'] / row['model_bytes']:.2f}x model  "
                      f"load avg {min(load_avg):.1f}-{max(load_avg):.1f}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
