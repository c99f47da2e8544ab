"""Named queues against a real `taskdeck serve`: a queue's limit and pause,
the waiting reasons they give, per-queue counts, settings changed one at a
time, and the errors for bad names and limits.

Two servers run for the whole module: BUSY (4 workers, more than any limit
here, so that a queue's limit or pause is what holds its tasks back) and
IDLE (0 workers, so its tasks stay queued). Each test uses queues of its own
names, so the tests see neither each other's settings nor their counts.
"""

from __future__ import annotations

import pickle
import time
import unittest

from servers import Server, wait_until

import taskdeck
from taskdeck import NO_LIMIT, BadRequest, Conflict, TaskClient

SERVERS = {}
STATUSES = ("queued", "running", "retrying", "completed", "failed", "cancelled")


def setUpModule() -> None:
    try:
        SERVERS["busy"] = Server(workers=4).start()
        SERVERS["idle"] = Server(workers=0).start()
    except BaseException:
        tearDownModule()
        raise


def tearDownModule() -> None:
    for server in SERVERS.values():
        server.terminate()  # All at once, so their shutdowns overlap.
    deadline = time.monotonic() + 10.0
    failures = []
    for name, server in list(SERVERS.items()):
        status = server.stop(timeout_s=max(0.5, deadline - time.monotonic()))
        if status != 0:
            failures.append(f"{name}: exit status {status} after SIGTERM")
    SERVERS.clear()
    if failures:
        raise RuntimeError("servers did not stop cleanly: " + "; ".join(failures))


class QueueTestCase(unittest.TestCase):
    """Gives each test fresh clients of the two servers."""

    def setUp(self) -> None:
        self.busy = TaskClient(SERVERS["busy"].url, timeout=10)
        self.idle = TaskClient(SERVERS["idle"].url, timeout=10)
        self.addCleanup(self.busy.close)
        self.addCleanup(self.idle.close)

    def running(self, task_id: int) -> None:
        wait_until(lambda: self.busy.status(task_id) == "running", what=f"task {task_id} to run")

    def stop_later(self, client: TaskClient, task_id: int) -> None:
        """Cancels the task when the test ends and waits until it has ended."""

        def stop() -> None:
            try:
                client.cancel(task_id)
            except Conflict:
                pass  # It has finished already.
            client.wait(task_id, timeout=30)

        self.addCleanup(stop)

    def assertQueue(self, queue: dict, name: str, limit, paused: bool, **counts: int) -> None:
        """Checks a queue object; statuses not named in ``counts`` count 0."""
        expected = {"name": name, "limit": limit, "paused": paused}
        expected.update({status: counts.get(status, 0) for status in STATUSES})
        self.assertEqual(queue, expected)


class LimitTest(QueueTestCase):
    def test_a_limit_of_one_runs_its_tasks_one_at_a_time_while_another_queue_runs(self):
        self.assertQueue(self.busy.set_queue("serial", limit=1), "serial", 1, False)
        serial = self.busy.submit_many([("sleep", [200])] * 4, queue="serial")
        wait_until(lambda: self.busy.queue("serial")["running"] == 1, what="the serial queue to run one")
        other = self.busy.submit("sleep", 200, queue="other")
        *serial_records, other_record = self.busy.wait_many(serial + [other], timeout=60)
        for record in serial_records + [other_record]:
            self.assertEqual(record["status"], "completed", record)
        self.assertEqual({r["queue"] for r in serial_records}, {"serial"})
        self.assertEqual(other_record["queue"], "other")
        intervals = sorted((r["started_at"], r["finished_at"]) for r in serial_records)
        for (_, finished), (next_started, _) in zip(intervals, intervals[1:]):
            self.assertGreaterEqual(next_started, finished, intervals)
        # The other queue did not wait its turn behind the limited one.
        self.assertLess(other_record["started_at"], intervals[-1][0], (other_record, intervals))
        overlapping = [
            (started, finished) for started, finished in intervals
            if started < other_record["finished_at"] and other_record["started_at"] < finished
        ]
        self.assertTrue(overlapping, (other_record, intervals))
        self.assertQueue(self.busy.queue("serial"), "serial", 1, False, completed=4)

    def test_a_queue_at_its_limit_says_so_until_the_limit_is_removed(self):
        self.busy.set_queue("capped", limit=1)
        first = self.busy.submit("sleep", 10_000, queue="capped")
        self.stop_later(self.busy, first)
        self.running(first)
        second = self.busy.submit("sleep", 10_000, queue="capped")
        self.stop_later(self.busy, second)
        waiting = self.busy.get(second)["waiting"]
        self.assertEqual(
            (waiting["code"], waiting["queue"], waiting["limit"]), ("queue_at_limit", "capped", 1), waiting
        )
        self.assertIn("capped", waiting["message"])
        self.assertQueue(self.busy.queue("capped"), "capped", 1, False, running=1, queued=1)
        # A change that leaves the limit out keeps it.
        self.assertEqual(self.busy.set_queue("capped", paused=False)["limit"], 1)
        self.assertEqual(self.busy.status(second), "queued")
        removed = self.busy.set_queue("capped", limit=NO_LIMIT)
        self.assertEqual((removed["limit"], removed["paused"]), (None, False), removed)
        self.running(second)
        self.assertQueue(self.busy.queue("capped"), "capped", None, False, running=2)


