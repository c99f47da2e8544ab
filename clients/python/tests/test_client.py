"""The Python client against a real `taskdeck serve`.

Three servers run for the whole module: MAIN (2 workers), AUTH (2 workers,
`--token secret`) and IDLE (0 workers, so its tasks stay queued and listings
are predictable). Run from the repository root with either of:

    python3 -m unittest discover -s clients/python/tests -v
    python3 -m pytest clients/python/tests
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

from servers import CLIENT_DIR, REPO_ROOT, Server, wait_until

import taskdeck
from taskdeck import (
    BadRequest,
    Conflict,
    MethodNotAllowed,
    NotFound,
    TaskClient,
    TaskdeckError,
    TaskdeckTimeout,
    Unauthorized,
)

TOKEN = "secret"
RECORD_FIELDS = {
    "id", "task", "args", "kwargs", "priority", "max_retries", "timeout_s", "status",
    "attempts", "failures", "submitted_at", "first_started_at", "started_at",
    "finished_at", "retry_at", "worker", "result", "error", "queue_wait_s",
    "run_time_s", "total_latency_s", "not_before", "depends_on", "on_dependency_failure",
    "cancelled_by", "queue",
}
LATENCY_FIELDS = {"count", "mean_s", "p50_s", "p95_s", "p99_s", "max_s"}
LEGACY_MONITORING_KEYS = {
    "CPU", "RAM Usage", "RAM Allocated", "RAM Total", "GPU Usage", "GPU RAM Usage",
    "Disk", "Idle Workers", "Busy Workers", "Total Workers",
}
SERVERS = {}


def setUpModule() -> None:
    try:
        SERVERS["main"] = Server(workers=2).start()
        SERVERS["auth"] = Server(workers=2, token=TOKEN).start()
        SERVERS["idle"] = Server(workers=0).start()
    except BaseException:
        tearDownModule()
        raise


def tearDownModule() -> None:
    failures = []
    for server in SERVERS.values():
        server.terminate()  # All at once, so their shutdowns overlap.
    deadline = time.monotonic() + 10.0
    for name, server in list(SERVERS.items()):
        try:
            status = server.stop(timeout_s=max(0.5, deadline - time.monotonic()))
        except RuntimeError as error:
            failures.append(f"{name}: {error}")
            continue
        if status != 0:
            failures.append(f"{name}: exit status {status} after SIGTERM")
    SERVERS.clear()
    if failures:
        raise RuntimeError("servers did not stop cleanly: " + "; ".join(failures))


class ServerTestCase(unittest.TestCase):
    """Gives each test fresh clients of the three servers."""

    def setUp(self) -> None:
        self.main = TaskClient(SERVERS["main"].url, timeout=10)
        self.idle = TaskClient(SERVERS["idle"].url, timeout=10)
        self.addCleanup(self.main.close)
        self.addCleanup(self.idle.close)

    def finished(self, task_id: int, client: TaskClient = None) -> dict:
        return (client or self.main).wait(task_id, timeout=30)

    def running(self, task_id: int, client: TaskClient = None) -> None:
        client = client or self.main
        wait_until(lambda: client.status(task_id) == "running", what=f"task {task_id} to run")


class SubmitAndWaitTest(ServerTestCase):
    def test_noop_round_trip(self):
        task_id = self.main.submit("noop", 1, "a")
        self.assertIsInstance(task_id, int)
        record = self.main.wait(task_id, timeout=10)
        self.assertLessEqual(RECORD_FIELDS, set(record))
        self.assertEqual(record["id"], task_id)
        self.assertEqual(record["status"], "completed")
        self.assertEqual(record["task"], "noop")
        self.assertEqual(record["args"], [1, "a"])
        self.assertEqual(record["result"], [1, "a"])
        self.assertEqual(record["attempts"], 1)
        self.assertEqual(record["failures"], [])
        self.assertEqual(record["queue"], "default")
        for field in ("queue_wait_s", "run_time_s", "total_latency_s"):
            self.assertIsInstance(record[field], float, field)
            self.assertGreaterEqual(record[field], 0.0, field)
        self.assertLessEqual(record["submitted_at"], record["started_at"])
        self.assertLessEqual(record["started_at"], record["finished_at"])
        self.assertEqual(self.main.get(task_id)["status"], "completed")
        self.assertEqual(self.main.status(task_id), "completed")

    def test_defaults_and_options_are_recorded(self):
        plain = self.idle.get(self.idle.submit("noop"))
        self.assertEqual(
            (plain["args"], plain["kwargs"], plain["priority"], plain["max_retries"], plain["timeout_s"]),
            ([], {}, 5, 3, None),
        )
        self.assertEqual(plain["status"], "queued")
        tuned = self.idle.get(self.idle.submit("noop", 7, priority=8, max_retries=1, timeout=5.5))
        self.assertEqual(
            (tuned["args"], tuned["priority"], tuned["max_retries"], tuned["timeout_s"]),
            ([7], 8, 1, 5.5),
        )

    def test_a_delayed_task_waits_for_its_time(self):
        submitted = time.time()
        task_id = self.main.submit("noop", delay=0.5)
        waiting = self.main.get(task_id)
        self.assertEqual(waiting["status"], "queued")
        self.assertGreaterEqual(waiting["not_before"], submitted + 0.5 - 0.05)
        record = self.finished(task_id)
        self.assertEqual(record["status"], "completed")
        self.assertGreaterEqual(record["started_at"], waiting["not_before"])
        past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
        at_once = self.finished(self.main.submit("noop", not_before=past))
        self.assertEqual(at_once["status"], "completed")
        self.assertAlmostEqual(at_once["not_before"], past.timestamp(), places=3)
        by_text = self.idle.request(
            "POST", "/api/v1/tasks", {"task": "noop", "not_before": "2027-06-02T03:04:05+00:00"}
        )
        later = self.idle.get(by_text["id"])
        self.assertEqual(later["not_before"], 1811905445.0)
        with self.assertRaises(TypeError):
            self.main.submit("noop", delay=1, not_before=past)
        with self.assertRaises(BadRequest):
            self.main.submit("noop", delay=-1)

    def test_hold_and_release(self):
        task_id = self.idle.submit("noop")
        self.assertEqual(self.idle.get(task_id)["waiting"]["code"], "queued_behind")
        self.assertTrue(self.idle.hold(task_id)["held"])
        self.assertEqual(self.idle.get(task_id)["waiting"]["code"], "held")
        self.assertTrue(self.idle.get(task_id)["held"])
        self.assertEqual(self.idle.get(task_id)["status"], "queued")
        self.assertFalse(self.idle.release(task_id)["held"])
        done = self.finished(self.main.submit("noop"))
        with self.assertRaises(Conflict):
            self.main.hold(done["id"])
        with self.assertRaises(NotFound):
            self.main.hold(10**9)

    def test_pause_and_resume(self):
        try:
            self.assertEqual(self.main.pause(), {"paused": True, "stopped": 0})
            self.assertTrue(self.main.report()["paused"])
            task_id = self.main.submit("noop")
            with self.assertRaises(TaskdeckTimeout):
                self.main.wait(task_id, timeout=0.3)
            self.assertEqual(self.main.status(task_id), "queued")
        finally:
            self.assertEqual(self.main.resume(), {"paused": False})
        self.assertEqual(self.finished(task_id)["status"], "completed")

    def test_mock_ml_and_cv_tasks_run_for_their_duration(self):
        ml = self.main.submit("mock_ml_task", 200, "Random Forest")
        cv = self.main.submit("mock_cv_task", 200, "Object Detection")
        for task_id in (ml, cv):
            record = self.finished(task_id)
            self.assertEqual(record["status"], "completed", record)
            self.assertIsNotNone(record["result"])
            self.assertGreaterEqual(record["run_time_s"], 0.15, record)

    def test_kwargs(self):
        kwargs = {"duration_ms": 50, "algorithm": "K-Means Clustering"}
        record = self.finished(self.main.submit("mock_ml_task", kwargs=kwargs))
        self.assertEqual(record["status"], "completed", record)
        self.assertEqual(record["kwargs"], kwargs)
        mixed = self.finished(self.main.submit("mock_cv_task", 50, kwargs={"operation": "Field Registration"}))
        self.assertEqual(mixed["status"], "completed", mixed)

    def test_higher_priority_runs_first(self):
        blockers = self.main.submit_many([("sleep", [400]), ("sleep", [400])])
        for task_id in blockers:
            self.running(task_id)
        low = self.main.submit("noop", "low", priority=1)
        high = self.main.submit("noop", "high", priority=9)
        low_record, high_record = self.finished(low), self.finished(high)
        self.assertLessEqual(high_record["started_at"], low_record["started_at"])
        self.assertLess(low, high)

    def test_timeout_stops_an_attempt(self):
        record = self.finished(self.main.submit("sleep", 10_000, timeout=0.3, max_retries=0))
        self.assertEqual(record["status"], "failed", record)
        self.assertEqual(record["failures"][-1]["kind"], "timed_out", record)
        self.assertLess(record["run_time_s"], 5.0)

    def test_wait_timeout_raises(self):
        task_id = self.main.submit("sleep", 5_000)
        self.addCleanup(self._cancel_quietly, self.main, task_id)
        started = time.monotonic()
        with self.assertRaises(TaskdeckTimeout) as caught:
            self.main.wait(task_id, timeout=0.5)
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 0.45)
        self.assertLess(elapsed, 3.0)
        self.assertIn(str(task_id), str(caught.exception))
        queued = self.idle.submit("noop")
        with self.assertRaises(TaskdeckTimeout):
            self.idle.wait(queued, timeout=0)

    def test_run_returns_the_final_record_in_one_call(self):
        record = self.main.run("noop", 3, "x", priority=7)
        self.assertLessEqual(RECORD_FIELDS, set(record))
        self.assertEqual((record["status"], record["result"], record["priority"]), ("completed", [3, "x"], 7))
        self.assertEqual(self.main.get(record["id"])["status"], "completed")
        failed = self.main.run("fail", 5, max_retries=0)
        self.assertEqual(failed["status"], "failed", failed)
        # Longer than the server's inline wait: answered by the long poll.
        slow = self.main.run("sleep", 150)
        self.assertEqual(slow["status"], "completed", slow)
        self.assertGreaterEqual(slow["run_time_s"], 0.14)
        with self.assertRaises(BadRequest):
            self.main.run("no_such_task")

    def test_run_wait_timeout_leaves_the_task_running(self):
        started = time.monotonic()
        with self.assertRaises(TaskdeckTimeout) as caught:
            self.main.run("sleep", 5_000, wait_timeout=0.3)
        self.assertLess(time.monotonic() - started, 3.0)
        task_id = int(re.search(r"task (\d+)", str(caught.exception)).group(1))
        self.addCleanup(self._cancel_quietly, self.main, task_id)
        self.assertIn(self.main.status(task_id), ("queued", "running"))
        with self.assertRaises(TaskdeckTimeout):
            self.idle.run("noop", wait_timeout=0)

    def test_wait_many_returns_records_in_the_order_given(self):
        ids = self.main.submit_many(
            [("sleep", [100]), ("noop", [1]), {"task": "fail", "args": [9], "max_retries": 0}]
        )
        records = self.main.wait_many(list(reversed(ids)) + [ids[1]], timeout=30)
        self.assertEqual([r["id"] for r in records], list(reversed(ids)) + [ids[1]])
        self.assertEqual([r["status"] for r in records[:3]], ["failed", "completed", "completed"])
        self.assertEqual(self.main.wait_many([]), [])
        with self.assertRaises(NotFound):
            self.main.wait_many([ids[0], 10**12])
        with self.assertRaises(TypeError):
            self.main.wait_many(["x"])
        queued = self.idle.submit("noop")
        started = time.monotonic()
        with self.assertRaises(TaskdeckTimeout) as caught:
            self.idle.wait_many([queued], timeout=0.3)
        self.assertLess(time.monotonic() - started, 3.0)
        self.assertIn(str(queued), str(caught.exception))

    @staticmethod
    def _cancel_quietly(client: TaskClient, task_id: int) -> None:
        try:
            client.cancel(task_id)
        except Conflict:
            pass


class SubmitManyTest(ServerTestCase):
    def test_every_item_shape(self):
        ids = self.main.submit_many([
            {"task": "noop", "args": [1], "priority": 6},
            ("noop", [2]),
            ("mock_ml_task", [100, "Gradient Boosting"], {}),
            ("sleep", [], {"ms": 5}),
            "noop",
            taskdeck.create_task("noop", 3),
        ])
        self.assertEqual(len(ids), 6)
        self.assertEqual(ids, sorted(ids))
        records = [self.finished(task_id) for task_id in ids]
        self.assertEqual([r["status"] for r in records], ["completed"] * 6, records)
        self.assertEqual([r["args"] for r in records][:2], [[1], [2]])
        self.assertEqual(records[0]["priority"], 6)
        self.assertEqual(records[5]["args"], [3])

    def test_empty_and_malformed(self):
        self.assertEqual(self.main.submit_many([]), [])
        with self.assertRaises(TypeError):
            self.main.submit_many([42])
        with self.assertRaises(TypeError):
            self.main.submit_many([("noop", "not a list")])

    def test_all_or_nothing(self):
        before = len(self.idle.list(limit=1000))
        with self.assertRaises(BadRequest) as caught:
            self.idle.submit_many([("noop", []), ("no_such_task", [])])
        self.assertIn("no_such_task", caught.exception.message)
        self.assertEqual(len(self.idle.list(limit=1000)), before)


class ListTest(ServerTestCase):
    def test_paging_order_and_filters(self):
        ids = self.idle.submit_many([("noop", [i]) for i in range(5)])
        sleeper = self.idle.submit("sleep", 10)
        oldest = [r["id"] for r in self.idle.list(order="oldest", limit=1000)]
        newest = [r["id"] for r in self.idle.list(order="newest", limit=1000)]
        self.assertEqual(newest, oldest[::-1])
        self.assertEqual([i for i in oldest if i in ids], ids)
        page = [r["id"] for r in self.idle.list(order="oldest", limit=2, offset=1)]
        self.assertEqual(page, oldest[1:3])
        self.assertEqual([r["id"] for r in self.idle.list(limit=3)], newest[:3])
        sleeps = self.idle.list(task="sleep", limit=1000)
        self.assertIn(sleeper, [r["id"] for r in sleeps])
        self.assertEqual({r["task"] for r in sleeps}, {"sleep"})
        queued = self.idle.list(status="queued", task="noop", limit=1000)
        self.assertLessEqual(set(ids), {r["id"] for r in queued})
        self.assertEqual({r["status"] for r in queued}, {"queued"})
        self.assertEqual(self.idle.list(status="completed"), [])

    def test_filters_on_finished_tasks(self):
        for task_id in self.main.submit_many([("noop", [i]) for i in range(3)]):
            self.finished(task_id)
        page = self.main.list(status="completed", task="noop", limit=2)
        self.assertEqual(len(page), 2)
        self.assertTrue(all(r["status"] == "completed" and r["task"] == "noop" for r in page))

    def test_bad_parameters(self):
        for params in ({"limit": 0}, {"limit": 1001}, {"order": "sideways"}, {"status": "bogus"}):
            with self.subTest(params=params), self.assertRaises(BadRequest):
                self.idle.list(**params)


class CancelAndRetryTest(ServerTestCase):
    def test_cancel_queued_then_retry(self):
        task_id = self.idle.submit("noop")
        answer = self.idle.cancel(task_id)
        self.assertEqual((answer["id"], answer["outcome"]), (task_id, "removed"))
        self.assertEqual(answer["task"]["status"], "cancelled")
        self.assertEqual(self.idle.status(task_id), "cancelled")
        with self.assertRaises(Conflict):
            self.idle.cancel(task_id)
        self.assertEqual(self.idle.retry(task_id), {"id": task_id, "status": "queued", "ids": [task_id]})
        self.assertEqual(self.idle.status(task_id), "queued")
        with self.assertRaises(Conflict):
            self.idle.retry(task_id)
        deleted = self.idle.request("DELETE", f"/api/v1/tasks/{task_id}")
        self.assertEqual((deleted["id"], deleted["outcome"]), (task_id, "removed"))

    def test_cancel_running_sleep(self):
        task_id = self.main.submit("sleep", 60_000)
        self.running(task_id)
        answer = self.main.cancel(task_id)
        self.assertEqual((answer["id"], answer["outcome"]), (task_id, "stop_requested"))
        record = self.main.wait(task_id, timeout=10)
        self.assertEqual(record["status"], "cancelled", record)
        with self.assertRaises(Conflict) as caught:
            self.main.cancel(task_id)
        self.assertEqual((caught.exception.status, caught.exception.code), (409, "conflict"))
        self.assertTrue(caught.exception.message)

    def test_cancel_finished_is_a_conflict(self):
        task_id = self.main.submit("noop")
        self.finished(task_id)
        with self.assertRaises(Conflict):
            self.main.cancel(task_id)
        with self.assertRaises(Conflict):
            self.main.request("DELETE", f"/api/v1/tasks/{task_id}")
        with self.assertRaises(Conflict):
            self.main.retry(task_id)

    def test_retry_failed_task(self):
        task_id = self.main.submit("fail", 1, max_retries=0)
        record = self.finished(task_id)
        self.assertEqual(record["status"], "failed", record)
        self.assertEqual(record["attempts"], 1)
        self.assertEqual(len(record["failures"]), 1)
        self.assertEqual(record["failures"][0]["kind"], "error")
        self.assertIn("planned failure", record["failures"][0]["message"])
        self.assertTrue(record["error"])
        self.assertEqual(self.main.retry(task_id), {"id": task_id, "status": "queued", "ids": [task_id]})
        again = self.finished(task_id)
        # Whether a retry starts counting attempts afresh is the server's
        # choice; either way the task ran once more and finished again.
        self.assertIn(again["status"], ("completed", "failed"), again)
        self.assertGreater(again["finished_at"], record["finished_at"], again)
        self.assertEqual(len(again["failures"]), 1 if again["status"] == "completed" else 2, again)


class DependencyTest(ServerTestCase):
    def assertRanAfter(self, record: dict, dependency: dict) -> None:
        self.assertEqual(record["status"], "completed", record)
        self.assertGreaterEqual(record["started_at"], dependency["finished_at"], (record, dependency))

    def test_a_pipeline_in_one_batch_runs_in_order(self):
        # Two workers: without the dependencies the sleeps would overlap.
        ids = self.main.submit_many([
            {"task": "sleep", "args": [150]},
            {"task": "sleep", "args": [50], "depends_on": [taskdeck.batch_ref(0)]},
            {"task": "noop", "args": ["last"], "depends_on": (taskdeck.batch_ref(1), taskdeck.batch_ref(0))},
        ])
        after = self.main.submit("noop", "after", depends_on=[ids[2]], on_dependency_failure="run")
        first, second, third, fourth = self.main.wait_many(ids + [after], timeout=30)
        self.assertEqual(first["status"], "completed", first)
        self.assertRanAfter(second, first)
        self.assertRanAfter(third, second)
        self.assertRanAfter(fourth, third)
        self.assertEqual(
            [r["depends_on"] for r in (first, second, third, fourth)],
            [[], [ids[0]], [ids[1], ids[0]], [ids[2]]],
        )
        self.assertEqual(third["on_dependency_failure"], "cancel")
        self.assertEqual(fourth["on_dependency_failure"], "run")
        self.assertIsNone(third["cancelled_by"])
        self.assertEqual(sorted(self.main.get(ids[0])["dependents"]), [ids[1], ids[2]])

    def test_a_queued_dependent_says_what_it_waits_for(self):
        first = self.idle.submit("noop")
        second = self.idle.submit("noop", depends_on=[first])
        waiting = self.idle.get(second)["waiting"]
        self.assertEqual(
            (waiting["code"], waiting["count"], waiting["dependencies"]),
            ("waiting_for_dependencies", 1, [first]),
        )
        self.assertTrue(waiting["message"])

    def test_a_failure_cancels_dependents_and_retry_cascade_queues_them_again(self):
        ids = self.main.submit_many([
            {"task": "fail", "args": [1], "max_retries": 0},
            {"task": "noop", "depends_on": [taskdeck.batch_ref(0)]},
            {"task": "noop", "depends_on": [taskdeck.batch_ref(1)]},
        ])
        root, child, grandchild = self.main.wait_many(ids, timeout=30)
        self.assertEqual(root["status"], "failed", root)
        self.assertEqual((child["status"], child["cancelled_by"]), ("cancelled", ids[0]), child)
        self.assertEqual((grandchild["status"], grandchild["cancelled_by"]), ("cancelled", ids[1]), grandchild)
        self.assertIn(f"task {ids[0]}, failed", child["error"])
        self.assertIsNone(child["started_at"])
        with self.assertRaises(Conflict) as caught:
            self.main.retry(ids[1])
        self.assertIn(str(ids[0]), caught.exception.message)
        with self.assertRaises(BadRequest):
            self.main.submit("noop", depends_on=[ids[0]])
        # Paused, so the re-queued tasks can be seen queued before they run.
        try:
            self.main.pause()
            answer = self.main.retry(ids[0], cascade=True)
            self.assertEqual(answer, {"id": ids[0], "status": "queued", "ids": ids})
            requeued = [self.main.get(task_id) for task_id in ids]
            self.assertEqual([r["status"] for r in requeued], ["queued"] * 3, requeued)
            self.assertEqual([r["cancelled_by"] for r in requeued], [None] * 3, requeued)
            self.assertEqual(requeued[2]["waiting"]["code"], "waiting_for_dependencies", requeued[2])
            self.assertEqual(requeued[2]["waiting"]["dependencies"], [ids[1]], requeued[2])
        finally:
            self.main.resume()
        # The planned failure happens again on the fresh attempt, and so does the cascade.
        again = self.main.wait_many(ids, timeout=30)
        self.assertEqual([r["status"] for r in again], ["failed", "cancelled", "cancelled"], again)
        self.assertGreater(again[1]["finished_at"], child["finished_at"], again[1])

    def test_run_anyway_after_a_failed_dependency(self):
        # One batch, so both dependents are accepted before the failure.
        failed, anyway, cancelled = self.main.submit_many([
            {"task": "fail", "args": [1], "max_retries": 0},
            {"task": "noop", "args": ["anyway"], "depends_on": [taskdeck.batch_ref(0)],
             "on_dependency_failure": "run"},
            {"task": "noop", "depends_on": [taskdeck.batch_ref(0)]},
        ])
        first, second, third = self.main.wait_many([failed, anyway, cancelled], timeout=30)
        self.assertEqual(first["status"], "failed", first)
        self.assertRanAfter(second, first)
        self.assertEqual((second["result"], second["cancelled_by"]), (["anyway"], None))
        self.assertEqual((third["status"], third["cancelled_by"]), ("cancelled", failed), third)
        # Once it has failed, only a dependent that runs anyway is accepted.
        late = self.main.submit("noop", depends_on=[failed], on_dependency_failure="run")
        self.assertEqual(self.finished(late)["status"], "completed")

    def test_bad_dependencies_are_refused(self):
        before = len(self.idle.list(limit=1000))
        with self.assertRaises(BadRequest) as caught:
            self.idle.submit("noop", depends_on=[987_654_321])
        self.assertEqual((caught.exception.status, caught.exception.code), (400, "bad_request"))
        self.assertIn("987654321", caught.exception.message)
        queued = self.idle.submit("noop")
        bad_batches = [
            [{"task": "noop", "depends_on": [taskdeck.batch_ref(1)]}, "noop"],
            [{"task": "noop", "depends_on": [taskdeck.batch_ref(0)]}],
            ["noop", {"task": "noop", "depends_on": [queued, 987_654_321]}],
        ]
        for tasks in bad_batches:
            with self.subTest(tasks=tasks), self.assertRaises(BadRequest) as caught:
                self.idle.submit_many(tasks)
            self.assertEqual(caught.exception.status, 400)
        with self.assertRaises(BadRequest):
            self.idle.submit("noop", depends_on=[queued], on_dependency_failure="sometimes")
        self.assertEqual(len(self.idle.list(limit=1000)), before + 1)
        for depends_on in (queued, "12", {"batch_index": 0}):
            with self.subTest(depends_on=depends_on), self.assertRaises(TypeError):
                self.idle.submit("noop", depends_on=depends_on)
        with self.assertRaises(TypeError):
            self.idle.submit("noop", depends_on=[True])
        with self.assertRaises(TypeError):
            taskdeck.batch_ref("0")
        self.assertEqual(taskdeck.batch_ref(3), {"batch_index": 3})


class ErrorTest(ServerTestCase):
    def test_unknown_task_is_a_bad_request_with_the_servers_message(self):
        with self.assertRaises(BadRequest) as caught:
            self.main.submit("no_such_task")
        error = caught.exception
        self.assertEqual((error.status, error.code), (400, "bad_request"))
        self.assertIn("no_such_task", error.message)
        self.assertIn(error.message, str(error))

    def test_bad_arguments_and_options(self):
        cases = [
            ("mock_ml_task", ("x", "Random Forest"), {}),
            ("sleep", (), {}),
            ("sleep", (1, 2), {}),
            ("noop", (), {"priority": 10}),
            ("noop", (), {"max_retries": -1}),
            ("noop", (), {"timeout": 0}),
        ]
        for name, args, options in cases:
            with self.subTest(name=name, args=args, options=options):
                with self.assertRaises(BadRequest) as caught:
                    self.main.submit(name, *args, **options)
                self.assertTrue(caught.exception.message)

    def test_unknown_id_is_not_found(self):
        missing = 987_654_321
        calls = [self.main.get, self.main.status, self.main.cancel, self.main.retry,
                 lambda task_id: self.main.wait(task_id, timeout=1)]
        for call in calls:
            with self.subTest(call=call), self.assertRaises(NotFound) as caught:
                call(missing)
            self.assertEqual((caught.exception.status, caught.exception.code), (404, "not_found"))

    def test_unknown_route_and_method(self):
        with self.assertRaises(NotFound):
            self.main.request("GET", "/api/v1/nothing-here")
        with self.assertRaises(MethodNotAllowed) as caught:
            self.main.request("PUT", "/api/v1/tasks")
        self.assertEqual(caught.exception.code, "method_not_allowed")
        with self.assertRaises(BadRequest):
            self.main.request("POST", "/api/v1/tasks", "not an object")

    def test_too_large_batch_is_refused(self):
        with self.assertRaises((BadRequest, taskdeck.PayloadTooLarge)):
            self.idle.submit_many([("noop", [])] * 10_001)

    def test_too_large_body_is_refused(self):
        with self.assertRaises(taskdeck.PayloadTooLarge) as caught:
            self.idle.submit("noop", "x" * (9 * 1024 * 1024))
        self.assertEqual(caught.exception.code, "payload_too_large")
        self.assertTrue(self.idle.health())


class MonitoringTest(ServerTestCase):
    def test_monitoring(self):
        sample = self.main.monitoring()
        self.assertLessEqual(
            {"cpu", "memory", "disks", "gpus", "workers", "queue_depth", "throughput_per_s",
             "latency", "sampled_at"}, set(sample))
        self.assertIsInstance(sample["cpu"]["percent"], (int, float))
        self.assertIsInstance(sample["cpu"]["per_core"], list)
        self.assertGreater(sample["memory"]["total_bytes"], 0)
        self.assertIsInstance(sample["disks"], list)
        for disk in sample["disks"]:
            self.assertLessEqual({"mount", "used_bytes", "total_bytes", "percent"}, set(disk))
        gpus = sample["gpus"]
        self.assertIsInstance(gpus["available"], bool)
        self.assertIsInstance(gpus["devices"], list)
        if not gpus["available"]:
            self.assertIsInstance(gpus["reason"], str)
        self.assertEqual(sample["workers"]["total"], 2)
        self.assertLessEqual(LATENCY_FIELDS, set(sample["latency"]))
        self.assertIsInstance(sample["sampled_at"], float)

    def test_history(self):
        wait_until(lambda: len(self.main.history()) >= 2, what="two resource samples in the history")
        samples = self.main.history(minutes=60)
        times = [sample["sampled_at"] for sample in samples]
        self.assertEqual(times, sorted(times))
        for sample in samples:
            self.assertLessEqual({"cpu", "memory", "disks", "gpus", "sampled_at"}, set(sample))
        self.assertLessEqual(len(self.main.history(minutes=1)), len(samples))
        with self.assertRaises(BadRequest):
            self.main.history(minutes=0)

    def test_workers(self):
        pool = self.main.workers()
        self.assertEqual((pool["total"], pool["target"], len(pool["workers"])), (2, 2, 2))
        self.assertEqual(pool["busy"] + pool["idle"], 2)
        for worker in pool["workers"]:
            self.assertLessEqual(
                {"id", "name", "state", "current_task", "tasks_run", "tasks_failed"}, set(worker))
            self.assertIn(worker["state"], ("idle", "busy"))
        self.assertEqual(self.idle.workers()["total"], 0)

    def test_report(self):
        self.finished(self.main.submit("noop"))
        report = self.main.report()
        self.assertEqual(
            set(report["counts"]), {"queued", "running", "retrying", "completed", "failed", "cancelled"})
        self.assertGreaterEqual(report["counts"]["completed"], 1)
        self.assertGreaterEqual(report["uptime_s"], 0)
        self.assertLessEqual(LATENCY_FIELDS, set(report["latency"]))
        noop = [row for row in report["tasks"] if row["task"] == "noop"]
        self.assertEqual(len(noop), 1, report["tasks"])
        self.assertLessEqual(
            {"runs", "attempt_failures", "completed", "failed", "run_time", "total_latency"}, set(noop[0]))

    def test_task_types(self):
        types = {t["name"]: t for t in self.main.task_types()}
        self.assertLessEqual({"mock_ml_task", "mock_cv_task", "noop", "sleep", "fail"}, set(types))
        self.assertEqual([p["name"] for p in types["mock_ml_task"]["params"]], ["duration_ms", "algorithm"])
        self.assertIn("Random Forest", types["mock_ml_task"]["description"])
        self.assertIsNotNone(types["noop"]["rest"])
        self.assertIsNone(types["sleep"]["rest"])

    def test_health_and_metrics(self):
        self.assertIs(self.main.health(), True)
        self.assertIs(TaskClient("http://127.0.0.1:9", timeout=2).health(), False)
        text = self.main.metrics()
        self.assertIsInstance(text, str)
        self.assertRegex(text, r"(?m)^# TYPE \w+ (counter|gauge|histogram|summary)$")


class LegacyTest(ServerTestCase):
    def test_create_task_builds_without_sending(self):
        offline = TaskClient("http://127.0.0.1:9")
        task = offline.create_task("mock_ml_task", 5000, "Random Forest")
        self.assertEqual(task, {"function_name": "mock_ml_task", "arguments": [5000, "Random Forest"]})
        self.assertEqual(taskdeck.create_task("noop"), {"function_name": "noop", "arguments": []})
        self.assertEqual(offline.connections_opened, 0)

    def test_send_task_and_status_texts(self):
        task_id = self.main.send_task(self.main.create_task("mock_ml_task", 200, "Random Forest"))
        self.assertIsInstance(task_id, int)
        self.finished(task_id)
        self.assertEqual(self.main.request_task_status(task_id), "Completed")
        raw = self.main.request("GET", f"/task_status/{task_id}")
        self.assertEqual(raw, {"task_id": task_id, "status": "Completed"})
        raw_submit = self.main.request("POST", "/submit_task", {"function_name": "noop", "arguments": []})
        self.assertEqual(set(raw_submit), {"task_id"})

        queued = self.idle.send_task(taskdeck.create_task("noop", 1))
        self.assertEqual(self.idle.request_task_status(queued), "On Hold")
        self.idle.cancel(queued)
        self.assertEqual(self.idle.request_task_status(queued), "Cancelled")

        sleeping = self.main.send_task(taskdeck.create_task("sleep", 60_000))
        self.running(sleeping)
        self.assertEqual(self.main.request_task_status(sleeping), "In Progress")
        self.main.cancel(sleeping)

        failed = self.main.submit("fail", 1, max_retries=0)
        self.finished(failed)
        self.assertRegex(self.main.request_task_status(failed), r"^Failed: .+")
        self.assertEqual(self.main.request_task_status(987_654_321), "Unknown")

    def test_monitoring_data(self):
        data = self.main.request_monitoring_data()
        self.assertLessEqual(LEGACY_MONITORING_KEYS, set(data))
        self.assertIsInstance(data["CPU"], (int, float))
        self.assertEqual(data["Total Workers"], 2)
        self.assertEqual(data["Idle Workers"] + data["Busy Workers"], 2)
        if not self.main.monitoring()["gpus"]["available"]:
            self.assertEqual((data["GPU Usage"], data["GPU RAM Usage"]), ("Not Available", "Not Available"))

    def test_get_tasks_and_remove_task(self):
        done = self.main.submit("noop")
        self.finished(done)
        rows = {row["id"]: row for row in self.main.request("GET", "/get_tasks")}
        self.assertEqual(set(rows[done]), {"id", "task", "arguments", "status", "time_taken"})
        self.assertEqual(rows[done]["status"], "Completed")
        self.assertGreaterEqual(rows[done]["time_taken"], 0.0)

        queued = self.idle.submit("noop", 1)
        row = [r for r in self.idle.request("GET", "/get_tasks") if r["id"] == queued][0]
        self.assertEqual((row["task"], row["arguments"], row["status"], row["time_taken"]),
                         ("noop", [1], "On Hold", None))
        self.assertEqual(self.idle.request("DELETE", f"/remove_task/{queued}"), {"success": True})
        again = self.idle.request("DELETE", f"/remove_task/{queued}")
        self.assertIs(again["success"], False)
        self.assertTrue(again["reason"])
        self.assertIs(self.idle.request("DELETE", "/remove_task/987654321")["success"], False)


class AuthTest(unittest.TestCase):
    def setUp(self) -> None:
        self.url = SERVERS["auth"].url

    def test_no_token_is_unauthorized_except_healthz(self):
        # token="" sends none, as a client of another account would.
        client = TaskClient(self.url, token="")
        self.addCleanup(client.close)
        self.assertTrue(client.health())
        calls = [client.list, client.monitoring, client.metrics, lambda: client.submit("noop"),
                 lambda: client.request_task_status(1), client.request_monitoring_data]
        for call in calls:
            with self.subTest(call=call), self.assertRaises(Unauthorized) as caught:
                call()
            self.assertEqual((caught.exception.status, caught.exception.code), (401, "unauthorized"))

    def test_wrong_token_is_unauthorized(self):
        with TaskClient(self.url, token="wrong") as client, self.assertRaises(Unauthorized):
            client.list()

    def test_right_token_works(self):
        with TaskClient(self.url, token=TOKEN) as client:
            record = client.wait(client.submit("noop", "authorised"), timeout=10)
            self.assertEqual(record["status"], "completed")
            self.assertEqual(client.request_monitoring_data()["Total Workers"], 2)
            self.assertIn("# TYPE", client.metrics())
            self.assertNotIn(TOKEN, repr(client))


class ConnectionReuseTest(ServerTestCase):
    def test_one_connection_for_many_calls(self):
        client = self.main
        client.health()
        sock = client._conn.sock
        task_id = client.submit("noop")
        client.wait(task_id, timeout=10)
        client.get(task_id)
        client.list(limit=5)
        client.workers()
        client.request_task_status(task_id)
        with self.assertRaises(NotFound):
            client.get(987_654_321)
        slow = client.submit("sleep", 300)
        client.wait(slow, timeout=10)
        self.assertEqual(client.connections_opened, 1)
        self.assertIs(client._conn.sock, sock)
        client.close()
        client.health()
        self.assertEqual(client.connections_opened, 2)

    def test_threads_share_a_client(self):
        errors = []

        def work() -> None:
            try:
                for _ in range(5):
                    if self.main.wait(self.main.submit("noop"), timeout=10)["status"] != "completed":
                        errors.append("not completed")
            except Exception as error:  # Reported below; a thread cannot fail the test.
                errors.append(repr(error))

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        self.assertEqual(errors, [])
        self.assertEqual(self.main.connections_opened, 1)


class ExampleAndContractTest(ServerTestCase):
    def test_example_script(self):
        script = CLIENT_DIR / "examples" / "mock_tasks.py"
        env = dict(os.environ, PYTHONPATH=str(CLIENT_DIR))
        done = subprocess.run(
            [sys.executable, str(script), "--count", "3", "--max-duration-ms", "1500",
             "--url", SERVERS["main"].url, "--seed", "7"],
            capture_output=True, text=True, timeout=120, env=env,
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        lines = [line for line in done.stdout.splitlines() if line.startswith("task ")]
        self.assertEqual(len(lines), 3, done.stdout)
        self.assertTrue(all("completed" in line and "latency" in line for line in lines), done.stdout)
        self.assertRegex(done.stdout, r"summary: 3/3 completed; latency p50 [\d.]+ s, p95 [\d.]+ s")

    def test_every_documented_route_answers(self):
        routes = documented_routes()
        self.assertEqual(len(routes), 35, routes)
        done = self.main.submit("noop")
        self.finished(done)
        bodies = {
            ("post", "/api/v1/tasks"): {"task": "noop"},
            ("post", "/api/v1/tasks/batch"): {"tasks": [{"task": "noop"}]},
            ("post", "/api/v1/tasks/run"): {"task": "noop"},
            ("post", "/api/v1/tasks/wait"): {"ids": [done]},
            ("post", "/submit_task"): {"function_name": "noop", "arguments": []},
            ("patch", "/api/v1/queues/{name}"): {},
        }
        for method, path in routes:
            with self.subTest(method=method, path=path):
                named = path.replace("{name}", "default").replace("{file}", "app.js")
                target = re.sub(r"\{[a-z_]+\}", str(done), named)
                query = {"timeout_s": 0} if target.endswith("/wait") else None
                if path == "/api/v1/events":
                    self.main.events().close()  # A stream: it answers, then is left.
                    continue
                try:
                    self.main.request(method.upper(), target, bodies.get((method, path)), query=query)
                except Conflict:
                    pass  # Cancelling, retrying or holding a completed task; the route exists.
                except NotFound as error:
                    # A noop runs no process, so it has no log; the route exists.
                    self.assertTrue(path.endswith("/log") and "no route" not in str(error), error)


def documented_routes() -> list:
    """(method, path) pairs from docs/openapi.yaml, read line by line."""
    routes, path, in_paths = [], None, False
    with open(REPO_ROOT / "docs" / "openapi.yaml", encoding="utf-8") as spec:
        for line in spec:
            line = line.rstrip("\n")
            if line == "paths:":
                in_paths = True
            elif in_paths and line and not line.startswith(" "):
                break
            elif in_paths and re.fullmatch(r"  /\S*:", line):
                path = line.strip()[:-1]
            elif in_paths and re.fullmatch(r"    (get|post|put|delete|patch):", line):
                routes.append((line.strip()[:-1], path))
    return routes


if __name__ == "__main__":
    unittest.main()


class LocalSecretTest(unittest.TestCase):
    """The owner's client finds the server's local secret by itself."""

    def test_the_owner_s_client_needs_no_token_and_others_get_401(self) -> None:
        url = SERVERS["auth"].url
        with TaskClient(url) as owner:
            self.assertIsNotNone(owner.token, "the local secret was found")
            task_id = owner.submit("noop")
            self.assertEqual(owner.wait(task_id, timeout=30)["status"], "completed")
        request = urllib.request.Request(url + "/api/v1/tasks")
        with self.assertRaises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        self.assertEqual(caught.exception.code, 401)
        body = json.loads(caught.exception.read())
        self.assertEqual(body["error"]["code"], "unauthorized")
        secret_file = os.path.join(SERVERS["auth"].data_dir, "secret")
        self.assertEqual(os.stat(secret_file).st_mode & 0o777, 0o600)
        with open(secret_file, encoding="utf-8") as file:
            secret = file.read().strip()
        with TaskClient(url, token=secret) as explicit:
            self.assertIsInstance(explicit.list(), list)

    @unittest.skipUnless(sys.platform.startswith("linux"), "isolates the account's data directory with XDG_DATA_HOME")
    def test_a_client_made_before_its_server_started_takes_the_secret_once_it_runs(self) -> None:
        # A script that starts the server and makes its client at once: on
        # an account where no server ran before, there is no secret yet.
        home = tempfile.mkdtemp(prefix="taskdeck-pytest-home-")
        saved = {name: os.environ.pop(name, None) for name in ("XDG_DATA_HOME", "TASKDECK_DATA_DIR")}
        os.environ["XDG_DATA_HOME"] = home
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            client = TaskClient(f"http://127.0.0.1:{port}")
            self.assertIsNone(client.token, "no server has left its secret yet")
            server = Server(workers=1, listen=f"127.0.0.1:{port}", env={"XDG_DATA_HOME": home}).start()
            try:
                with client:
                    task_id = client.submit("noop")
                    self.assertEqual(client.wait(task_id, timeout=30)["status"], "completed")
                    self.assertEqual(len(client.list()), 1)
                    advertised = os.path.join(home, "taskdeck", "servers", str(port))
                    with open(advertised, encoding="utf-8") as file:
                        self.assertEqual(client.token, file.read().strip())
                # A token given is never replaced: a wrong one stays refused.
                with TaskClient(server.url, token="wrong") as given, self.assertRaises(Unauthorized):
                    given.list()
            finally:
                server.stop()
        finally:
            os.environ.pop("XDG_DATA_HOME")
            for name, value in saved.items():
                if value is not None:
                    os.environ[name] = value
            shutil.rmtree(home, ignore_errors=True)

