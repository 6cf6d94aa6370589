#!/usr/bin/env bash
# A single-node Garage (S3-compatible object store) on loopback, for the S3 backend's tests.
#
#   bash scripts/garage.sh install          build garage 2.5.0 once into $MCODEC_CACHE (~/.cache/mcodec)
#   bash scripts/garage.sh start   [DIR]    start it (first time: layout, key and bucket), write DIR/env
#   bash scripts/garage.sh stop    [DIR]    SIGTERM, then SIGKILL after 20 s; data kept
#   bash scripts/garage.sh kill    [DIR]    SIGKILL at once (crash tests); data kept
#   bash scripts/garage.sh restart [DIR]    kill + start on the same data
#   bash scripts/garage.sh destroy [DIR]    stop and delete DIR
#   bash scripts/garage.sh status  [DIR]    is it running (exit 0) or not (exit 1)
#
# DIR defaults to target/garage under the repository. After `start`, `source DIR/env` sets
# AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_DEFAULT_REGION,
# AWS_ALLOW_HTTP, MCODEC_S3_TEST_URL=s3://mcodec-test and MCODEC_GARAGE_CTL, the path of an
# executable DIR/ctl that runs this script on the same DIR: `"$MCODEC_GARAGE_CTL" kill`.
#
# Ports (first start only; a restart reuses DIR's config): MCODEC_GARAGE_PORT_BASE (39900)
# gives S3 on base, RPC on base+1, admin on base+3. MCODEC_GARAGE_BIN overrides the binary.
set -euo pipefail

GARAGE_VERSION=2.5.0
BUCKET=mcodec-test
KEY_NAME=mcodec-test
START_TIMEOUT=30

script=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
repo=$(cd "$(dirname "$script")/.." && pwd)
cache=${MCODEC_CACHE:-$HOME/.cache/mcodec}
root=$cache/garage-$GARAGE_VERSION
bin=${MCODEC_GARAGE_BIN:-$root/bin/garage}

die() {
    echo "garage.sh: $*" >&2
    exit 1
}

log() {
    echo "garage.sh: $*" >&2
}