class PauseTest(QueueTestCase):
    def test_a_paused_queue_runs_nothing_while_the_default_queue_runs(self):
        self.assertQueue(self.busy.pause_queue("later"), "later", None, True)
        held_back = self.busy.submit_many([("noop", [1]), ("noop", [2])], queue="later")
        # Submitted after them, with workers free for all: only the pause holds them back.
        now = self.busy.wait(self.busy.submit("noop", "now"), timeout=30)
        self.assertEqual((now["status"], now["queue"]), ("completed", "default"), now)
        for task_id in held_back:
            record = self.busy.get(task_id)
            self.assertEqual(record["status"], "queued", record)
            self.assertEqual(
                (record["waiting"]["code"], record["waiting"]["queue"]), ("queue_paused", "later"), record
            )
        self.assertQueue(self.busy.queue("later"), "later", None, True, queued=2)
        # The answer may already count them running: the resume lets them start at once.
        resumed = self.busy.resume_queue("later")
        self.assertEqual((resumed["name"], resumed["paused"]), ("later", False), resumed)
        for record in self.busy.wait_many(held_back, timeout=30):
            self.assertEqual(record["status"], "completed", record)
            self.assertGreater(record["started_at"], now["started_at"], (record, now))

    def test_pausing_with_stop_running_puts_its_running_tasks_back(self):
        task_id = self.busy.submit("sleep", 10_000, queue="stoppable")
        self.stop_later(self.busy, task_id)
        self.running(task_id)
        self.assertTrue(self.busy.pause_queue("stoppable", stop_running=True)["paused"])
        wait_until(lambda: self.busy.status(task_id) == "queued", what=f"task {task_id} to be put back")
        record = self.busy.get(task_id)
        self.assertEqual((record["attempts"], record["failures"]), (0, []), record)
        self.assertEqual(record["waiting"]["code"], "queue_paused", record)
        self.assertFalse(self.busy.resume_queue("stoppable")["paused"])
        self.running(task_id)

    def test_a_paused_queue_is_the_reason_given_even_without_workers(self):
        self.idle.pause_queue("idle-paused")
        paused = self.idle.get(self.idle.submit("noop", queue="idle-paused"))["waiting"]
        self.assertEqual((paused["code"], paused["queue"]), ("queue_paused", "idle-paused"), paused)
        self.assertIn("idle-paused", paused["message"])
        open_queue = self.idle.get(self.idle.submit("noop", queue="idle-open"))["waiting"]
        self.assertNotEqual(open_queue["code"], "queue_paused", open_queue)


