#!/usr/bin/env python3
"""How close to its time a delayed task starts.

Starts the real ``taskdeck serve`` (memory store, 2 workers, a free
loopback port), submits N no-op tasks through ``TaskClient`` with
``delay=DELAY`` each, waits for them, and prints one JSON line with the
lateness (``started_at - not_before``) percentiles in milliseconds, and how
many started early (must be 0).

    python3 clients/python/benchmarks/delayed_start.py --binary target/release/taskdeck
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from taskdeck import TaskClient  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list, fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default="target/release/taskdeck")
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.3, help="seconds")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [args.binary, "serve", "--memory", "--workers", "2", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        if server.stdout is None or not server.stdout.readline().startswith(b"taskdeck listening"):
            raise RuntimeError("the server did not start")
        with TaskClient(f"http://127.0.0.1:{port}") as client:
            ids = []
            for _ in range(args.tasks):
                ids.append(client.submit("noop", delay=args.delay))
                time.sleep(0.002)
            records = client.wait_many(ids, timeout=60)
        late_ms = [(r["started_at"] - r["not_before"]) * 1000.0 for r in records]
        print(json.dumps({
            "tasks": args.tasks,
            "delay_s": args.delay,
            "early": sum(1 for ms in late_ms if ms < 0),
            "late_ms": {
                "p50": round(percentile(late_ms, 0.50), 3),
                "p99": round(percentile(late_ms, 0.99), 3),
                "max": round(max(late_ms), 3),
            },
        }))
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