usage() {
    sed -n '2,18p' "$script" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

cmd_install() {
    if [ -x "$root/bin/garage" ]; then
        echo "$root/bin/garage"
        return
    fi
    command -v cargo >/dev/null || die "cargo not found: cannot build garage $GARAGE_VERSION"
    mkdir -p "$cache"
    # One build at a time (parallel jobs sharing $HOME); the loser finds the binary afterwards.
    exec 9>"$root.lock"
    if command -v flock >/dev/null; then
        flock 9
    fi
    if [ ! -x "$root/bin/garage" ]; then
        log "building garage $GARAGE_VERSION into $root (from scratch this takes a while)"
        # Own target dir: keeps it out of the workspace's target and lets an interrupted
        # build resume; removed once the binary is installed.
        cargo install garage --version "$GARAGE_VERSION" --locked --no-default-features \
            --features bundled-libs,sqlite --root "$root" --target-dir "$root.build" >&2 ||
            die "cargo install garage $GARAGE_VERSION failed"
        rm -rf "$root.build"
    fi
    exec 9>&-
    [ -x "$root/bin/garage" ] || die "cargo install finished but $root/bin/garage is missing"
    echo "$root/bin/garage"
}

# Absolute state dir from the optional argument; does not create it.
state_dir() {
    local d=${1:-$repo/target/garage}
    case $d in
        /*) ;;
        *) d=$PWD/$d ;;
    esac
    echo "${d%/}"
}

# Is something accepting TCP connections on 127.0.0.1:$1?
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# HTTP status code of GET $2 on 127.0.0.1:$1 (empty when nothing answers). No curl needed.
http_status() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n" "$2" "$1" >&3
        IFS=" " read -r _ code _ <&3 && echo "$code"
    ' _ "$1" "$2" 2>/dev/null || true
}

# Value of `key = ...` in the config's first section that has it (ports are read back from it).
conf_port() {
    local line
    line=$(grep -E "^$2 *= *\"" "$1/garage.toml" | head -n 1) || die "no $2 in $1/garage.toml"
    line=${line%\"}
    echo "${line##*:}"
}

# Pid of the running server for DIR, or nothing (removes a stale pid file).
running_pid() {
    local dir=$1 pid
    [ -f "$dir/garage.pid" ] || return 0
    pid=$(cat "$dir/garage.pid")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/garage.toml"; then
        echo "$pid"
    else
        rm -f "$dir/garage.pid"
    fi
}

g() {
    "$bin" -c "$dir/garage.toml" "$@"
}

random_hex() {
    head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'
}

write_config() {
    local dir=$1 base=${MCODEC_GARAGE_PORT_BASE:-39900}
    case $base in
        '' | *[!0-9]*) die "MCODEC_GARAGE_PORT_BASE must be a number, got '$base'" ;;
    esac
    [ "$base" -ge 1024 ] && [ "$base" -le 65530 ] || die "MCODEC_GARAGE_PORT_BASE out of range: $base"
    (
        umask 077
        cat >"$dir/garage.toml" <<EOF
# Written by scripts/garage.sh: single node on loopback, for tests only.
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
# Blocks stored as sent, so benchmarks measure mcodec and not zstd inside Garage.
compression_level = "none"

rpc_bind_addr = "127.0.0.1:$((base + 1))"
rpc_public_addr = "127.0.0.1:$((base + 1))"
rpc_secret = "$(random_hex 32)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$base"

[admin]
api_bind_addr = "127.0.0.1:$((base + 3))"
admin_token = "$(random_hex 32)"
EOF
    )
}

# Waits for the RPC side (`garage status`), dies with the log's tail if it does not come up.
wait_rpc() {
    local dir=$1 pid=$2 deadline=$((SECONDS + START_TIMEOUT))
    until g status >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || fail_start "$dir" "garage server exited during start-up"
        [ "$SECONDS" -lt "$deadline" ] || fail_start "$dir" "garage did not answer within ${START_TIMEOUT}s"
        sleep 0.3
    done
}

# Waits until the cluster is healthy (admin /health 200), S3 answers HTTP and the bucket is
# readable through the tables.
wait_ready() {
    local dir=$1 pid=$2 s3 admin deadline=$((SECONDS + START_TIMEOUT))
    s3=$(conf_port "$dir" api_bind_addr)
    admin=$(grep -A3 '^\[admin\]' "$dir/garage.toml" | grep -E '^api_bind_addr' | sed 's/.*:\([0-9]*\)"$/\1/')
    until [ "$(http_status "$admin" /health)" = 200 ] && [ -n "$(http_status "$s3" "/$BUCKET")" ] &&
        g bucket info "$BUCKET" >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || fail_start "$dir" "garage server exited during start-up"
        [ "$SECONDS" -lt "$deadline" ] || fail_start "$dir" "S3 API not ready within ${START_TIMEOUT}s"
        sleep 0.3
    done
}

fail_start() {
    log "$2; last lines of $1/garage.log (colours and backtrace left out):"
    sed -e 's/\x1b\[[0-9;]*m//g' -e '/^ *[0-9]*: /d' -e '/^ *at /d' "$1/garage.log" | tail -n 25 >&2 || true
    exit 1
}

first_setup() {
    local dir=$1 node key_id secret
    node=$(g node id -q 2>/dev/null) || die "garage node id failed"
    node=${node%%@*}
    g layout assign -z dc1 -c 10G "$node" >/dev/null
    g layout apply --version 1 >/dev/null
    g key create "$KEY_NAME" >/dev/null
    g bucket create "$BUCKET" >/dev/null
    g bucket allow --read --write --owner "$BUCKET" --key "$KEY_NAME" >/dev/null
    key_id=$(g key info "$KEY_NAME" --key-id)
    secret=$(g key info "$KEY_NAME" --secret-key)
    [[ $key_id =~ ^GK[0-9a-f]+$ ]] || die "unexpected key id from 'garage key info': '$key_id'"
    [[ $secret =~ ^[0-9a-f]{64}$ ]] || die "unexpected secret from 'garage key info': '$secret'"
    printf '%s\n%s\n' "$key_id" "$secret" >"$dir/key"
}

write_env() {
    local dir=$1 s3 key_id secret
    s3=$(conf_port "$dir" api_bind_addr)
    { read -r key_id && read -r secret; } <"$dir/key"
    {
        echo '#!/usr/bin/env bash'
        # shellcheck disable=SC2016 # "$1" is the wrapper's own argument
        printf 'MCODEC_GARAGE_BIN=%q exec bash %q "$1" %q\n' "$bin" "$script" "$dir"
    } >"$dir/ctl"
    chmod +x "$dir/ctl"
    {
        printf 'export AWS_ENDPOINT_URL=%q\n' "http://127.0.0.1:$s3"
        printf 'export AWS_ACCESS_KEY_ID=%q\n' "$key_id"
        printf 'export AWS_SECRET_ACCESS_KEY=%q\n' "$secret"
        echo 'export AWS_REGION=garage'
        echo 'export AWS_DEFAULT_REGION=garage'
        echo 'export AWS_ALLOW_HTTP=true'
        echo "export MCODEC_S3_TEST_URL=s3://$BUCKET"
        printf 'export MCODEC_GARAGE_CTL=%q\n' "$dir/ctl"
    } >"$dir/env"
}

starting_pid=
starting_dir=
abort_start() {
    if [ -n "$starting_pid" ] && kill -0 "$starting_pid" 2>/dev/null; then
        kill -KILL "$starting_pid" 2>/dev/null || true
        rm -f "$starting_dir/garage.pid"
        log "start failed: server (pid $starting_pid) killed; log in $starting_dir/garage.log"
    fi
}

cmd_start() {
    local dir pid fresh=0 port
    dir=$(state_dir "${1:-}")
    [ -x "$bin" ] || die "no garage binary at $bin: run 'bash scripts/garage.sh install' first"
    mkdir -p "$dir"
    chmod 700 "$dir"
    umask 077 # the config, key and env files hold secrets
    pid=$(running_pid "$dir")
    if [ -n "$pid" ]; then
        log "already running (pid $pid) in $dir"
        wait_ready "$dir" "$pid"
        write_env "$dir"
        echo "$dir/env"
        return
    fi
    if [ ! -f "$dir/initialized" ]; then
        # Nothing there, or a first start that did not finish: begin from scratch.
        rm -rf "${dir:?}/meta" "$dir/data" "$dir/key" "$dir/env" "$dir/ctl" "$dir/garage.toml"
        write_config "$dir"
        fresh=1
    fi
    [ -f "$dir/garage.toml" ] || die "$dir/initialized exists but $dir/garage.toml is missing; run destroy"
    for port in $(grep -oE '127\.0\.0\.1:[0-9]+"' "$dir/garage.toml" | tr -d '"' | cut -d: -f2 | sort -u); do
        if port_open "$port"; then
            die "port 127.0.0.1:$port is already in use (another garage? set MCODEC_GARAGE_PORT_BASE, or 'destroy' $dir)"
        fi
    done
    # A background job of a non-interactive shell ignores SIGINT: a Ctrl-C on the caller
    # leaves the server alone. Output goes to the log only, so no caller's pipe is held open.
    RUST_LOG=${RUST_LOG:-garage=info} "$bin" -c "$dir/garage.toml" server >>"$dir/garage.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$dir/garage.pid"
    # Any failure from here on (die, set -e) takes the half-started server down with it.
    starting_pid=$pid
    starting_dir=$dir
    trap abort_start EXIT
    wait_rpc "$dir" "$pid"
    if [ "$fresh" = 1 ]; then
        first_setup "$dir"
        touch "$dir/initialized"
    fi
    wait_ready "$dir" "$pid"
    write_env "$dir"
    trap - EXIT
    log "running (pid $pid), S3 at http://127.0.0.1:$(conf_port "$dir" api_bind_addr); source $dir/env"
    echo "$dir/env"
}

wait_gone() {
    local pid=$1 tenths=$2
    while kill -0 "$pid" 2>/dev/null && [ "$tenths" -gt 0 ]; do
        sleep 0.1
        tenths=$((tenths - 1))
    done
    ! kill -0 "$pid" 2>/dev/null
}

# Stops the server of DIR ($1): gracefully (SIGTERM, SIGKILL after 20 s) or, with $2 =
# kill, at once. The data is kept.
terminate() {
    local dir pid
    dir=$(state_dir "${1:-}")
    pid=$(running_pid "$dir")
    if [ -z "$pid" ]; then
        log "not running in $dir"
        return
    fi
    if [ "${2:-}" != kill ]; then
        kill -TERM "$pid" 2>/dev/null || true
        if wait_gone "$pid" 200; then
            rm -f "$dir/garage.pid"
            log "stopped (pid $pid)"
            return
        fi
        log "no exit 20 s after SIGTERM: SIGKILL"
    fi
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 50 || die "pid $pid survives SIGKILL"
    rm -f "$dir/garage.pid"
    log "killed (pid $pid)"
}

cmd_stop() {
    terminate "${1:-}"
}

cmd_kill() {
    terminate "${1:-}" kill
}

cmd_destroy() {
    local dir
    dir=$(state_dir "${1:-}")
    cmd_stop "$dir"
    rm -rf "$dir"
}

cmd_status() {
    local dir pid
    dir=$(state_dir "${1:-}")
    pid=$(running_pid "$dir")
    if [ -n "$pid" ]; then
        echo "running (pid $pid) in $dir"
    else
        echo "not running in $dir"
        return 1
    fi
}

[ $# -ge 1 ] || usage
cmd=$1
shift
[ $# -le 1 ] || usage
case $cmd in
    install) cmd_install ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    kill) cmd_kill "$@" ;;
    restart)
        cmd_kill "$@"
        cmd_start "$@"
        ;;
    destroy) cmd_destroy "$@" ;;
    status) cmd_status "$@" ;;
    -h | --help | help) usage ;;
    *) usage ;;
esac