class SettingsTest(QueueTestCase):
    def test_set_queue_changes_only_what_it_is_given(self):
        self.assertQueue(self.idle.queue("tuning"), "tuning", None, False)
        self.assertQueue(self.idle.set_queue("tuning", limit=3), "tuning", 3, False)
        self.assertQueue(self.idle.set_queue("tuning", paused=True), "tuning", 3, True)
        self.assertQueue(self.idle.set_queue("tuning"), "tuning", 3, True)
        self.assertQueue(self.idle.set_queue("tuning", limit=NO_LIMIT), "tuning", None, True)
        self.assertQueue(self.idle.set_queue("tuning", limit=2, paused=False), "tuning", 2, False)
        self.assertQueue(self.idle.set_queue("tuning", limit=NO_LIMIT, paused=False), "tuning", None, False)
        self.assertEqual(self.idle.queue("tuning"), self.idle.set_queue("tuning"))
        self.assertEqual(repr(NO_LIMIT), "NO_LIMIT")
        self.assertIs(pickle.loads(pickle.dumps(NO_LIMIT)), NO_LIMIT)

    def test_queues_count_their_tasks_by_status(self):
        done = self.busy.submit_many(
            [("noop", [1]), ("noop", [2]), {"task": "fail", "args": [1], "max_retries": 0}], queue="tally"
        )
        self.busy.wait_many(done, timeout=30)
        waiting = self.busy.submit("noop", delay=3600, queue="tally")
        self.stop_later(self.busy, waiting)
        cancelled = self.busy.submit("noop", delay=3600, queue="tally")
        self.busy.cancel(cancelled)
        tally = self.busy.queue("tally")
        self.assertQueue(tally, "tally", None, False, completed=2, failed=1, queued=1, cancelled=1)
        listed = self.busy.queues()
        names = [queue["name"] for queue in listed]
        self.assertEqual(names, sorted(names))
        self.assertIn("default", names)
        self.assertEqual({queue["name"]: queue for queue in listed}["tally"], tally)

    def test_every_way_of_submitting_names_a_queue(self):
        by_submit = self.idle.submit("noop", queue="by-submit")
        by_run = self.busy.run("noop", queue="by-run")
        batch = self.idle.submit_many(
            [{"task": "noop", "queue": "its-own"}, {"task": "noop"}, "noop", ("noop", [1]),
             taskdeck.create_task("noop", 2)],
            queue="batch",
        )
        plain = self.idle.submit_many(["noop", {"task": "noop", "queue": "its-own"}])
        self.assertEqual(self.idle.get(by_submit)["queue"], "by-submit")
        self.assertEqual((by_run["status"], by_run["queue"]), ("completed", "by-run"), by_run)
        self.assertEqual(
            [self.idle.get(task_id)["queue"] for task_id in batch],
            ["its-own", "batch", "batch", "batch", "batch"],
        )
        self.assertEqual([self.idle.get(task_id)["queue"] for task_id in plain], ["default", "its-own"])
        self.assertEqual(self.idle.queue("its-own")["queued"], 2)


class BadInputTest(QueueTestCase):
    BAD_NAMES = ("", "has space", "a/b", "x" * 65, "\u00e9t\u00e9", "semi;colon", "../default")

    def test_bad_queue_names_are_bad_requests_and_nothing_is_accepted(self):
        before = len(self.idle.list(limit=1000))
        for name in self.BAD_NAMES:
            with self.subTest(name=name):
                for call in (
                    lambda: self.idle.submit("noop", queue=name),
                    lambda: self.idle.submit_many(["noop", "noop"], queue=name),
                    lambda: self.idle.submit_many(["noop", {"task": "noop", "queue": name}]),
                    lambda: self.idle.queue(name),
                    lambda: self.idle.set_queue(name, limit=1),
                    lambda: self.idle.pause_queue(name),
                ):
                    with self.assertRaises(BadRequest):
                        call()
        self.assertEqual(len(self.idle.list(limit=1000)), before)
        with self.assertRaises(BadRequest) as caught:
            self.idle.queue("a/b")
        self.assertEqual((caught.exception.status, caught.exception.code), (400, "bad_request"))
        self.assertIn("a/b", caught.exception.message)
        longest = "q" * 64
        self.assertEqual(self.idle.get(self.idle.submit("noop", queue=longest))["queue"], longest)
        self.assertEqual(self.idle.queue("a.b_C-9")["name"], "a.b_C-9")
        for not_a_name in (5, b"bytes"):
            with self.subTest(name=not_a_name), self.assertRaises(TypeError):
                self.idle.submit("noop", queue=not_a_name)
        for not_a_name in (5, None, b"bytes"):
            with self.subTest(name=not_a_name), self.assertRaises(TypeError):
                self.idle.queue(not_a_name)

    def test_bad_limits_and_settings_are_refused(self):
        for limit in (0, -1):
            with self.subTest(limit=limit), self.assertRaises(BadRequest) as caught:
                self.idle.set_queue("strict", limit=limit)
            self.assertIn("limit", caught.exception.message)
        for limit in ("2", 1.5, True):
            with self.subTest(limit=limit), self.assertRaises(TypeError):
                self.idle.set_queue("strict", limit=limit)
        with self.assertRaises(TypeError):
            self.idle.set_queue("strict", paused="yes")
        for paused in (None, False):
            with self.subTest(paused=paused), self.assertRaises(TypeError):
                self.idle.set_queue("strict", paused=paused, stop_running=True)
        # What the client would not send, the server refuses too.
        for body in ({"limit": 0}, {"limit": "2"}, {"paused": "yes"}, {"stop_running": True}, {"color": "red"}):
            with self.subTest(body=body), self.assertRaises(BadRequest):
                self.idle.request("PATCH", "/api/v1/queues/strict", body)
        self.assertQueue(self.idle.queue("strict"), "strict", None, False)


if __name__ == "__main__":
    unittest.main()
