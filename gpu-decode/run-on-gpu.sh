#!/usr/bin/env bash
# Run ON the GPU machine (NVIDIA H200, driver 580 = CUDA 13.0, nvcc 13.0, PyTorch, no
# internet, no Rust), from the repository root. Through the device tool, one call:
#
#   run(command="bash gpu-decode/run-on-gpu.sh", carry=["gpu-decode/prebuilt"], timeout_s=600)
#
# gpu-decode/prebuilt/ is made beforehand on a machine with cargo by
# gpu-decode/build-for-gpu.sh (x86-64 Linux binaries, glibc >= 2.36, and the real MiniLM
# weights packed). Where cargo exists, the script builds and uses target/release instead.
#
# A run that cannot lie: MCODEC_GPU_REQUIRED=1 makes every test, the example and gpu-bench
# fail instead of skipping when the GPU, driver, NVRTC, cuBLAS or data is missing, and a
# step whose log says "skipped" fails too.
#
# Steps (argument: quick | synthetic | all, default all):
#   quick:     test-gpu (tests/decode gpu:: and required::: GPU decode vs CPU decoder, bit
#              for bit, on fixtures, generated multi-chunk tensors of every float dtype and
#              MiniLM; corrupt chunks reported and named; groups tied to their model; a
#              forced skip fails), the Python package's device="cuda" loads
#              (python/tests/cuda_check.py), gpu-bench on MiniLM (default 2^18-element chunks, and
#              repacked with 2^14-element chunks), the inference example
#   synthetic: the 4.17 GB synthetic LLM-shaped BF16 model of BENCHMARKS.md
#              (benches/prepare_data.py, seed 0), packed with 16 threads, then gpu-bench
#              and the inference example on it
#   then, in the time left (non-fatal, reported): compute-sanitizer memcheck and racecheck
#   over the corrupt-chunk test.
# Results, two files in $OUT (default /tmp/mcodec-gpu-out): summary.txt (machine, driver,
# NVRTC, cubin or PTX, rc / seconds / verdict of every step) and logs.txt (every step's
# full output, one after another).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
OUT=${OUT:-/tmp/mcodec-gpu-out}
mkdir -p "$OUT"
what=${1:-all}
budget=${BUDGET_S:-540}
t_start=$(date +%s)
summary=$OUT/summary.txt
logs=$OUT/logs.txt
: > "$summary"
: > "$logs"
export MCODEC_GPU_REQUIRED=1
say() { echo "$*" | tee -a "$summary"; }
failed=0
step_log=$(mktemp)
# step name command...: output appended to logs.txt; rc, seconds and verdict to the
# summary. A step fails on a non-zero rc or when its log says "skipped".
step() {
    local name=$1
    shift
    local t0 t1 rc verdict
    t0=$(date +%s.%N)
    "$@" > "$step_log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    verdict=ok
    if [ "$rc" != 0 ]; then
        verdict=FAILED
    elif grep -qi 'skipped' "$step_log"; then
        verdict="FAILED (log says skipped)"
    fi
    [ "$verdict" = ok ] || failed=1
    { echo "===== step $name: $*"; cat "$step_log"; echo "===== end $name: rc=$rc"; } >> "$logs"
    say "step $name: rc=$rc, $(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }") s, $verdict"
    grep -E '^(device|decode|D2D|bit-exact|CPU-decoded|timing|python cuda)[: ]' "$step_log" | sed 's/^/    /' | tee -a "$summary"
    tail -n 40 "$step_log"
    return 0
}
# note name command...: like step, but never fails the run (reported only).
note() {
    local keep=$failed
    step "$@"
    failed=$keep
}
left() { echo $((budget - ($(date +%s) - t_start))); }

say "== machine"
say "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,compute_cap --format=csv,noheader 2>&1 || echo no nvidia-smi)"
say "nvcc: $(nvcc --version 2>/dev/null | tail -n 1)"

# NVRTC and cuBLAS of the driver's CUDA version. cudarc (built for 12.8 bindings) looks
# for libnvrtc.so / libcublas.so before versioned names, so link the chosen ones under
# those names in a folder put first on the library path. The CUDA toolkit's come first.
# The kernel is loaded as a cubin for the device's own architecture, which a driver of
# the same CUDA major version loads whatever the NVRTC minor; PTX (ISA <= 9.0 for
# CUDA 13.0) is only the fallback.
# shellcheck source=gpu-libs.sh
source "$root/gpu-decode/gpu-libs.sh"
libdir=$(mktemp -d)
nvrtc=$(pick 'libnvrtc.so.*')
cublas=$(pick 'libcublas.so.*')
say "nvrtc: ${nvrtc:-not found}"
say "cublas: ${cublas:-not found}"
extra=$libdir
if [ -n "$nvrtc" ]; then
    ln -s "$nvrtc" "$libdir/libnvrtc.so"
    extra=$extra:$(dirname "$nvrtc")
fi
if [ -n "$cublas" ]; then
    ln -s "$cublas" "$libdir/libcublas.so"
    extra=$extra:$(dirname "$cublas")
