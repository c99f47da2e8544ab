"""An HTTP answer read piece by piece as it arrives, on a connection of its own.

The event stream and a followed task log are answers that last for minutes
and end when the server closes them. They must not take the client's
kept-alive connection (every other call would wait behind them), and they
must not be read whole before the caller sees the first byte. A
:class:`StreamedAnswer` owns one socket, opened for one request, and hands
out the body in the pieces ``recv`` returns, whatever its framing: chunked,
``Content-Length``, or ending with the connection.

Depends on :mod:`taskdeck._transport` for parsing the answer's head, and on
nothing else internal.
"""

from __future__ import annotations

import socket
from typing import Dict, Optional

from ._tls import Tls
from ._transport import parse_head

__all__ = ["StreamedAnswer", "open_stream"]

#: Largest answer head accepted, as for the kept-alive connection.
_MAX_HEAD_BYTES = 64 * 1024

#: How much one ``recv`` asks for.
_RECV_BYTES = 64 * 1024

#: Most of an error answer's body that is read to build the error.
_MAX_ERROR_BYTES = 1024 * 1024


class StreamedAnswer:
    """One answer whose body is read as it arrives.

    Attributes:
        status: the HTTP status.
        fields: the header fields, names in lower case.
        ended: whether the body's own framing said it was complete (a last
            chunk, or all of ``Content-Length``); a body that ends with the
            connection never says so.
    """

    def __init__(self, sock: socket.socket, status: int, fields: Dict[str, str], start: bytes) -> None:
        self.status = status
        self.fields = fields
        self.ended = False
        self._sock: Optional[socket.socket] = sock
        self._buffer = start
        self._chunked = "chunked" in fields.get("transfer-encoding", "").lower()
        self._left: Optional[int] = None  # Bytes left of the body or of the current chunk.
        self._chunk_open = False
        self._crlf_due = False
        if not self._chunked and "content-length" in fields:
            try:
                self._left = int(fields["content-length"])
            except ValueError:
                self.close()
                raise OSError(f"bad Content-Length {fields['content-length']!r}") from None
        if status in (204, 304) or self._left == 0:
            self.ended = True

    def settimeout(self, seconds: Optional[float]) -> None:
        """How long the next read waits for bytes (``None``: for ever)."""
        if self._sock is not None:
            self._sock.settimeout(seconds)

    def read_some(self) -> bytes:
        """The next piece of the body as soon as there is one; ``b""`` once it
        has ended.

        Raises ``socket.timeout`` when nothing came within the timeout (the
        answer may still go on), and ``OSError`` when the connection broke in
        the middle of a framed body.
        """
        if self.ended:
            return b""
        if self._chunked:
            return self._read_chunk_piece()
        if self._left is not None:
            data = self._buffer or self._recv(in_body=True)
            self._buffer = b""
            if len(data) > self._left:
                data = data[: self._left]  # Nothing may follow on a closing connection.
            self._left -= len(data)
            if self._left == 0:
                self.ended = True
            return data
        data = self._buffer
        self._buffer = b""
        if data:
            return data
        data = self._recv(in_body=False)
        if not data:
            self.ended = True
        return data

    def read_to_end(self, limit: int = _MAX_ERROR_BYTES) -> bytes:
        """The rest of the body, up to ``limit`` bytes (for error answers)."""
        parts = []
        total = 0
        while total < limit:
            piece = self.read_some()
            if not piece:
                break
            parts.append(piece)
            total += len(piece)
        return b"".join(parts)[:limit]

    def close(self) -> None:
        """Closes the connection; reading after this returns ``b""``."""
        sock, self._sock = self._sock, None
        self.ended = True
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _read_chunk_piece(self) -> bytes:
        while True:
            if self._chunk_open:
                if not self._buffer:
                    self._buffer = self._recv(in_body=True)
                assert self._left is not None
                data = self._buffer[: self._left]
                self._buffer = self._buffer[len(data) :]
                self._left -= len(data)
                if self._left == 0:
                    # The chunk's closing CRLF is skipped on the next read,
                    # so these bytes reach the caller without waiting for it.
                    self._chunk_open = False
                    self._crlf_due = True
                return data
            if self._crlf_due:
                self._skip_line_end()
                self._crlf_due = False
            line = self._line()
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise OSError("bad chunk size in the answer") from None
            if size == 0:
                while self._line():  # Trailers, up to the empty line.
                    pass
                self.ended = True
                return b""
            self._left = size
            self._chunk_open = True

    def _skip_line_end(self) -> None:
        while len(self._buffer) < 2:
            self._buffer += self._recv(in_body=True)
        self._buffer = self._buffer[2:]

    def _line(self) -> bytes:
        end = self._buffer.find(b"\r\n")
        while end < 0:
            self._buffer += self._recv(in_body=True)
            end = self._buffer.find(b"\r\n")
        line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
        return line

    def _recv(self, in_body: bool) -> bytes:
        """Some bytes; ``b""`` at the end of a body that ends with the
        connection, ``OSError`` when a framed body is cut short."""
        sock = self._sock
        if sock is None:
            raise OSError("the stream was closed")
        data = sock.recv(_RECV_BYTES)
        if not data and in_body:
            raise OSError("the server closed the connection in the middle of its answer")
        return data


def open_stream(
    host: str,
    port: int,
    tls: Optional[Tls],
    request: bytes,
    connect_timeout_s: float,
    read_timeout_s: Optional[float],
) -> StreamedAnswer:
    """Opens a connection of its own, sends ``request`` and reads the
    answer's head; the body is left for :meth:`StreamedAnswer.read_some`.

    Raises ``OSError`` (``socket.timeout`` included) when the server cannot
    be reached or its head does not arrive within ``connect_timeout_s``; the
    socket is closed then.
    """
    sock = socket.create_connection((host, port), connect_timeout_s)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            sock = tls.wrap(sock, host)
        sock.sendall(request)
        data = b""
        while True:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > _MAX_HEAD_BYTES:
                    raise OSError("the answer's head is too long")
                chunk = sock.recv(_RECV_BYTES)
                if not chunk:
                    raise OSError("the server closed the connection before answering")
                data += chunk
                continue
            status, fields = parse_head(data[:end])
            data = data[end + 4 :]
            if 100 <= status < 200:
                continue  # An interim answer; the real one follows.
            break
        sock.settimeout(read_timeout_s)
        return StreamedAnswer(sock, status, fields, data)
    except BaseException:
        sock.close()
        raise
