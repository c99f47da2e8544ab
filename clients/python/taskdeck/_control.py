"""Steering: the calls of :class:`taskdeck.TaskClient` that change what
runs once tasks are submitted: cancel, retry, hold and release one task;
pause and resume the whole scheduler; and the named queues' limits and
pauses (``/api/v1/queues``).

Every task belongs to one queue (``default`` unless its submission names
another). A queue may have a limit, the most of its tasks that run at once,
and may be paused, so that none of its tasks start while the other queues go
on. The server keeps these settings, like the scheduler's pause and task
holds, across restarts.

:class:`ControlCalls` is mixed into the client and only sends requests
through it; it depends on :mod:`taskdeck._submissions` and
:mod:`taskdeck.errors`, nothing else internal.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Union
from urllib.parse import quote

from ._submissions import queue_name_of, task_path
from .errors import BadRequest

__all__ = ["NO_LIMIT", "ControlCalls"]


class _NoLimit:
    """The type of :data:`NO_LIMIT`; it has one instance."""

    _instance: Optional["_NoLimit"] = None

    def __new__(cls) -> "_NoLimit":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_LIMIT"

    def __reduce__(self) -> str:
        return "NO_LIMIT"  # Pickles as this module's NO_LIMIT, so stays one.


#: Pass as ``limit`` to :meth:`TaskClient.set_queue` to remove a queue's
#: limit (``limit=None``, the default, leaves the limit as it is).
NO_LIMIT = _NoLimit()


def _queue_path(name: str) -> str:
    """The percent-encoded path of one queue's route.

    Every character outside the unreserved set is encoded, a ``/`` too, so
    that any name reaches the server as one path segment and a bad one is
    answered ``BadRequest`` rather than ``NotFound``. The empty name is
    refused here with the same ``BadRequest`` (no status): its path would
    be the route that lists every queue.
    """
    if queue_name_of(name) == "":
        raise BadRequest("a queue name is 1 to 64 letters, digits, '_', '-' or '.', not empty")
    return "/api/v1/queues/" + quote(name, safe="")


class ControlCalls:
    """The steering calls of :class:`taskdeck.TaskClient`.

    A queue object (a dict) has ``name``, ``limit`` (an int, or ``None`` for
    no limit), ``paused`` (bool) and how many of its tasks are in each
    status: ``queued``, ``running``, ``retrying``, ``completed``, ``failed``,
    ``cancelled``.
    """

    # Provided by TaskClient: request(), and request() for a path already
    # percent-encoded.
    request: Callable[..., Any]
    _request_target: Callable[..., Any]

    # ----------------------------------------------------------------- tasks

    def cancel(self, task_id: int) -> Dict[str, Any]:
        """Cancels a task that has not finished.

        Returns ``{"id", "outcome", "task"}``: outcome ``"removed"`` for a task
        that had not started (it is now cancelled), ``"stop_requested"`` for a
        running one (it stops at its next cancellation point; :meth:`wait`
        for it to see it cancelled).

        Raises:
            NotFound: no task has this id.
            Conflict: the task has already finished.
        """
        return self.request("POST", task_path(task_id, "/cancel"))

    def retry(self, task_id: int, cascade: bool = False) -> Dict[str, Any]:
        """Queues a failed or cancelled task again, with a fresh retry budget.

        Returns ``{"id", "status": "queued", "ids"}``, where ``ids`` lists
        every task queued again, ``task_id`` first.

        Args:
            cascade: also queue again the dependents (and theirs) that this
                task's failure or cancellation cancelled.

        Raises:
            NotFound: no task has this id.
            Conflict: the task is neither failed nor cancelled, or one of its
                own dependencies failed or was cancelled (retry that one with
                ``cascade=True`` instead).
        """
        query = {"cascade": "true"} if cascade else None
        return self.request("POST", task_path(task_id, "/retry"), query=query)

    def hold(self, task_id: int) -> Dict[str, Any]:
        """Holds a queued or retrying task: it keeps its place but does not
        start until :meth:`release` (the hold survives server restarts).
        Returns the record (``record["held"]`` is true).

        Raises:
            NotFound: no task has this id.
            Conflict: the task is running or finished.
        """
        return self.request("POST", task_path(task_id, "/hold"))

    def pause(self, stop_running: bool = False) -> Dict[str, Any]:
        """Pauses the whole scheduler: no task of any queue starts until
        :meth:`resume` (submits are still accepted; :meth:`pause_queue`
        pauses one queue); it stays paused across server
        restarts. Running tasks go on, or with ``stop_running=True`` are
        stopped and put back in the queue without counting an attempt.
        Returns ``{"paused": True, "stopped": N}``.
        """
        query = {"stop_running": "true"} if stop_running else None
        return self.request("POST", "/api/v1/pause", query=query)

    def resume(self) -> Dict[str, Any]:
        """Resumes a paused scheduler; returns ``{"paused": False}``."""
        return self.request("POST", "/api/v1/resume")

    def release(self, task_id: int) -> Dict[str, Any]:
        """Releases a held task (it may start again); returns the record.

        Raises:
            NotFound: no task has this id.
        """
        return self.request("POST", task_path(task_id, "/release"))

    # ---------------------------------------------------------------- queues

    def queues(self) -> List[Dict[str, Any]]:
        """Returns every queue the server knows, sorted by name, as queue
        objects: ``default``, and each queue a task was submitted to or
        whose settings were set."""
        return self._request_target("GET", "/api/v1/queues")["queues"]

    def queue(self, name: str) -> Dict[str, Any]:
        """Returns one queue object; a valid name never used has no limit,
        is not paused and counts no tasks.

        Raises:
            BadRequest: not a queue name (1-64 letters, digits, ``_``, ``-``
                or ``.``).
        """
        return self._request_target("GET", _queue_path(name))

    def set_queue(
        self,
        name: str,
        *,
        limit: Union[None, int, _NoLimit] = None,
        paused: Optional[bool] = None,
        stop_running: bool = False,
    ) -> Dict[str, Any]:
        """Changes a queue's settings and returns the queue object as it then
        stands. What is not given stays as it is; the server stores the
        change before it answers, so it holds across restarts.

        Args:
            limit: the most of its tasks that may run at once (1 or more);
                ``NO_LIMIT`` removes the limit; ``None`` leaves it as it is.
                Lowering it stops nothing: running tasks finish, and no more
                start until fewer than the limit run.
            paused: ``True`` pauses the queue (none of its tasks start, the
                other queues go on), ``False`` resumes it; ``None`` leaves it.
            stop_running: with ``paused=True`` only: also stop the queue's
                running tasks and put them back in it without counting an
                attempt.

        Raises:
            BadRequest: not a queue name, or a limit below 1 (pause the queue
                to run none of its tasks).
            TypeError: a limit that is not a whole number or ``NO_LIMIT``, a
                ``paused`` that is not a bool, or ``stop_running`` without
                ``paused=True``.
        """
        body: Dict[str, Any] = {}
        if limit is NO_LIMIT:
            body["limit"] = None
        elif limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int):
                raise TypeError(f"a queue's limit is a whole number or NO_LIMIT, not {limit!r}")
            body["limit"] = limit
        if paused is not None:
            if not isinstance(paused, bool):
                raise TypeError(f"paused is True, False or None, not {paused!r}")
            body["paused"] = paused
        if stop_running:
            if paused is not True:
                raise TypeError("stop_running goes with paused=True")
            body["stop_running"] = True
        return self._request_target("PATCH", _queue_path(name), body)

    def pause_queue(self, name: str, stop_running: bool = False) -> Dict[str, Any]:
        """Pauses one queue: none of its tasks start until
        :meth:`resume_queue` (submits to it are still accepted), while the
        other queues go on (:meth:`pause` holds back every queue). Running
        tasks go on, or with ``stop_running=True`` are
        stopped and put back in the queue without counting an attempt.
        Returns the queue object (``"paused": True``).
        """
        return self.set_queue(name, paused=True, stop_running=stop_running)

    def resume_queue(self, name: str) -> Dict[str, Any]:
        """Resumes a paused queue; returns the queue object (``"paused": False``)."""
        return self.set_queue(name, paused=False)
