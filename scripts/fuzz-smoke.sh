#!/usr/bin/env bash
# Runs every cargo-fuzz target for a few seconds (CI's fuzz smoke, docs/FUZZING.md).
# Usage: scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]   (default 20; 0 skips)
# Installs cargo-fuzz when missing. The stable toolchain accepts cargo-fuzz's nightly flags
# under RUSTC_BOOTSTRAP=1. New inputs go to a scratch corpus, never to fuzz/corpus.
# Targets: every [[bin]] of fuzz/Cargo.toml, as `cargo fuzz list` names them.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-20}
if [ "$seconds" = 0 ]; then
    echo "fuzz smoke skipped (0 seconds per target)"
    exit 0
fi
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2
fi
cargo fuzz build
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo fuzz list); do
    mkdir -p "$scratch/$target"
    log="$scratch/$target.log"
    if ! cargo fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=20 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz target $target failed; the input is under fuzz/artifacts/$target/"
        exit 1
    fi
    runs=$(grep -Eo 'number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo '?')
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1 || echo 'cov: ?')
    echo "fuzz $target: $runs runs in ${seconds} s, $cov"
done
