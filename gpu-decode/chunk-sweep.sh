#!/usr/bin/env bash
# On the GPU machine after run-on-gpu.sh's build-for-gpu.sh prebuilt/: gpu-bench of the
# 4.17 GB synthetic BF16 model and MiniLM repacked with several chunk lengths (2^N elements).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=gpu-libs.sh
source gpu-decode/gpu-libs.sh
b=$(mktemp -d)
wheel_cli gpu-decode/prebuilt $b/mcodec > /dev/null && unpack_tool gpu-decode/prebuilt repack $b/repack || exit 1
ln -s /usr/local/cuda/lib64/libnvrtc.so.13* $b/libnvrtc.so 2>/dev/null
export LD_LIBRARY_PATH=$b:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
s=/tmp/mcodec-synthetic; mkdir -p $s; st=$s/synthetic-llm-bf16.safetensors
if [ -f $s/synthetic.mcz ]; then $b/mcodec -j 16 unpack -q -f $s/synthetic.mcz -o $st
else python3 -c "import sys; sys.path.insert(0, 'benches'); from pathlib import Path; import prepare_data as p; p.write_synthetic(Path('$s'), 4.0, 0)"; fi
ls -l $s
m=/tmp/minilm.safetensors
$b/mcodec unpack -q -f gpu-decode/prebuilt/minilm-bf16.mcz -o $m
for c in ${CHUNKS:-12 13 14 15 16 17}; do
  echo "== chunk 2^$c"
  $b/repack $m /tmp/m$c.mcz $c && $b/mcodec gpu-bench /tmp/m$c.mcz --iters 20 --launches 10 2>&1 | grep -E '^(decode |D2D|bit-exact|on device)'
  t0=$(date +%s); $b/repack $st /tmp/s$c.mcz $c; echo "repack $(( $(date +%s) - t0 )) s"
  $b/mcodec gpu-bench /tmp/s$c.mcz --iters 10 --launches 5 2>&1 | grep -E '^(decode |D2D|bit-exact|on device)'
  rm -f /tmp/s$c.mcz
done
