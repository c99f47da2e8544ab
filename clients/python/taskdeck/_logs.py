"""Task output and progress: the calls of :class:`taskdeck.TaskClient` that
read what a running or finished task wrote (``GET /api/v1/tasks/{id}/log``)
and the progress it reported (``GET /api/v1/tasks/{id}/progress``).

A log is read by byte offset. :meth:`LogCalls.log_bytes` is one page, for
callers that keep their own offset; :meth:`LogCalls.logs` hands out text,
decoded incrementally so that a character split between two pages or two
pieces of a stream comes out whole, either up to what exists now or,
following, until the attempt ends. Following reads a streamed answer on a
connection of its own; the pages go over the client's kept-alive one.

:class:`LogCalls` is mixed into the client; it depends on
:mod:`taskdeck._submissions` and :mod:`taskdeck.errors`, nothing else
internal.
"""

from __future__ import annotations

import codecs
import socket
import time
from typing import Any, Callable, Dict, Generator, Iterator, NamedTuple, Optional, Tuple

from ._submissions import FINAL_STATUSES, task_path
from .errors import NotFound, TaskdeckError, error_from_answer

__all__ = ["LogCalls"]

#: Bytes asked for per page when reading a log without following it.
_PAGE_BYTES = 256 * 1024

#: How often a follower looks whether a task that has not started yet has a
#: log now: first, and at most (the wait doubles in between).
_APPEAR_FIRST_S = 0.05
_APPEAR_MAX_S = 0.5

#: The wait before following again after a followed answer ended early.
_REFOLLOW_FIRST_S = 0.05
_REFOLLOW_MAX_S = 1.0


class _LogPage(NamedTuple):
    """One answer of the log route without ``follow``."""

    data: bytes
    #: Where the next page starts (``X-Taskdeck-Next-Offset``).
    next_offset: int
    #: The attempt has ended and every byte was served (``X-Taskdeck-Log-Complete``).
    complete: bool
    #: The attempt served (``X-Taskdeck-Attempt``).
    attempt: int


