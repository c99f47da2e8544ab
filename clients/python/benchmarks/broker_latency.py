#!/usr/bin/env python3
"""Throughput of short tasks with network latency between workers and broker.

Starts the real ``taskdeck serve --broker URL --workers 0`` (on the broker
directly) and one ``taskdeck worker`` with ``--concurrency`` slots that
reaches the broker either directly or through a TCP proxy delaying every
byte by ``--delay-ms`` in each direction (there is no netem here). Submits
``--tasks`` ``sleep`` tasks of ``--task-ms`` at once (``submit_many``),
waits for all (``wait_many``) and reports tasks per second for both, and
the ratio. Rounds alternate direct and delayed (``--direct-only``: without
the proxy only; ``--prefetch 0`` passes no ``--prefetch``, for builds
without it). Prints one JSON line per round and removes its queues.

    python3 clients/python/benchmarks/broker_latency.py --binary target/release/taskdeck \\
        --concurrency 20 --prefetch 40 --delay-ms 10 --task-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from taskdeck import TaskClient  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from broker_kill import Logs, delete_queues, free_port, keyed_env, wait_for  # noqa: E402


class DelayingProxy:
    """Forwards TCP connections to `target`, each chunk `delay` seconds late
    in each direction, in order, without limiting throughput."""

    def __init__(self, target: tuple, delay: float) -> None:
        self.target = target
        self.delay = delay
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("the proxy did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", self.port))
        self.ready.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if data is None:
                    break
                pause = due - self.loop.time()
                if pause > 0:
                    await asyncio.sleep(pause)
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                queue.put_nowait((self.loop.time() + self.delay, data))
        finally:
            queue.put_nowait((0.0, None))
            await sender

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def one_run(args: argparse.Namespace, index: int, delayed: bool) -> Optional[float]:
    namespace = f"broker-latency-{os.getpid()}-{index}"
    port = free_port()
    data = tempfile.mkdtemp(prefix="taskdeck-latency-")
    broker_url = urlsplit(args.broker)
    proxy = None
    worker_url = args.broker
    if delayed:
        proxy = DelayingProxy((broker_url.hostname, broker_url.port or 5672), args.delay_ms / 1000)
        netloc = broker_url.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{proxy.port}"
        worker_url = urlunsplit(broker_url._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))
    env = keyed_env()
    logs = Logs(data)
    serve = logs.start("serve", [args.binary, "serve", "--db", f"{data}/t.db", "--listen", f"127.0.0.1:{port}",
                                 "--workers", "0", "--broker", args.broker, "--broker-namespace", namespace], env)
    worker_cmd = [args.binary, "worker", "--broker", worker_url, "--broker-namespace", namespace,
                  "--name", "w", "--concurrency", str(args.concurrency)]
    if args.prefetch:
        worker_cmd += ["--prefetch", str(args.prefetch)]
    worker = logs.start("worker", worker_cmd, env)
    client = TaskClient(f"http://127.0.0.1:{port}")
    failed = True
    try:
        if not wait_for(lambda: client.health(), 30):
            raise logs.failure("the server did not start")
        if not wait_for(lambda: any(w.get("name") == "w" for w in client.workers().get("workers", [])), 30):
            raise logs.failure("the worker did not connect")
        started = time.monotonic()
        ids = client.submit_many([{"task": "sleep", "args": [args.task_ms]} for _ in range(args.tasks)])
        records = client.wait_many(ids, timeout=args.timeout)
        elapsed = time.monotonic() - started
        if any(record.get("status") != "completed" for record in records):
            print(f"not every task completed; logs kept in {data}", file=sys.stderr)
            return None
        failed = False
        return args.tasks / elapsed
    finally:
        client.close()
        for process in (worker, serve):
            process.send_signal(signal.SIGTERM)
        for process in (worker, serve):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        if proxy is not None:
            proxy.close()
        delete_queues(namespace, ("w",))
        if not failed:
            logs.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default="target/release/taskdeck")
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--task-ms", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--prefetch", type=int, default=20)
    parser.add_argument("--delay-ms", type=float, default=10.0)
    parser.add_argument("--direct-only", action="store_true", help="only the run without the proxy")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    for index in range(args.rounds):
        direct = one_run(args, index * 2, False)
        delayed = None if args.direct_only else one_run(args, index * 2 + 1, True)
        print(json.dumps({
            "binary": args.binary,
            "round": index,
            "concurrency": args.concurrency,
            "prefetch": args.prefetch,
            "task_ms": args.task_ms,
            "delay_ms_each_way": args.delay_ms,
            "tasks": args.tasks,
            "direct_tasks_per_s": None if direct is None else round(direct, 1),
            "direct_wall_s": None if direct is None else round(args.tasks / direct, 3),
            "delayed_tasks_per_s": None if delayed is None else round(delayed, 1),
            "kept": None if not (direct and delayed) else round(delayed / direct, 3),
        }), flush=True)


if __name__ == "__main__":
    main()
