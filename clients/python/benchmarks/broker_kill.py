#!/usr/bin/env python3
"""How long a task waits when the worker process running it dies.

Starts the real ``taskdeck serve --broker URL --workers 0`` (default lease
unless ``--lease``), a worker process ``a`` with one slot, submits a
``sleep`` task through ``TaskClient``, waits until ``a`` runs it, starts a
second worker ``b``, then kills ``a`` (``--signal kill``: SIGKILL, the
process ends and its connection closes; ``--signal stop``: SIGSTOP, the
process freezes with its connection open) and measures the time until the
task runs again on ``b``. Prints one JSON line per round and removes its
queues.

    python3 clients/python/benchmarks/broker_kill.py --binary target/release/taskdeck
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Optional, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from taskdeck import TaskClient  # noqa: E402

T = TypeVar("T")


def wait_for(condition: Callable[[], Optional[T]], timeout: float) -> Optional[T]:
    """Polls `condition` every 5 ms until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:  # the server may not answer yet
            value = None
        if value:
            return value
        time.sleep(0.005)
    return None


def keyed_env() -> dict:
    """This environment with a fresh broker key that the run's scheduler and
    workers share (they sign every broker message with it)."""
    env = dict(os.environ, TASKDECK_BROKER_KEY=secrets.token_hex(32))
    env.pop("TASKDECK_BROKER_KEY_FILE", None)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_round(args: argparse.Namespace, index: int) -> Optional[float]:
    namespace = f"broker-kill-{os.getpid()}-{index}"
    port = free_port()
    data = tempfile.mkdtemp(prefix="taskdeck-kill-")
    broker = ["--broker", args.broker, "--broker-namespace", namespace]
    serve_cmd = [args.binary, "serve", "--db", f"{data}/t.db", "--listen", f"127.0.0.1:{port}",
                 "--workers", "0", *broker]
    if args.lease:
        serve_cmd += ["--lease", str(args.lease)]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": keyed_env()}
    serve = subprocess.Popen(serve_cmd, **quiet)
    processes = [serve]

    def worker(name: str) -> subprocess.Popen:
        process = subprocess.Popen([args.binary, "worker", *broker, "--name", name, "--concurrency", "1"], **quiet)
        processes.append(process)
        return process

    client = TaskClient(f"http://127.0.0.1:{port}")
    try:
        first = worker("a")
        task_id = wait_for(lambda: client.submit("sleep", args.task_ms), 30)
        if task_id is None:
            raise RuntimeError("the server did not accept the task")
        wait_for(lambda: client.get(task_id).get("worker") == "a", 30)
        worker("b")
        wait_for(lambda: any(w.get("name") == "b" for w in client.workers().get("workers", [])), 30)
        started = time.monotonic()
        first.send_signal(signal.SIGKILL if args.signal == "kill" else signal.SIGSTOP)
        again = wait_for(
            lambda: (lambda r: r.get("worker") == "b" and r.get("attempts") == 2)(client.get(task_id)),
            args.timeout,
        )
        return time.monotonic() - started if again else None
    finally:
        client.close()
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGKILL if process is processes[1] else signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        delete_queues(namespace, ("a", "b"))


def delete_queues(namespace: str, workers: Iterable[str]) -> None:
    """Deletes a namespace's queues: events, its workers' queues, and the
    shared task queue that builds before the placement protocol declare."""
    queues = [f"{namespace}.tasks", f"{namespace}.events"]
    queues += [f"{namespace}.{kind}.{name}" for kind in ("worker", "presence") for name in workers]
    for queue in queues:
        subprocess.run(["rabbitmqctl", "delete_queue", queue], capture_output=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default="target/release/taskdeck")
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--task-ms", type=int, default=5000)
    parser.add_argument("--signal", choices=("kill", "stop"), default="kill")
    parser.add_argument("--lease", type=float, default=None, help="the scheduler's --lease (default: its own)")
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args()
    for index in range(args.rounds):
        elapsed = one_round(args, index)
        print(json.dumps({
            "binary": args.binary,
            "signal": args.signal,
            "lease_s": args.lease,
            "round": index,
            "run_again_after_s": None if elapsed is None else round(elapsed, 3),
        }), flush=True)


if __name__ == "__main__":
    main()
