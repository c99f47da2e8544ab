"""The event stream: :meth:`TaskClient.events`, the server's changes as they
happen (``GET /api/v1/events``, Server-Sent Events).

The stream runs on a connection of its own, never the client's kept-alive
one, so other calls on the same client go on while it is read. It is read
as it arrives and handed out one event at a time. When the connection
drops, the generator reconnects by itself, after a short backoff, with the
last id it saw as ``Last-Event-ID``, so the server resumes right after it
(or, when it no longer can, sends a ``reset`` event first).

:class:`EventCalls` is mixed into the client; it depends on
:mod:`taskdeck._sse`, :mod:`taskdeck._submissions` and
:mod:`taskdeck.errors`, nothing else internal.
"""

from __future__ import annotations

import socket
import time
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Union

from ._sse import Event, SseParser
from ._submissions import task_id_of
from .errors import ConnectionFailed, TaskdeckError, TaskdeckTimeout, Unavailable, error_from_answer

__all__ = ["Event", "EventCalls", "EVENT_KINDS"]

#: What a stream may be about; ``kinds`` takes any of them.
EVENT_KINDS = ("task", "worker", "queue", "resources")

#: A stream silent for this long counts as dropped (unless the client's own
#: timeout is longer). The server sends a keep-alive comment every 15 s.
_SILENCE_S = 40.0

#: The first wait before reconnecting, when the server named none, and the
#: longest (the wait doubles after each failed try).
_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 2.0

#: Characters that cannot go in a header value.
_BAD_HEADER_CHARACTERS = ("\r", "\n", "\0")


class _Dropped(Exception):
    """The stream's connection ended or broke; a reconnect may follow."""


