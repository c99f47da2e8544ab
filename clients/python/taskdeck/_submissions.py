"""Building submissions: the JSON objects that ``POST /api/v1/tasks`` and
``/api/v1/tasks/batch`` take, from the arguments of the client's submit
methods or the shorter item shapes :meth:`TaskClient.submit_many` accepts.

Pure functions, no I/O; :mod:`taskdeck.client` depends on this module, never
the other way round. Only what the client can check without the server is
checked here (types, ``delay`` against ``not_before``); which names, ids and
values are acceptable is the server's to judge.
"""

from __future__ import annotations

import datetime
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

__all__ = [
    "TaskSpec", "create_task", "batch_ref", "task_id_of", "task_path", "queue_name_of", "submission",
    "dependencies_of", "epoch_seconds", "normalise_task", "FINAL_STATUSES",
]

#: The statuses a task ends in.
FINAL_STATUSES = frozenset(("completed", "failed", "cancelled"))

#: One item of :meth:`TaskClient.submit_many`: a dict, a name or a tuple.
TaskSpec = Union[Mapping[str, Any], Sequence[Any], str]


def create_task(function_name: str, *args: Any) -> Dict[str, Any]:
    """Builds a task in the legacy ``/submit_task`` shape without sending it.

    Returns ``{"function_name": function_name, "arguments": [*args]}``, ready
    for :meth:`TaskClient.send_task` (or :meth:`TaskClient.submit_many`).
    """
    return {"function_name": function_name, "arguments": list(args)}


def batch_ref(index: int) -> Dict[str, int]:
    """Refers to an earlier item of the same :meth:`TaskClient.submit_many`
    batch, by its position (0-based), in a ``depends_on`` list.

    Returns ``{"batch_index": index}``: the dependent waits for the task that
    item becomes. The server refuses (``BadRequest``) an index that is not
    earlier in the batch than the item naming it.
    """
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"a batch index is a whole number, not {index!r}")
    return {"batch_index": index}


def task_id_of(task_id: Any) -> int:
    """A task id as a whole number, or TypeError."""
    if isinstance(task_id, bool):
        raise TypeError(f"a task id is a whole number, not {task_id!r}")
    try:
        return int(task_id)
    except (TypeError, ValueError):
        raise TypeError(f"a task id is a whole number, not {task_id!r}") from None


def task_path(task_id: Any, suffix: str = "") -> str:
    """The path of one task's route; the id must be a whole number."""
    return f"/api/v1/tasks/{task_id_of(task_id)}{suffix}"


def queue_name_of(queue: Any) -> str:
    """A queue name as given, or TypeError for what is not a string.

    Which names are acceptable (1-64 letters, digits, ``_``, ``-``, ``.``)
    is the server's to judge: it answers ``BadRequest`` for a bad one.
    """
    if not isinstance(queue, str):
        raise TypeError(f"a queue name is a string, not {queue!r}")
    return queue


def submission(
    name: str,
    args: Iterable[Any] = (),
    kwargs: Optional[Mapping[str, Any]] = None,
    priority: Optional[int] = None,
    max_retries: Optional[int] = None,
    timeout: Optional[float] = None,
    gpus: Optional[int] = None,
    gpu_memory_mb: Optional[int] = None,
    delay: Optional[float] = None,
    not_before: Union[None, float, "datetime.datetime"] = None,
    depends_on: Optional[Iterable[Any]] = None,
    on_dependency_failure: Optional[str] = None,
    queue: Optional[str] = None,
) -> Dict[str, Any]:
    """Builds a submission object, leaving out what the server defaults
    (``queue=None`` is the ``default`` queue)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"a task name is a non-empty string, not {name!r}")
    body: Dict[str, Any] = {"task": name, "args": list(args)}
    if kwargs:
        body["kwargs"] = dict(kwargs)
    if priority is not None:
        body["priority"] = priority
    if max_retries is not None:
        body["max_retries"] = max_retries
    if timeout is not None:
        body["timeout_s"] = timeout
    if gpus:
        body["gpus"] = gpus
    if gpu_memory_mb is not None:
        body["gpu_memory_mb"] = gpu_memory_mb
    if delay is not None and not_before is not None:
        raise TypeError("give delay or not_before, not both")
    if delay is not None:
        body["delay_s"] = delay
    if not_before is not None:
        body["not_before"] = epoch_seconds(not_before)
    dependencies = dependencies_of(depends_on)
    if dependencies:
        body["depends_on"] = dependencies
    if on_dependency_failure is not None:
        body["on_dependency_failure"] = on_dependency_failure
    if queue is not None:
        body["queue"] = queue_name_of(queue)
    return body


def dependencies_of(depends_on: Optional[Iterable[Any]]) -> List[Any]:
    """A ``depends_on`` list: task ids as whole numbers, batch references
    (``{"batch_index": n}``, see :func:`batch_ref`) as given.

    Which ids and positions are acceptable is the server's to judge.
    """
    if depends_on is None:
        return []
    if isinstance(depends_on, (str, bytes, Mapping)) or not isinstance(depends_on, Iterable):
        raise TypeError(
            "depends_on is a list of task ids (or, in submit_many, batch_ref(n)), "
            f"not {depends_on!r}"
        )
    return [dict(item) if isinstance(item, Mapping) else task_id_of(item) for item in depends_on]


def epoch_seconds(at: Union[float, "datetime.datetime"]) -> float:
    """A start time as seconds since the epoch; a naive datetime is local."""
    if isinstance(at, datetime.datetime):
        return at.timestamp()
    if isinstance(at, bool) or not isinstance(at, (int, float)):
        raise TypeError(f"not_before is a datetime or seconds since the epoch, not {at!r}")
    return float(at)


def normalise_task(task: TaskSpec, queue: Optional[str] = None) -> Dict[str, Any]:
    """Turns one item given to ``submit_many`` into a submission object.

    Accepts a submission dict (``{"task": ...}``; its ``depends_on`` may be
    any iterable of ids and :func:`batch_ref` references), a legacy dict from
    :func:`create_task` (``{"function_name": ..., "arguments": [...]}``),
    a bare task name, or a tuple ``(name,)``, ``(name, args)`` or
    ``(name, args, kwargs)``. An item that names no queue (no ``"queue"``,
    or ``None``) goes to ``queue`` when one is given.
    """
    if isinstance(task, str):
        return submission(task, queue=queue)
    if isinstance(task, Mapping):
        if "task" not in task and "function_name" in task:
            return submission(task["function_name"], task.get("arguments") or (), queue=queue)
        body = dict(task)
        if body.get("depends_on") is not None:
            body["depends_on"] = dependencies_of(body["depends_on"])
        if body.get("queue") is not None:
            body["queue"] = queue_name_of(body["queue"])
        elif queue is not None:
            body["queue"] = queue_name_of(queue)
        return body
    if isinstance(task, Sequence) and 1 <= len(task) <= 3:
        name = task[0]
        args = task[1] if len(task) > 1 else ()
        kwargs = task[2] if len(task) > 2 else None
        if isinstance(args, (str, bytes)) or not isinstance(args, Iterable):
            raise TypeError(f"the arguments of {name!r} must be a list or tuple, not {args!r}")
        return submission(name, args, kwargs, queue=queue)
    raise TypeError(
        "each task is a submission dict, a name, or a (name, args[, kwargs]) tuple, "
        f"not {task!r}"
    )
