#!/usr/bin/env python3
"""Submits random mock ML/CV tasks, waits for them and prints their latency.

Like the old Flask-era script: each task is a random ``mock_ml_task`` (with a
random algorithm) or ``mock_cv_task`` (with a random operation) running for
a random 1,000-20,000 ms. It then waits for every task and prints each one's
latency from submission to completion, and the p50/p95 over all of them.

    python3 examples/mock_tasks.py --count 20
    python3 examples/mock_tasks.py --count 3 --max-duration-ms 1500 --url http://127.0.0.1:5000

Exits 1 when a task did not complete, 2 when the server cannot be used.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

try:
    import taskdeck
except ImportError:  # Run from a checkout without `pip install clients/python`.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import taskdeck

from taskdeck import TaskClient, TaskdeckError

ML_ALGORITHMS = [
    "Random Forest",
    "Support Vector Machines (SVM)",
    "K-Means Clustering",
    "Gradient Boosting",
    "Principal Component Analysis (PCA)",
]
CV_OPERATIONS = [
    "Object Detection",
    "Image Segmentation",
    "Background Subtraction",
    "Field Registration",
    "Facial Recognition",
    "Gender and Age Prediction",
]
MIN_DURATION_MS = 1_000
MAX_DURATION_MS = 20_000


def random_task(rng: random.Random, max_duration_ms: int) -> Dict[str, object]:
    """One random mock task in the legacy ``create_task`` shape."""
    low = min(MIN_DURATION_MS, max_duration_ms)
    duration_ms = rng.randint(low, max_duration_ms)
    if rng.random() < 0.5:
        return taskdeck.create_task("mock_ml_task", duration_ms, rng.choice(ML_ALGORITHMS))
    return taskdeck.create_task("mock_cv_task", duration_ms, rng.choice(CV_OPERATIONS))


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of non-empty ``values`` (fraction in 0..1)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10, help="tasks to submit (default 10)")
    parser.add_argument("--url", default=taskdeck.DEFAULT_URL, help="server URL (default %(default)s)")
    parser.add_argument("--token", default=None, help="bearer token, when the server needs one")
    parser.add_argument(
        "--max-duration-ms",
        type=int,
        default=MAX_DURATION_MS,
        help="longest task duration in ms (default %(default)s; durations start at 1000)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed, for repeatable runs")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds to wait for all tasks (default: no limit)"
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be 1 or more")
    if args.max_duration_ms < 1:
        parser.error("--max-duration-ms must be 1 or more")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    tasks = [random_task(rng, args.max_duration_ms) for _ in range(args.count)]
    with TaskClient(args.url, token=args.token) as client:
        try:
            ids = [client.submit(task["function_name"], *task["arguments"]) for task in tasks]
        except TaskdeckError as error:
            print(f"cannot submit to {args.url}: {error}", file=sys.stderr)
            return 2
        print(f"submitted {len(ids)} tasks to {args.url}; waiting for them")
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        latencies: List[float] = []
        unfinished = 0
        for task_id, task in zip(ids, tasks):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                record = client.wait(task_id, timeout=remaining)
            except TaskdeckError as error:
                print(f"task {task_id:>6}  {task['function_name']:<13} not finished: {error}")
                unfinished += 1
                continue
            duration_ms, detail = task["arguments"]
            latency = record.get("total_latency_s")
            shown = "-" if latency is None else f"{latency:8.3f} s"
            print(
                f"task {task_id:>6}  {task['function_name']:<13} {detail:<36} "
                f"{duration_ms:>6} ms  {record['status']:<9} latency {shown}"
            )
            if record["status"] == "completed" and latency is not None:
                latencies.append(latency)
            else:
                unfinished += 1
    if latencies:
        print(
            f"summary: {len(latencies)}/{len(ids)} completed; latency "
            f"p50 {percentile(latencies, 0.50):.3f} s, p95 {percentile(latencies, 0.95):.3f} s, "
            f"max {max(latencies):.3f} s"
        )
    else:
        print(f"summary: 0/{len(ids)} completed")
    return 1 if unfinished else 0


if __name__ == "__main__":
    sys.exit(main())
