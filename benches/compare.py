#!/usr/bin/env python3
"""Side-by-side benchmark of mcodec, ZipNN and zstd -3 on safetensors files.

For every file, each case below runs once per round, cases interleaved:
--warmup unrecorded rounds (default 1), then --repeats timed ones (default 3),
of which the median is reported. The 1-minute load average is recorded: other
work on the machine skews the numbers.

  mcodec bench      `mcodec bench FILE -j T --level L --json`, T = 1 and all usable
                    cores, L each of --level (default: default);
                    reads the top-level keys ratio, encode_mb_s, decode_mb_s
                    (warm: one output buffer reused by every repeat) and
                    decode_cold_mb_s (a fresh output allocation per repeat, its
                    first-touch page faults timed, as a loader gets it);
                    ratio taken as compressed/original; MB = 1e6 bytes of
                    original tensor data; the timing is mcodec's own.
  mcodec pack/unpack end to end through the CLI with its default thread count:
                    `mcodec pack FILE -o TMP -f -q`, `mcodec unpack TMP -o OUT -f -q`;
                    wall time of each process, sha256(OUT) must equal sha256(FILE);
                    ratio = packed file size / original file size. A fresh
                    process each time: its decode is cold (both columns).
  ZipNN             per tensor, like ZipNN's own safetensors plugin: every float
                    tensor's bytes go through ZipNN (byte input, dtype-matched
                    mode, method HUFFMAN) with threads=T; other tensors count as
                    stored raw. Ratio = (compressed floats + raw others) / all
                    tensor bytes; MB/s = all tensor bytes / summed time of the
                    compress (decompress) calls. Every tensor is verified.
                    ZipNN has no call that decodes into a caller's buffer: each
                    decompress allocates its output. Warm: 5 passes, the median
                    taken (as `mcodec bench` takes the median of its 5 warm
                    decodes), each tensor by tensor, each output dropped before
                    the next, so the next one lands on pages
                    already mapped, as mcodec's reused buffer is: this process sets
                    glibc's M_MMAP_MAX to 0 and M_TRIM_THRESHOLD to INT_MAX at the
                    start (see keep_freed_heap), otherwise an output above glibc's
                    mmap threshold (dynamic, at most 32 MiB) is a fresh mapping on
                    every call and its first-touch faults (~2 µs per 4 KiB page on
                    the Firecracker guest) were timed as "warm" -- that made it
                    include ~11,500 faults per pass on MiniLM F32 (its 47 MB
                    embedding). Minor faults per warm pass are reported
                    (decode_minflt; ~40 when the pages were reused). Cold: every
                    output kept until the end, as a loader keeps its tensors, after
                    malloc_trim(0) returned the heap's free pages, so outputs land
                    on fresh pages.
  zstd -3           the whole file through the zstandard module, in memory;
                    T=1 is single-threaded (threads=0), T=all uses that many
                    workers. zstd decompression is single-threaded either way.
                    Warm decode: stream_reader().readinto() a reused buffer;
                    cold: decompress() into a fresh allocation (after
                    malloc_trim(0), as for ZipNN). Verified by
                    sha256.

Usage: python3 benches/compare.py [FILE ...] [--repeats R] [--json-out PATH]
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from st_io import map_file, read_header

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CORES = len(os.sched_getaffinity(0))
METRICS = ("ratio", "encode_mb_s", "decode_mb_s", "decode_cold_mb_s")
WARM_PASSES = 5  # ZipNN's warm decode passes per run (as `mcodec bench --repeat 5`)

# safetensors dtype -> ZipNN bytearray_dtype
ZIPNN_DTYPES = {
    "F32": "float32", "BF16": "bfloat16", "F16": "float16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def mb_s(nbytes: int, seconds: float) -> float:
    return nbytes / 1e6 / seconds


def sha256_file(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.digest()


def run_cmd(cmd: list, timeout: float, env: dict | None = None) -> str:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                       env=env)
    if p.returncode != 0:
        err = (p.stderr or p.stdout).strip()[-500:]
        raise RuntimeError(f"`{' '.join(map(str, cmd))}` exited with {p.returncode}: {err}")
    return p.stdout


# --------------------------------------------------------------------------- mcodec

def mcodec_bench(binary: Path, path: Path, jobs: int, timeout: float, simd: str = "auto",
                 level: str = "default") -> dict:
    """`mcodec bench --level level` with MCODEC_SIMD=simd; fails unless the report names
    that path and level."""
    env = {**os.environ, "MCODEC_SIMD": simd}
    env.pop("MCODEC_NO_SIMD", None)
    out = run_cmd([binary, "bench", path, "-j", jobs, "--level", level, "--json"], timeout, env)
    try:
        doc = json.loads(out)
    except json.JSONDecodeError:
        raise RuntimeError(f"mcodec bench printed no JSON: {out[:200]!r}") from None
    if simd != "auto" and doc.get("simd") != simd:
        raise RuntimeError(f"asked for the {simd} path, mcodec ran {doc.get('simd')!r}")
    if doc.get("level") != level:
        raise RuntimeError(f"asked for level {level}, mcodec ran {doc.get('level')!r}")
    return {k: float(doc[k]) for k in METRICS} | {"simd": doc.get("simd"), "report": doc}


def mcodec_pack_unpack(binary: Path, path: Path, file_sha: bytes, tmp: Path, timeout: float) -> dict:
    packed, restored = tmp / (path.name + ".mcz"), tmp / path.name
    try:
        t0 = time.perf_counter()
        run_cmd([binary, "pack", path, "-o", packed, "-f", "-q"], timeout)
        t1 = time.perf_counter()
        if not packed.is_file():
            raise RuntimeError("mcodec pack wrote no output file")
        run_cmd([binary, "unpack", packed, "-o", restored, "-f", "-q"], timeout)
        t2 = time.perf_counter()
        if not restored.is_file():
            raise RuntimeError("mcodec unpack wrote no output file")
        if sha256_file(restored) != file_sha:
            raise RuntimeError("unpacked file differs from the original (sha256)")
        size, packed_size = path.stat().st_size, packed.stat().st_size
    finally:
        packed.unlink(missing_ok=True)
        restored.unlink(missing_ok=True)
    return {"ratio": packed_size / size, "encode_mb_s": mb_s(size, t1 - t0),
            "decode_mb_s": mb_s(size, t2 - t1), "decode_cold_mb_s": mb_s(size, t2 - t1),
            "packed_bytes": packed_size,
            "pack_s": t1 - t0, "unpack_s": t2 - t1}


# --------------------------------------------------------------------------- peers

def glibc():
    """The C library if it is glibc (it has `malloc_trim` and `mallopt`), else None."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    return lib if hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else None


