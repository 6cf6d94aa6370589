#!/usr/bin/env bash
# Run ON the GPU machine, from the repository root: correctness of this branch's build,
# then an A/B of kernel decode throughput in the same run. One device call:
#
#   run(command="bash gpu-decode/ab-on-gpu.sh",
#       carry=["gpu-decode/prebuilt", "gpu-decode/prebuilt-base"], timeout_s=330)
#
# gpu-decode/prebuilt/       this branch's build-for-gpu.sh output (new)
# gpu-decode/prebuilt-base/  the baseline's CLI: main's gpu-decode/prebuilt/wheel/ (or the
#                            mcodec.gz of builds before the wheel carried the CLI)
#
# Steps (≈ 190–250 s on an H200 with 16 cores; rounds and ncu stop at AB_BUDGET_S = 270 s):
#  1. `run-on-gpu.sh quick` with the new binaries: GPU decode bit-identical to the CPU
#     decoder (tests), MiniLM benches, the Python package on cuda, compute-sanitizer
#     memcheck/racecheck over the corrupt-chunk test. Its summary/logs go to $OUT/quick/.
#  2. The 4.17 GB synthetic BF16 model (benches/prepare_data.py, seed 0, as run-on-gpu.sh
#     makes it), packed once with the baseline CLI (-j 16; the file format is unchanged).
#  3. Rounds (AB_ROUNDS, default 3), each running in turn: base, new (kernel default:
#     prefetch into L1), new with MCODEC_GPU_PREFETCH=2 (prefetch into L2 only), on MiniLM
#     (default 2^18-element chunks), MiniLM repacked with 2^14-element chunks, and the
#     synthetic model: `mcodec gpu-bench` (decode GB/s, D2D copy, bit-exact).
#  4. If time is left, one ncu pass (warp states, memory) over a new synthetic launch.
# $OUT: quick/summary.txt, quick/logs.txt, ab.txt (every run's lines and the medians),
# ab-logs.txt (full outputs), ncu-new.txt (if run).
# Knobs for a dry run without a GPU: SYNTHETIC_GB (default 4.0), AB_ROUNDS, AB_BUDGET_S.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
OUT=${OUT:-/tmp/mcodec-ab-out}
mkdir -p "$OUT/quick"
t_start=$(date +%s)
budget=${AB_BUDGET_S:-270}
left() { echo $((budget - ($(date +%s) - t_start))); }
ab=$OUT/ab.txt
abl=$OUT/ab-logs.txt
: > "$ab"
: > "$abl"
say() { echo "$*" | tee -a "$ab"; }

say "== 1. correctness: run-on-gpu.sh quick (new binaries)"
OUT=$OUT/quick BUDGET_S=${QUICK_BUDGET_S:-110} bash gpu-decode/run-on-gpu.sh quick > "$OUT/quick/stdout.txt" 2>&1
quick_rc=$?
rm -f "$OUT/quick/stdout.txt"
grep -E '^(step|    (device|decode|bit-exact|python cuda|=====))' "$OUT/quick/summary.txt" | tee -a "$ab"
say "quick: rc=$quick_rc ($( [ $quick_rc = 0 ] && echo ok || echo FAILED))"

# Libraries as run-on-gpu.sh picks them: NVRTC of the driver's CUDA first, linked under
# the unversioned name cudarc looks for.
# shellcheck source=gpu-libs.sh
source "$root/gpu-decode/gpu-libs.sh"
b=$(mktemp -d)
nvrtc=$(pick 'libnvrtc.so.*')
if [ -n "$nvrtc" ]; then
    ln -s "$nvrtc" "$b/libnvrtc.so"
    export LD_LIBRARY_PATH=$b:$(dirname "$nvrtc")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
say "nvrtc: ${nvrtc:-not found}"
export MCODEC_GPU_REQUIRED=1
wheel_cli gpu-decode/prebuilt-base "$b/base" > /dev/null || say "FAILED: no baseline CLI in gpu-decode/prebuilt-base (wheel/mcodec-*.whl.xz, or mcodec.gz)"
wheel_cli gpu-decode/prebuilt "$b/new" > /dev/null || say "FAILED: no CLI in gpu-decode/prebuilt (run build-for-gpu.sh)"
unpack_tool gpu-decode/prebuilt repack "$b/repack" || say "FAILED: no repack in gpu-decode/prebuilt"
say "base: $("$b/base" --version 2>&1), new: $("$b/new" --version 2>&1)"

say "== 2. models"
data=$(mktemp -d)
minilm=gpu-decode/prebuilt/minilm-bf16.mcz
"$b/new" unpack -q -f "$minilm" -o "$data/minilm.safetensors" >> "$abl" 2>&1 &&
    "$b/repack" "$data/minilm.safetensors" "$data/minilm-c14.mcz" 14 >> "$abl" 2>&1 ||
    say "FAILED: MiniLM repack at 2^14"
