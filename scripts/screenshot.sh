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
command -v import >/dev/null 2>&1 || { echo "screenshot.sh: ImageMagick's import is missing; run ./install.sh" >&2; exit 1; }
. scripts/window-under-xvfb.sh
# The window's own HTTP API takes the demo tasks, as the user's scripts would.
start_window --workers 4

"$bin" submit --url "$url" noop '"warm-up"' >/dev/null
"$bin" submit --url "$url" fail 9 --retries 0 >/dev/null
"$bin" mock --url "$url" --count 14 --max-duration-ms 14000 >/dev/null
"$bin" submit --url "$url" mock_ml_task 12000 "Gradient Boosting" --priority 9 >/dev/null
# Let the plots collect some history and a few tasks finish.
sleep 20
mkdir -p "$(dirname "$out")"
import -window root "$out"
echo "saved $out"
