#!/usr/bin/env bash
# Runs the S3 backend's tests against a fresh single-node Garage (scripts/garage.sh), then
# deletes it.
#
#   bash scripts/s3-tests.sh [PACKAGE:TEST ...] [-- ARGS FOR THE TEST BINARIES]
#
# Default tests: mcodec-store:s3 mcodec-cli:store_s3, i.e.
#   cargo test --release -p mcodec-store --test s3 -p mcodec-cli --test store_s3
# The server lives in target/garage-s3-tests with ports from MCODEC_GARAGE_PORT_BASE (39910
# here, so a dev server started by `garage.sh start` on 39900 can keep running).
set -euo pipefail
cd "$(dirname "$0")/.."

tests=()
test_args=()
while [ $# -gt 0 ]; do
    case $1 in
        --)
            shift
            test_args=("$@")
            break
            ;;
        *:*) tests+=("$1") ;;
        *)
            echo "s3-tests.sh: expected PACKAGE:TEST or --, got '$1'" >&2
            exit 2
            ;;
    esac
    shift
done
[ ${#tests[@]} -gt 0 ] || tests=(mcodec-store:s3 mcodec-cli:store_s3)

cargo_args=()
for t in "${tests[@]}"; do
    cargo_args+=(-p "${t%%:*}" --test "${t#*:}")
done

dir=$PWD/target/garage-s3-tests
export MCODEC_GARAGE_PORT_BASE=${MCODEC_GARAGE_PORT_BASE:-39910}

bash scripts/garage.sh install >/dev/null
bash scripts/garage.sh destroy "$dir"
trap 'bash scripts/garage.sh destroy "$dir"' EXIT
bash scripts/garage.sh start "$dir" >/dev/null
# shellcheck source=/dev/null
source "$dir/env"
export MCODEC_S3_REQUIRED=1

echo "+ cargo test --release ${cargo_args[*]} -- ${test_args[*]}"
cargo test --release "${cargo_args[@]}" -- "${test_args[@]}"
