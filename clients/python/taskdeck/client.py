"""The Taskdeck HTTP client: :class:`TaskClient`.

One client keeps one HTTP/1.1 connection open between calls and reconnects
once, transparently, when the server has closed a connection that sat idle.
Calls on one client are serialised by a lock, so sharing a client between
threads is safe but runs their requests one after another; give each thread
its own client when requests should run in parallel.

This module holds the client itself: submitting, reading and listing
tasks, the legacy names and the transport. The other calls are mixed in by
responsibility: waiting for tasks and ``run`` from :mod:`taskdeck._waiting`,
steering (cancel, retry, hold, pause, named queues) from
:mod:`taskdeck._control`, monitoring from :mod:`taskdeck._monitoring`, the
event stream from :mod:`taskdeck._events`, task logs and progress from
:mod:`taskdeck._logs`; the submission objects are built by
:mod:`taskdeck._submissions`. The event stream and followed logs run on
connections of their own (:mod:`taskdeck._stream`), never the kept-alive one.
"""

from __future__ import annotations

import datetime
import json
import re
import os
import socket
import threading
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union
from urllib.parse import quote, urlencode, urlsplit

from ._control import NO_LIMIT, ControlCalls
from ._events import EventCalls
from ._logs import LogCalls
from ._secret import discover as discover_secret
from ._monitoring import MonitoringCalls
from ._submissions import (
    TaskSpec,
    batch_ref,
    create_task,
    normalise_task,
    submission,
    task_path,
)
from ._stream import StreamedAnswer, open_stream
from ._tls import Tls
from ._transport import Answer, Connection, StaleConnection
from ._version import __version__
from ._waiting import WaitCalls
from .errors import (
    ConnectionFailed,
    TaskdeckError,
    TaskdeckTimeout,
    error_from_answer,
)

__all__ = ["TaskClient", "batch_ref", "create_task", "DEFAULT_URL", "NO_LIMIT"]

#: Where the client looks for a server when given no URL (the old Flask port).
DEFAULT_URL = "http://localhost:5000"

#: An answer of one of the client's two ways to send a request.
_A = TypeVar("_A")

#: Paths that need no percent-encoding (the common case, checked first
#: because ``quote`` costs more than the match).
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/_.~-]*\Z")