def release_free_heap() -> bool:
    """Hands the C heap's free pages back to the kernel (glibc `malloc_trim(0)`), so that
    the next allocations get fresh pages; False where there is no glibc."""
    lib = glibc()
    if lib is None:
        return False
    lib.malloc_trim(0)
    return True


def keep_freed_heap() -> bool:
    """Makes freed C-heap memory stay mapped for the next allocation (this process only:
    the in-process peers). glibc serves a block above its mmap threshold (128 KiB, raised
    to the largest block freed so far, at most 32 MiB) by a fresh mapping and unmaps it on
    free, so a peer decoding tensor by tensor faulted in fresh pages for every big output
    -- ZipNN's "warm" decode of a 47 MB tensor included 11,485 page faults per pass.
    M_MMAP_MAX = 0 serves every block from the heap, M_TRIM_THRESHOLD = INT_MAX keeps the
    heap's freed top; `release_free_heap` still returns the pages before a cold pass.
    False where there is no glibc (the warm figures then include those faults)."""
    lib = glibc()
    if lib is None:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's malloc.h
    return bool(lib.mallopt(m_mmap_max, 0)) and bool(lib.mallopt(m_trim_threshold, 2**31 - 1))


def minor_faults() -> int:
    """Minor page faults of this process so far (fresh pages touched)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def zipnn_run(st, view: memoryview, threads: int) -> dict:
    with warnings.catch_warnings():  # zipnn's import triggers torch.jit deprecation warnings
        warnings.simplefilter("ignore")
        from zipnn import ZipNN

    original = compressed = 0
    enc_s = 0.0
    coded = []  # (tensor, decoder, compressed bytes) of every float tensor
    for t in st.tensors:
        raw = view[t.begin:t.end]
        original += t.nbytes
        dtype = ZIPNN_DTYPES.get(t.dtype)
        if dtype is None:  # e.g. I64 position_ids: stored as is
            compressed += t.nbytes
            continue
        opts = dict(method="HUFFMAN", input_format="byte", bytearray_dtype=dtype, threads=threads)
        encoder = ZipNN(**opts)
        # ZipNN.compress rewrites its input buffer in place (even a `bytes` object),
        # so it gets a fresh copy each time; the copy is not timed.
        work = bytearray(raw)
        t0 = time.perf_counter()
        comp = encoder.compress(work)
        enc_s += time.perf_counter() - t0
        del work
        compressed += len(comp)
        coded.append((t, ZipNN(**opts), comp))

    # Cold, as a loader gets it: every decoded tensor is kept until the end, so no output
    # lands in memory freed by an earlier one, and the heap's free pages (the encode
    # pass's copies) are handed back first. The warm pass below decodes tensor by tensor
    # and drops each output, so glibc hands the next decompress the pages just freed
    # (keep_freed_heap: no output is a fresh mapping): mapped memory, as `mcodec bench`'s
    # reused output buffer is.
    release_free_heap()
    kept = []
    cold_s = 0.0
    for t, decoder, comp in coded:
        t0 = time.perf_counter()
        out = decoder.decompress(comp)
        cold_s += time.perf_counter() - t0
        kept.append(out)
    for (t, _, _), out in zip(coded, kept):
        if out != view[t.begin:t.end]:
            raise RuntimeError(f"round trip differs for tensor {t.name}")
    del kept, out
    # WARM_PASSES passes, the median reported: `mcodec bench` reports the median of its
    # five warm decodes in the same way.
    passes = []
    faults = minor_faults()
    for _ in range(WARM_PASSES):
        dec_s = 0.0
        for t, decoder, comp in coded:
            t0 = time.perf_counter()
            out = decoder.decompress(comp)
            dec_s += time.perf_counter() - t0
            if out != view[t.begin:t.end]:
                raise RuntimeError(f"round trip differs for tensor {t.name}")
            del out
        passes.append(dec_s)
    dec_s = statistics.median(passes)
    faults = (minor_faults() - faults) // WARM_PASSES
    return {"ratio": compressed / original, "encode_mb_s": mb_s(original, enc_s),
            "decode_mb_s": mb_s(original, dec_s), "decode_cold_mb_s": mb_s(original, cold_s),
            "compressed_bytes": compressed, "decode_minflt": faults}


def zstd_run(view: memoryview, file_sha: bytes, threads: int) -> dict:
    import zstandard

    # threads=0 is zstd's single-threaded mode; N > 0 means N worker threads.
    cctx = zstandard.ZstdCompressor(level=3, threads=0 if threads == 1 else threads)
    dctx = zstandard.ZstdDecompressor()
    n = len(view)
    t0 = time.perf_counter()
    comp = cctx.compress(view)
    t1 = time.perf_counter()
    release_free_heap()  # so that the cold output cannot reuse the heap's free pages
    t_cold = time.perf_counter()
    out = dctx.decompress(comp)  # cold: a fresh output allocation
    t2 = time.perf_counter()
    if hashlib.sha256(out).digest() != file_sha:
        raise RuntimeError("round trip differs (sha256)")
    # Warm: decode into a buffer whose pages are already mapped (untimed first touch).
    warm = bytearray(n)
    target = memoryview(warm)
    t3 = time.perf_counter()
    with dctx.stream_reader(comp) as reader:
        got = 0
        while got < n:
            k = reader.readinto(target[got:])
            if k == 0:
                break
            got += k
    t4 = time.perf_counter()
    if got != n or hashlib.sha256(warm).digest() != file_sha:
        raise RuntimeError("warm round trip differs (sha256)")
    return {"ratio": len(comp) / n, "encode_mb_s": mb_s(n, t1 - t0),
            "decode_mb_s": mb_s(n, t4 - t3), "decode_cold_mb_s": mb_s(n, t2 - t_cold),
            "compressed_bytes": len(comp)}


# --------------------------------------------------------------------------- driver

@dataclass
class Case:
    tool: str
    threads: str
    fn: Callable[[], dict] | None  # None: skipped
    error: str | None = None
    runs: list = field(default_factory=list)

    def summary(self) -> dict:
        status = "skipped" if self.fn is None else "failed" if self.error else "ok"
        med = {k: statistics.median(r[k] for r in self.runs) for k in METRICS} if status == "ok" else {}
        return {"tool": self.tool, "threads": self.threads, "status": status,
                "error": self.error, **med, "runs": self.runs}


def bench_file(path: Path, args, thread_counts: list) -> list:
    st = read_header(path)
    view = map_file(path)
    file_sha = sha256_file(path)
    mcodec = args.mcodec if args.mcodec.is_file() else None
    tmp = tempfile.TemporaryDirectory(prefix="mcodec-bench-")

    cases = []
    if mcodec is None:
        cases.append(Case("mcodec", "-", None, error=f"{args.mcodec} not found (cargo build --release)"))
    else:
        for t in thread_counts:
            for level in args.level:
                for simd in args.simd:
                    # "mcodec bench" is the default level on the auto path, the
                    # reference of the peers' rows; the others name what they change.
                    tags = ([f"level={level}"] if level != "default" else []) + (
                        [f"simd={simd}"] if simd != "auto" else [])
                    tool = " ".join(["mcodec bench", *tags])
                    cases.append(Case(tool, str(t), lambda t=t, simd=simd, level=level:
                                      mcodec_bench(mcodec, path, t, args.timeout, simd, level)))
        cases.append(Case("mcodec pack/unpack", "default",
                          lambda: mcodec_pack_unpack(mcodec, path, file_sha, Path(tmp.name), args.timeout)))
    for t in thread_counts:
        cases.append(Case("zipnn", str(t), lambda t=t: zipnn_run(st, view, t)))
    for t in thread_counts:
        cases.append(Case("zstd -3", str(t), lambda t=t: zstd_run(view, file_sha, t)))

    # Warm-up rounds (page cache, first-touch page faults, lazy init) run every case
    # but are not recorded; cases are interleaved so slow drifts hit all tools alike.
    with tmp:
        for rep in range(-args.warmup, args.repeats):
            for c in cases:
                if c.fn is None or c.error:
                    continue
                label = "warm-up" if rep < 0 else f"rep {rep + 1}/{args.repeats}"
                log(f"[{path.name}] {label}: {c.tool} threads={c.threads}")
                try:
                    result = c.fn()
                    if rep >= 0:
                        c.runs.append(result)
                except Exception as e:  # a failing tool is reported, not fatal
                    c.error = f"{type(e).__name__}: {e}"
                    log(f"  failed: {c.error}")

    common = {"file": path.name, "file_bytes": path.stat().st_size, "tensor_bytes": st.data_bytes}
    return [common | c.summary() for c in cases]


def machine_info() -> dict:
    cpu = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "cpu family", "model") and key.strip() not in cpu:
                cpu[key.strip()] = value.strip()
    with open("/proc/meminfo") as f:
        mem_kib = int(next(l for l in f if l.startswith("MemTotal")).split()[1])
    return {"cpu": cpu.get("model name", platform.processor()),
            "cpu_family": cpu.get("cpu family"), "cpu_model": cpu.get("model"),
            "logical_cpus": os.cpu_count(), "usable_cpus": CORES,
            "mem_gib": round(mem_kib / 2**20, 1), "kernel": platform.release(),
            "python": platform.python_version(), "loadavg_1min_at_start": os.getloadavg()[0]}


def tool_versions(mcodec: Path) -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    try:
        out["mcodec"] = run_cmd([mcodec, "--version"], 30).strip() or "unknown"
    except (OSError, RuntimeError):
        out["mcodec"] = "unavailable"
    for pkg in ("zipnn", "zstandard", "numpy", "torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    try:
        import zstandard
        out["libzstd"] = ".".join(map(str, zstandard.ZSTD_VERSION))
    except ImportError:
        pass
    return out


def fmt(x, spec: str) -> str:
    return "" if x is None else format(x, spec)


def markdown(report: dict) -> str:
    m, v = report["machine"], report["versions"]
    lines = [
        "## mcodec vs ZipNN vs zstd -3",
        "",
        f"- Machine: {m['cpu']} (family {m['cpu_family']}, model {m['cpu_model']}), "
        f"{m['usable_cpus']} usable of {m['logical_cpus']} logical CPUs, {m['mem_gib']} GiB RAM, "
        f"Linux {m['kernel']}",
        f"- Date: {report['date']}; median of {report['repeats']} runs after {report['warmup']} warm-up",
        f"- 1-minute load average at start: {m['loadavg_1min_at_start']:.2f}"
        + (" (**busy machine: numbers are unreliable**)" if m["loadavg_1min_at_start"] > 0.5 else ""),
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        "- ratio % = compressed / original size (lower is better); MB = 1e6 bytes of original data. "
        "mcodec/peer columns: size < 1 means mcodec is smaller, speed > 1 means mcodec is faster "
        "(against `mcodec bench` at the same thread count; on `simd=` rows, that path "
        "against ZipNN).",
        "",
        "| file | tool | threads | ratio % | encode MB/s | decode MB/s warm | decode MB/s cold "
        "| mcodec/peer size | mcodec/peer encode | mcodec/peer decode warm "
        "| mcodec/peer decode cold |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = report["results"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['file']} | {r['tool']} | {r['threads']} | {r['status']}: "
                         f"{r['error']} | | | | | | | |")
            continue
        def same(tool: str, r: dict = r) -> dict | None:
            """The ok row of `tool` for r's file and thread count."""
            return next((x for x in rows if x["file"] == r["file"] and x["tool"] == tool
                         and x["threads"] == r["threads"] and x["status"] == "ok"), None)

        ref, peer = same("mcodec bench"), r
        if r["tool"].startswith("mcodec bench "):
            # A forced path or another level: compared with ZipNN (the peer) at the same
            # thread count.
            ref, peer = r, same("zipnn")
        elif r["tool"] not in ("zipnn", "zstd -3"):
            ref = None
        rel = ["", "", "", ""]
        if ref is not None and peer is not None:
            rel = [f"{ref['ratio'] / peer['ratio']:.2f}",
                   f"{ref['encode_mb_s'] / peer['encode_mb_s']:.2f}x",
                   f"{ref['decode_mb_s'] / peer['decode_mb_s']:.2f}x",
                   f"{ref['decode_cold_mb_s'] / peer['decode_cold_mb_s']:.2f}x"]
        lines.append(f"| {r['file']} | {r['tool']} | {r['threads']} | {fmt(100 * r['ratio'], '.2f')} "
                     f"| {fmt(r['encode_mb_s'], ',.0f')} | {fmt(r['decode_mb_s'], ',.0f')} "
                     f"| {fmt(r['decode_cold_mb_s'], ',.0f')} | "
                     + " | ".join(rel) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", type=Path,
                    help="safetensors files (default: benches/data/*.safetensors)")
    ap.add_argument("--repeats", "-r", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="unrecorded rounds before the timed ones")
    ap.add_argument("--mcodec", type=Path, default=REPO / "target/release/mcodec")
    ap.add_argument("--timeout", type=float, default=3600, help="per mcodec command, seconds")
    ap.add_argument("--json-out", type=Path, default=BENCH_DIR / "data/compare.json")
    ap.add_argument("--threads", default="1,all",
                    help="comma-separated thread counts; 'all' = every usable core (default 1,all)")
    ap.add_argument("--simd", default="auto",
                    help="comma-separated MCODEC_SIMD paths for `mcodec bench` rows, e.g. "
                         "auto,avx512,avx2,scalar (default auto)")
    ap.add_argument("--level", default="default",
                    help="comma-separated `mcodec bench --level` values for `mcodec bench` rows, "
                         "e.g. default,fast (default: default)")
    args = ap.parse_args()
    args.level = [p.strip() for p in args.level.split(",") if p.strip()]
    if not args.level or any(p not in ("fast", "default", "max") for p in args.level):
        ap.error("--level takes fast, default, max")
    args.simd = [p.strip() for p in args.simd.split(",") if p.strip()]
    if not args.simd or any(p not in ("auto", "avx512", "avx2", "scalar") for p in args.simd):
        ap.error("--simd takes auto, avx512, avx2, scalar")
    try:
        thread_counts = sorted({CORES if t.strip() == "all" else int(t) for t in args.threads.split(",")})
    except ValueError:
        ap.error("--threads takes positive integers or 'all'")
    if not thread_counts or thread_counts[0] < 1:
        ap.error("--threads takes positive integers or 'all'")
    if args.repeats < 1 or args.warmup < 0:
        ap.error("need --repeats >= 1 and --warmup >= 0")

    files = args.files or sorted((BENCH_DIR / "data").glob("*.safetensors"))
    if not files:
        sys.exit("no input files: run python3 benches/prepare_data.py first")
    if not args.mcodec.is_file():
        log(f"NOTE: {args.mcodec} not found, skipping mcodec (build it with cargo build --release)")

    heap_kept = keep_freed_heap()
    if not heap_kept:
        log("NOTE: not glibc: ZipNN's warm decode may include fresh-page faults")
    report = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "peer_heap_kept": heap_kept,
        "machine": machine_info(),
        "versions": tool_versions(args.mcodec),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "results": [row for f in files for row in bench_file(f, args, thread_counts)],
    }
    print(markdown(report))
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(report, indent=1) + "\n")
    log(f"raw results: {args.json_out}")


if __name__ == "__main__":
    main()
