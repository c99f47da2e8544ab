"""Monitoring: the calls of :class:`taskdeck.TaskClient` that read how the
server and its machine are doing (samples, workers, the report, health,
metrics) and change nothing.

:class:`MonitoringCalls` is mixed into the client and only sends requests
through it; it depends on :mod:`taskdeck.errors` and nothing else internal.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List

from .errors import TaskdeckError

__all__ = ["MonitoringCalls"]


class MonitoringCalls:
    """The read-only monitoring calls of :class:`taskdeck.TaskClient`."""

    # Provided by TaskClient.
    request: Callable[..., Any]

    def monitoring(self) -> Dict[str, Any]:
        """Returns the latest system and scheduler sample: CPU, memory, disks,
        GPUs, workers, queue depth, throughput and latency."""
        return self.request("GET", "/api/v1/monitoring")

    def history(self, minutes: int = 60) -> List[Dict[str, Any]]:
        """Returns the resource samples of the last ``minutes`` (1-60), oldest
        first, each shaped like :meth:`monitoring`'s resource fields (``cpu``,
        ``memory``, ``disks``, ``gpus``, ``sampled_at``). The server keeps the
        last hour, also across restarts."""
        return self.request("GET", "/api/v1/monitoring/history", query={"minutes": int(minutes)})["samples"]

    def workers(self) -> Dict[str, Any]:
        """Returns the workers (``{"workers": [...], "busy", "idle", "total",
        "target"}``)."""
        return self.request("GET", "/api/v1/workers")

    def report(self) -> Dict[str, Any]:
        """Returns counts by status, throughput and latency, overall and per
        task name."""
        return self.request("GET", "/api/v1/report")

    def task_types(self) -> List[Dict[str, Any]]:
        """Returns the registered task types with their parameters."""
        return self.request("GET", "/api/v1/task-types")["task_types"]

    def health(self) -> bool:
        """Tells whether the server answers ``/healthz`` with ``ok``.

        Never raises: an unreachable server or any error answer gives False.
        ``/healthz`` needs no token.
        """
        try:
            answer = self.request("GET", "/healthz")
        except TaskdeckError:
            return False
        return isinstance(answer, dict) and answer.get("status") == "ok"

    def metrics(self) -> str:
        """Returns the Prometheus text exposition of ``/metrics``."""
        return self.request("GET", "/metrics")