class TaskClient(WaitCalls, ControlCalls, MonitoringCalls, EventCalls, LogCalls):
    """A client of one Taskdeck server.

    Args:
        url: the server's base URL, e.g. ``"http://127.0.0.1:5000"``; a URL
            without a scheme is taken as ``http://``. A path in it is put in
            front of every route (for a server behind a reverse proxy).
        token: the bearer token: the server's ``--token``, or its local
            secret. Left out, a server on this machine that runs as this
            account is sent its local secret, found by the URL's port (or in
            ``$TASKDECK_DATA_DIR/secret``), so its owner passes nothing; it
            is looked for again when the server refuses it (a client made
            before its server started). ``token=""`` sends none.
        timeout: seconds to wait for the connection and for each answer.
            :meth:`wait` lengthens it for its long polls as needed.
        ca_file: for an ``https://`` server, a PEM file of the authorities
            (or the very certificate) to trust instead of the system's;
            default ``$TASKDECK_CA_FILE``.
        fingerprint: for an ``https://`` server, the SHA-256 fingerprint of
            its certificate as ``taskdeck serve`` prints it: that certificate
            alone is trusted (how a self-signed one is used); default
            ``$TASKDECK_TLS_FINGERPRINT``.

    The client keeps one connection open; use it as a context manager, or
    call :meth:`close`, to close it. It is safe to share between threads
    (a lock serialises the calls), but one client per thread is faster.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: Optional[str] = None,
        timeout: float = 30.0,
        ca_file: Optional[str] = None,
        fingerprint: Optional[str] = None,
    ):
        if "://" not in url:
            url = "http://" + url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"the URL must be http:// or https://, not {url!r}")
        if not parts.hostname:
            raise ValueError(f"the URL has no host: {url!r}")
        self.url = url.rstrip("/")
        # A token found rather than given is looked for again when the
        # server refuses it (see _token_changed).
        self._discovers = token is None
        if token is None:
            token = discover_secret(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        self.token = token
        self.timeout = float(timeout)
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._lock = threading.Lock()
        self._tls: Optional[Tls] = None
        if not self._https and (ca_file or fingerprint):
            raise ValueError(
                f"ca_file and fingerprint are for https:// servers; {url!r} would send the token in clear text"
            )
        if self._https:
            if ca_file is None and fingerprint is None:
                ca_file = os.environ.get("TASKDECK_CA_FILE") or None
                fingerprint = os.environ.get("TASKDECK_TLS_FINGERPRINT") or None
            self._tls = Tls(ca_file=ca_file, fingerprint=fingerprint)
        self._conn = Connection(self._host, self._port, self._tls)
        self._connections_opened = 0
        default_port = 443 if self._https else 80
        host = f"[{self._host}]" if ":" in self._host else self._host
        if self._port != default_port:
            host += f":{self._port}"
        self._base_headers = f"Host: {host}\r\nUser-Agent: taskdeck-python/{__version__}\r\n"
        self._fixed_headers = self._base_headers + "Accept: application/json\r\n"

    def __repr__(self) -> str:
        auth = ", token=<hidden>" if self.token else ""
        return f"TaskClient({self.url!r}{auth}, timeout={self.timeout})"

    def __enter__(self) -> "TaskClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # ----------------------------------------------------------------- tasks

    def submit(
        self,
        name: str,
        *args: Any,
        priority: Optional[int] = None,
        max_retries: Optional[int] = None,
        timeout: Optional[float] = None,
        kwargs: Optional[Mapping[str, Any]] = None,
        gpus: Optional[int] = None,
        gpu_memory_mb: Optional[int] = None,
        delay: Optional[float] = None,
        not_before: Union[None, float, datetime.datetime] = None,
        depends_on: Optional[Iterable[int]] = None,
        on_dependency_failure: Optional[str] = None,
        queue: Optional[str] = None,
    ) -> int:
        """Submits one task and returns its id.

        Args:
            name: a registered task name, e.g. ``"mock_ml_task"``.
            *args: the task's positional arguments.
            priority: 0-9, higher runs first (server default 5).
            max_retries: retries after a failed attempt (server default 3).
            timeout: seconds one attempt may run before it is stopped
                (server default: no limit).
            kwargs: the task's keyword arguments.
            gpus: GPUs the task needs; the server assigns device ids and the
                task's processes see them in ``CUDA_VISIBLE_DEVICES``.
            gpu_memory_mb: with ``gpus=1``, the share of one GPU's memory the
                task needs (it may share a device with other such tasks while
                their shares fit); with more GPUs, the memory each whole
                device must have.
            delay: seconds from now before which the task may not start (it
                waits queued until then, also across server restarts).
            not_before: the time before which it may not start: a
                ``datetime`` (naive ones are local time) or seconds since the
                epoch. Not together with ``delay``.
            depends_on: ids of earlier tasks that must complete before this
                one starts; it waits queued until then
                (``record["waiting"]["code"] == "waiting_for_dependencies"``).
            on_dependency_failure: what happens when a dependency fails for
                good or is cancelled: ``"cancel"`` (server default) cancels
                this task and, in turn, its own dependents
                (``record["cancelled_by"]`` names the dependency); ``"run"``
                runs it anyway once every dependency has finished.
            queue: the named queue it goes to (server default ``"default"``):
                1-64 letters, digits, ``_``, ``-`` or ``.``. A queue may limit
                how many of its tasks run at once, or be paused; see
                :meth:`set_queue`.

        Raises:
            BadRequest: the name is unknown, the arguments do not fit, the
                queue name is bad, or a dependency is unknown, not earlier
                than this task, or already failed or cancelled (with
                ``on_dependency_failure="cancel"``).
        """
        body = submission(
            name, args, kwargs, priority, max_retries, timeout, gpus, gpu_memory_mb, delay, not_before,
            depends_on, on_dependency_failure, queue,
        )
        return int(self.request("POST", "/api/v1/tasks", body)["id"])

    def submit_command(
        self,
        argv: Sequence[str],
        *,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        shell: bool = False,
        priority: Optional[int] = None,
        max_retries: Optional[int] = None,
        timeout: Optional[float] = None,
        gpus: Optional[int] = None,
        gpu_memory_mb: Optional[int] = None,
        depends_on: Optional[Iterable[int]] = None,
        on_dependency_failure: Optional[str] = None,
        queue: Optional[str] = None,
    ) -> int:
        """Submits a ``command`` task: a program and its arguments, run without
        a shell (``shell=True`` runs ``argv[0]`` with ``sh -c`` instead, and
        then ``argv`` must hold that one string). Its stdout and stderr go to
        a log file whose last lines the record keeps (``record["log"]``);
        exit code 0 completes it, any other code is a failed attempt.
        ``depends_on``, ``on_dependency_failure`` and ``queue`` are as in
        :meth:`submit`.

        The server must run with ``--allow-code-tasks``, and accepts it only
        from loopback clients or with its token (403 ``Forbidden`` otherwise).
        """
        if isinstance(argv, (str, bytes)):
            raise TypeError("argv is a list of strings, e.g. ['ls', '-l']; pass shell=True for a command line")
        kwargs: Dict[str, Any] = {}
        if cwd is not None:
            kwargs["cwd"] = str(cwd)
        if env is not None:
            kwargs["env"] = dict(env)
        if shell:
            kwargs["shell"] = True
        body = submission(
            "command", [list(argv)], kwargs, priority, max_retries, timeout, gpus, gpu_memory_mb,
            depends_on=depends_on, on_dependency_failure=on_dependency_failure, queue=queue,
        )
        return int(self.request("POST", "/api/v1/tasks", body)["id"])

    def submit_python(self, function: str, *args: Any, **kwargs: Any) -> int:
        """Submits a ``python`` task: ``"package.module:function"`` called with
        these JSON arguments in a child Python process on the worker; its
        return value becomes the result, an exception the attempt's error
        (with the traceback). Task options go in a ``taskdeck_options`` dict
        keyword (``priority``, ``max_retries``, ``timeout``, ``cwd``, ``gpus``,
        ``gpu_memory_mb``, and ``depends_on``, ``on_dependency_failure`` and
        ``queue`` as in :meth:`submit`), so every other keyword reaches the
        function.

        Same server rules as :meth:`submit_command`.
        """
        options = dict(kwargs.pop("taskdeck_options", None) or {})
        unknown = set(options) - {
            "priority", "max_retries", "timeout", "cwd", "gpus", "gpu_memory_mb",
            "depends_on", "on_dependency_failure", "queue",
        }
        if unknown:
            raise TypeError(f"unknown taskdeck_options: {', '.join(sorted(unknown))}")
        task_kwargs: Dict[str, Any] = {"args": list(args), "kwargs": kwargs}
        if options.get("cwd") is not None:
            task_kwargs["cwd"] = str(options["cwd"])
        body = submission(
            "python",
            [function],
            task_kwargs,
            options.get("priority"),
            options.get("max_retries"),
            options.get("timeout"),
            options.get("gpus"),
            options.get("gpu_memory_mb"),
            depends_on=options.get("depends_on"),
            on_dependency_failure=options.get("on_dependency_failure"),
            queue=options.get("queue"),
        )
        return int(self.request("POST", "/api/v1/tasks", body)["id"])

    def submit_many(self, tasks: Iterable[TaskSpec], queue: Optional[str] = None) -> List[int]:
        """Submits several tasks at once, all or nothing, and returns their ids
        in the order given.

        Each item is a submission dict (``{"task": "sleep", "args": [100],
        "priority": 7}``), a ``(name, args)`` or ``(name, args, kwargs)``
        tuple, a bare name, or a dict from :func:`create_task`. An empty list
        returns ``[]`` without asking the server; the server takes at most
        10,000 tasks per call and refuses the whole batch if any one is bad.

        A submission dict may name its dependencies with ``"depends_on"``:
        ids of tasks accepted earlier, or :func:`batch_ref` for an earlier
        item of this batch, so a whole pipeline goes in one call::

            client.submit_many([
                {"task": "sleep", "args": [100]},
                {"task": "noop", "args": [1], "depends_on": [batch_ref(0)]},
                {"task": "noop", "args": [2], "depends_on": [batch_ref(1)],
                 "on_dependency_failure": "run"},
            ])

        Args:
            queue: the queue of every item that names none (a dict's own
                ``"queue"`` wins); ``None`` leaves those to the server's
                ``default`` queue.

        Raises:
            BadRequest: an item is bad, e.g. an unknown name, a bad queue
                name, or a dependency that is unknown or not earlier; nothing
                of the batch is accepted.
        """
        body = [normalise_task(task, queue) for task in tasks]
        if not body:
            return []
        answer = self.request("POST", "/api/v1/tasks/batch", {"tasks": body})
        return [int(task_id) for task_id in answer["ids"]]

    def get(self, task_id: int) -> Dict[str, Any]:
        """Returns the task record of one task (see ``TaskRecord`` in
        docs/openapi.yaml).

        Raises:
            NotFound: no task has this id.
        """
        return self.request("GET", task_path(task_id))

    def status(self, task_id: int) -> str:
        """Returns a task's status: ``queued``, ``running``, ``retrying``,
        ``completed``, ``failed`` or ``cancelled``."""
        return self.get(task_id)["status"]

    def list(
        self,
        status: Optional[str] = None,
        task: Optional[str] = None,
        limit: int = 100,
        offset: int = 0,
        order: str = "newest",
    ) -> List[Dict[str, Any]]:
        """Returns one page of task records.

        Args:
            status: only tasks with this status.
            task: only tasks with this task name.
            limit: at most this many records, 1-1000.
            offset: skip this many matching records first.
            order: ``"newest"`` (highest id first) or ``"oldest"``.
        """
        query: Dict[str, Any] = {"limit": limit, "offset": offset, "order": order}
        if status is not None:
            query["status"] = status
        if task is not None:
            query["task"] = task
        return self.request("GET", "/api/v1/tasks", query=query)["tasks"]

    # ---------------------------------------------------------------- legacy

    #: Builds a legacy task dict without sending it; see :func:`create_task`.
    create_task = staticmethod(create_task)

    def send_task(self, task: Mapping[str, Any]) -> int:
        """Sends a task built by :func:`create_task` to the legacy
        ``/submit_task`` route and returns its id."""
        return int(self.request("POST", "/submit_task", dict(task))["task_id"])

    def request_task_status(self, task_id: int) -> str:
        """Returns a task's legacy status text: ``"On Hold"``, ``"In Progress"``,
        ``"Completed"``, ``"Cancelled"``, ``"Failed: <reason>"``, or
        ``"Unknown"`` for an id the server does not know."""
        return self.request("GET", f"/task_status/{int(task_id)}")["status"]

    def request_monitoring_data(self) -> Dict[str, Any]:
        """Returns the legacy ``/monitoring_data`` object (``"CPU"``,
        ``"RAM Usage"``, ``"Idle Workers"``...)."""
        return self.request("GET", "/monitoring_data")

    # ------------------------------------------------------------ transport

    @property
    def connections_opened(self) -> int:
        """How many TCP connections this client has opened so far; stays at 1
        while the server keeps the connection alive."""
        return self._connections_opened

    def close(self) -> None:
        """Closes the kept-alive connection; the next call opens a new one."""
        with self._lock:
            self._drop_connection()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Optional[Mapping[str, Any]] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """Sends one request and returns the decoded answer.

        The low-level call behind every other method, for routes without a
        method of their own. ``body`` is sent as JSON; a JSON answer is
        decoded, any other answer is returned as text.

        Raises:
            TaskdeckError: the subclass for the server's error status, carrying
                its message and code.
            ConnectionFailed: the server could not be reached.
            TaskdeckTimeout: no answer within ``timeout`` (default: the client's).
        """
        target = path if _PLAIN_PATH.match(path) else quote(path, safe="/-_.~")
        return self._request_target(method, target, body, query, timeout)

    def _request_target(
        self,
        method: str,
        target: str,
        body: Any = None,
        query: Optional[Mapping[str, Any]] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """:meth:`request` for a path already percent-encoded, e.g. one whose
        ``%2F`` must reach the server as part of a name, not as a ``/``."""
        path = target
        target = self._prefix + target
        if query:
            target += "?" + urlencode(query)
        head = f"{method} {target} HTTP/1.1\r\n{self._fixed_headers}"
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
            rest = f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        else:
            payload = b""
            rest = "Content-Length: 0\r\n\r\n" if method in ("POST", "PUT", "PATCH") else "\r\n"
        limit_s = self.timeout if timeout is None else timeout
        status, fields, data = self._send(
            method, target, lambda auth: (head + auth + rest).encode("latin-1") + payload, limit_s
        )
        return _decode(status, fields.get("content-type", ""), data, method, path)

    def _request_bytes(
        self, path: str, query: Optional[Mapping[str, Any]] = None
    ) -> Tuple[Dict[str, str], bytes]:
        """A ``GET`` on the kept-alive connection whose answer is raw bytes
        (a task's log): the header fields (names in lower case) and the body.

        Raises what :meth:`request` raises for an error answer.
        """
        target = path if _PLAIN_PATH.match(path) else quote(path, safe="/-_.~")
        target = self._prefix + target
        if query:
            target += "?" + urlencode(query)
        head = f"GET {target} HTTP/1.1\r\n{self._base_headers}Accept: */*\r\n"
        status, fields, data = self._send(
            "GET", target, lambda auth: (head + auth + "\r\n").encode("latin-1"), self.timeout
        )
        if not 200 <= status < 300:
            raise error_from_answer(status, data, f"GET {path}")
        return fields, data

    def _open_stream(
        self,
        path: str,
        query: Optional[Mapping[str, Any]],
        accept: str,
        headers: Optional[Mapping[str, str]] = None,
        read_timeout_s: Optional[float] = None,
    ) -> StreamedAnswer:
        """Sends a ``GET`` on a connection of its own, never the kept-alive
        one, and returns the answer with its body still to be read (the
        event stream, a followed log). Its status is not checked here.

        Raises:
            ConnectionFailed: the server could not be reached.
            TaskdeckTimeout: the answer's head did not come within the
                client's timeout.
        """
        target = self._prefix + (path if _PLAIN_PATH.match(path) else quote(path, safe="/-_.~"))
        if query:
            target += "?" + urlencode(query)
        head = f"GET {target} HTTP/1.1\r\n{self._base_headers}Accept: {accept}\r\nConnection: close\r\n"
        rest = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items()) + "\r\n"

        def send(auth: str) -> StreamedAnswer:
            message = (head + auth + rest).encode("utf-8")
            try:
                return open_stream(self._host, self._port, self._tls, message, self.timeout, read_timeout_s)
            except socket.timeout as error:
                raise TaskdeckTimeout(f"GET {path}: no answer from {self.url} within {self.timeout:g} s") from error
            except OSError as error:
                raise ConnectionFailed(f"GET {path}: cannot reach {self.url}: {error}") from error

        return self._authorized(send, lambda answer: answer.status, lambda answer: answer.close())

    def _send(self, method: str, target: str, message_for: Callable[[str], bytes], limit_s: float) -> Answer:
        """Sends the request ``message_for`` builds around the
        ``Authorization`` line on the kept-alive connection (see
        :meth:`_authorized`)."""

        def send(auth: str) -> Answer:
            with self._lock:
                return self._exchange(method, target, message_for(auth), limit_s)

        return self._authorized(send, lambda answer: answer[0])

    def _authorized(
        self,
        send: Callable[[str], _A],
        status_of: Callable[[_A], int],
        discard: Callable[[_A], None] = lambda answer: None,
    ) -> _A:
        """What ``send`` answers when given the ``Authorization`` line; sent
        once more, the first answer discarded, when the server refused a
        secret this client found and another was found (see
        :meth:`_token_changed`)."""
        answer = send(self._authorization())
        if status_of(answer) == 401 and self._token_changed():
            discard(answer)
            answer = send(self._authorization())
        return answer

    def _authorization(self) -> str:
        """The request's ``Authorization`` line, empty without a token."""
        return f"Authorization: Bearer {self.token}\r\n" if self.token else ""

    def _token_changed(self) -> bool:
        """After a 401: when the token was not given, looks for the local
        server's secret again and takes it if it differs from the one sent
        (none was there yet when this client was made, before the server
        first started; or the server restarted with another data
        directory). True when the request should be sent again: a refused
        request ran nothing, so sending it again cannot run anything twice."""
        if not self._discovers:
            return False
        found = discover_secret(self._host, self._port)
        if not found or found == self.token:
            return False
        self.token = found
        return True

    def _exchange(self, method: str, target: str, message: bytes, limit_s: float) -> Answer:
        """Sends a request on the kept-alive connection; the caller holds the lock.

        A request that fails because the server closed an idle connection is
        sent once more on a fresh one. Such a request never reached the
        server, so sending it again cannot run anything twice.
        """
        conn = self._conn
        for attempt in (1, 2):
            reused = conn.connected
            try:
                if not reused:
                    conn.connect(min(limit_s, self.timeout))
                    self._connections_opened += 1
                return conn.exchange(message, limit_s, head=method == "HEAD")
            except socket.timeout as error:
                raise TaskdeckTimeout(
                    f"{method} {target}: no answer from {self.url} within {limit_s:g} s"
                ) from error
            except StaleConnection as error:
                if reused and attempt == 1:
                    continue
                raise ConnectionFailed(
                    f"{method} {target}: the connection to {self.url} broke: {error}"
                ) from error
            except OSError as error:
                conn.close()
                raise ConnectionFailed(
                    f"{method} {target}: cannot reach {self.url}: {error}"
                ) from error
        raise AssertionError("the loop above should return or raise")  # pragma: no cover

    def _drop_connection(self) -> None:
        self._conn.close()


def _decode(status: int, content_type: str, data: bytes, method: str, path: str) -> Any:
    """Decodes a success answer, or raises the error an error answer carries."""
    is_json = "json" in content_type.lower()
    if 200 <= status < 300:
        if not is_json and not data.lstrip()[:1] in (b"{", b"["):
            return data.decode("utf-8", "replace")
        try:
            return json.loads(data)
        except ValueError as error:
            raise TaskdeckError(
                f"{method} {path}: the server's answer is not valid JSON: {error}", status=status
            ) from error
    raise error_from_answer(status, data, f"{method} {path}")
