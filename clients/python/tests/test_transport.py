"""The client's connection handling against small stand-in servers.

These cover what the real server does not do on demand: closing an idle
kept-alive connection, never answering, or not listening at all.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
import unittest

import servers  # noqa: F401  (puts this checkout's client on sys.path)

from taskdeck import (
    BadRequest,
    ConnectionFailed,
    StorageFull,
    TaskClient,
    TaskdeckError,
    TaskdeckTimeout,
    Unavailable,
)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers every request with JSON; closes after each answer when asked,
    without saying so, like a server dropping an idle connection."""

    protocol_version = "HTTP/1.1"
    close_after_answer = False
    answers = {}

    def log_message(self, *args) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, payload = self.answers.get(self.path, (200, {"status": "ok"}))
        if payload == "echo":
            payload = {"method": self.command, "body": json.loads(body or b"null"),
                       "auth": self.headers.get("Authorization")}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        if self.close_after_answer:
            self.close_connection = True

    do_GET = do_POST = do_DELETE = _answer


class StubServer:
    def __init__(self, close_after_answer: bool = False, answers=None):
        handler = type("Handler", (_Handler,), {
            "close_after_answer": close_after_answer, "answers": answers or {}})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="stub-http", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TransportTest(unittest.TestCase):
    def test_reconnects_once_when_the_server_closed_an_idle_connection(self):
        stub = StubServer(close_after_answer=True)
        self.addCleanup(stub.stop)
        with TaskClient(stub.url) as client:
            for _ in range(3):
                self.assertTrue(client.health())
                # Let the server's close reach the client before it reuses the socket.
                servers.wait_until(lambda: _peer_closed(client), timeout_s=5, what="the close")
            self.assertEqual(client.connections_opened, 3)

    def test_keeps_one_connection_when_the_server_allows(self):
        stub = StubServer(answers={"/api/v1/tasks": (201, {"id": 1, "status": "queued"})})
        self.addCleanup(stub.stop)
        with TaskClient(stub.url) as client:
            self.assertEqual([client.submit("noop") for _ in range(5)], [1] * 5)
            self.assertEqual(client.connections_opened, 1)

    def test_sends_token_json_and_prefix(self):
        stub = StubServer(answers={"/base/submit_task": (200, "echo")})
        self.addCleanup(stub.stop)
        with TaskClient(stub.url + "/base/", token="t0k") as client:
            echo = client.request("POST", "/submit_task", {"function_name": "noop", "arguments": [1]})
        self.assertEqual(echo, {"method": "POST", "body": {"function_name": "noop", "arguments": [1]},
                                "auth": "Bearer t0k"})

    def test_error_bodies_become_exceptions(self):
        stub = StubServer(answers={
            "/bad": (400, {"error": {"code": "bad_request", "message": "unknown task \"x\""}}),
            "/busy": (503, {"error": {"code": "unavailable", "message": "shutting down"}}),
            "/odd": (418, {"something": "else"}),
            "/full": (507, {"error": {"code": "storage_full", "message": "the disk is full"}}),
        })
        self.addCleanup(stub.stop)
        with TaskClient(stub.url) as client:
            with self.assertRaises(BadRequest) as bad:
                client.request("GET", "/bad")
            self.assertEqual((bad.exception.message, bad.exception.status, bad.exception.code),
                             ('unknown task "x"', 400, "bad_request"))
            with self.assertRaises(Unavailable):
                client.request("GET", "/busy")
            with self.assertRaises(TaskdeckError) as odd:
                client.request("GET", "/odd")
            self.assertEqual(odd.exception.status, 418)
            self.assertIn("something", odd.exception.message)
            with self.assertRaises(StorageFull) as full:
                client.request("POST", "/full", {"task": "noop"})
            self.assertIsInstance(full.exception, Unavailable)
            self.assertEqual((full.exception.status, full.exception.code), (507, "storage_full"))
            self.assertEqual(client.connections_opened, 1)

    def test_large_answers_arrive_whole(self):
        big = {"tasks": [{"id": i, "text": "x" * 100} for i in range(20_000)]}
        stub = StubServer(answers={"/big": (200, big)})
        self.addCleanup(stub.stop)
        with TaskClient(stub.url) as client:
            for _ in range(2):
                self.assertEqual(client.request("GET", "/big"), big)
            self.assertTrue(client.health())
            self.assertEqual(client.connections_opened, 1)

    def test_chunked_and_close_delimited_answers(self):
        answers = [
            # Chunked, with an extension and a trailer; the connection stays open.
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"7;ext=1\r\n{\"a\": [\r\n6\r\n1, 2]}\r\n0\r\nX-Trailer: t\r\n\r\n",
            # An interim answer first, then a body that ends with the connection.
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\n\r\n{\"b\": true}",
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"c\": 3}",
        ]
        server = _ScriptedServer(answers)
        self.addCleanup(server.close)
        with TaskClient(server.url) as client:
            self.assertEqual(client.request("GET", "/one"), {"a": [1, 2]})
            self.assertEqual(client.request("GET", "/two"), {"b": True})
            self.assertEqual(client.request("GET", "/three"), {"c": 3})
            self.assertEqual(client.connections_opened, 2)
        self.assertEqual(server.paths, ["/one", "/two", "/three"])

    def test_nothing_listening_is_connection_failed(self):
        client = TaskClient(f"127.0.0.1:{_closed_port()}", timeout=2)
        with self.assertRaises(ConnectionFailed) as caught:
            client.list()
        self.assertIsNone(caught.exception.status)
        self.assertFalse(client.health())

    def test_no_answer_is_a_timeout(self):
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # The kernel accepts; nobody ever answers.
        self.addCleanup(silent.close)
        client = TaskClient(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.3)
        started = time.monotonic()
        with self.assertRaises(TaskdeckTimeout):
            client.get(1)
        self.assertLess(time.monotonic() - started, 3)

    def test_bad_arguments_fail_before_sending(self):
        client = TaskClient("http://127.0.0.1:9")
        with self.assertRaises(TypeError):
            client.get("1; DROP")
        with self.assertRaises(TypeError):
            client.submit("")
        with self.assertRaises(ValueError):
            TaskClient("ftp://example.com")
        self.assertEqual(client.connections_opened, 0)


class _ScriptedServer:
    """Answers each request it reads with the next scripted bytes, closing
    the connection after an answer that says ``Connection: close``."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.paths = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, name="scripted-http", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while self.answers:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    if b"\r\n\r\n" not in data:
                        break
                    head, data = data.split(b"\r\n\r\n", 1)
                    self.paths.append(head.split(b" ")[1].decode())
                    answer = self.answers.pop(0)
                    conn.sendall(answer)
                    if b"Connection: close" in answer:
                        break

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=5)


def _peer_closed(client: TaskClient) -> bool:
    """True when the server has closed the client's kept-alive socket."""
    sock = client._conn.sock if client._conn is not None else None
    if sock is None:
        return True
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


if __name__ == "__main__":
    unittest.main()
