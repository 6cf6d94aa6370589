#!/usr/bin/env bash
# Run HERE (a machine with cargo): builds what gpu-decode/run-on-gpu.sh needs on a GPU
# machine without Rust, into gpu-decode/prebuilt/ (git-ignored, ~40 MB):
#   mcodec            the CLI (gpu-bench, pack)
#   infer             the inference example
#   repack            packs with a chosen chunk length (GPU-friendly short chunks)
#   test-decode       gpu-decode/tests/decode: gpu:: (GPU vs CPU decoder, bit for bit),
#                     mirror:: (the CPU mirror) and nvrtc:: tests
#   minilm-bf16.mcz   real MiniLM weights packed with default settings (if the bench data
#                     is at /work/main/benches/data or $MINILM)
# Then, from the session whose checkout holds this branch, one device call:
#   run(command="bash gpu-decode/run-on-gpu.sh", carry=["gpu-decode/prebuilt"], timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/.."
out=gpu-decode/prebuilt
minilm=${MINILM:-/work/main/benches/data/minilm-bf16.safetensors}
rm -rf "$out"
mkdir -p "$out"
nice -n 10 cargo build --release -p mcodec-cli -p mcodec-gpu --bins --examples
cp target/release/mcodec target/release/examples/infer target/release/examples/repack "$out/"
nice -n 10 cargo test --release -p mcodec-gpu --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, shutil, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "decode":
        shutil.copy(m["executable"], sys.argv[1] + "/test-decode")
' "$out"
strip "$out"/mcodec "$out"/infer "$out"/repack "$out"/test-decode
if [ -f "$minilm" ]; then
    "$out/mcodec" pack -q -f "$minilm" -o "$out/minilm-bf16.mcz"
else
    echo "no MiniLM at $minilm: the GPU run will skip it"
fi
ls -l "$out"
du -sh "$out"
