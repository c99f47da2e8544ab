#!/usr/bin/env python3
"""Measures Taskdeck where a Python user stands: through ``TaskClient``.

It starts the real ``taskdeck serve`` with its default settings (its own
temporary data directory and a free loopback port; pass ``--url`` to measure
a server that is already running instead), drives it from one client thread
and prints one JSON line:

- ``single``: submit N no-op tasks with one ``submit`` call each, then
  ``wait`` for each result; tasks per second over the whole run.
- ``batch``: the same with ``submit_many`` in batches, then the results of
  each batch with ``wait_many`` (one call per batch).
- ``closed_loop``: submit one task, wait for its result, repeat; latency
  percentiles in milliseconds.
- ``run``: the same through ``run`` (submit and wait in one round trip).
- ``health``: a bare request (``health()``); latency percentiles in
  microseconds.

``--serve-arg=--tls`` measures the server over HTTPS (the client pins the
certificate's fingerprint it prints). ``--client-path DIR`` measures another checkout's client (the directory that
holds its ``taskdeck`` package); workloads that client cannot express are
reported as ``null``. ``--quick`` runs small counts, for CI.

    python3 clients/python/benchmarks/client_bench.py --binary target/release/taskdeck
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

CLIENT_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = CLIENT_DIR.parent.parent
LISTENING = re.compile(r"^taskdeck listening on (https?://\S+)\s*$")
FINGERPRINT = re.compile(r"^taskdeck certificate SHA-256 fingerprint (\S+)\s*$")


def percentiles(samples: List[float], scale: float) -> Dict[str, float]:
    """p50/p95/p99/max of ``samples`` (seconds) multiplied by ``scale``."""
    ordered = sorted(samples)

    def at(q: float) -> float:
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return round(ordered[index] * scale, 3)

    return {"count": len(ordered), "p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": at(1.0)}


class Server:
    """A ``taskdeck serve`` started for the measurement, stopped on exit."""

    def __init__(self, binary: Path, extra: List[str]):
        self.data_dir = tempfile.mkdtemp(prefix="taskdeck-bench-")
        self.args = [str(binary), "serve", "--listen", "127.0.0.1:0", "--data-dir", self.data_dir, *extra]
        self.process = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.fingerprint: Optional[str] = None
        self.url = self._read_url(timeout_s=60.0)

    def _read_url(self, timeout_s: float) -> str:
        found: List[str] = []

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                match = LISTENING.match(line)
                if match:
                    found.append(match.group(1))
                    if not match.group(1).startswith("https://"):
                        return
                pinned = FINGERPRINT.match(line)
                if pinned:
                    self.fingerprint = pinned.group(1)
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout_s)
        if not found or (found[0].startswith("https://") and self.fingerprint is None):
            self.stop()
            shown = " ".join(redact(arg) for arg in self.args)
            raise RuntimeError(f"{shown} did not start listening within {timeout_s} s")
        return found[0]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def measure_single(client: Any, tasks: int) -> Dict[str, Any]:
    start = time.perf_counter()
    ids = [client.submit("noop") for _ in range(tasks)]
    submitted = time.perf_counter()
    for task_id in ids:
        record = client.wait(task_id)
        if record["status"] != "completed":
            raise RuntimeError(f"task {task_id} ended {record['status']}")
    end = time.perf_counter()
    return {
        "tasks": tasks,
        "tasks_per_s": round(tasks / (end - start), 1),
        "submit_s": round(submitted - start, 3),
        "wait_s": round(end - submitted, 3),
    }


def measure_batch(client: Any, tasks: int, batch: int) -> Dict[str, Any]:
    has_wait_many = hasattr(client, "wait_many")
    start = time.perf_counter()
    pending: List[List[int]] = []
    for first in range(0, tasks, batch):
        count = min(batch, tasks - first)
        pending.append(client.submit_many([("noop", [])] * count))
    submitted = time.perf_counter()
    for ids in pending:
        records = client.wait_many(ids) if has_wait_many else [client.wait(i) for i in ids]
        bad = [r["id"] for r in records if r["status"] != "completed"]
        if bad:
            raise RuntimeError(f"tasks {bad[:5]} did not complete")
    end = time.perf_counter()
    return {
        "tasks": tasks,
        "batch": batch,
        "waited_with": "wait_many" if has_wait_many else "wait",
        "tasks_per_s": round(tasks / (end - start), 1),
        "submit_s": round(submitted - start, 3),
        "wait_s": round(end - submitted, 3),
    }


def measure_closed_loop(client: Any, count: int) -> Dict[str, Any]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        record = client.wait(client.submit("noop"))
        samples.append(time.perf_counter() - start)
        if record["status"] != "completed":
            raise RuntimeError(f"task {record['id']} ended {record['status']}")
    return {"unit": "ms", **percentiles(samples, 1e3)}


def measure_run(client: Any, count: int) -> Optional[Dict[str, Any]]:
    if not hasattr(client, "run"):
        return None
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        record = client.run("noop")
        samples.append(time.perf_counter() - start)
        if record["status"] != "completed":
            raise RuntimeError(f"task {record['id']} ended {record['status']}")
    return {"unit": "ms", **percentiles(samples, 1e3)}


def measure_health(client: Any, count: int) -> Dict[str, Any]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        healthy = client.health()
        samples.append(time.perf_counter() - start)
        if not healthy:
            raise RuntimeError("the server is not healthy")
    return {"unit": "us", **percentiles(samples, 1e6)}


def redact(arg: str) -> str:
    """An argument as it may be printed: a URL's password replaced by ``***``."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://[^:/@]+):[^@/]*@", r"\1:***@", arg)


