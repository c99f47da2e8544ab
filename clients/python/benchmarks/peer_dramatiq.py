#!/usr/bin/env python3
"""The same workloads as client_bench.py, through Dramatiq on RabbitMQ.

For a side-by-side comparison with a well-known Python task queue, driven
the way its users drive it: ``actor.send()`` and ``message.get_result()``
with Redis as the result backend, one client thread, a worker of
``--processes`` processes with one thread each. It needs what Taskdeck's
client does not: ``pip install 'dramatiq[rabbitmq,redis]'``, RabbitMQ and
Redis. Prints one JSON line with the keys of client_bench.py that apply.

    python3 clients/python/benchmarks/peer_dramatiq.py --processes 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

sys.path.insert(0, str(Path(__file__).resolve().parent))
from client_bench import percentiles  # noqa: E402

QUEUE = os.environ.get("PEER_QUEUE", "taskdeck-peer")
broker = RabbitmqBroker(url=os.environ.get("PEER_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2f"))
backend = RedisBackend(url=os.environ.get("PEER_REDIS", "redis://127.0.0.1:6379/0"))
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, store_results=True, max_retries=0)
def noop():
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--latency-tasks", type=int, default=1_000)
    parser.add_argument("--processes", type=int, default=2)
    options = parser.parse_args()

    env = dict(os.environ, PEER_QUEUE=QUEUE, PYTHONPATH=str(Path(__file__).resolve().parent))
    worker = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "peer_dramatiq", "--processes", str(options.processes),
         "--threads", "1", "--queues", QUEUE],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        # Warm up: the worker is ready once one task comes back.
        noop.send().get_result(block=True, timeout=60_000)
        start = time.perf_counter()
        messages = [noop.send() for _ in range(options.tasks)]
        submitted = time.perf_counter()
        for message in messages:
            message.get_result(block=True, timeout=60_000)
        end = time.perf_counter()
        samples = []
        for _ in range(options.latency_tasks):
            begun = time.perf_counter()
            noop.send().get_result(block=True, timeout=60_000)
            samples.append(time.perf_counter() - begun)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        for name in (QUEUE, f"{QUEUE}.DQ", f"{QUEUE}.XQ"):
            broker.channel.queue_delete(name)
        broker.close()
    print(json.dumps({
        "peer": f"dramatiq {dramatiq.__version__} (RabbitMQ, Redis results, {options.processes} worker processes)",
        "single": {
            "tasks": options.tasks,
            "tasks_per_s": round(options.tasks / (end - start), 1),
            "submit_s": round(submitted - start, 3),
            "wait_s": round(end - submitted, 3),
        },
        "closed_loop": {"unit": "ms", **percentiles(samples, 1e3)},
    }))
    return 0


if __name__ == "__main__":
    if os.environ.get("PEER_QUEUE") is None:
        os.environ["PEER_QUEUE"] = f"taskdeck-peer-{uuid.uuid4().hex[:8]}"
        # Re-run with the queue name fixed, so the worker declares the same one.
        sys.exit(subprocess.call([sys.executable, __file__, *sys.argv[1:]], env=os.environ))
    sys.exit(main())
