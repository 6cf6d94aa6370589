#!/usr/bin/env bash
# Whole-process hub-store throughput, ULP ("best") and BitX deltas side by side in one run.
#
#   bash benches/store_cli_bench.sh BASE_DIR FT_DIR WORK_DIR [REPEATS] [MCODEC_BIN]
#
# Per repeat and delta mode (alternating which goes first): a fresh store in WORK_DIR,
# `store add BASE`, then timed `store add FT --base base --delta MODE`, then timed
# `store get ft` into WORK_DIR with --no-sync, and again with fsync into FSYNC_DIR
# (default: a directory on the disk under target/, set FSYNC_DIR to change). Prints one line
# per run and the medians; MB = 1e6 bytes of the fine-tune directory. Put WORK_DIR on
# /dev/shm to take the disk out of the measurement. Also prints the load average and each
# command's user+sys CPU seconds (the fairer figure on a loaded machine).
set -euo pipefail
base=$1 ft=$2 work=$3 repeats=${4:-5}
bin=${5:-target/release/mcodec}
fsync_dir=${FSYNC_DIR:-target/store-bench-fsync}
bytes=$(du -sb --apparent-size "$ft" | cut -f1)
# Times from bash's own clock ($EPOCHREALTIME, bash 5+), read right before and after each
# timed command: until the eleventh session a `date` subprocess and the bookkeeping between
# commands (`du` of the store, `tail | awk` of the CPU log) were counted in the next
# command's time (about 10 ms of a 46 MB `get`'s 58, BENCHMARKS.md).
# Runs a command, appending "user+sys CPU seconds" of it to $cpu_log.
cpu_log=$(mktemp)
timed() { /usr/bin/time -a -o "$cpu_log" -f '%U %S' "$@"; }
last_cpu() { tail -n 1 "$cpu_log" | awk '{printf "%.3f", $1 + $2}'; }
declare -A t
echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg); fine-tune $bytes bytes; $(nproc) CPUs"
for r in $(seq 1 "$repeats"); do
  if (( r % 2 )); then modes="best bitx"; else modes="bitx best"; fi
  for mode in $modes; do
    s=$work/store-$mode
    rm -rf "$s" "$work/out-$mode" "$fsync_dir/out-$mode"
    mkdir -p "$fsync_dir"
    "$bin" store --root "$s" init >/dev/null
    "$bin" store --root "$s" add "$base" --name base --delta "$mode" >/dev/null
    before=$(du -sb --apparent-size "$s" | cut -f1)
    a=$EPOCHREALTIME; timed "$bin" store --root "$s" add "$ft" --name ft --base base --delta "$mode" >/dev/null; a2=$EPOCHREALTIME
    addc=$(last_cpu)
    after=$(du -sb --apparent-size "$s" | cut -f1)
    b=$EPOCHREALTIME; timed "$bin" store --root "$s" get ft -o "$work/out-$mode" --no-sync >/dev/null; b2=$EPOCHREALTIME
    getc=$(last_cpu)
    c=$EPOCHREALTIME; "$bin" store --root "$s" get ft -o "$fsync_dir/out-$mode" >/dev/null; c2=$EPOCHREALTIME
    cmp -s "$ft/model.safetensors" "$work/out-$mode/model.safetensors"
    add=$(echo "$a2 - $a" | bc -l); get=$(echo "$b2 - $b" | bc -l); getf=$(echo "$c2 - $c" | bc -l)
    growth=$((after - before))
    printf '%s run %d: add %.3f s (CPU %s s)  get %.3f s (CPU %s s)  get+fsync(disk) %.3f s  growth %d bytes (%.2f %%)\n' \
      "$mode" "$r" "$add" "$addc" "$get" "$getc" "$getf" "$growth" "$(echo "100 * $growth / $bytes" | bc -l)"
    t[$mode-add]+="$add "; t[$mode-get]+="$get "; t[$mode-getf]+="$getf "; t[$mode-growth]=$growth
    t[$mode-addc]+="$addc "; t[$mode-getc]+="$getc "
  done
done
med() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-5s %9s %9s %9s %9s %11s %11s %11s %8s\n' mode "add MB/s" "add CPU s" "get MB/s" "get CPU s" "get s" "get+fsync MB/s" "growth" "% of ft"
mbs() { echo "$bytes / $1 / 1000000" | bc -l; }
for mode in best bitx; do
  add=$(echo "${t[$mode-add]}" | med); get=$(echo "${t[$mode-get]}" | med); getf=$(echo "${t[$mode-getf]}" | med)
  addc=$(echo "${t[$mode-addc]}" | med); getc=$(echo "${t[$mode-getc]}" | med)
  printf '%-5s %9.0f %9.3f %9.0f %9.3f %11.3f %11.0f %11d %8.2f\n' "$mode" "$(mbs "$add")" "$addc" \
    "$(mbs "$get")" "$getc" "$get" "$(mbs "$getf")" "${t[$mode-growth]}" \
    "$(echo "100 * ${t[$mode-growth]} / $bytes" | bc -l)"
done
rm -f "$cpu_log"
