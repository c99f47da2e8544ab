#!/usr/bin/env python3
"""Follows a training run: submits a Python task that reports its progress,
then prints its progress from the event stream and its output log as they
come, until it finishes.

Start a server that accepts such tasks (they run code, so it must opt in)
and can import ``example_jobs.py`` from this folder (and, for the real
``taskdeck.progress``, this client; without it the server's runner supplies
a stand-in):

    taskdeck serve --allow-code-tasks --pythonpath clients/python/examples --pythonpath clients/python
    python3 clients/python/examples/watch.py [--url http://127.0.0.1:5000] [--epochs 5]

Exits 1 when the task did not complete, 2 when the server cannot be used.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Optional, Sequence

try:
    import taskdeck
except ImportError:  # Run from a checkout without `pip install clients/python`.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import taskdeck

FINAL = ("completed", "failed", "cancelled")

#: The two threads print whole lines, one at a time.
_print_lock = threading.Lock()


def say(line: str) -> None:
    with _print_lock:
        print(line, flush=True)


def progress_line(progress: dict) -> str:
    """One line for a progress report: bar, percentage, message, metrics."""
    fraction = progress.get("fraction")
    if fraction is None:
        bar = "[" + " " * 20 + "]    ?"
    else:
        filled = round(fraction * 20)
        bar = f"[{'#' * filled}{'.' * (20 - filled)}] {fraction:4.0%}"
    metrics = " ".join(f"{name}={value:g}" for name, value in sorted(progress.get("metrics", {}).items()))
    return f"progress {bar} {progress.get('message', '')} {metrics}".rstrip()


def watch_events(stream, task_id: int, errors: list) -> None:
    """Prints the task's progress and status changes until it finishes,
    then closes the stream (this thread is the one that reads it)."""
    shown_at = None  # When the progress shown last was reported.
    try:
        for event in stream:
            if event.type == "reset":
                say(f"(missed some events: {event.data.get('reason')})")
                continue
            if event.type != "task" or event.data["task"]["id"] != task_id:
                continue
            kind, record = event.data["kind"], event.data["task"]
            # The server may fold a task's quick changes into one event (a
            # last report and the end, say), so any event may carry news.
            progress = record.get("progress")
            if progress and progress.get("updated_at_us") != shown_at:
                shown_at = progress.get("updated_at_us")
                say(progress_line(progress))
            if kind != "progress":
                say(f"task {task_id} {kind}")
            if record["status"] in FINAL:
                return
    except taskdeck.TaskdeckError as error:
        errors.append(error)
    finally:
        stream.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=taskdeck.DEFAULT_URL, help="the Taskdeck server")
    parser.add_argument("--token", default=None, help="the server's bearer token, if it needs one")
    parser.add_argument("--epochs", type=int, default=5, help="epochs to pretend to train")
    parser.add_argument("--seconds-per-epoch", type=float, default=0.5, help="how long each one takes")
    options = parser.parse_args(argv)
    with taskdeck.TaskClient(options.url, token=options.token, timeout=30) as client:
        try:
            # Opened first, so the stream has every event of the task.
            stream = client.events(kinds=["task"], timeout=300)
        except taskdeck.TaskdeckError as error:
            print(f"cannot follow the server's events: {error}", file=sys.stderr)
            return 2
        try:
            task_id = client.submit_python(
                "example_jobs:train_demo", options.epochs, options.seconds_per_epoch,
                taskdeck_options={"max_retries": 0},
            )
        except taskdeck.TaskdeckError as error:
            stream.close()
            print(f"cannot submit: {error}", file=sys.stderr)
            return 2
        say(f"submitted task {task_id}")
        errors: list = []
        watcher = threading.Thread(
            target=watch_events, args=(stream, task_id, errors), name="watch-events", daemon=True
        )
        watcher.start()
        pending = ""
        for text in client.logs(task_id, follow=True):  # Ends when the attempt ends.
            pending += text
            *lines, pending = pending.split("\n")
            for line in lines:
                say(f"log | {line}")
        if pending:
            say(f"log | {pending}")
        watcher.join(timeout=60)
        record = client.wait(task_id, timeout=60)
    for error in errors:
        print(f"the event stream failed: {error}", file=sys.stderr)
    say(f"task {task_id} {record['status']}: {record['result'] if record['status'] == 'completed' else record['error']}")
    return 0 if record["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
