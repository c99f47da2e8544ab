"""``taskdeck.progress``, the helper for code inside a task, on its own: what
it writes, when it writes nothing, and what it refuses."""

from __future__ import annotations

import fractions
import json
import os
import tempfile
import threading
import unittest
from pathlib import Path
from unittest import mock

import servers  # noqa: F401  (puts this checkout's client on sys.path)

from taskdeck import progress


class ProgressHelperTest(unittest.TestCase):
    def setUp(self) -> None:
        directory = tempfile.TemporaryDirectory(prefix="taskdeck-progress-")
        self.addCleanup(directory.cleanup)
        self.path = Path(directory.name, "progress.jsonl")

    def lines(self) -> list:
        return [json.loads(line) for line in self.path.read_text("utf-8").splitlines()]

    def test_without_the_variable_it_does_nothing_and_returns_false(self) -> None:
        with mock.patch.dict(os.environ):
            os.environ.pop("TASKDECK_PROGRESS", None)
            self.assertIs(progress(0.5, message="epoch 3/10", loss=0.31), False)
            os.environ["TASKDECK_PROGRESS"] = ""
            self.assertIs(progress(0.5), False)
        self.assertFalse(self.path.exists())

    def test_each_call_appends_one_json_line(self) -> None:
        self.path.write_text('{"fraction": 0.1}\n', "utf-8")  # Appended to, never replaced.
        with mock.patch.dict(os.environ, {"TASKDECK_PROGRESS": str(self.path)}):
            self.assertIs(progress(0.5, message="epoch 3/10", loss=0.31, epoch=3), True)
            self.assertIs(progress(message="évaluation"), True)
            self.assertIs(progress(), True)
            self.assertIs(progress(1, ratio=fractions.Fraction(1, 4)), True)
        self.assertEqual(
            self.lines(),
            [
                {"fraction": 0.1},
                {"fraction": 0.5, "message": "epoch 3/10", "metrics": {"loss": 0.31, "epoch": 3}},
                {"message": "évaluation"},
                {},
                {"fraction": 1.0, "metrics": {"ratio": 0.25}},
            ],
        )

    def test_bad_values_raise_value_error_and_write_nothing(self) -> None:
        with mock.patch.dict(os.environ, {"TASKDECK_PROGRESS": str(self.path)}):
            for fraction in (-0.01, 1.5, float("nan"), float("inf"), True, "0.5", [0.5]):
                with self.assertRaises(ValueError, msg=repr(fraction)):
                    progress(fraction)
            with self.assertRaises(ValueError):
                progress(0.5, message=3)
            for value in (True, "0.3", None, float("nan"), float("-inf"), {"a": 1}):
                with self.assertRaises(ValueError, msg=repr(value)):
                    progress(0.5, loss=value)
            with self.assertRaises(ValueError):
                progress(0.5, **{"": 1.0})
        self.assertFalse(self.path.exists())

    def test_bad_values_raise_outside_a_task_too(self) -> None:
        with mock.patch.dict(os.environ):
            os.environ.pop("TASKDECK_PROGRESS", None)
            with self.assertRaises(ValueError):
                progress(2)
            with self.assertRaises(ValueError):
                progress(loss=False)

    def test_lines_from_many_threads_never_mix(self) -> None:
        threads, per_thread = 8, 200
        message = "x" * 5000  # Longer than a pipe's atomic write, to tempt interleaving.

        def report(number: int) -> None:
            for step in range(per_thread):
                progress(step / per_thread, message=message, thread=number, step=step)

        with mock.patch.dict(os.environ, {"TASKDECK_PROGRESS": str(self.path)}):
            workers = [threading.Thread(target=report, args=(n,)) for n in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(timeout=60)
        lines = self.lines()
        self.assertEqual(len(lines), threads * per_thread)
        for number in range(threads):
            steps = [line["metrics"]["step"] for line in lines if line["metrics"]["thread"] == number]
            self.assertEqual(steps, list(range(per_thread)))


if __name__ == "__main__":
    unittest.main()