class LogCalls:
    """The task log and progress calls of :class:`taskdeck.TaskClient`."""

    # Provided by TaskClient.
    timeout: float
    request: Callable[..., Any]
    get: Callable[..., Dict[str, Any]]
    _request_bytes: Callable[..., Tuple[Dict[str, str], bytes]]
    _open_stream: Callable[..., Any]

    def log_bytes(
        self,
        task_id: int,
        attempt: Optional[int] = None,
        offset: int = 0,
        limit: Optional[int] = None,
    ) -> Tuple[bytes, int, bool]:
        """Reads one piece of a task attempt's output log, for callers that
        keep their own offset.

        Returns ``(data, next_offset, complete)``: the raw bytes from
        ``offset``, where the next piece starts (pass it as ``offset`` next
        time), and whether the attempt has ended and every byte was served.
        Bytes are not text: a UTF-8 character may be split between two
        pieces (:meth:`logs` decodes them whole).

        Args:
            attempt: the attempt (1 for the first); ``None``: the latest.
            offset: the first byte to read.
            limit: at most this many bytes (the server may send fewer);
                ``None``: the server's default.

        Raises:
            NotFound: the task is unknown, or the attempt has no log (yet).
        """
        page = self._log_page(task_id, attempt=attempt, offset=offset, limit=limit)
        return page.data, page.next_offset, page.complete

    def logs(
        self,
        task_id: int,
        follow: bool = False,
        attempt: Optional[int] = None,
        tail: Optional[int] = None,
    ) -> Iterator[str]:
        """A task attempt's output log as text: a generator of ``str`` pieces.

        The bytes are decoded as UTF-8 incrementally, so a character split
        between two pieces comes out whole; bytes that are not UTF-8 become
        U+FFFD. Join the pieces, or print them with ``end=""``.

        Without ``follow`` it reads what the log holds now, page by page,
        and ends. With ``follow`` it then goes on, on a connection of its
        own, handing out every byte as the task writes it, and ends when the
        attempt has ended and every byte was read. Following a task that has
        not started yet waits for its log to appear (it looks every 0.05 to
        0.5 s); a broken connection is followed again from where it stopped,
        so no byte comes twice or goes missing.

        Close the generator to stop early; with ``follow`` that also closes
        its connection.

        Args:
            follow: go on until the attempt ends.
            attempt: the attempt to read (1 for the first); ``None``: the
                latest when the generator starts, kept for the whole read.
            tail: start at the beginning of the last ``tail`` lines instead
                of the start of the log.

        Raises:
            NotFound: the task is unknown, or (without ``follow``, or when
                the task has finished) the attempt has no log.
        """
        if tail is not None and (isinstance(tail, bool) or not isinstance(tail, int) or tail < 0):
            raise ValueError(f"tail is a number of lines, 0 or more, not {tail!r}")
        if attempt is not None and (isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1):
            raise ValueError(f"attempt is a whole number from 1, not {attempt!r}")
        task_path(task_id)  # Checks the id before the first next().
        return self._read_log(task_id, follow, attempt, tail)

    def progress_history(self, task_id: int, attempt: Optional[int] = None) -> Dict[str, Any]:
        """The progress a task attempt reported, oldest first:
        ``{"task": id, "attempt": n, "points": [{"at_us", "fraction",
        "metrics"}, ...]}`` (``fraction`` is absent from a point that had
        none; ``at_us`` is microseconds since the epoch).

        The latest report is also in the record, ``get(id)["progress"]``.

        Args:
            attempt: the attempt (1 for the first); ``None``: the latest.

        Raises:
            NotFound: the task is unknown.
        """
        query = None if attempt is None else {"attempt": int(attempt)}
        return self.request("GET", task_path(task_id, "/progress"), query=query)

    def _read_log(self, task_id: int, follow: bool, attempt: Optional[int], tail: Optional[int]) -> Iterator[str]:
        """The generator behind :meth:`logs`.

        It always starts with plain pages, which say which attempt and
        offset the text starts at; following then asks for exactly that
        attempt from exactly the offset reached, so the pieces join up.
        """
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        page = self._first_log_page(task_id, attempt, tail, wait=follow)
        attempt = page.attempt
        refollow_s = _REFOLLOW_FIRST_S
        while True:
            text = decoder.decode(page.data)
            if text:
                yield text
            position = page.next_offset
            if page.complete or (not page.data and not follow):
                break
            if page.data:
                page = self._log_page(task_id, attempt=attempt, offset=position, limit=_PAGE_BYTES)
                continue
            # All there is so far was read: follow the rest as it comes.
            followed = yield from self._follow_log(task_id, attempt, position, decoder)
            page = self._log_page(task_id, attempt=attempt, offset=followed, limit=_PAGE_BYTES)
            if followed == position and not page.data and not page.complete:
                # The followed answer ended with nothing new and the attempt
                # goes on: wait a little before asking again.
                time.sleep(refollow_s)
                refollow_s = min(_REFOLLOW_MAX_S, refollow_s * 2)
            else:
                refollow_s = _REFOLLOW_FIRST_S
        rest = decoder.decode(b"", final=True)
        if rest:
            yield rest

    def _follow_log(self, task_id: int, attempt: int, offset: int, decoder: Any) -> Generator[str, None, int]:
        """Follows one streamed answer from ``offset`` until it ends, breaks
        or stalls, handing out its text; returns the offset reached."""
        path = task_path(task_id, "/log")
        query = {"attempt": attempt, "offset": offset, "follow": "true"}
        stream = self._open_stream(path, query, "application/octet-stream", None, self.timeout)
        try:
            if stream.status != 200:
                raise error_from_answer(stream.status, stream.read_to_end(), f"GET {path}")
            while True:
                try:
                    data = stream.read_some()
                except socket.timeout:
                    # Silent for a while: fine if the task is quiet, but when
                    # the log has grown or ended meanwhile the answer is stuck.
                    probe = self._log_page(task_id, attempt=attempt, offset=offset, limit=1)
                    if probe.data or probe.complete:
                        return offset
                    continue
                except OSError:
                    return offset  # Broken: followed again from here.
                if not data:
                    return offset
                offset += len(data)
                text = decoder.decode(data)
                if text:
                    yield text
        finally:
            stream.close()

    def _first_log_page(self, task_id: int, attempt: Optional[int], tail: Optional[int], wait: bool) -> _LogPage:
        """The first page; with ``wait``, once the log exists (while the task
        has not finished, a missing log is one still to come)."""
        pause_s = _APPEAR_FIRST_S
        while True:
            try:
                if tail is not None:
                    return self._log_page(task_id, attempt=attempt, tail=tail, limit=_PAGE_BYTES)
                return self._log_page(task_id, attempt=attempt, offset=0, limit=_PAGE_BYTES)
            except NotFound:
                # A task that ended without a log will not write one any more.
                if not wait or self.get(task_id)["status"] in FINAL_STATUSES:
                    raise
            time.sleep(pause_s)
            pause_s = min(_APPEAR_MAX_S, pause_s * 2)

    def _log_page(
        self,
        task_id: int,
        attempt: Optional[int] = None,
        offset: Optional[int] = None,
        limit: Optional[int] = None,
        tail: Optional[int] = None,
    ) -> _LogPage:
        """One answer of the log route without ``follow``."""
        query: Dict[str, Any] = {}
        if attempt is not None:
            query["attempt"] = int(attempt)
        if tail is not None:
            query["tail"] = int(tail)
        elif offset is not None:
            query["offset"] = int(offset)
        if limit is not None:
            query["limit"] = int(limit)
        fields, data = self._request_bytes(task_path(task_id, "/log"), query)
        complete = _field(fields, "x-taskdeck-log-complete").lower()
        if complete not in ("true", "false"):
            raise TaskdeckError(f"the log answer's X-Taskdeck-Log-Complete is {complete!r}, not true or false")
        return _LogPage(
            data,
            next_offset=_int_field(fields, "x-taskdeck-next-offset"),
            complete=complete == "true",
            attempt=_int_field(fields, "x-taskdeck-attempt"),
        )


def _field(fields: Dict[str, str], name: str) -> str:
    """A header field the log route always sends."""
    value = fields.get(name)
    if value is None:
        raise TaskdeckError(f"the server's log answer has no {name} header")
    return value


def _int_field(fields: Dict[str, str], name: str) -> int:
    """A header field that holds a whole number."""
    value = _field(fields, name)
    try:
        return int(value)
    except ValueError:
        raise TaskdeckError(f"the server's log answer has {name}: {value!r}, not a number") from None
