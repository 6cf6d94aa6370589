#!/usr/bin/env bash
# Packs and unpacks the sample model shipped in fixtures/, checks the round trip is
# byte-identical and shows what was stored.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p mcodec-cli
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mcodec=target/release/mcodec
sample=fixtures/data/tiny-bf16.safetensors
"$mcodec" pack "$sample" -o "$out/tiny.mcz"
"$mcodec" unpack "$out/tiny.mcz" -o "$out/tiny.safetensors"
"$mcodec" inspect "$out/tiny.mcz" | tail -n 3
sha256sum "$sample" "$out/tiny.safetensors"
cmp "$sample" "$out/tiny.safetensors" && echo "round trip OK: byte-identical"
