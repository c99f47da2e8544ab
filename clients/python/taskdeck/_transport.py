"""A lean HTTP/1.1 connection for :class:`taskdeck.TaskClient`.

``http.client`` costs about 70 µs a request in Python code alone (header
objects, an email-style header parser, a buffered file per response), which
is most of a round trip to a local Taskdeck. This connection writes each
request with one ``sendall`` and parses the answer from the bytes it
received, with the standard library only. It speaks what the client needs:
requests with a JSON body or none, answers with ``Content-Length``, chunked
bodies or a body that ends with the connection, and keep-alive.
"""

from __future__ import annotations

import socket
from typing import Dict, Optional, Tuple

from ._tls import Tls

__all__ = ["Connection", "StaleConnection", "Answer", "parse_head"]

#: Status, header fields (names in lower case) and body of one answer.
Answer = Tuple[int, Dict[str, str], bytes]

#: Largest answer head the client accepts; Taskdeck's are a few hundred bytes.
_MAX_HEAD_BYTES = 64 * 1024

#: How much one ``recv`` asks for: below the allocator's mmap threshold, since
#: Python allocates the whole buffer for each call.
_RECV_BYTES = 64 * 1024


class StaleConnection(ConnectionError):
    """The server closed a kept-alive connection before any of the answer
    arrived: the request can be sent again on a new connection."""


class Connection:
    """One HTTP/1.1 connection to ``host:port``, opened on first use.

    ``sock`` is the open socket, or ``None`` while there is none.
    """

    def __init__(self, host: str, port: int, tls: Optional[Tls]) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.sock: Optional[socket.socket] = None
        self._timeout_s: Optional[float] = None
        self._pending = b""

    @property
    def connected(self) -> bool:
        """Whether a socket is open (it may still have been closed by the server)."""
        return self.sock is not None

    def connect(self, timeout_s: float) -> None:
        """Opens the socket with ``TCP_NODELAY``; for ``https`` also the TLS session."""
        sock = socket.create_connection((self.host, self.port), timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                sock = self.tls.wrap(sock, self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self._timeout_s = timeout_s
        self._pending = b""

    def close(self) -> None:
        """Closes the socket; the next exchange opens a new one."""
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None
                self._pending = b""

    def exchange(self, request: bytes, timeout_s: float, head: bool = False) -> Answer:
        """Sends one whole request and reads its answer.

        Raises :class:`StaleConnection` when the server had closed the
        connection before answering anything, ``socket.timeout`` when no
        answer came within ``timeout_s``, and other ``OSError`` for anything
        else that broke. After any error the connection is closed.
        """
        sock = self.sock
        if sock is None:
            raise RuntimeError("exchange() needs connect() first")
        try:
            if timeout_s != self._timeout_s:
                sock.settimeout(timeout_s)
                self._timeout_s = timeout_s
            try:
                sock.sendall(request)
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as error:
                raise StaleConnection(str(error)) from error
            return self._read_answer(sock, head)
        except BaseException:
            self.close()
            raise

    def _read_answer(self, sock: socket.socket, head_only: bool) -> Answer:
        data = self._pending
        self._pending = b""
        while True:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > _MAX_HEAD_BYTES:
                    raise OSError("the answer's head is too long")
                chunk = self._recv(sock, fresh=not data)
                data += chunk
                continue
            status, fields = parse_head(data[:end])
            data = data[end + 4 :]
            if 100 <= status < 200:
                continue  # An interim answer (100 Continue); the real one follows.
            break
        keep_alive = fields.get("connection", "").lower() != "close"
        if head_only or status in (204, 304):
            body = b""
        elif "chunked" in fields.get("transfer-encoding", "").lower():
            body, data = self._read_chunked(sock, data)
        elif "content-length" in fields:
            try:
                length = int(fields["content-length"])
            except ValueError:
                raise OSError(f"bad Content-Length {fields['content-length']!r}") from None
            if len(data) >= length:
                body, data = data[:length], data[length:]
            else:
                body, data = self._read_exactly(sock, data, length), b""
        else:
            # The body ends where the connection does.
            parts = [data]
            while True:
                chunk = sock.recv(_RECV_BYTES)
                if not chunk:
                    break
                parts.append(chunk)
            body, data, keep_alive = b"".join(parts), b"", False
        if keep_alive:
            self._pending = data
        else:
            self.close()
        return status, fields, body

    def _read_chunked(self, sock: socket.socket, data: bytes) -> Tuple[bytes, bytes]:
        parts = []
        while True:
            line_end = data.find(b"\r\n")
            while line_end < 0:
                data += self._recv(sock)
                line_end = data.find(b"\r\n")
            try:
                size = int(data[:line_end].split(b";", 1)[0], 16)
            except ValueError:
                raise OSError("bad chunk size in the answer") from None
            data = data[line_end + 2 :]
            if size == 0:
                # Skip trailers up to the empty line.
                while True:
                    line_end = data.find(b"\r\n")
                    while line_end < 0:
                        data += self._recv(sock)
                        line_end = data.find(b"\r\n")
                    line, data = data[:line_end], data[line_end + 2 :]
                    if not line:
                        return b"".join(parts), data
            while len(data) < size + 2:
                data += self._recv(sock)
            parts.append(data[:size])
            data = data[size + 2 :]

    @staticmethod
    def _read_exactly(sock: socket.socket, start: bytes, length: int) -> bytes:
        """A body of ``length`` bytes that begins with ``start``, read into
        one buffer (large answers arrive in many pieces)."""
        buffer = bytearray(length)
        buffer[: len(start)] = start
        view = memoryview(buffer)
        got = len(start)
        while got < length:
            count = sock.recv_into(view[got:])
            if count == 0:
                raise OSError("the server closed the connection in the middle of its answer")
            got += count
        return bytes(buffer)

    def _recv(self, sock: socket.socket, fresh: bool = False) -> bytes:
        """Some more bytes of the answer. ``fresh``: none of it has come yet,
        so a connection found closed or reset is stale, not broken."""
        try:
            chunk = sock.recv(_RECV_BYTES)
        except (ConnectionResetError, ConnectionAbortedError) as error:
            if fresh:
                raise StaleConnection(str(error)) from error
            raise
        if not chunk:
            if fresh:
                raise StaleConnection("the server closed the connection")
            raise OSError("the server closed the connection in the middle of its answer")
        return chunk


def parse_head(head: bytes) -> Tuple[int, Dict[str, str]]:
    """The status code and the header fields (names in lower case)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise OSError(f"not an HTTP answer: {lines[0][:80]!r}")
    try:
        status = int(parts[1])
    except ValueError:
        raise OSError(f"bad status line: {lines[0][:80]!r}") from None
    fields = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            fields[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return status, fields
