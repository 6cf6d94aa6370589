#!/usr/bin/env python3
"""SASS instructions per 32 elements of the kernel's decode loops, per layout (no GPU needed).

Compiles gpu-decode/kernels/mcz_decode.cu with NVRTC to a cubin for sm_90, one kernel
instance at a time (-DMCZ_ONLY_LAYOUT / -DMCZ_ONLY_MODES: the same decode_chunk<L, MODES>
that the full kernel dispatches to), disassembles it with nvdisasm and walks its loops.
Each instance has up to two innermost loops around the rANS ballot (VOTE.ANY into a
register):

  * the group loop (STAGE_STEPS steps unrolled and a full-group flush per iteration; it
    decodes every chunk but its last m mod 256 elements when the rANS blocks span whole
    groups, i.e. all of a default-encoded tensor but its ragged end): a loop with at least
    STAGE_STEPS ballots. Per 32 elements = the shortest path from its head to its back
    edge through every rANS word load (LDG.U16) and the full-group store / STAGE_STEPS;
  * the step loop (one step per iteration: the rest): a plain step is the shortest path
    through every word load (some lane of 32 renormalises almost every step), a flushing
    step also passes the widest (full-group) store; per 32 elements = (7 * plain + 1 *
    flushing) / 8 (STAGE_STEPS = 8).

Branches taken rarely (table switches, partial-group stores) are off these paths. Code
reached only through BRA.DIV (the compiler's copies for a diverged warp, never run: every
ballot is reached converged) is left out. Then the full kernel is compiled and checked:
no local-memory access (LDL/STL) in any group loop, and its BF16 instance (its own
function: decoders are __noinline__) measured again. The first case (BF16) must stay
within --budget (BF16_BUDGET), alone and in the full kernel, else the exit status is 1.

Predicated instructions count whether or not their predicate holds: they are issued.
Fields whose mode is MODE_ANY (read at run time) take their cheapest arm, so such a count
is a lower bound.

Tools: NVRTC (--nvrtc, $MCODEC_NVRTC, a libnvrtc.so* on LD_LIBRARY_PATH, or
target/nvrtc-wheel) and nvdisasm (--nvdisasm, $MCODEC_NVDISASM, PATH, or the one the PyPI
`triton` wheel ships under triton/backends/nvidia/bin/, found through --python, the
Python test venv ($MCODEC_PY_VENV, else ~/.cache/mcodec/py-venv) or /work/venv). Exit
status 0 with a line starting "skipped:" when a tool is missing.
"""

import argparse
import ctypes
import glob
import heapq
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNEL = ROOT / "gpu-decode" / "kernels" / "mcz_decode.cu"
STAGE_STEPS = 8
ANY = 3
# Issue #15's budget: SASS warp-instructions per 32 elements of the usual BF16 instance
# (the first case), flush included, in the loop that decodes all but a chunk's last
# partial group. The script exits 1 when it is exceeded.
BF16_BUDGET = 45.0

# (name, layout, field modes): the typical instance of each layout first. Modes: 0 packed,
# 1 const, 2 rANS, 3 read at run time (the full kernel's F32 low-byte fields).
CASES = [
    ("BF16 exp rANS, sign+mantissa packed", 0, [2, 0]),
    ("BF16 exp rANS, sign+mantissa rANS", 0, [2, 2]),
    ("F16 exp rANS, sign+mantissa packed", 1, [2, 0]),
    ("F32 exp rANS, rest packed", 2, [2, 0, 0, 0]),
    ("F32 as dispatched (low bytes MODE_ANY)", 2, [2, 0, ANY, ANY]),
    ("F8 rANS", 3, [2]),
    ("BF16 joint: exp+sign rANS, mantissa packed", 4, [2, 0]),
    ("F16 joint: exp+sign rANS, mantissa packed", 5, [2, 0]),
    ("F32 joint as dispatched (low bytes MODE_ANY)", 6, [2, 0, ANY, ANY]),
]
# Instances with a step loop only: F32 tensors with raw blocks run the MODES_ANY instance
# (FLAG_F32_RAW), the one F32 instance with the raw step. Its step loop must not touch
# local memory either.
STEP_ONLY_CASES = [
    ("F32 with raw blocks (MODES_ANY)", 2, [ANY, ANY, ANY, ANY]),
    ("F32 joint with raw blocks (MODES_ANY)", 6, [ANY, ANY, ANY, ANY]),
]


