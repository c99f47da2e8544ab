"""Plain Python functions for `real_jobs.py` to run as Taskdeck tasks.

Nothing here knows about Taskdeck: the server imports this module in a child
Python process (start it with ``--pythonpath clients/python/examples``) and
calls the function with the JSON arguments it was given.
"""

from __future__ import annotations

import collections
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
