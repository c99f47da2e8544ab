"""Progress reports from code running inside a Taskdeck task.

``from taskdeck import progress`` and call ``progress(0.3, message="epoch
3/10", loss=0.31)`` from a ``command`` or ``python`` task: each call appends
one JSON line to the file named by ``TASKDECK_PROGRESS``, which the server
sets for such tasks and reads into the task's record (``record["progress"]``),
its progress history and the event stream. Outside a task (no such variable)
a call does nothing and returns False, so the same code runs anywhere.

The server's runner puts a fallback ``taskdeck.progress`` with the same
signature on the path of ``python`` tasks that cannot import this package;
keep ``progress(fraction=None, message=None, **metrics)`` as it is.

Pure standard library; nothing else of the package is imported.
"""

from __future__ import annotations

import json
import math
import os
import threading
from numbers import Integral, Real
from typing import Any, Dict, Optional

__all__ = ["progress", "PROGRESS_ENV"]

#: The environment variable that names the progress file.
PROGRESS_ENV = "TASKDECK_PROGRESS"

#: One line is written at a time, so lines from several threads never mix.
_WRITE_LOCK = threading.Lock()


def progress(fraction: Optional[float] = None, message: Optional[str] = None, **metrics: float) -> bool:
    """Reports a task's progress to the Taskdeck server that runs it.

    Appends one JSON line, ``{"fraction": 0.5, "message": "...",
    "metrics": {"loss": 0.3}}`` (absent parts left out), to the file named
    by the ``TASKDECK_PROGRESS`` environment variable, opened in append mode
    and written in one call per line, so it is safe from several threads and
    from several processes of one task.

    Args:
        fraction: how far the task is, from 0 to 1; ``None`` when unknown.
        message: a short text, e.g. ``"epoch 3/10"``.
        **metrics: numbers to record, e.g. ``loss=0.31, epoch=3``.

    Returns:
        True when the line was written; False when ``TASKDECK_PROGRESS`` is
        not set (not running as a Taskdeck task), and nothing was done.

    Raises:
        ValueError: ``fraction`` is not a number from 0 to 1, ``message`` is
            not a string, or a metric's name is empty or its value is not a
            finite number (``True`` and ``False`` are not numbers here).
        OSError: the progress file could not be written.
    """
    report: Dict[str, Any] = {}
    if fraction is not None:
        if not _is_number(fraction) or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be a number from 0 to 1, not {fraction!r}")
        report["fraction"] = float(fraction)
    if message is not None:
        if not isinstance(message, str):
            raise ValueError(f"message must be a string, not {message!r}")
        report["message"] = message
    if metrics:
        for name, value in metrics.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"a metric's name must be a non-empty string, not {name!r}")
            if not _is_number(value) or not math.isfinite(value):
                raise ValueError(f"metric {name!r} must be a finite number, not {value!r}")
        report["metrics"] = {name: _plain(value) for name, value in metrics.items()}
    path = os.environ.get(PROGRESS_ENV)
    if not path:
        return False
    line = (json.dumps(report, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")
    with _WRITE_LOCK:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = 0
            while written < len(line):
                written += os.write(fd, line[written:])
        finally:
            os.close(fd)
    return True


def _is_number(value: Any) -> bool:
    """A real number, not a bool (``numpy.float32`` and the like count)."""
    return isinstance(value, Real) and not isinstance(value, bool)


def _plain(value: Any) -> Any:
    """A whole number becomes an int and any other real number a float, so
    that JSON can hold numpy scalars and fractions."""
    if isinstance(value, Integral):
        return int(value)
    return float(value)
