#!/usr/bin/env bash
# Every test: the Rust workspace, then the Python package (scripts/python-tests.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --release
bash scripts/python-tests.sh
