#!/usr/bin/env bash
# Starts the real Taskdeck window under Xvfb with mock tasks running and
# saves a screenshot (default assets/screenshot.png).
#
#   scripts/screenshot.sh [OUT.png]
#
# Needs Xvfb, ImageMagick's `import` and xwininfo (./install.sh installs
# them on Debian/Ubuntu) and a built binary (TASKDECK_BIN, default
# target/release/taskdeck).
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-assets/screenshot.png}"
bin="${TASKDECK_BIN:-target/release/taskdeck}"
for tool in Xvfb import xwininfo; do
    command -v "$tool" >/dev/null 2>&1 || { echo "screenshot.sh: $tool is missing; run ./install.sh" >&2; exit 1; }
done
[ -x "$bin" ] || { echo "screenshot.sh: $bin is missing; run ./install.sh (or set TASKDECK_BIN)" >&2; exit 1; }

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

# The window's own HTTP API takes the demo tasks, as the user's scripts would.
RUST_LOG=warn "$bin" --memory --data-dir "$work" --workers 4 --listen 127.0.0.1:0 >"$work/out" 2>"$work/err" &
app_pid=$!
url=""
for _ in $(seq 1 100); do
    url="$(sed -n 's/^taskdeck listening on //p' "$work/out")"
    [ -n "$url" ] && break
    sleep 0.1
done
[ -n "$url" ] || { echo "screenshot.sh: the window did not start:" >&2; cat "$work/err" >&2; exit 1; }
for _ in $(seq 1 100); do xwininfo -root -tree | grep -q '"Taskdeck"' && break; sleep 0.1; done

"$bin" submit --url "$url" noop '"warm-up"' >/dev/null
"$bin" submit --url "$url" fail 9 --retries 0 >/dev/null
"$bin" mock --url "$url" --count 14 --max-duration-ms 14000 >/dev/null
"$bin" submit --url "$url" mock_ml_task 12000 "Gradient Boosting" --priority 9 >/dev/null
# Let the plots collect some history and a few tasks finish.
sleep 20
mkdir -p "$(dirname "$out")"
import -window root "$out"
echo "saved $out"
