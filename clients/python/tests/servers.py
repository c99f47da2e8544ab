"""Test helpers: start and stop a real `taskdeck serve`, and wait for conditions.

The binary is `$TASKDECK_BIN` when set, else the newest of
`target/{debug,release}/taskdeck` under `$CARGO_TARGET_DIR` and under the
repository root (found from this file). A missing binary is an error that
says to run `cargo build`, never a skip.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, TypeVar

TESTS_DIR = Path(__file__).resolve().parent
CLIENT_DIR = TESTS_DIR.parent
REPO_ROOT = CLIENT_DIR.parent.parent

# The tests exercise this checkout's client, installed or not.
if str(CLIENT_DIR) not in sys.path:
    sys.path.insert(0, str(CLIENT_DIR))

LISTENING = re.compile(r"^taskdeck listening on (https?://\S+:(\d+))\s*$")
EXE = ".exe" if os.name == "nt" else ""

T = TypeVar("T")


def find_binary() -> Path:
    """The taskdeck binary to test, or an error saying how to get one."""
    from_env = os.environ.get("TASKDECK_BIN")
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise RuntimeError(f"TASKDECK_BIN={from_env} is not a file")
        return path
    target_dirs = [REPO_ROOT / "target"]
    if os.environ.get("CARGO_TARGET_DIR"):
        target_dirs.insert(0, Path(os.environ["CARGO_TARGET_DIR"]))
    candidates = [
        target / profile / f"taskdeck{EXE}"
        for target in target_dirs
        for profile in ("debug", "release")
    ]
    found = [path for path in candidates if path.is_file()]
    if not found:
        looked = ", ".join(str(path) for path in candidates)
        raise RuntimeError(
            f"no taskdeck binary (looked for {looked}): run `cargo build` in {REPO_ROOT}, "
            "or set TASKDECK_BIN to the binary"
        )
    # The newest build is the one that matches the source being tested.
    return max(found, key=lambda path: path.stat().st_mtime)


def wait_until(
    check: Callable[[], T], timeout_s: float = 10.0, interval_s: float = 0.02, what: str = "a condition"
) -> T:
    """Calls ``check`` until it returns something truthy, and returns that.

    Raises AssertionError naming ``what`` when ``timeout_s`` passes first.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


class Server:
    """One `taskdeck serve --memory` process, listening on ``listen`` (a free
    port by default), with ``env`` added to its environment.

    Its data directory (logs) is a fresh temporary one; stderr goes to a file
    there so that a failure can show the end of the server's log.
    """

    def __init__(
        self,
        workers: int = 2,
        token: Optional[str] = None,
        extra_args: Optional[List[str]] = None,
        listen: str = "127.0.0.1:0",
        env: Optional[Dict[str, str]] = None,
    ):
        self.workers = workers
        self.token = token
        self.extra_args = list(extra_args or [])
        self.listen = listen
        self.env = dict(env or {})
        self.url = ""
        self.port = 0
        self.binary: Optional[Path] = None
        self.process: Optional[subprocess.Popen] = None
        self.data_dir: Optional[str] = None
        self._stderr = None
        self._terminated = False
        self._lines: "Optional[queue.Queue[Optional[str]]]" = None

    def start(self, timeout_s: float = 30.0) -> "Server":
        """Starts the server and waits for its `taskdeck listening on` line."""
        self.binary = find_binary()
        self.data_dir = tempfile.mkdtemp(prefix="taskdeck-pytest-")
        command = [
            str(self.binary), "serve", "--memory",
            "--workers", str(self.workers),
            "--listen", self.listen,
            "--data-dir", self.data_dir,
            "--grace", "1",
        ]
        if self.token is not None:
            command += ["--token", self.token]
        command += self.extra_args
        self._stderr = open(os.path.join(self.data_dir, "stderr.log"), "wb")
        env = dict(os.environ, **self.env)
        env.pop("TASKDECK_TOKEN", None)
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL, env=env
        )
        lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self._lines = lines
        threading.Thread(
            target=_pump_lines, args=(self.process.stdout, lines), name="taskdeck-stdout", daemon=True
        ).start()
        deadline = time.monotonic() + timeout_s
        seen: List[str] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail_start(f"no listening line within {timeout_s} s", seen)
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.process.wait(timeout=5)
                self._fail_start(f"it exited with status {self.process.returncode}", seen)
            seen.append(line)
            match = LISTENING.match(line)
            if match:
                self.url, self.port = match.group(1), int(match.group(2))
                return self

    def stdout_line(self, prefix: str, timeout_s: float = 10.0) -> str:
        """The rest of the next line on stdout (after the listening line)
        that starts with ``prefix``."""
        assert self._lines is not None, "start() first"
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line starting with {prefix!r} within {timeout_s} s")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"stdout ended before a line starting with {prefix!r}")
            if line.startswith(prefix):
                return line[len(prefix) :]

    def _fail_start(self, why: str, stdout_lines: List[str]) -> None:
        log = self.log_tail()
        self.kill()
        raise RuntimeError(
            f"taskdeck serve ({self.binary}) did not start: {why}\n"
            f"stdout: {stdout_lines!r}\nstderr (last lines):\n{log}"
        )

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the server wrote to stderr."""
        if not self.data_dir:
            return ""
        path = os.path.join(self.data_dir, "stderr.log")
        try:
            with open(path, "rb") as file:
                text = file.read().decode("utf-8", "replace")
        except OSError:
            return ""
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # Drop the log's colours.
        return "\n".join(text.splitlines()[-lines:])

    def terminate(self) -> None:
        """Sends SIGTERM (a clean stop) once, without waiting; see :meth:`stop`.

        Never twice: a second stop signal makes the server exit at once.
        """
        if self.process is not None and self.process.poll() is None and not self._terminated:
            self._terminated = True
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 10.0) -> int:
        """Sends SIGTERM unless already sent, waits for the exit and returns
        the exit status.

        Raises RuntimeError (after killing it) when it does not exit in time.
        """
        process = self.process
        if process is None:
            return 0
        try:
            self.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
                raise RuntimeError(
                    f"taskdeck serve did not exit within {timeout_s:.1f} s of SIGTERM; killed it. "
                    f"Last log lines:\n{self.log_tail(5)}"
                )
            return process.returncode
        finally:
            self._cleanup()

    def kill(self) -> None:
        """Kills the server at once (used when it failed to start)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._cleanup()

    def _cleanup(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None


def _pump_lines(stream, lines: "queue.Queue[Optional[str]]") -> None:
    """Copies a process's stdout into a queue line by line; None marks its end."""
    try:
        for raw in iter(stream.readline, b""):
            lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
    except (OSError, ValueError):
        pass
    lines.put(None)
