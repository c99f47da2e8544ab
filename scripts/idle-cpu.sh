#!/usr/bin/env bash
# Measures the CPU the real window uses while idle: starts it under Xvfb
# with nothing to do, lets it settle, then reads its CPU time over a period.
#
#   scripts/idle-cpu.sh [SECONDS]      (default 30)
#
# Prints one JSON line. Needs Xvfb and xwininfo, and target/release/taskdeck
# (or TASKDECK_BIN). Linux only (reads /proc). TASKDECK_THREADS=1 also
# prints the busiest threads.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
. scripts/window-under-xvfb.sh
start_window --workers 2
sleep 5

ticks() { awk '{print $14 + $15}' "/proc/$app_pid/stat"; }
hz="$(getconf CLK_TCK)"
before="$(ticks)"
sleep "$seconds"
after="$(ticks)"
# TASKDECK_THREADS=1 also lists the busiest threads (ticks since start).
if [ -n "${TASKDECK_THREADS:-}" ]; then
    for thread in /proc/"$app_pid"/task/*; do
        echo "$(cat "$thread/comm") $(awk '{print $14 + $15}' "$thread/stat")"
    done | sort -k2 -n | tail -6 >&2
fi
awk -v b="$before" -v a="$after" -v hz="$hz" -v s="$seconds" \
    'BEGIN { printf "{\"seconds\":%d,\"cpu_seconds\":%.2f,\"percent_of_one_core\":%.2f}\n", s, (a-b)/hz, (a-b)/hz/s*100 }'