def modes_word(modes):
    word = 0
    for f in range(4):
        m = modes[f] if f < len(modes) else 0
        word |= m << (2 * f)
    return word


def find_nvrtc(arg):
    if arg:
        return arg
    if os.environ.get("MCODEC_NVRTC"):
        return os.environ["MCODEC_NVRTC"]
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    dirs += glob.glob(str(ROOT / "target" / "nvrtc-wheel" / "nvidia" / "*" / "lib"))
    for d in dirs:
        libs = sorted(glob.glob(os.path.join(d, "libnvrtc.so*")))
        libs = [lib for lib in libs if "builtins" not in lib and "alt" not in lib]
        if libs:
            return libs[0]
    return None


def find_nvdisasm(arg, python):
    if arg:
        return arg
    if os.environ.get("MCODEC_NVDISASM"):
        return os.environ["MCODEC_NVDISASM"]
    found = shutil.which("nvdisasm")
    if found:
        return found
    venv = os.environ.get("MCODEC_PY_VENV") or os.path.join(
        os.environ.get("MCODEC_CACHE") or os.path.expanduser("~/.cache/mcodec"), "py-venv")
    for py in [python, sys.executable, os.path.join(venv, "bin", "python"),
               "/work/venv/bin/python"]:
        if not py or not os.path.exists(py):
            continue
        try:
            out = subprocess.run(
                [py, "-c", "import os, triton; print(os.path.dirname(triton.__file__))"],
                capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            continue
        cand = os.path.join(out.stdout.strip(), "backends", "nvidia", "bin", "nvdisasm")
        if out.returncode == 0 and os.path.exists(cand):
            return cand
    return None


def compile_cubin(lib, defines, arch="sm_90"):
    nvrtc = ctypes.CDLL(lib)
    prog = ctypes.c_void_p()
    src = KERNEL.read_bytes()
    if nvrtc.nvrtcCreateProgram(ctypes.byref(prog), src, b"mcz_decode.cu", 0, None, None):
        raise RuntimeError("nvrtcCreateProgram failed")
    opts = [f"--gpu-architecture={arch}", "--std=c++17", "--generate-line-info",
            "--ptxas-options=-v"] + [f"-D{d}" for d in defines]
    arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    rc = nvrtc.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    if rc:
        raise RuntimeError(f"NVRTC failed ({rc}): {log.value.decode(errors='replace')}")
    nvrtc.nvrtcGetCUBINSize(prog, ctypes.byref(size))
    cubin = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetCUBIN(prog, cubin)
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    return cubin.raw, log.value.decode(errors="replace")


def nvrtc_version(lib):
    nvrtc = ctypes.CDLL(lib)
    major, minor = ctypes.c_int(), ctypes.c_int()
    nvrtc.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return f"{major.value}.{minor.value}"


INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")
LABEL = re.compile(r"^(\.L_x_\d+|\$[^:\s]+):")
TARGET = re.compile(r"`\((\.L_x_\d+)\)")


class Instr:
    def __init__(self, addr, pred, op, args):
        self.addr, self.pred, self.op, self.args = addr, pred, op, args

    def is_branch(self):
        return self.op in ("BRA", "BRA.DIV")

    def store_width(self):
        if not re.match(r"^(ST|STG)\.", self.op) and self.op not in ("ST", "STG"):
            return 0
        for w, bits in ((".128", 128), (".64", 64), (".U16", 16), (".S16", 16), (".U8", 8),
                        (".S8", 8)):
            if w in self.op:
                return bits
        return 32


def parse(sass):
    instrs, labels = [], {}
    for line in sass.splitlines():
        m = LABEL.match(line.strip())
        if m:
            labels[m.group(1)] = len(instrs)
            continue
        m = INSTR.search(line)
        if m:
            instrs.append(Instr(int(m.group(1), 16), (m.group(2) or "").strip(), m.group(3),
                                m.group(4)))
    return instrs, labels


def blocks_of(instrs, labels):
    """Basic blocks as (start, end) index ranges, and each block's successors."""
    starts = {0} | set(labels.values())
    for i, ins in enumerate(instrs):
        if ins.is_branch() or ins.op == "EXIT" or ins.op.startswith("RET"):
            starts.add(i + 1)
    starts = sorted(s for s in starts if s < len(instrs))
    ranges = [(s, (starts[k + 1] if k + 1 < len(starts) else len(instrs)))
              for k, s in enumerate(starts)]
    block_at = {s: b for b, (s, _) in enumerate(ranges)}
    succ = []
    for b, (s, e) in enumerate(ranges):
        last = instrs[e - 1]
        out = []
        conditional = bool(last.pred) or re.match(r"^\s*!?U?P\d", last.args or "")
        if last.is_branch():
            t = TARGET.search(last.args)
            if t:
                out.append(block_at[labels[t.group(1)]])
            if (conditional or last.op == "BRA.DIV") and b + 1 < len(ranges):
                out.append(b + 1)
        elif (last.op == "EXIT" or last.op.startswith("RET")) and not last.pred:
            pass
        elif b + 1 < len(ranges):
            out.append(b + 1)
        succ.append(out)
    return ranges, succ


def shortest(ranges, succ, allowed, src, dst):
    """Fewest instructions from the start of block src to the end of block dst."""
    cost = lambda b: ranges[b][1] - ranges[b][0]
    best = {src: cost(src)}
    heap = [(cost(src), src)]
    while heap:
        c, b = heapq.heappop(heap)
        if b == dst:
            return c
        if c > best.get(b, 1 << 30):
            continue
        for n in succ[b]:
            if n in allowed and c + cost(n) < best.get(n, 1 << 30):
                best[n] = c + cost(n)
                heapq.heappush(heap, (best[n], n))
    return None


def is_ballot(ins):
    """`__ballot_sync` (VOTE.ANY into a register; `__any_sync` votes into a predicate)."""
    return ins.op.startswith("VOTE.ANY") and ins.args.lstrip().startswith("R")


def decode_loops(sass):
    """The parsed SASS and every innermost loop around a ballot (reached code only)."""
    instrs, labels = parse(sass)
    ranges, succ = blocks_of(instrs, labels)
    block_of = {}
    for b, (s, e) in enumerate(ranges):
        for i in range(s, e):
            block_of[i] = b
    # Blocks reached without taking a BRA.DIV (the compiler's copies of the code for a
    # diverged warp, which the kernel never is at a ballot).
    # Roots: the kernel's entry and every called function (decode_chunk is __noinline__).
    block_at = {s: b for b, (s, _) in enumerate(ranges)}
    reached, todo = set(), [0] + [block_at[i] for name, i in labels.items()
                                  if name.startswith("$") and i in block_at]
    while todo:
        b = todo.pop()
        if b in reached:
            continue
        reached.add(b)
        last = instrs[ranges[b][1] - 1]
        todo += [b + 1] if last.op == "BRA.DIV" else succ[b]
    ballots = [i for i, ins in enumerate(instrs) if is_ballot(ins) and block_of[i] in reached]
    if not ballots:
        raise RuntimeError("no ballot (VOTE.ANY R): no rANS step loop")
    backward = []
    for i, ins in enumerate(instrs):
        t = TARGET.search(ins.args) if ins.op == "BRA" else None
        if t and block_of[i] in reached and labels[t.group(1)] <= i:
            backward.append((labels[t.group(1)], i))
    loops = set()
    for v in ballots:
        around = [(h, i) for h, i in backward if h <= v <= i]
        if not around:
            raise RuntimeError("no loop around a ballot")
        loops.add(min(around, key=lambda hi: hi[1] - hi[0]))
    return instrs, labels, ranges, succ, block_of, reached, sorted(loops)


def function_sass(sass, mangled):
    """The SASS of the one function whose mangled name contains `mangled`."""
    lines = sass.splitlines()
    starts = [i for i, line in enumerate(lines)
              if line.startswith("$") and mangled in line and line.endswith(":")]
    if len(starts) != 1:
        raise RuntimeError(f"{len(starts)} functions named like {mangled}")
    end = next((i for i in range(starts[0] + 1, len(lines))
                if lines[i].startswith("$") or lines[i].strip().startswith(".type")),
               len(lines))
    return "\n".join(lines[starts[0]:end])


def loop_spills(sass):
    """Local-memory accesses (LDL/STL) inside the group loops and inside the step loops,
    and how many loops of each."""
    instrs, _, ranges, _, block_of, reached, loops = decode_loops(sass)
    spills, counts = {"group": 0, "step": 0}, {"group": 0, "step": 0}
    for head, latch in loops:
        inside = [i for i in range(ranges[block_of[head]][0], ranges[block_of[latch]][1])
                  if block_of[i] in reached]
        kind = "group" if sum(is_ballot(instrs[i]) for i in inside) >= STAGE_STEPS else "step"
        counts[kind] += 1
        spills[kind] += sum(instrs[i].op.startswith(("LDL", "STL")) for i in inside)
    return spills, counts


def analyse(sass, group=True):
    """Every innermost loop around a ballot: the group loop (STAGE_STEPS unrolled steps
    and a flush per iteration) and the step loop (one step per iteration; the chunk's
    last partial group, and chunks whose blocks are shorter than a group). `group`: the
    instance must have a group loop (MODES_ANY instances have only the step loop)."""
    instrs, labels, ranges, succ, block_of, reached, loops = decode_loops(sass)
    result = {}
    for loop in loops:
        head_b, latch_b = block_of[loop[0]], block_of[loop[1]]
        allowed = set(range(head_b, latch_b + 1)) & reached
        inside = range(ranges[head_b][0], ranges[latch_b][1])
        word_blocks = sorted({block_of[i] for i in inside
                              if instrs[i].op.startswith("LDG.E.U16")} & allowed)
        widest = max((instrs[i].store_width() for i in inside), default=0)
        store_blocks = sorted({block_of[i] for i in inside
                               if widest and instrs[i].store_width() == widest} & allowed)

        def through(waypoints):
            points = [head_b] + sorted(set(waypoints)) + [latch_b]
            total = 0
            for a, b in zip(points, points[1:]):
                if a == b:
                    continue
                c = shortest(ranges, succ, allowed, a, b)
                if c is None:
                    return None
                total += c - (ranges[a][1] - ranges[a][0])
            return total + (ranges[head_b][1] - ranges[head_b][0])

        n_ballots = sum(1 for i in inside if is_ballot(instrs[i]))
        plain = through(word_blocks)
        # The cheapest path through one of the widest stores (the full-group store; a
        # partial group's element stores are narrower).
        flushing = min((c for c in (through(word_blocks + [sb]) for sb in store_blocks)
                        if c is not None), default=None)
        if plain is None or flushing is None:
            raise RuntimeError(f"no path through the loop at {instrs[loop[0]].addr:#x}")
        if n_ballots >= STAGE_STEPS:
            # The group loop: every iteration decodes STAGE_STEPS steps and flushes.
            kind, per32 = "group", flushing / STAGE_STEPS
        else:
            kind, per32 = "step", (7 * plain + flushing) / STAGE_STEPS
        if kind in result:
            raise RuntimeError(f"two {kind} loops")
        result[kind] = {
            "spills": sum(1 for i in inside if block_of[i] in allowed
                          and instrs[i].op.startswith(("LDL", "STL"))),
            "plain": plain,
            "flushing": flushing,
            "per32": per32,
            "loop": len(inside),
            "ballots": n_ballots,
            "store_bits": widest,
        }
    want = ["group", "step"] if group else ["step"]
    if sorted(result) != want:
        raise RuntimeError(f"expected loops {want}, found {sorted(result)}")
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nvrtc")
    ap.add_argument("--nvdisasm")
    ap.add_argument("--python", help="a Python with the triton wheel (for its nvdisasm)")
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--keep", help="write each instance's SASS into this folder")
    ap.add_argument("--budget", type=float, default=BF16_BUDGET,
                    help="most instructions per 32 elements allowed for the first case (BF16)")
    args = ap.parse_args()
    lib = find_nvrtc(args.nvrtc)
    dis = find_nvdisasm(args.nvdisasm, args.python)
    if not lib:
        print("skipped: no libnvrtc (set MCODEC_NVRTC or LD_LIBRARY_PATH)")
        return 0
    if not dis:
        print("skipped: no nvdisasm (set MCODEC_NVDISASM, or install the triton wheel)")
        return 0
    print(f"NVRTC {nvrtc_version(lib)} ({lib}), {args.arch}, nvdisasm {dis}")
    print("| instance | per 32 elements (group loop) | group iteration (8 steps) | "
          "step loop: plain, flushing, per 32 | registers, spill stores | "
          "spill instructions in the loops |")
    print("|---|---:|---:|---|---|---:|")
    over = None
    with tempfile.TemporaryDirectory() as tmp:

        def instance(layout, modes):
            """SASS of the kernel built for one layout and mode word, with the most
            registers and the most spill stores of its functions (the kernel and each
            decoder: decode_chunk is __noinline__)."""
            cubin, log = compile_cubin(
                lib, [f"MCZ_ONLY_LAYOUT={layout}", f"MCZ_ONLY_MODES={modes_word(modes)}u"],
                args.arch)
            path = os.path.join(tmp, "k.cubin")
            Path(path).write_bytes(cubin)
            sass = subprocess.run([dis, "-c", path], capture_output=True, text=True,
                                  check=True).stdout
            if args.keep:
                Path(args.keep).mkdir(parents=True, exist_ok=True)
                Path(args.keep, f"layout{layout}-modes{modes_word(modes):02x}.sass").write_text(sass)
            regs = max((int(r) for r in re.findall(r"Used (\d+) registers", log)), default=None)
            spill = max((int(s) for s in re.findall(r"(\d+) bytes spill stores", log)),
                        default=None)
            return sass, regs, spill

        for name, layout, modes in CASES:
            sass, regs, spill = instance(layout, modes)
            r = analyse(sass)
            g, st = r["group"], r["step"]
            print(f"| {name} | {g['per32']:.1f} | {g['flushing']} | "
                  f"{st['plain']}, {st['flushing']}, {st['per32']:.1f} | "
                  f"{'?' if regs is None else regs}, {'?' if spill is None else spill} B | "
                  f"{g['spills'] + st['spills']} |")
            if name == CASES[0][0] and g["per32"] > args.budget:
                over = g["per32"]
        for name, layout, modes in STEP_ONLY_CASES:
            sass, regs, spill = instance(layout, modes)
            st = analyse(sass, group=False)["step"]
            print(f"step loop only: {name}: plain {st['plain']}, flushing {st['flushing']}, "
                  f"per 32 {st['per32']:.1f}; registers {'?' if regs is None else regs}, "
                  f"spill stores {'?' if spill is None else spill} B; spill instructions in "
                  f"the loop: {st['spills']}")
            if st["spills"]:
                print(f"FAILED: {name} spills inside its step loop")
                return 1
        # The kernel that runs: every instance behind the dispatch. Its group loops (the
        # hot path) must not touch local memory; the step loops' spills are reported.
        cubin, log = compile_cubin(lib, [], args.arch)
        path = os.path.join(tmp, "k.cubin")
        Path(path).write_bytes(cubin)
        sass = subprocess.run([dis, "-c", path], capture_output=True, text=True,
                              check=True).stdout
        if args.keep:
            Path(args.keep, "full.sass").write_text(sass)
        spills, counts = loop_spills(sass)
        stores = max((int(s) for s in re.findall(r"(\d+) bytes spill stores", log)), default=0)
        print(f"full kernel: spill instructions inside its {counts['group']} group loops: "
              f"{spills['group']}, inside its {counts['step']} step loops: {spills['step']} "
              f"(most spill stores of a function: {stores} B)")
        if spills["group"]:
            print("FAILED: the full kernel spills inside a group loop")
            return 1
        # The first case's decoder as compiled in the full kernel (its own function).
        name, layout, modes = CASES[0]
        g = analyse(function_sass(sass, f"decode_chunkILi{layout}ELj{modes_word(modes)}EE"))
        print(f"full kernel, {name}: {g['group']['per32']:.1f} per 32 elements "
              f"(group loop), step loop {g['step']['per32']:.1f}")
        if g["group"]["per32"] > args.budget:
            over = max(over or 0, g["group"]["per32"])
    if over is not None:
        print(f"FAILED: {CASES[0][0]}: {over:.1f} instructions per 32 elements, "
              f"over the budget of {args.budget:g}")
        return 1
    print(f"budget: {CASES[0][0]} within {args.budget:g} instructions per 32 elements")
    return 0


if __name__ == "__main__":
    sys.exit(main())
