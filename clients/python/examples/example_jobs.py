"""Plain Python functions for `real_jobs.py` and `watch.py` to run as
Taskdeck tasks.

The server imports this module in a child Python process (start it with
``--pythonpath clients/python/examples``) and calls the function with the
JSON arguments it was given. Only ``train_demo`` knows about Taskdeck: it
reports its progress with ``taskdeck.progress``, which does nothing when
the function runs anywhere else.
"""

from __future__ import annotations

import collections
import math
import time
from typing import Dict, List


def word_count(text: str, top: int = 3) -> Dict[str, object]:
    """Counts the words of ``text`` and returns the most common ones."""
    words = [word.strip(".,;:!?").lower() for word in text.split()]
    counts = collections.Counter(word for word in words if word)
    print(f"counted {sum(counts.values())} words, {len(counts)} distinct")
    return {"words": sum(counts.values()), "top": counts.most_common(top)}


def primes_below(limit: int) -> List[int]:
    """The primes below ``limit`` (a small CPU-bound job)."""
    sieve = bytearray([1]) * max(limit, 2)
    sieve[0:2] = b"\x00\x00"
    for number in range(2, int(limit**0.5) + 1):
        if sieve[number]:
            sieve[number * number :: number] = bytearray(len(sieve[number * number :: number]))
    primes = [number for number, is_prime in enumerate(sieve) if is_prime]
    print(f"found {len(primes)} primes below {limit}")
    return primes


def train_demo(epochs: int = 5, seconds_per_epoch: float = 0.5) -> Dict[str, float]:
    """Pretends to train a model: prints a line per step and reports its
    progress (fraction, message, loss and accuracy) once per epoch."""
    from taskdeck import progress  # The server's fallback when the package is not installed.

    steps = 4
    loss = accuracy = 0.0
    for epoch in range(1, epochs + 1):
        for step in range(1, steps + 1):
            time.sleep(seconds_per_epoch / steps)
            done = (epoch - 1) + step / steps
            loss = 2.0 * math.exp(-done / 2)
            accuracy = 1.0 - 0.9 * math.exp(-done)
            print(f"epoch {epoch} step {step}/{steps} loss {loss:.4f}", flush=True)
        progress(epoch / epochs, message=f"epoch {epoch}/{epochs}", loss=round(loss, 4),
                 accuracy=round(accuracy, 4), epoch=epoch)
    return {"loss": round(loss, 4), "accuracy": round(accuracy, 4)}
