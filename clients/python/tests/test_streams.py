"""The event stream's and a followed log's connection handling against small
stand-in servers: what the real server does not do on demand (drop a stream
in the middle, frame it with chunks, stay silent, refuse to resume)."""

from __future__ import annotations

import json
import socket
import threading
import time
import unittest
from typing import Callable, List, Optional

from servers import wait_until

from taskdeck import ConnectionFailed, Event, TaskClient, TaskdeckTimeout, Unauthorized


class StubStreamServer:
    """Accepts connections and hands each one's request head, and the
    socket, to ``handler`` on a thread of its own."""

    def __init__(self, handler: Callable[[int, str, socket.socket], None]) -> None:
        self.handler = handler
        self.heads: List[str] = []
        self.closed_by_client = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._stop = False
        self.thread = threading.Thread(target=self._accept, name="stub-stream", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            self.heads.append(head)
            try:
                self.handler(len(self.heads), head, conn)
            except OSError:
                pass

    def wait_for_client_close(self, conn: socket.socket, timeout_s: float = 10.0) -> bool:
        """Reads until the client closes its end; True when it did."""
        conn.settimeout(timeout_s)
        try:
            while conn.recv(4096):
                pass
        except (socket.timeout, OSError):
            return False
        self.closed_by_client.set()
        return True

    def stop(self) -> None:
        self._stop = True
        self.listener.close()


def header(head: str, name: str) -> Optional[str]:
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"


def frame(event_id: int) -> bytes:
    data = json.dumps({"kind": "submitted", "task": {"id": event_id}})
    return f"id: e{event_id}\nevent: task\ndata: {data}\n\n".encode()


class EventStreamConnectionTest(unittest.TestCase):
    def serve(self, handler) -> StubStreamServer:
        server = StubStreamServer(handler)
        self.addCleanup(server.stop)
        return server

    def test_a_dropped_stream_reconnects_with_the_last_id_and_repeats_nothing(self) -> None:
        def handler(number: int, head: str, conn: socket.socket) -> None:
            conn.sendall(SSE_HEAD + b"retry: 10\n\n")
            last = header(head, "Last-Event-ID")
            start = 1 if last is None else int(last[1:]) + 1
            # Two events, then half of a third, then the connection drops.
            conn.sendall(frame(start) + frame(start + 1) + frame(start + 2)[:15])

        server = self.serve(handler)
        with TaskClient(server.url, timeout=5) as client:
            stream = client.events(timeout=5)
            seen = [next(stream) for _ in range(6)]
            stream.close()
        self.assertEqual([event.id for event in seen], ["e1", "e2", "e3", "e4", "e5", "e6"])
        self.assertEqual(seen[0], Event("e1", "task", {"kind": "submitted", "task": {"id": 1}}))
        self.assertIsNone(header(server.heads[0], "Last-Event-ID"))
        self.assertEqual([header(h, "Last-Event-ID") for h in server.heads[1:3]], ["e2", "e4"])
        self.assertEqual(header(server.heads[0], "Accept"), "text/event-stream")

    def test_the_query_carries_the_filters_and_the_first_id(self) -> None:
        def handler(number: int, head: str, conn: socket.socket) -> None:
            conn.sendall(SSE_HEAD + frame(1))

        server = self.serve(handler)
        with TaskClient(server.url, timeout=5, token="t0k") as client:
            stream = client.events(kinds=["task", "queue"], tasks=[4, 5], last_event_id="e0", timeout=5)
            self.assertEqual(len(server.heads), 1, "events() returns once connected")
            self.assertEqual(next(stream).id, "e1")
            stream.close()
        request_line = server.heads[0].split("\r\n")[0]
        self.assertIn("kinds=task%2Cqueue", request_line)
        self.assertIn("task=4%2C5", request_line)
        self.assertEqual(header(server.heads[0], "Last-Event-ID"), "e0")
        self.assertEqual(header(server.heads[0], "Authorization"), "Bearer t0k")

    def test_a_chunked_stream_is_read_as_it_arrives(self) -> None:
        release = threading.Event()

        def handler(number: int, head: str, conn: socket.socket) -> None:
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            for part in (frame(1)[:7], frame(1)[7:] + frame(2)):
                conn.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            release.wait(10)  # The third event only after the client saw two.
            part = frame(3)
            conn.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n0\r\n\r\n")

        server = self.serve(handler)
        with TaskClient(server.url, timeout=5) as client:
            stream = client.events(reconnect=False, timeout=5)
            self.assertEqual([next(stream).id, next(stream).id], ["e1", "e2"])
            release.set()
            self.assertEqual([event.id for event in stream], ["e3"])

    def test_closing_the_generator_closes_its_own_connection(self) -> None:
        client_closed = threading.Event()

        def handler(number: int, head: str, conn: socket.socket) -> None:
            conn.sendall(SSE_HEAD + frame(1))
            if server.wait_for_client_close(conn):
                client_closed.set()

        server = self.serve(handler)
        with TaskClient(server.url, timeout=5) as client:
            stream = client.events(timeout=5)
            self.assertEqual(next(stream).id, "e1")
            self.assertEqual(client.connections_opened, 0, "the stream is not the kept-alive connection")
            stream.close()
            self.assertTrue(client_closed.wait(10), "the server saw the stream's connection close")

    def test_a_reset_reaches_the_caller(self) -> None:
        def handler(number: int, head: str, conn: socket.socket) -> None:
            conn.sendall(SSE_HEAD + b'id: e9\nevent: reset\ndata: {"reason": "cannot resume"}\n\n' + frame(10))

        server = self.serve(handler)
        with TaskClient(server.url, timeout=5) as client:
            stream = client.events(last_event_id="old", timeout=5)
            self.assertEqual(next(stream), Event("e9", "reset", {"reason": "cannot resume"}))
            self.assertEqual(next(stream).id, "e10")
            stream.close()

    def test_no_event_within_the_timeout_raises(self) -> None:
        def handler(number: int, head: str, conn: socket.socket) -> None:
            conn.sendall(SSE_HEAD + b": keep-alive\n\n")
            server.wait_for_client_close(conn)

        server = self.serve(handler)
        with TaskClient(server.url, timeout=5) as client:
            started = time.monotonic()
            with self.assertRaises(TaskdeckTimeout):
                next(client.events(timeout=0.3))
            self.assertLess(time.monotonic() - started, 3.0)
        wait_until(server.closed_by_client.is_set, what="the timed-out stream to be closed")

    def test_an_error_answer_raises_its_error(self) -> None:
        body = json.dumps({"error": {"code": "unauthorized", "message": "a token is needed"}}).encode()

        def handler(number: int, head: str, conn: socket.socket) -> None:
            conn.sendall(
                b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
            )

        server = self.serve(handler)
        with TaskClient(server.url, timeout=5) as client:
            with self.assertRaises(Unauthorized) as caught:
                next(client.events())
        self.assertIn("a token is needed", str(caught.exception))
        self.assertEqual(len(server.heads), 1, "no reconnect after a refusal")

    def test_without_reconnect_a_closed_stream_ends_and_a_broken_one_raises(self) -> None:
        def handler(number: int, head: str, conn: socket.socket) -> None:
            if number == 1:
                conn.sendall(SSE_HEAD + frame(1))
            else:  # Chunked, cut off in the middle of a chunk.
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + b"100\r\n" + frame(2)
                )

        server = self.serve(handler)
        with TaskClient(server.url, timeout=5) as client:
            self.assertEqual([e.id for e in client.events(reconnect=False, timeout=5)], ["e1"])
            stream = client.events(reconnect=False, timeout=5)
            self.assertEqual(next(stream).id, "e2")
            with self.assertRaises(ConnectionFailed):
                next(stream)

    def test_reconnecting_gives_up_when_the_server_stays_away(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with TaskClient(f"http://127.0.0.1:{port}", timeout=0.5) as client:
            started = time.monotonic()
            with self.assertRaises(ConnectionFailed):
                next(client.events())
            self.assertLess(time.monotonic() - started, 5.0)
            with self.assertRaises(ConnectionFailed):
                next(client.events(reconnect=False))


class FollowedLogConnectionTest(unittest.TestCase):
    """A followed log broken in the middle goes on from the byte it reached."""

    def test_a_broken_follow_resumes_at_its_offset(self) -> None:
        text = "line é 1\nline € 2\nline 😀 3\n".encode("utf-8")
        follows: List[int] = []

        def handler(number: int, head: str, conn: socket.socket) -> None:
            target = head.split(" ")[1]
            query = dict(part.split("=", 1) for part in target.split("?", 1)[1].split("&"))
            offset = int(query.get("offset", "0"))
            if query.get("follow") == "true":
                follows.append(offset)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n"
                    + f"X-Taskdeck-Attempt: 1\r\nX-Taskdeck-Offset: {offset}\r\n\r\n".encode()
                )
                conn.sendall(text[offset : offset + 5])  # Five bytes a time, then it breaks.
                conn.shutdown(socket.SHUT_RDWR)
                return
            # Pages: nothing new until followed, then the end once all was sent.
            complete = offset >= len(text)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 0\r\n"
                + f"X-Taskdeck-Attempt: 1\r\nX-Taskdeck-Offset: {offset}\r\n".encode()
                + f"X-Taskdeck-Next-Offset: {offset}\r\nX-Taskdeck-Log-Size: {len(text)}\r\n".encode()
                + f"X-Taskdeck-Log-Complete: {str(complete).lower()}\r\nConnection: close\r\n\r\n".encode()
            )

        server = StubStreamServer(handler)
        self.addCleanup(server.stop)
        with TaskClient(server.url, timeout=5) as client:
            pieces = list(client.logs(3, follow=True))
        self.assertEqual("".join(pieces), text.decode("utf-8"))
        self.assertEqual(follows, list(range(0, len(text), 5)))
        self.assertNotIn("\ufffd", "".join(pieces))


if __name__ == "__main__":
    unittest.main()
