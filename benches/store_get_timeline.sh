#!/usr/bin/env bash
# Phases of whole-process `mcodec store get` runs from kernel tracepoints, arms interleaved.
#
#   bash benches/store_get_timeline.sh STORE MODEL OUT_DIR ROUNDS "LABEL:COMMAND PREFIX" ...
#
# Each round runs every arm once, in the order given, as
# `chrt -f 10 perf record ... env PREFIX store --root STORE get MODEL -o OUT_DIR --no-sync`
# (PREFIX: a binary, optionally after VAR=value settings), and reads from the trace
# (needs root: `perf`, tracepoints, SCHED_FIFO): exec -> first `ftruncate` (the serial
# start: the model file sized), -> last `pwrite64` exit (the tensors), -> `rename` (the
# tail: kept pieces, blob files, the output renamed into place), -> last thread's exit
# (the end), and exec -> exit. Prints each arm's medians in ms and the load average.
# SCHED_FIFO takes other processes out of the figures on a shared machine (they are not
# quiet-machine figures: BENCHMARKS.md, fourteenth session). OUT_DIR is removed before
# every run.
set -euo pipefail
store=$1 model=$2 out=$3 rounds=$4
shift 4
trace=$(mktemp)
declare -A rows
for _ in $(seq 1 "$rounds"); do
  for arm in "$@"; do
    label=${arm%%:*} prefix=${arm#*:}
    rm -rf "$out"
    # shellcheck disable=SC2086 # the prefix is words on purpose
    chrt -f 10 perf record -q -o "$trace" -e sched:sched_process_exec,syscalls:sys_enter_ftruncate \
      -e syscalls:sys_exit_pwrite64,syscalls:sys_enter_rename,sched:sched_process_exit \
      env $prefix store --root "$store" get "$model" -o "$out" --no-sync >/dev/null 2>&1
    rows[$label]+=$(perf script -i "$trace" -F time,event 2>/dev/null | awk '
      /sched_process_exec/ {e = $1 + 0}      # the last exec: the binary after `env`
      /sys_enter_ftruncate/ && !f {f = $1 + 0}
      /sys_exit_pwrite64/ {p = $1 + 0}
      /sys_enter_rename/ {r = $1 + 0}
      /sched_process_exit/ {x = $1 + 0}
      END {printf "%.3f %.3f %.3f %.3f %.3f\n", (f-e)*1e3, (p-f)*1e3, (r-p)*1e3, (x-r)*1e3, (x-e)*1e3}')$'\n'
  done
done
rm -f "$trace"
echo "medians, ms: start (exec -> model sized) / tensors (-> last pwrite) / tail (-> rename) / end (-> exit) / exec -> exit"
for arm in "$@"; do
  label=${arm%%:*}
  printf '%-12s' "$label"
  for c in 1 2 3 4 5; do
    printf ' %7s' "$(printf '%s' "${rows[$label]}" | awk -v c="$c" 'NF {print $c}' | sort -g |
      awk '{v[NR] = $1} END {printf "%.2f", v[int((NR + 1) / 2)]}')"
  done
  echo
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