def warm_up(client: Any, timeout: float = 60.0) -> None:
    """Runs one task, retrying while the server cannot take it yet (with
    ``--broker``: until it is connected and a worker runs tasks)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            record = client.wait(client.submit("noop"), timeout=timeout)
            if record["status"] == "completed":
                return
        except Exception:
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.05)


def find_binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
    for profile in ("release", "debug"):
        path = target / profile / "taskdeck"
        if path.is_file():
            return path
    raise SystemExit("no taskdeck binary: run `cargo build --release`, or pass --binary")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", type=Path, help="taskdeck binary to start (default: target/release)")
    parser.add_argument("--url", help="measure this running server instead of starting one")
    parser.add_argument("--serve-arg", action="append", default=[], help="extra argument for `taskdeck serve`")
    parser.add_argument("--client-path", type=Path, help="directory holding the taskdeck package to use")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--latency-tasks", type=int, default=1_000)
    parser.add_argument("--health-requests", type=int, default=2_000)
    parser.add_argument("--quick", action="store_true", help="small counts, to check that it works")
    options = parser.parse_args()
    if options.quick:
        options.tasks, options.batch, options.latency_tasks, options.health_requests = 200, 50, 50, 50

    sys.path.insert(0, str(options.client_path or CLIENT_DIR))
    from taskdeck import TaskClient, __version__  # noqa: E402  (the path above picks the client)

    server = None
    if options.url:
        url = options.url
    else:
        server = Server(options.binary or find_binary(), options.serve_arg)
        url = server.url
    try:
        pin = {"fingerprint": server.fingerprint} if server and server.fingerprint else {}
        with TaskClient(url, **pin) as client:
            if not client.health():
                raise RuntimeError(f"{url} is not healthy")
            warm_up(client)
            report = {
                "url": url,
                "server_args": [redact(arg) for arg in server.args[1:]] if server else None,
                "client": f"taskdeck-python {__version__}",
                "python": platform.python_version(),
                "single": measure_single(client, options.tasks),
                "batch": measure_batch(client, options.tasks, options.batch),
                "closed_loop": measure_closed_loop(client, options.latency_tasks),
                "run": measure_run(client, options.latency_tasks),
                "health": measure_health(client, options.health_requests),
            }
    finally:
        if server is not None:
            server.stop()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
