"""Python client for Taskdeck, a task scheduler with a durable queue,
parallel workers, retries and timeouts.

Standard library only. A quick tour::

    from taskdeck import TaskClient

    with TaskClient("http://127.0.0.1:5000") as client:
        task_id = client.submit("mock_ml_task", 2000, "Random Forest", priority=7)
        record = client.wait(task_id, timeout=60)
        print(record["status"], record["result"], record["total_latency_s"])

        client.set_queue("train", limit=2)        # at most two "train" tasks at once
        client.submit("mock_ml_task", 500, "Random Forest", queue="train")

        train = client.submit_python("train:main", taskdeck_options={"queue": "train"})
        for text in client.logs(train, follow=True):       # its output as it is written
            print(text, end="")
        for event in client.events(kinds=["task", "queue"], timeout=60):  # changes as they happen
            print(event.type, event.data)

Inside a task, ``from taskdeck import progress`` and ``progress(0.3,
message="epoch 3/10", loss=0.31)`` reports how far it is.

The HTTP API itself is described in docs/openapi.yaml in the Taskdeck
repository.
"""

from ._progress import progress
from ._sse import Event
from ._version import __version__
from .client import DEFAULT_URL, NO_LIMIT, TaskClient, batch_ref, create_task
from .errors import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    StorageFull,
    TaskdeckError,
    TaskdeckTimeout,
    Unauthorized,
    Unavailable,
)

__all__ = [
    "__version__",
    "DEFAULT_URL",
    "TaskClient",
    "create_task",
    "batch_ref",
    "NO_LIMIT",
    "Event",
    "progress",
    "TaskdeckError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "MethodNotAllowed",
    "Conflict",
    "PayloadTooLarge",
    "Unavailable",
    "StorageFull",
    "TaskdeckTimeout",
    "ConnectionFailed",
]
