"""Following tasks on a real `taskdeck serve`: the event stream, task logs
(paged and followed) and progress reported from inside a task.

One server runs for the whole module, with code tasks allowed and this
checkout's client on its tasks' PYTHONPATH, so `import taskdeck` inside a
`python` task is the package under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
from pathlib import Path
from unittest import mock

from servers import CLIENT_DIR, Server, wait_until

import taskdeck._logs
from taskdeck import BadRequest, NotFound, TaskClient, TaskdeckTimeout, Unauthorized

SERVERS = {}
TOKEN = "secret"
EXAMPLES = CLIENT_DIR / "examples"
MODULE_DIR = tempfile.TemporaryDirectory(prefix="taskdeck-live-")
FINAL = ("completed", "failed", "cancelled")

#: Written by a command task: characters of two, three and four bytes.
MULTIBYTE = "é€😀" * 40 + "\n"


def setUpModule() -> None:
    Path(MODULE_DIR.name, "td_progress.py").write_text(
        textwrap.dedent(
            """
            import time

            import taskdeck

            def train(epochs):
                written = []
                for epoch in range(1, epochs + 1):
                    written.append(taskdeck.progress(
                        epoch / epochs, message=f"epoch {epoch}/{epochs}", loss=1.0 / epoch, epoch=epoch
                    ))
                    print(f"epoch {epoch}", flush=True)
                    time.sleep(0.1)
                return {"written": written, "module": taskdeck.__file__}
            """
        )
    )
    try:
        SERVERS["main"] = Server(
            workers=2,
            extra_args=[
                "--allow-code-tasks",
                "--pythonpath", MODULE_DIR.name,
                "--pythonpath", str(EXAMPLES),
                "--pythonpath", str(CLIENT_DIR),
                "--python", sys.executable,
            ],
        ).start()
        SERVERS["auth"] = Server(workers=1, token=TOKEN).start()
    except BaseException:
        tearDownModule()
        raise


def tearDownModule() -> None:
    for server in SERVERS.values():
        server.terminate()  # All at once, so their shutdowns overlap.
    for server in SERVERS.values():
        server.stop(timeout_s=10)
    SERVERS.clear()
    MODULE_DIR.cleanup()


class LiveTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.client = TaskClient(SERVERS["main"].url, timeout=10)
        self.addCleanup(self.client.close)

    def events_until_final(self, stream, task_ids) -> list:
        """Reads task events until every one of these tasks has finished."""
        waiting = set(task_ids)
        seen = []
        for event in stream:
            seen.append(event)
            if event.type == "task" and event.data["task"]["status"] in FINAL:
                waiting.discard(event.data["task"]["id"])
            if not waiting:
                return seen
        self.fail(f"the stream ended before tasks {sorted(waiting)} finished")


class EventStreamTest(LiveTestCase):
    def test_the_stream_sees_a_submitted_task_go_to_completed(self) -> None:
        stream = self.client.events(kinds=["task"], timeout=30)
        self.addCleanup(stream.close)
        # Queued for a moment first: the server folds a task's changes within
        # one 50 ms tick into one event, and a noop would finish in that tick.
        task_id = self.client.submit("noop", "watched", delay=0.2)
        mine = [
            event for event in self.events_until_final(stream, [task_id])
            if event.data["task"]["id"] == task_id
        ]
        self.assertTrue(all(event.type == "task" for event in mine), mine)
        self.assertEqual(mine[0].data["kind"], "submitted", mine)
        self.assertEqual(mine[0].data["task"]["status"], "queued", mine)
        self.assertEqual(mine[-1].data["kind"], "completed", mine)
        record = mine[-1].data["task"]
        fetched = self.client.get(task_id)
        self.assertEqual(record, {key: fetched[key] for key in record})
        # The contract says "the same record as GET /api/v1/tasks/{id}", but
        # the server's events leave out the two fields that route adds
        # (reported; the README says so). Anything more missing is a bug.
        self.assertLessEqual(set(fetched) - set(record), {"dependents", "waiting"})
        self.assertEqual(record["result"], ["watched"])
        ids = [event.id for event in mine]
        self.assertTrue(all(isinstance(event_id, str) and event_id for event_id in ids), ids)
        self.assertEqual(len(set(ids)), len(ids), "every event has its own id")

    def test_resuming_after_an_id_repeats_nothing_and_misses_nothing(self) -> None:
        first = self.client.events(kinds=["task"], timeout=30)
        task_ids = [self.client.submit("sleep", 50) for _ in range(3)]
        seen = self.events_until_final(first, task_ids)
        first.close()
        cut = len(seen) // 2
        self.assertGreater(len(seen) - cut, 1, seen)
        later = self.client.events(kinds=["task"], last_event_id=seen[cut - 1].id, timeout=30)
        self.addCleanup(later.close)
        resumed = [next(later) for _ in seen[cut:]]
        self.assertEqual(
            [(event.id, event.data["kind"], event.data["task"]["id"]) for event in resumed],
            [(event.id, event.data["kind"], event.data["task"]["id"]) for event in seen[cut:]],
        )
        with self.assertRaises(TaskdeckTimeout, msg="nothing more, nothing again"):
            next(self.client.events(kinds=["task"], last_event_id=seen[-1].id, timeout=0.5))

    def test_an_id_the_server_cannot_resume_after_gives_a_reset_first(self) -> None:
        stream = self.client.events(kinds=["task"], last_event_id="no-such-event", timeout=30)
        self.addCleanup(stream.close)
        event = next(stream)
        self.assertEqual(event.type, "reset", event)
        self.assertIsInstance(event.data["reason"], str)
        task_id = self.client.submit("noop")
        self.events_until_final(stream, [task_id])  # Live after the reset.

    def test_a_bad_filter_or_a_missing_token_is_raised_by_events_itself(self) -> None:
        with self.assertRaises(BadRequest):
            self.client.events(kinds=["task", "nonsense"])
        with TaskClient(SERVERS["auth"].url, token="", timeout=10) as stranger:
            with self.assertRaises(Unauthorized):
                stranger.events()
            with self.assertRaises(Unauthorized):
                list(stranger.logs(1))
        with TaskClient(SERVERS["auth"].url, token=TOKEN, timeout=10) as owner:
            stream = owner.events(kinds=["task"], timeout=30)
            self.addCleanup(stream.close)
            task_id = owner.submit("noop")
            self.assertEqual(self.events_until_final(stream, [task_id])[-1].data["kind"], "completed")
            with self.assertRaises(NotFound):
                owner.log_bytes(task_id)  # A noop runs no process, so has no log.

    def test_a_task_filter_gives_only_those_tasks(self) -> None:
        watched = self.client.submit("sleep", 100)
        stream = self.client.events(tasks=[watched], timeout=30)
        self.addCleanup(stream.close)
        other = self.client.submit("noop")
        self.client.wait(other, timeout=30)
        seen = self.events_until_final(stream, [watched])
        self.assertEqual({event.data["task"]["id"] for event in seen}, {watched}, seen)
        self.assertEqual({event.type for event in seen}, {"task"})


class TaskLogTest(LiveTestCase):
    def test_following_a_command_gives_every_line_once_in_order(self) -> None:
        task_id = self.client.submit_command(
            ["sh", "-c", "for i in $(seq 50); do echo line $i; sleep 0.05; done"]
        )
        pieces = list(self.client.logs(task_id, follow=True))
        self.assertEqual("".join(pieces).splitlines(), [f"line {i}" for i in range(1, 51)])
        self.assertGreater(len(pieces), 5, "the text came as it was written, not at the end")
        self.assertEqual(self.client.status(task_id), "completed")
        # Read again without following: the same text, now complete.
        self.assertEqual("".join(self.client.logs(task_id)), "".join(pieces))
        self.assertEqual("".join(self.client.logs(task_id, tail=2)), "line 49\nline 50\n")

    def test_a_character_split_between_pieces_comes_out_whole(self) -> None:
        task_id = self.client.submit_command(["printf", "%s", MULTIBYTE])
        self.assertEqual(self.client.wait(task_id, timeout=30)["status"], "completed")
        expected = MULTIBYTE.encode("utf-8")
        for limit in (1, 2, 3, 5):
            data, offset, complete = b"", 0, False
            while not complete:
                piece, offset, complete = self.client.log_bytes(task_id, offset=offset, limit=limit)
                self.assertLessEqual(len(piece), limit)
                data += piece
            self.assertEqual(data, expected, f"limit {limit}")
        piece, next_offset, complete = self.client.log_bytes(task_id, offset=1, limit=1)
        self.assertEqual((piece, next_offset, complete), (expected[1:2], 2, False))
        self.assertEqual(self.client.log_bytes(task_id, offset=len(expected)), (b"", len(expected), True))
        for page_bytes in (1, 2, 3, 7):
            with mock.patch.object(taskdeck._logs, "_PAGE_BYTES", page_bytes):
                pieces = list(self.client.logs(task_id))
            self.assertEqual("".join(pieces), MULTIBYTE, f"pages of {page_bytes} bytes")
            self.assertGreater(len(pieces), 40)

    def test_following_a_task_before_it_starts_waits_for_its_log(self) -> None:
        blocker = self.client.submit_command(["sh", "-c", "sleep 0.5"], queue="one-at-a-time")
        self.client.set_queue("one-at-a-time", limit=1)
        task_id = self.client.submit_command(["echo", "after the wait"], queue="one-at-a-time")
        self.assertEqual("".join(self.client.logs(task_id, follow=True)), "after the wait\n")
        self.assertEqual(self.client.wait(blocker, timeout=30)["status"], "completed")

    def test_tasks_without_a_log(self) -> None:
        with self.assertRaises(NotFound):
            list(self.client.logs(10**9))
        with self.assertRaises(NotFound):
            self.client.log_bytes(10**9)
        done = self.client.submit("noop")
        self.client.wait(done, timeout=30)
        with self.assertRaises(NotFound):
            list(self.client.logs(done, follow=True))


class ProgressTest(LiveTestCase):
    def test_progress_from_a_python_task_reaches_the_record_history_and_stream(self) -> None:
        stream = self.client.events(kinds=["task"], timeout=30)
        self.addCleanup(stream.close)
        task_id = self.client.submit_python("td_progress:train", 5)
        seen = self.events_until_final(stream, [task_id])
        record = self.client.wait(task_id, timeout=30)
        self.assertEqual(record["status"], "completed", record)
        self.assertEqual(record["result"]["written"], [True] * 5)
        self.assertTrue(
            record["result"]["module"].startswith(str(CLIENT_DIR)),
            f"the task imported {record['result']['module']}, not this checkout's client",
        )
        latest = record["progress"]
        self.assertEqual(latest["fraction"], 1.0)
        self.assertEqual(latest["message"], "epoch 5/5")
        self.assertEqual(latest["metrics"], {"loss": 0.2, "epoch": 5})
        self.assertIsInstance(latest["updated_at_us"], int)
        self.assertLessEqual(abs(latest["updated_at_us"] / 1e6 - time.time()), 60)

        history = self.client.progress_history(task_id)
        self.assertEqual((history["task"], history["attempt"]), (task_id, 1))
        points = history["points"]
        self.assertTrue(points, history)
        fractions = [point["fraction"] for point in points]
        self.assertEqual(fractions, sorted(fractions))
        self.assertEqual(points[-1]["fraction"], 1.0)
        self.assertEqual(points[-1]["metrics"], {"loss": 0.2, "epoch": 5})
        self.assertEqual(self.client.progress_history(task_id, attempt=1), history)

        reported = [
            event.data["task"]["progress"] for event in seen
            if event.data["task"]["id"] == task_id and event.data["kind"] == "progress"
        ]
        self.assertTrue(reported, "the stream carried progress events")
        self.assertTrue(all(0.0 < entry["fraction"] <= 1.0 for entry in reported), reported)
        self.assertTrue("".join(self.client.logs(task_id)).endswith("epoch 4\nepoch 5\n"))

    def test_progress_history_of_an_unknown_task(self) -> None:
        with self.assertRaises(NotFound):
            self.client.progress_history(10**9)



class WatchExampleTest(LiveTestCase):
    def test_the_watch_example_follows_a_training_run(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(CLIENT_DIR))
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / "watch.py"), "--url", SERVERS["main"].url,
             "--epochs", "3", "--seconds-per-epoch", "0.2"],
            capture_output=True, text=True, timeout=120, env=env,
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        lines = done.stdout.splitlines()
        progress = [line for line in lines if line.startswith("progress ")]
        self.assertTrue(progress, done.stdout)
        self.assertIn("100% epoch 3/3", progress[-1])
        self.assertIn("loss=", progress[-1])
        logged = [line for line in lines if line.startswith("log | ")]
        self.assertEqual(len(logged), 12, done.stdout)
        self.assertEqual(logged[-1][:len("log | epoch 3 step 4/4")], "log | epoch 3 step 4/4")
        self.assertRegex(lines[-1], r"^task \d+ completed: \{'accuracy': 0\.\d+, 'loss': 0\.\d+\}$")


if __name__ == "__main__":
    unittest.main()
