"""Waiting: the calls of :class:`taskdeck.TaskClient` that wait for tasks
to finish (:meth:`~WaitCalls.wait`, :meth:`~WaitCalls.wait_many`) and
:meth:`~WaitCalls.run`, which submits and waits in one round trip when the
task is quick.

Each waits with long polls of at most ``_POLL_MAX_S`` (the server answers
the moment the tasks finish), so a long wait is a few requests, never a
polling loop.

:class:`WaitCalls` is mixed into the client and only sends requests
through it; it depends on :mod:`taskdeck._submissions` and
:mod:`taskdeck.errors`, nothing else internal.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

from ._submissions import FINAL_STATUSES, submission, task_id_of, task_path
from .errors import TaskdeckTimeout

__all__ = ["WaitCalls"]

#: Longest single long poll a :meth:`WaitCalls.wait` sends; the server allows 300 s.
_POLL_MAX_S = 30.0

#: Extra seconds the socket waits beyond a long poll before it gives up.
_POLL_SLACK_S = 10.0


def _format_seconds(seconds: float) -> str:
    """Formats a non-negative number of seconds for a query string."""
    text = f"{max(0.0, seconds):.3f}".rstrip("0").rstrip(".")
    return text or "0"


class WaitCalls:
    """Waiting for tasks, and :meth:`run`; mixed into
    :class:`taskdeck.TaskClient`."""

    request: Callable[..., Any]
    timeout: float

    def wait(self, task_id: int, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Waits until a task has finished and returns its record.

        The server answers each long poll the moment the task finishes, so
        this returns without polling delay. A finished task is completed,
        failed or cancelled: check ``record["status"]``.

        Args:
            timeout: seconds to wait in all; ``None`` waits for as long as it
                takes.

        Raises:
            TaskdeckTimeout: the task had not finished when ``timeout`` passed.
            NotFound: no task has this id.
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            poll_s = self._poll_seconds(deadline)
            answer = self.request(
                "GET",
                task_path(task_id, "/wait"),
                query={"timeout_s": _format_seconds(poll_s)},
                timeout=max(self.timeout, poll_s + _POLL_SLACK_S),
            )
            if answer.get("finished"):
                return answer["task"]
            if deadline is not None and time.monotonic() >= deadline:
                status = (answer.get("task") or {}).get("status", "unknown")
                raise TaskdeckTimeout(
                    f"task {int(task_id)} did not finish within {timeout} s (it is {status})"
                )

    def wait_many(self, task_ids: Iterable[int], timeout: Optional[float] = None) -> List[Dict[str, Any]]:
        """Waits until every one of these tasks has finished and returns their
        records in the order given, in one request per long poll.

        The server answers the moment the last of them finishes. Ids may
        repeat; at most 10,000 different ids per call.

        Args:
            timeout: seconds to wait in all; ``None`` waits for as long as it
                takes.

        Raises:
            TaskdeckTimeout: some task had not finished when ``timeout`` passed.
            NotFound: one of the ids is unknown.
        """
        ids = [task_id_of(task_id) for task_id in task_ids]
        if not ids:
            return []
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            poll_s = self._poll_seconds(deadline)
            answer = self.request(
                "POST",
                "/api/v1/tasks/wait",
                {"ids": ids},
                query={"timeout_s": _format_seconds(poll_s)},
                timeout=max(self.timeout, poll_s + _POLL_SLACK_S),
            )
            if answer.get("finished"):
                by_id = {record["id"]: record for record in answer["tasks"]}
                return [by_id[task_id] for task_id in ids]
            if deadline is not None and time.monotonic() >= deadline:
                waiting = [r["id"] for r in answer.get("tasks", []) if r.get("status") not in FINAL_STATUSES]
                raise TaskdeckTimeout(
                    f"{len(waiting)} of the tasks did not finish within {timeout} s "
                    f"(e.g. {', '.join(str(i) for i in waiting[:5])})"
                )

    def run(
        self,
        name: str,
        *args: Any,
        priority: Optional[int] = None,
        max_retries: Optional[int] = None,
        timeout: Optional[float] = None,
        kwargs: Optional[Mapping[str, Any]] = None,
        gpus: Optional[int] = None,
        gpu_memory_mb: Optional[int] = None,
        wait_timeout: Optional[float] = None,
        queue: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Submits one task and waits for it: "run this and give me the result".

        One round trip when the task finishes within the first long poll
        (the server submits, waits and answers with the final record). Takes
        :meth:`submit`'s arguments and ``priority``, ``max_retries``,
        ``timeout``, ``kwargs``, ``gpus``, ``gpu_memory_mb`` and ``queue``
        options; returns the record like
        :meth:`wait` (the value is ``record["result"]`` when
        ``record["status"] == "completed"``).

        Args:
            wait_timeout: seconds to wait for the task to finish; ``None``
                waits for as long as it takes.

        Raises:
            BadRequest: the name is unknown, the arguments do not fit, or
                the queue name is bad.
            TaskdeckTimeout: the task was accepted but had not finished within
                ``wait_timeout`` (the message names its id; it keeps running).
        """
        body = submission(
            name, args, kwargs, priority, max_retries, timeout, gpus, gpu_memory_mb, queue=queue
        )
        deadline = None if wait_timeout is None else time.monotonic() + max(0.0, wait_timeout)
        poll_s = self._poll_seconds(deadline)
        answer = self.request(
            "POST",
            "/api/v1/tasks/run",
            body,
            query={"timeout_s": _format_seconds(poll_s)},
            timeout=max(self.timeout, poll_s + _POLL_SLACK_S),
        )
        if answer.get("finished"):
            return answer["task"]
        task_id = int(answer["task"]["id"])
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self.wait(task_id, timeout=remaining)

    @staticmethod
    def _poll_seconds(deadline: Optional[float]) -> float:
        """How long the next long poll may last."""
        if deadline is None:
            return _POLL_MAX_S
        return min(_POLL_MAX_S, max(0.0, deadline - time.monotonic()))
