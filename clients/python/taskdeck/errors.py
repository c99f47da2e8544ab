"""Exceptions raised by the Taskdeck client.

Every error the client raises is a :class:`TaskdeckError`. Errors the server
answered with carry its HTTP status, its machine-readable ``code`` and its
human-readable message; errors that happened before an answer arrived
(:class:`ConnectionFailed`, :class:`TaskdeckTimeout`) carry no status.
"""

from __future__ import annotations

import json
from typing import Dict, Optional, Type

__all__ = [
    "TaskdeckError",
    "BadRequest",
    "Unauthorized",
    "NotFound",
    "MethodNotAllowed",
    "Conflict",
    "PayloadTooLarge",
    "Unavailable",
    "TaskdeckTimeout",
    "ConnectionFailed",
    "error_for_status",
    "error_from_answer",
]


class TaskdeckError(Exception):
    """Base class of every error raised by the client.

    Attributes:
        message: the server's message, or a description of what failed.
        status: the HTTP status of the server's answer, or ``None`` when no
            answer arrived.
        code: the server's error code (``"bad_request"``, ``"not_found"``...),
            or ``None``.
    """

    def __init__(self, message: str, status: Optional[int] = None, code: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    def __str__(self) -> str:
        if self.status is None:
            return self.message
        return f"{self.message} (HTTP {self.status}, {self.code or 'no code'})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status!r}, code={self.code!r})"


class BadRequest(TaskdeckError):
    """The server refused the request as malformed (HTTP 400), e.g. an unknown
    task name or arguments that do not fit the task's signature."""


class Unauthorized(TaskdeckError):
    """The server needs a bearer token and got none or a wrong one (HTTP 401)."""


class Forbidden(TaskdeckError):
    """The server does not accept this from this client (HTTP 403), e.g. a
    ``command`` or ``python`` task on a server started without
    ``--allow-code-tasks``, or from another machine without the token."""


class NotFound(TaskdeckError):
    """No task with that id, or no such route (HTTP 404)."""


class MethodNotAllowed(TaskdeckError):
    """The route exists but not with this HTTP method (HTTP 405)."""


class Conflict(TaskdeckError):
    """The task is in a state that does not allow the action (HTTP 409), e.g.
    cancelling a finished task, retrying one that has not failed, or retrying
    one whose dependency failed (retry that dependency with ``cascade=True``)."""


class PayloadTooLarge(TaskdeckError):
    """The request body is larger than the server accepts (HTTP 413)."""


class Unavailable(TaskdeckError):
    """The server is shutting down or cannot take work right now (HTTP 503)."""


class StorageFull(Unavailable):
    """The disk holding the server's database is full (HTTP 507): nothing was
    accepted. The server keeps what it already accepted and takes tasks again
    by itself once there is room."""


class TaskdeckTimeout(TaskdeckError):
    """A wait ran past its timeout, or the server did not answer in time."""


class ConnectionFailed(TaskdeckError):
    """The server could not be reached, or the connection broke mid-request."""


_BY_STATUS: Dict[int, Type[TaskdeckError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    503: Unavailable,
    507: StorageFull,
}


def error_for_status(status: int, message: str, code: Optional[str] = None) -> TaskdeckError:
    """Builds the exception that matches an HTTP error status.

    Statuses without a dedicated class give a plain :class:`TaskdeckError`.
    """
    cls = _BY_STATUS.get(status, TaskdeckError)
    return cls(message, status=status, code=code)


def error_from_answer(status: int, body: bytes, what: str) -> TaskdeckError:
    """Builds the exception for an error answer: the server's JSON error
    (``{"error": {"message", "code"}}``) when it sent one, else its text, else
    a message naming ``what`` (e.g. ``"GET /api/v1/events"``)."""
    message: Optional[str] = None
    code: Optional[str] = None
    try:
        decoded = json.loads(body)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), dict):
        message = decoded["error"].get("message")
        code = decoded["error"].get("code")
    if not message:
        text = body.decode("utf-8", "replace").strip()
        message = text or f"{what} failed"
    return error_for_status(status, message, code)
