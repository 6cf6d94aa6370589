#!/usr/bin/env bash
# The codec on 64-bit ARM: lints and runs `mcodec`'s tests (lib and integration) built for
# aarch64-unknown-linux-gnu, under qemu-user emulation. No vector path exists there, so
# this is the portable code every ARM machine runs (Apple Silicon, Graviton), built and
# checked for real rather than only as x86-64's MCODEC_SIMD=scalar. Emulated: these runs
# check results, never speed.
#
# Installs what it needs when missing and root can: Debian's qemu-user and the aarch64
# cross gcc (linker and libc), and rustup's aarch64 standard library. Where one cannot be
# had it says so and skips (exit 0); a lint or test failure fails.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu

skip() {
    echo "aarch64 tests SKIPPED: $*"
    exit 0
}

if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing qemu-user and the aarch64 cross toolchain (Debian packages)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null ||
            { apt-get update -q >/dev/null && apt-get install -y -q qemu-user \
                gcc-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null; } ||
            skip "could not install qemu-user / gcc-aarch64-linux-gnu"
    else
        skip "qemu-aarch64 or aarch64-linux-gnu-gcc missing, and no root apt-get to install them"
    fi
fi
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    rustup target add "$target" || skip "rustup could not add the $target standard library"
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
echo "== aarch64: clippy (-D warnings) of the codec"
cargo clippy --release -p mcodec --target "$target" --all-targets -- -D warnings
echo "== aarch64: the codec's tests under qemu-user"
cargo test --release -p mcodec --target "$target"
