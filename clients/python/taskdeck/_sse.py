"""Server-Sent Events: the :class:`Event` a caller gets and the parser that
turns a stream's bytes into events, fed as the bytes arrive.

Pure code: no sockets, no threads, no imports from the rest of the package,
so every framing rule can be tested on bytes alone. The rules are those of
the WHATWG ``EventSource`` specification:

- Lines end with CRLF, LF or CR; a blank line ends an event.
- A line that starts with ``:`` is a comment (the server's keep-alive).
- ``field: value`` (one space after the colon is dropped); a line without a
  colon is a field with an empty value; unknown fields are ignored.
- ``data`` lines are joined with ``\\n``; an event without data is not
  dispatched, but an ``id`` it carries still counts as the last id.
- An ``id`` line (one that contains NUL is ignored) becomes the last event
  id when its event ends, so an event cut off in the middle never counts as
  seen; the last id stays until another ``id`` line changes it.
- ``retry`` with only digits sets the reconnection delay in milliseconds.
- The event type is ``message`` unless an ``event`` line names one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, List, Optional

__all__ = ["Event", "SseParser"]


@dataclass(frozen=True)
class Event:
    """One event of :meth:`TaskClient.events`.

    Attributes:
        id: the event's id (an opaque string), the one to resume after; or
            ``None`` when the server has given none yet.
        type: ``"task"``, ``"worker"``, ``"queue"``, ``"resources"`` or
            ``"reset"`` (see :meth:`TaskClient.events`).
        data: the event's data, decoded from JSON; the text itself when it
            is not JSON.
    """

    id: Optional[str]
    type: str
    data: Any


class SseParser:
    """Turns the bytes of an event stream into :class:`Event` objects.

    Feed it bytes in whatever pieces they arrive; each call returns the
    events those bytes completed. ``last_id`` is the id to send as
    ``Last-Event-ID`` when reconnecting and ``retry_ms`` the server's
    reconnection delay, if it sent one.
    """

    def __init__(self, last_id: Optional[str] = None) -> None:
        self.last_id = last_id
        self._id = last_id  # The id of the event being read.
        self.retry_ms: Optional[int] = None
        self._pending = b""
        self._skip_lf = False  # The previous piece ended with CR: a LF next is part of that line end.
        self._type = ""
        self._data: List[str] = []

    def feed(self, data: bytes) -> List[Event]:
        """The events completed by these bytes, in order."""
        if not data:
            return []
        if self._skip_lf and data[:1] == b"\n":
            data = data[1:]
        self._skip_lf = False
        buffer = self._pending + data
        events: List[Event] = []
        start = 0
        length = len(buffer)
        while start < length:
            lf = buffer.find(b"\n", start)
            cr = buffer.find(b"\r", start, lf if lf >= 0 else length)
            if cr >= 0:
                end, next_start = cr, cr + 1
                if next_start < length:
                    if buffer[next_start : next_start + 1] == b"\n":
                        next_start += 1
                else:
                    self._skip_lf = True
            elif lf >= 0:
                end, next_start = lf, lf + 1
            else:
                break
            event = self._line(buffer[start:end].decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
            start = next_start
        self._pending = buffer[start:]
        return events

    def _line(self, line: str) -> Optional[Event]:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry":
            if value.isdigit():
                self.retry_ms = int(value)
        return None

    def _dispatch(self) -> Optional[Event]:
        self.last_id = self._id
        data, self._data = self._data, []
        kind, self._type = self._type or "message", ""
        if not data:
            return None
        text = "\n".join(data)
        try:
            decoded: Any = json.loads(text)
        except ValueError:
            decoded = text
        return Event(self.last_id, kind, decoded)
