#!/usr/bin/env bash
# Sets up Taskdeck on Linux or macOS without asking questions, then builds it.
#
#   ./install.sh          install what is missing and build the release binary
#   ./install.sh run      ... then open the Taskdeck window (`taskdeck serve` without a display;
#                         extra arguments are passed on)
#   ./install.sh test     ... then run the whole test suite
#
# Safe to run again: each step checks first and does nothing when already done.
set -euo pipefail

MIN_RUST="1.95"
cd "$(dirname "$0")"

say() { printf 'install.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# Runs a command as root: directly when root, through non-interactive sudo otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        return 1
    fi
}

apt_updated=0
# Installs Debian/Ubuntu packages that are not installed yet.
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]}"
    if [ $apt_updated -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
            || die "cannot run apt-get as root; run: sudo apt-get install -y ${missing[*]}"
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        || die "installing packages failed; run: sudo apt-get install -y ${missing[*]}"
}

# The window loads X11/Wayland, OpenGL and fontconfig at run time (no -dev
# packages are needed to build); Xvfb, ImageMagick and xwininfo serve
# scripts/screenshot.sh.
ensure_window_libraries() {
    [ "$(uname -s)" = Linux ] && command -v apt-get >/dev/null 2>&1 || return 0
    apt_install libgl1-mesa-dri libegl1 libgl1 libxkbcommon-x11-0 libxcursor1 libxi6 \
        libx11-xcb1 libfontconfig1 xvfb imagemagick x11-utils
}

# A C compiler builds the bundled SQLite.
ensure_build_tools() {
    case "$(uname -s)" in
        Linux)
            if command -v apt-get >/dev/null 2>&1; then
                command -v cc >/dev/null 2>&1 || apt_install build-essential
                command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
            fi
            command -v cc >/dev/null 2>&1 \
                || die "no C compiler found; install gcc (or clang) with your package manager and run ./install.sh again"
            ;;
        Darwin)
            xcode-select -p >/dev/null 2>&1 \
                || die "the Xcode command line tools are missing; run: xcode-select --install, then ./install.sh again"
            ;;
        *)
            die "unsupported system $(uname -s); Taskdeck's set-up script supports Linux and macOS"
            ;;
    esac
}

# True when version $1 (major.minor[.patch]) is at least $2 (major.minor).
version_at_least() {
    local have_major have_minor want_major want_minor
    IFS=. read -r have_major have_minor _ <<<"$1"
    IFS=. read -r want_major want_minor _ <<<"$2"
    [ "$have_major" -gt "$want_major" ] || { [ "$have_major" -eq "$want_major" ] && [ "$have_minor" -ge "$want_minor" ]; }
}

rust_version() {
    rustc --version 2>/dev/null | awk '{print $2}'
}

ensure_rust() {
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
    if ! command -v cargo >/dev/null 2>&1; then
        if command -v rustup >/dev/null 2>&1; then
            rustup toolchain install stable --profile minimal
        else
            command -v curl >/dev/null 2>&1 \
                || die "Rust is missing and so is curl; install curl, or Rust ${MIN_RUST}+ from https://rustup.rs, then run ./install.sh again"
            say "installing Rust with rustup"
            curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
                | sh -s -- -y --profile minimal --default-toolchain stable
            . "$HOME/.cargo/env"
        fi
    fi
    local version
    version="$(rust_version)"
    if ! version_at_least "$version" "$MIN_RUST"; then
        if command -v rustup >/dev/null 2>&1; then
            say "Rust $version is older than $MIN_RUST; updating the stable toolchain"
            rustup update stable
            version="$(rust_version)"
        fi
        version_at_least "$version" "$MIN_RUST" \
            || die "Rust $version is too old; Taskdeck needs $MIN_RUST or newer. Run: rustup update stable (or install from https://rustup.rs)"
    fi
    say "using Rust $version"
}

build() {
    say "building the release binary"
    cargo build --release --locked
    say "built $(pwd)/target/release/taskdeck"
}

# The Python client's tests need Python 3.9 or newer (standard library only).
ensure_python() {
    if ! command -v python3 >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
        apt_install python3
    fi
    command -v python3 >/dev/null 2>&1 \
        || die "python3 is missing; install Python 3.9 or newer and run ./install.sh again"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
        || die "python3 is $(python3 -V 2>&1); the Python client needs 3.9 or newer"
}

run_tests() {
    say "running the Rust tests"
    cargo test --locked
    say "running the Python client's tests against the real server"
    local target="${CARGO_TARGET_DIR:-target}"
    TASKDECK_BIN="$(cd "$target" && pwd)/debug/taskdeck" python3 -m unittest discover -s clients/python/tests -v
}

main() {
    local command="${1:-}"
    [ $# -gt 0 ] && shift
    case "$command" in
        ""|run|test) ;;
        -h|--help|help) sed -n '2,9p' "$0"; exit 0 ;;
        *) die "unknown command '$command'; use: ./install.sh [run|test]" ;;
    esac
    ensure_build_tools
    ensure_window_libraries
    ensure_rust
    [ "$command" = test ] && ensure_python
    case "$command" in
        "") build ;;
        run)
            build
            if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] || [ "$(uname -s)" = Darwin ]; then
                exec ./target/release/taskdeck "$@"
            fi
            say "no display found; running headless (taskdeck serve)"
            exec ./target/release/taskdeck serve "$@"
            ;;
        test) run_tests ;;
    esac
}

main "$@"