fi
export LD_LIBRARY_PATH=$extra${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

bin=$root/gpu-decode/prebuilt
pydir=""
if command -v cargo > /dev/null; then
    say "cargo found: building"
    step build cargo build --release -p mcodec-cli -p mcodec-gpu --bins --examples
    MCODEC=$root/target/release/mcodec
    INFER=$root/target/release/examples/infer
    REPACK=$root/target/release/examples/repack
    cargo test --release -p mcodec-gpu --no-run > /dev/null 2>&1
    TEST=$(ls -t "$root"/target/release/deps/decode-* | grep -v '\.d$' | head -n 1)
else
    # build-for-gpu.sh ships the binaries xz'd (the carry limit): unpack them beside.
    bindir=$(mktemp -d)
    for name in infer repack test-decode; do
        unpack_tool "$bin" "$name" "$bindir/$name"
    done
    # The CLI is the wheel's `mcodec` command (the same program, linked into the
    # package): the carry holds the CLI's code once, not twice.
    pydir=$(wheel_cli "$bin" "$bindir/mcodec")
    MCODEC=$bindir/mcodec
    INFER=$bindir/infer
    REPACK=$bindir/repack
    TEST=$bindir/test-decode
    for f in "$MCODEC" "$INFER" "$REPACK" "$TEST"; do
        [ -x "$f" ] || { say "missing $f: run gpu-decode/build-for-gpu.sh where cargo is, and carry gpu-decode/prebuilt"; exit 1; }
    done
    say "mcodec: $("$MCODEC" --version 2>&1) (the wheel's command)"
fi
export MCODEC_INFER_BIN=$INFER
minilm=$bin/minilm-bf16.mcz
export MCODEC_GOLDEN_DIR=$root/fixtures/golden
[ -f "$minilm" ] && export MCODEC_MINILM_MCZ=$minilm

if [ "$what" = quick ] || [ "$what" = all ]; then
    say "== quick"
    step test-gpu "$TEST" gpu:: required:: --nocapture --test-threads 1
    if [ -f "$minilm" ]; then
        step minilm-bench "$MCODEC" gpu-bench "$minilm" --iters 20 --launches 10
        step minilm-infer "$INFER" "$minilm" --iters 10
        small=$(mktemp -d)
        step minilm14-bench bash -c "
            set -e
            '$MCODEC' unpack -q -f '$minilm' -o '$small/minilm.safetensors'
            '$REPACK' '$small/minilm.safetensors' '$small/minilm-c14.mcz' 14
            '$MCODEC' gpu-bench '$small/minilm-c14.mcz' --iters 20 --launches 10"
        # The Python package: its wheel (no dependencies fetched: the machine has torch
        # and numpy) in a private folder, device="cuda" loads checked bit for bit.
        [ -n "$pydir" ] || pydir=$(wheel_cli "$bin" "$(mktemp -d)/mcodec")
        if [ -n "$pydir" ]; then
            step python-cuda env PYTHONPATH="$pydir" python3 "$root/python/tests/cuda_check.py" "$minilm"
        else
            say "step python-cuda: FAILED (no wheel in $bin/wheel: run gpu-decode/build-for-gpu.sh)"
            failed=1
        fi
    else
        say "step minilm: FAILED (no $minilm: run gpu-decode/build-for-gpu.sh)"
        failed=1
    fi
fi

if [ "$what" = synthetic ] || [ "$what" = all ]; then
    say "== synthetic 4 GB"
    syn=${SYNTHETIC_DIR:-/tmp/mcodec-synthetic}
    mkdir -p "$syn"
    st=$syn/synthetic-llm-bf16.safetensors
    if [ ! -f "$syn/synthetic.mcz" ]; then
        step synthetic-make bash -c "
            set -e
            python3 -c 'import sys; sys.path.insert(0, \"benches\"); from pathlib import Path; import prepare_data as p; p.write_synthetic(Path(\"$syn\"), 4.0, 0)'
            '$MCODEC' -j 16 pack -q -f '$st' -o '$syn/synthetic.mcz'
            ls -l '$syn'
            rm -f '$st'"
    fi
    step synthetic-bench "$MCODEC" gpu-bench "$syn/synthetic.mcz" --iters 10 --launches 5
    step synthetic-infer "$INFER" "$syn/synthetic.mcz" --iters 3
fi

say "== compute-sanitizer over the corrupt-chunk test (non-fatal; $(left) s of $budget left)"
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [ -z "$sanitizer" ]; then
    say "compute-sanitizer: not found (not run)"
else
    for tool in memcheck racecheck; do
        limit=$(( $(left) - 10 ))
        [ "$limit" -gt 150 ] && limit=150
        if [ "$limit" -lt 20 ]; then
            say "sanitizer $tool: not run, $(left) s left"
            continue
        fi
        note "sanitizer-$tool" timeout "$limit" "$sanitizer" --tool "$tool" --error-exitcode 9 \
            "$TEST" gpu::gpu_reports_corrupt_chunks --exact --nocapture
        grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|Program hit' "$step_log" | head -n 5 | sed 's/^/    /' | tee -a "$summary"
    done
fi

say "== done in $(( $(date +%s) - t_start )) s (failed=$failed)"
rm -f "$step_log"
exit $failed
