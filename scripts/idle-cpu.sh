#!/usr/bin/env bash
# Measures the CPU the real window uses while idle: starts it under Xvfb
# with nothing to do, lets it settle, then reads its CPU time over a period.
#
#   scripts/idle-cpu.sh [SECONDS]      (default 30)
#
# Prints one JSON line. Needs Xvfb and xwininfo, and target/release/taskdeck
# (or TASKDECK_BIN). Linux only (reads /proc).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
bin="${TASKDECK_BIN:-target/release/taskdeck}"
work="$(mktemp -d)"
display_number=99
while [ -e "/tmp/.X11-unix/X$display_number" ]; do display_number=$((display_number + 1)); done
export DISPLAY=":$display_number"
cleanup() {
    [ -n "${app_pid:-}" ] && kill -TERM "$app_pid" 2>/dev/null && wait "$app_pid" 2>/dev/null
    [ -n "${xvfb_pid:-}" ] && kill "$xvfb_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
Xvfb "$DISPLAY" -screen 0 1400x860x24 -nolisten tcp >/dev/null 2>&1 &
xvfb_pid=$!
for _ in $(seq 1 50); do xwininfo -root >/dev/null 2>&1 && break; sleep 0.1; done
RUST_LOG=warn "$bin" --memory --data-dir "$work" --workers 2 --listen 127.0.0.1:0 >"$work/out" 2>"$work/err" &
app_pid=$!
for _ in $(seq 1 100); do xwininfo -root -tree | grep -q '"Taskdeck"' && break; sleep 0.1; done
sleep 5

ticks() { awk '{print $14 + $15}' "/proc/$app_pid/stat"; }
hz="$(getconf CLK_TCK)"
before="$(ticks)"
sleep "$seconds"
after="$(ticks)"
if [ -n "${TASKDECK_THREADS:-}" ]; then for t in /proc/$app_pid/task/*; do echo "$(cat $t/comm) $(awk '{print $14 + $15}' $t/stat)"; done | sort -k2 -n | tail -6 >&2; fi
awk -v b="$before" -v a="$after" -v hz="$hz" -v s="$seconds" \
    'BEGIN { printf "{\"seconds\":%d,\"cpu_seconds\":%.2f,\"percent_of_one_core\":%.2f}\n", s, (a-b)/hz, (a-b)/hz/s*100 }'
