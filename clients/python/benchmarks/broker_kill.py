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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, List, Optional, TypeVar

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


class Logs:
    """What a round's processes print, each in a file of the round's data
    directory, so that a round that fails can say what they said."""

    def __init__(self, directory: str):
        self.directory = Path(directory)

    def start(self, name: str, command: List[str], env: dict) -> subprocess.Popen:
        """Starts `command` with its output in `name`.log."""
        with open(self.directory / f"{name}.log", "wb") as out:
            return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)

    def failure(self, message: str, lines: int = 25) -> RuntimeError:
        """An error saying `message`, then the last lines of each log; the
        directory is kept for a closer look."""
        parts = [f"{message} (logs kept in {self.directory})"]
        for path in sorted(self.directory.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}, last {len(tail)} lines:")
            parts.extend(tail)
        return RuntimeError("\n".join(parts))

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


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
    env = keyed_env()
    logs = Logs(data)
    serve = logs.start("serve", serve_cmd, env)
    processes = [serve]

    def worker(name: str) -> subprocess.Popen:
        process = logs.start(f"worker-{name}", [args.binary, "worker", *broker, "--name", name, "--concurrency", "1"], env)
        processes.append(process)
        return process

    client = TaskClient(f"http://127.0.0.1:{port}")
    failed = True
    try:
        first = worker("a")
        task_id = wait_for(lambda: client.submit("sleep", args.task_ms), 30)
        if task_id is None:
            raise logs.failure("the server did not accept the task")
        if not wait_for(lambda: client.get(task_id).get("worker") == "a", 30):
            raise logs.failure("worker a did not start the task")
        worker("b")
        if not wait_for(lambda: any(w.get("name") == "b" for w in client.workers().get("workers", [])), 30):
            raise logs.failure("worker b did not connect")
        started = time.monotonic()
        first.send_signal(signal.SIGKILL if args.signal == "kill" else signal.SIGSTOP)
        again = wait_for(
            lambda: (lambda r: r.get("worker") == "b" and r.get("attempts") == 2)(client.get(task_id)),
            args.timeout,
        )
        if not again:
            print(f"the task did not run again on worker b; logs kept in {data}", file=sys.stderr)
            return None
        failed = False
        return time.monotonic() - started
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
        if not failed:
            logs.remove()


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
