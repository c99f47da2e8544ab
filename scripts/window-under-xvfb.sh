# Sourced by the scripts that run the real window under Xvfb: starts Xvfb
# on a free display and the window on it, and cleans both up on exit.
# After `start_window ARGS...`: $DISPLAY, $app_pid, $url (its HTTP API) and
# $work (a temporary directory) are set.

bin="${TASKDECK_BIN:-target/release/taskdeck}"
for tool in Xvfb xwininfo; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$0: $tool is missing; run ./install.sh" >&2; exit 1; }
done
[ -x "$bin" ] || { echo "$0: $bin is missing; run ./install.sh (or set TASKDECK_BIN)" >&2; exit 1; }

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

# start_window ARGS...: Xvfb at the window's size, then the window with a
# memory store in $work; returns once the window is mapped and its API
# address is known.
start_window() {
    Xvfb "$DISPLAY" -screen 0 1500x860x24 -nolisten tcp >/dev/null 2>&1 &
    xvfb_pid=$!
    for _ in $(seq 1 50); do xwininfo -root >/dev/null 2>&1 && break; sleep 0.1; done
    RUST_LOG=warn "$bin" --memory --data-dir "$work" --listen 127.0.0.1:0 "$@" >"$work/out" 2>"$work/err" &
    app_pid=$!
    url=""
    for _ in $(seq 1 100); do
        url="$(sed -n 's/^taskdeck listening on //p' "$work/out")"
        [ -n "$url" ] && break
        sleep 0.1
    done
    [ -n "$url" ] || { echo "$0: the window did not start:" >&2; cat "$work/err" >&2; exit 1; }
    for _ in $(seq 1 100); do xwininfo -root -tree | grep -q '"Taskdeck"' && break; sleep 0.1; done
}
