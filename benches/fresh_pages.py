#!/usr/bin/env python3
"""What a fresh page of memory costs on this machine: 4 KiB pages vs transparent huge pages.

A loader that decodes into new tensors pays the kernel for every fresh page it writes
(allocate, zero, account, map). On some virtual machines that is about as much as the
decoding itself, and whether huge pages (``MADV_HUGEPAGE``) make it cheaper depends on
the host: a huge page the host has taken back (free page reporting) costs far more than
512 small ones. Run this before trying huge pages in a loader.

Each run is a fresh Python process (``torch`` imported first if installed, as a loader's
process would be) that maps ``--mb`` MB of private anonymous memory, 2 MiB-aligned, and
maps its pages in 2 MiB steps with ``MADV_POPULATE_WRITE`` (Linux >= 5.14), timing each
step. Modes alternate run by run. Printed per mode: medians of the runs' cost per 4 KiB
(wall, then the populating thread's CPU time, which mcodec's huge-page back-off judges by),
of their median 2 MiB step and of their slowest step, and how much ended in huge pages.

Usage: python3 benches/fresh_pages.py [--mb 91] [--runs 5] [--pause SECONDS] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODES = ["4k", "thp"]
STEP = 2 << 20
MADV_HUGEPAGE = 14
MADV_POPULATE_WRITE = 23


def child(mode: str, mb: float) -> None:
    import ctypes
    import mmap

    try:
        import torch  # noqa: F401 (the heap a loader's process has)
    except ImportError:
        pass
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    size = int(mb * 1e6) // STEP * STEP
    region = mmap.mmap(-1, size + STEP, flags=mmap.MAP_PRIVATE)
    start = -(-ctypes.addressof(ctypes.c_char.from_buffer(region)) // STEP) * STEP
    if mode == "thp" and libc.madvise(start, size, MADV_HUGEPAGE) != 0:
        sys.exit(f"MADV_HUGEPAGE failed: errno {ctypes.get_errno()}")
    steps = []
    cpu0 = time.thread_time()
    for at in range(start, start + size, STEP):
        t = time.perf_counter()
        if libc.madvise(at, STEP, MADV_POPULATE_WRITE) != 0:
            sys.exit(f"MADV_POPULATE_WRITE failed: errno {ctypes.get_errno()}")
        steps.append(time.perf_counter() - t)
    cpu = time.thread_time() - cpu0
    with open("/proc/self/smaps_rollup") as f:
        huge = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("AnonHugePages:"))
    print(
        json.dumps(
            {
                "us_per_4k": sum(steps) / (size / 4096) * 1e6,
                "cpu_us_per_4k": cpu / (size / 4096) * 1e6,
                "median_step_ms": statistics.median(steps) * 1e3,
                "max_step_ms": max(steps) * 1e3,
                "huge_fraction": huge / size,
            }
        )
    )


def setting(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=91.0, help="memory per run (MiniLM F32: 91)")
    ap.add_argument("--runs", type=int, default=5, help="runs per mode")
    ap.add_argument("--pause", type=float, default=0.0, help="seconds between runs")
    ap.add_argument("--json")
    ap.add_argument("--child", nargs=2)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], float(a.child[1]))
        return
    print(
        f"# THP {setting('/sys/kernel/mm/transparent_hugepage/enabled')}, page reporting "
        f"order {setting('/sys/module/page_reporting/parameters/page_reporting_order')}, "
        f"{a.mb:g} MB per run, {a.runs} runs per mode, pause {a.pause:g} s"
    )
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    for i in range(a.runs):
        for mode in MODES if i % 2 == 0 else MODES[::-1]:
            time.sleep(a.pause)
            r = subprocess.run(
                [sys.executable, __file__, "--child", mode, str(a.mb)],
                capture_output=True,
                text=True,
                check=True,
            )
            runs[mode].append(json.loads(r.stdout.strip().splitlines()[-1]))
    for mode, rs in runs.items():

        def med(key: str, rs: list[dict] = rs) -> float:
            return statistics.median(r[key] for r in rs)

        each = ", ".join(f"{r['us_per_4k']:.2f}" for r in rs)
        print(
            f"{mode:4} {med('us_per_4k'):6.2f} us per 4 KiB  (runs: {each}; CPU "
            f"{med('cpu_us_per_4k'):.2f})  median 2 MiB step "
            f"{med('median_step_ms'):.3f} ms, slowest {med('max_step_ms'):.3f} ms, "
            f"huge pages {med('huge_fraction'):.0%}"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
