#!/usr/bin/env python3
"""Runs a real Python function and a shell command as Taskdeck tasks, waits
for them, and prints their results and the end of their output logs.

Start a server that accepts such tasks (they run code, so it must opt in)
and can import ``example_jobs.py`` from this folder:

    taskdeck serve --allow-code-tasks --pythonpath clients/python/examples
    python3 clients/python/examples/real_jobs.py [--url http://127.0.0.1:5000]

Exits 1 when a task did not complete, 2 when the server cannot be used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

try:
    import taskdeck
except ImportError:  # Run from a checkout without `pip install clients/python`.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import taskdeck


def show(name: str, record: dict) -> bool:
    """Prints one finished task; true when it completed."""
    print(f"{name}: task {record['id']} {record['status']} in {record['total_latency_s']:.3f} s")
    if record["status"] == "completed":
        print(f"  result: {record['result']}")
    else:
        print(f"  error:  {record['error']}")
    log = record.get("log")
    if log:
        print(f"  log:    {log['path']} ({log['bytes']} bytes)")
        for line in log["tail"].splitlines()[-5:]:
            print(f"    | {line}")
    return record["status"] == "completed"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=taskdeck.DEFAULT_URL, help="the Taskdeck server")
    parser.add_argument("--token", default=None, help="the server's bearer token, if it needs one")
    options = parser.parse_args(argv)
    with taskdeck.TaskClient(options.url, token=options.token, timeout=30) as client:
        try:
            function_id = client.submit_python(
                "example_jobs:word_count", "the quick brown fox jumps over the lazy dog the end", top=2
            )
            command_id = client.submit_command(
                ["sh", "-c", "echo running on $(uname -sr); ls / | head -3"], timeout=60
            )
        except taskdeck.Forbidden as error:
            print(f"the server refuses code tasks: {error}", file=sys.stderr)
            return 2
        except taskdeck.TaskdeckError as error:
            print(f"cannot submit: {error}", file=sys.stderr)
            return 2
        completed = [
            show("python word_count", client.wait(function_id, timeout=120)),
            show("command", client.wait(command_id, timeout=120)),
        ]
    return 0 if all(completed) else 1


if __name__ == "__main__":
    sys.exit(main())