class EventCalls:
    """The event stream of :class:`taskdeck.TaskClient`."""

    # Provided by TaskClient.
    url: str
    timeout: float
    _open_stream: Callable[..., Any]

    def events(
        self,
        kinds: Union[None, str, Iterable[str]] = None,
        tasks: Union[None, int, Iterable[int]] = None,
        last_event_id: Optional[str] = None,
        reconnect: bool = True,
        timeout: Optional[float] = None,
    ) -> Iterator[Event]:
        """Follows the server's changes as they happen: a generator of
        :class:`Event` objects (``id``, ``type``, ``data``).

        Event types and their ``data``:

        - ``"task"``: ``{"kind": "submitted" | "started" | "retrying" |
          "requeued" | "completed" | "failed" | "cancelled" | "held" |
          "released" | "progress", "task": <the record, as from get(), but
          without "dependents" and "waiting">}``.
        - ``"worker"``: ``{"worker": <an entry of workers()>}``, with
          ``"gone": True`` when the worker left.
        - ``"queue"``: ``{"queue": <a queue object, as from queue()>}``.
        - ``"resources"``: a resource sample, as from :meth:`history`.
        - ``"reset"``: ``{"reason": "..."}``: events were missed (the client
          fell behind, or the server could not resume after the last id).
          Reload what you keep with the other calls, then go on reading.

        ``events()`` returns once the stream is connected, so every change
        made after it returns is in the stream; an error answer (a bad
        filter, a missing token) is raised by ``events()`` itself. The
        stream runs on a connection of its own and is read as it arrives.
        When the connection drops and ``reconnect`` is true, the generator
        connects again after a short backoff, sending the last id it saw as
        ``Last-Event-ID``, and goes on without repeating an event; it gives
        up with :class:`ConnectionFailed` when the server stays unreachable
        for longer than the client's timeout. A stream silent for 40 s or
        the client's timeout, whichever is longer (the server sends a
        keep-alive every 15 s), counts as dropped.

        Close the generator (``stream.close()``, or leave a ``for`` loop
        over it and let it go) to close its connection; ``with
        contextlib.closing(client.events()) as stream:`` does it for sure.

        Args:
            kinds: event kinds to receive: any of ``"task"``, ``"worker"``,
                ``"queue"``, ``"resources"`` (a list or a comma-separated
                string). The server's default is all of them, or only
                ``"task"`` when ``tasks`` is given. ``reset`` always comes.
            tasks: only the events of these task ids (one id or several).
            last_event_id: resume after this id (from an earlier
                :class:`Event`), e.g. after a restart of the caller.
            reconnect: reconnect after a dropped connection; when false the
                generator ends when the server closes the stream and raises
                :class:`ConnectionFailed` when the connection breaks.
            timeout: seconds to wait for each event; when none comes in
                time the generator raises :class:`TaskdeckTimeout`. ``None``
                waits for as long as it takes.

        Raises:
            BadRequest: a kind or task id the server does not take.
            Unauthorized: the server wants a token.
            ConnectionFailed: the server could not be reached (for longer
                than the client's timeout when reconnecting).
            TaskdeckTimeout: no event within ``timeout``.
        """
        query: Dict[str, str] = {}
        if kinds is not None:
            words = [kinds] if isinstance(kinds, str) else list(kinds)
            for word in words:
                if not isinstance(word, str):
                    raise TypeError(f"an event kind is a string, not {word!r}")
            query["kinds"] = ",".join(words)
        if tasks is not None:
            ids = [tasks] if isinstance(tasks, int) else list(tasks)
            query["task"] = ",".join(str(task_id_of(task_id)) for task_id in ids)
        if last_event_id is not None:
            if not isinstance(last_event_id, str):
                raise TypeError(f"last_event_id is a string from Event.id, not {last_event_id!r}")
            if any(char in last_event_id for char in _BAD_HEADER_CHARACTERS):
                raise ValueError(f"last_event_id cannot contain CR, LF or NUL: {last_event_id!r}")
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout is seconds, not negative: {timeout!r}")
        stream = self._follow_events(query, last_event_id, reconnect, timeout)
        next(stream)  # Runs up to the first connection: see "returns once connected".
        return stream

    def _follow_events(
        self,
        query: Dict[str, str],
        last_event_id: Optional[str],
        reconnect: bool,
        timeout: Optional[float],
    ) -> Iterator[Event]:
        """The generator behind :meth:`events`; it yields ``None`` once, when
        its first connection is open, and events after that."""
        last_id = last_event_id
        server_retry_s: Optional[float] = None
        silence_s = max(_SILENCE_S, self.timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        tries = 0  # Reconnections since the last event.
        connected = False
        dropped_since: Optional[float] = None
        while True:
            headers = {"Cache-Control": "no-cache"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            stream = None
            try:
                stream = self._open_stream("/api/v1/events", query, "text/event-stream", headers, silence_s)
                if stream.status != 200:
                    error = error_from_answer(stream.status, stream.read_to_end(), "GET /api/v1/events")
                    # Only a server that is shutting down may come back.
                    if not (reconnect and isinstance(error, Unavailable)):
                        raise error
                    raise _Dropped(str(error))
                dropped_since = None
                if not connected:
                    connected = True
                    yield None  # type: ignore[misc]  # events() takes this one.
                # A fresh parser per connection: half a line left from a
                # broken one must not run into the new stream.
                parser = SseParser(last_id)
                while True:
                    data = self._read_stream(stream, silence_s, deadline, timeout)
                    if not data:
                        if not reconnect:
                            return
                        raise _Dropped("the server closed the stream")
                    for event in parser.feed(data):
                        last_id = event.id
                        tries = 0
                        yield event
                        if timeout is not None:
                            deadline = time.monotonic() + timeout
                    last_id = parser.last_id  # An id may come without data.
                    if parser.retry_ms is not None:
                        server_retry_s = parser.retry_ms / 1000.0
            except (_Dropped, ConnectionFailed, TaskdeckTimeout) as error:
                if isinstance(error, TaskdeckTimeout) and _passed(deadline):
                    raise
                if not reconnect:
                    if isinstance(error, TaskdeckError):
                        raise
                    raise ConnectionFailed(f"the event stream broke: {error}") from error
                now = time.monotonic()
                if dropped_since is None:
                    dropped_since = now
                elif now - dropped_since > self.timeout:
                    raise ConnectionFailed(
                        f"the event stream could not reconnect to {self.url} within {self.timeout:g} s: {error}"
                    ) from error
            finally:
                if stream is not None:
                    stream.close()
            # The server's retry delay (SSE ``retry``) is the first wait;
            # each further try in a row waits twice as long, up to a cap.
            first_s = _RETRY_FIRST_S if server_retry_s is None else server_retry_s
            pause_s = min(max(_RETRY_MAX_S, first_s), first_s * 2 ** min(tries, 16))
            tries += 1
            if deadline is not None:
                pause_s = min(pause_s, max(0.0, deadline - time.monotonic()))
            time.sleep(pause_s)

    def _read_stream(
        self, stream: Any, silence_s: float, deadline: Optional[float], timeout: Optional[float]
    ) -> bytes:
        """The stream's next bytes (``b""`` at its end), waiting at most
        until the event deadline and at most ``silence_s``."""
        wait_s = silence_s if deadline is None else min(silence_s, deadline - time.monotonic())
        if wait_s <= 0:
            raise TaskdeckTimeout(f"no event from {self.url} within {timeout:g} s")
        stream.settimeout(wait_s)
        try:
            return stream.read_some()
        except socket.timeout:
            if _passed(deadline):
                raise TaskdeckTimeout(f"no event from {self.url} within {timeout:g} s") from None
            raise _Dropped(f"the stream was silent for {silence_s:g} s") from None
        except OSError as error:
            raise _Dropped(str(error)) from error


def _passed(deadline: Optional[float]) -> bool:
    """Whether a deadline (``None``: none) has passed."""
    return deadline is not None and time.monotonic() >= deadline
