#!/usr/bin/env bash
# Every test: the Rust workspace, then the Python package (scripts/python-tests.sh).
#
# libtest hides the output of a passing test, so a Rust test that skips (no GPU, no S3
# server, no bench data) also logs itself to $MCODEC_SKIP_LOG (mcodec_fixtures::skip);
# the list is printed after the Rust tests, pass or fail. pytest lists its own (-rs).
set -euo pipefail
cd "$(dirname "$0")/.."

skip_log=$(mktemp)
trap 'rm -f "$skip_log"' EXIT
# The Python environment first: the GPU decoder's SASS test uses its nvdisasm (triton).
bash scripts/python-env.sh
rust=0
MCODEC_SKIP_LOG=$skip_log cargo test --workspace --release || rust=$?
if [ -s "$skip_log" ]; then
    echo "== Rust tests that skipped ($(wc -l <"$skip_log")), and why:"
    sort "$skip_log" | sed 's/^/    /'
else
    echo "== Rust tests that skipped: none"
fi
[ "$rust" -eq 0 ] || exit "$rust"
bash scripts/python-tests.sh
