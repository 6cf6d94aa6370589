#!/usr/bin/env bash
# Run ON the GPU machine (NVIDIA H200, driver 580 = CUDA 13.0, nvcc 13.0, PyTorch, no
# internet, no Rust), from the repository root. Through the device tool, one call:
#
#   run(command="bash gpu-decode/run-on-gpu.sh", carry=["gpu-decode/prebuilt"], timeout_s=600)
#
# gpu-decode/prebuilt/ is made beforehand on a machine with cargo by
# gpu-decode/build-for-gpu.sh (the binaries are x86-64 Linux, glibc ≥ 2.36). Where cargo
# exists, the script builds and uses target/release instead.
#
# Steps (argument: quick | synthetic | all, default all):
#   quick:     test-gpu (tests/decode gpu::, GPU decode vs CPU decoder, bit for bit: fixtures, generated
#              multi-chunk tensors of every float dtype, corrupt-chunk report, MiniLM),
#              mcodec gpu-bench on MiniLM (default 2^18-element chunks, and repacked
#              with 2^14-element chunks: one warp per chunk), the inference example
#   synthetic: the 4.17 GB synthetic LLM-shaped BF16 model of BENCHMARKS.md
#              (benches/prepare_data.py, seed 0), packed with 16 threads, then gpu-bench
#              and the inference example on it
# Results: $OUT/summary.txt (rc and seconds of every step, GPU and library versions) and
# one log per step in $OUT (default /tmp/mcodec-gpu-out).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
OUT=${OUT:-/tmp/mcodec-gpu-out}
mkdir -p "$OUT"
what=${1:-all}
summary=$OUT/summary.txt
: > "$summary"
say() { echo "$*" | tee -a "$summary"; }
failed=0
step() { # name command...: output to $OUT/name.log; rc and seconds to the summary
    local name=$1
    shift
    local t0 t1 rc
    t0=$(date +%s.%N)
    "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    say "step $name: rc=$rc, $(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }") s"
    tail -n 60 "$OUT/$name.log"
    [ "$rc" = 0 ] || failed=1
    return 0
}

say "== machine"
say "$(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 || echo no nvidia-smi)"
say "$(nvcc --version 2>/dev/null | tail -n 1)"

# NVRTC and cuBLAS of the driver's CUDA version. cudarc (built for 12.8 bindings) looks
# for libnvrtc.so / libcublas.so before versioned names, so link the chosen ones under
# those names in a folder put first on the library path. The CUDA toolkit's come first:
# NVRTC must not be newer than the driver (PTX ISA 9.0 for CUDA 13.0).
pick() {
    local d f
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
        $(python3 -c 'import glob, site; print(" ".join(g for s in site.getsitepackages() for g in glob.glob(s + "/nvidia/*/lib")))' 2>/dev/null) \
        /usr/lib/x86_64-linux-gnu "$root"/target/nvrtc-wheel/nvidia/*/lib; do
        f=$(ls "$d"/$1 2>/dev/null | sort -V | tail -n 1)
        if [ -n "$f" ]; then
            echo "$f"
            return
        fi
    done
}
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
if command -v cargo > /dev/null; then
    say "cargo found: building"
    cargo build --release -p mcodec-cli -p mcodec-gpu --bins --examples > "$OUT/build.log" 2>&1 || failed=1
    MCODEC=$root/target/release/mcodec
    INFER=$root/target/release/examples/infer
    REPACK=$root/target/release/examples/repack
    TEST_GPU=(cargo test --release -p mcodec-gpu --test decode -- gpu::)
else
    MCODEC=$bin/mcodec
    INFER=$bin/infer
    REPACK=$bin/repack
    TEST_GPU=("$bin/test-decode" gpu::)
    for f in "$MCODEC" "$INFER" "$REPACK" "$bin/test-decode"; do
        [ -x "$f" ] || { say "missing $f: run gpu-decode/build-for-gpu.sh where cargo is, and carry gpu-decode/prebuilt"; exit 1; }
    done
fi
minilm=$bin/minilm-bf16.mcz
export MCODEC_GOLDEN_DIR=$root/fixtures/golden
[ -f "$minilm" ] && export MCODEC_MINILM_MCZ=$minilm

if [ "$what" = quick ] || [ "$what" = all ]; then
    say "== quick"
    step test-gpu "${TEST_GPU[@]}" --nocapture --test-threads 1
    if [ -f "$minilm" ]; then
        step minilm-bench "$MCODEC" gpu-bench "$minilm" --iters 50
        step minilm-infer "$INFER" "$minilm" --iters 10
        small=$(mktemp -d)
        step minilm14-bench bash -c "
            set -e
            '$MCODEC' unpack -q -f '$minilm' -o '$small/minilm.safetensors'
            '$REPACK' '$small/minilm.safetensors' '$small/minilm-c14.mcz' 14
            '$MCODEC' gpu-bench '$small/minilm-c14.mcz' --iters 50"
    else
        say "no $minilm: MiniLM steps skipped"
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
    step synthetic-bench "$MCODEC" gpu-bench "$syn/synthetic.mcz" --iters 20
    step synthetic-infer "$INFER" "$syn/synthetic.mcz" --iters 3
fi

say "== done (failed=$failed)"
exit $failed