syn=${SYNTHETIC_DIR:-/tmp/mcodec-synthetic}
mkdir -p "$syn"
t0=$(date +%s)
if [ ! -f "$syn/synthetic.mcz" ]; then
    python3 -c "import sys; sys.path.insert(0, 'benches'); from pathlib import Path; import prepare_data as p; p.write_synthetic(Path('$syn'), ${SYNTHETIC_GB:-4.0}, 0)" >> "$abl" 2>&1 &&
        "$b/base" -j 16 pack -q -f "$syn/synthetic-llm-bf16.safetensors" -o "$syn/synthetic.mcz" >> "$abl" 2>&1 ||
        say "FAILED: synthetic model"
    rm -f "$syn/synthetic-llm-bf16.safetensors"
fi
say "synthetic: $(stat -c %s "$syn/synthetic.mcz" 2>/dev/null || echo missing) bytes packed ($(( $(date +%s) - t0 )) s); $(left) s left"

say "== 3. A/B: gpu-bench, base / new (L1 prefetch) / new with MCODEC_GPU_PREFETCH=2 (L2), in turn"
res=$OUT/.ab-results
: > "$res"
bench() { # variant model file iters launches
    local v=$1 m=$2 f=$3 log
    log=$(mktemp)
    case $v in
        base) "$b/base" gpu-bench "$f" --iters "$4" --launches "$5" > "$log" 2>&1 ;;
        new) env -u MCODEC_GPU_PREFETCH "$b/new" gpu-bench "$f" --iters "$4" --launches "$5" > "$log" 2>&1 ;;
        new-l2) MCODEC_GPU_PREFETCH=2 "$b/new" gpu-bench "$f" --iters "$4" --launches "$5" > "$log" 2>&1 ;;
    esac
    local rc=$? gbs exact
    { echo "===== $v $m rc=$rc"; cat "$log"; } >> "$abl"
    gbs=$(awk '/^decode /{print $2; exit}' "$log")
    exact=$(awk '/^bit-exact/{sub(/:$/, "", $2); print $2; exit}' "$log")
    say "$(printf '%-7s %-9s rc=%s decode %s GB/s, bit-exact %s; %s' "$v" "$m" "$rc" "${gbs:-?}" "${exact:-?}" "$(grep -m1 '^device' "$log" | sed 's/^device *//')")"
    echo "$v $m ${gbs:-nan} ${exact:-no}" >> "$res"
    rm -f "$log"
}
rounds=${AB_ROUNDS:-3}
for r in $(seq 1 "$rounds"); do
    if [ "$(left)" -lt 40 ]; then
        say "round $r: not run, $(left) s left"
        break
    fi
    say "-- round $r ($(left) s left)"
    for v in base new new-l2; do
        bench "$v" minilm "$minilm" 20 10
        bench "$v" minilm14 "$data/minilm-c14.mcz" 20 10
        bench "$v" synthetic "$syn/synthetic.mcz" 10 5
    done
done
say "-- medians of decode GB/s (runs; all bit-exact?)"
python3 - "$res" <<'PY' | tee -a "$ab"
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
models = ["minilm", "minilm14", "synthetic"]
variants = ["base", "new", "new-l2"]
for m in models:
    med = {}
    for v in variants:
        xs = [float(r[2]) for r in rows if r[0] == v and r[1] == m and r[2] != "nan"]
        ok = all(r[3] == "yes" for r in rows if r[0] == v and r[1] == m)
        n = sum(1 for r in rows if r[0] == v and r[1] == m)
        med[v] = statistics.median(xs) if xs else float("nan")
        print(f"{m:9s} {v:7s} median {med[v]:8.1f} GB/s of {len(xs)}/{n} runs, bit-exact {'yes' if ok and n else 'NO'}")
    if med["base"] == med["base"] and med["base"] > 0:
        print(f"{m:9s} new/base {med['new'] / med['base']:.2f}, new-l2/base {med['new-l2'] / med['base']:.2f}")
PY
rm -f "$res"

ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || true)
if [ -n "$ncu" ] && [ "$(left)" -gt 60 ]; then
    say "== 4. ncu of one new synthetic launch ($(left) s left)"
    timeout $(( $(left) - 15 )) "$ncu" --kernel-name mcz_decode --launch-skip 0 --launch-count 1 \
        --section SpeedOfLight --section WarpStateStats --section MemoryWorkloadAnalysis \
        --section Occupancy --section LaunchStats --section SourceCounters \
        "$b/new" gpu-bench "$syn/synthetic.mcz" --iters 1 --launches 1 > "$OUT/ncu-new.txt" 2>&1
    say "ncu: rc=$? ($(wc -l < "$OUT/ncu-new.txt") lines in ncu-new.txt)"
else
    say "== 4. ncu: not run (${ncu:-no ncu}; $(left) s left)"
fi
say "== done in $(( $(date +%s) - t_start )) s"
exit $quick_rc
