"""Command and Python-function tasks against a real `taskdeck serve`: output
captured, exit codes honoured, return values and exceptions, and the
server's opt-in rule."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

from servers import Server

from taskdeck import BadRequest, Forbidden, TaskClient

SERVERS = {}
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MODULE_DIR = tempfile.TemporaryDirectory(prefix="taskdeck-py-")


def setUpModule() -> None:
    Path(MODULE_DIR.name, "td_sample.py").write_text(
        textwrap.dedent(
            """
            def add(a, b, scale=1):
                print("adding", a, b)
                return (a + b) * scale

            def explode(message):
                raise ValueError(message)
            """
        )
    )
    try:
        SERVERS["open"] = Server(
            workers=2,
            extra_args=[
                "--allow-code-tasks",
                "--pythonpath", MODULE_DIR.name,
                "--pythonpath", str(EXAMPLES),
                "--python", sys.executable,
                "--gpus", "0,1",
            ],
        ).start()
        SERVERS["closed"] = Server(workers=1).start()
    except BaseException:
        tearDownModule()
        raise


def tearDownModule() -> None:
    for server in SERVERS.values():
        server.terminate()
    for server in SERVERS.values():
        server.stop(timeout_s=10)
    SERVERS.clear()
    MODULE_DIR.cleanup()


class CodeTaskTest(unittest.TestCase):
    def setUp(self) -> None:
        self.client = TaskClient(SERVERS["open"].url, timeout=10)
        self.addCleanup(self.client.close)

    def test_a_command_completes_with_its_output_in_the_log(self) -> None:
        task_id = self.client.submit_command(["sh", "-c", "echo hello; echo careful >&2"])
        record = self.client.wait(task_id, timeout=30)
        self.assertEqual(record["status"], "completed", record)
        self.assertEqual(record["result"], {"exit_code": 0})
        self.assertIn("hello", record["log"]["tail"])
        self.assertIn("careful", record["log"]["tail"])
        self.assertIn("hello", Path(record["log"]["path"]).read_text())

    def test_a_non_zero_exit_fails_the_attempt_with_the_code_and_stderr(self) -> None:
        task_id = self.client.submit_command(
            ["echo broken >&2; exit 3"], shell=True, max_retries=0
        )
        record = self.client.wait(task_id, timeout=30)
        self.assertEqual(record["status"], "failed", record)
        self.assertIn("code 3", record["error"])
        self.assertIn("broken", record["error"])

    def test_environment_and_working_directory_reach_the_command(self) -> None:
        with tempfile.TemporaryDirectory() as cwd:
            task_id = self.client.submit_command(
                ["sh", "-c", 'echo "$GREETING from $(pwd)"'], cwd=cwd, env={"GREETING": "hi"}
            )
            record = self.client.wait(task_id, timeout=30)
            self.assertEqual(record["status"], "completed", record)
            self.assertIn(f"hi from {Path(cwd).resolve()}", record["log"]["tail"])

    def test_a_python_function_returns_its_value(self) -> None:
        task_id = self.client.submit_python("td_sample:add", 2, 3, scale=10)
        record = self.client.wait(task_id, timeout=30)
        self.assertEqual(record["status"], "completed", record)
        self.assertEqual(record["result"], 50)
        self.assertIn("adding 2 3", record["log"]["tail"])

    def test_a_python_exception_fails_with_its_traceback(self) -> None:
        task_id = self.client.submit_python(
            "td_sample:explode", "no luck", taskdeck_options={"max_retries": 0}
        )
        record = self.client.wait(task_id, timeout=30)
        self.assertEqual(record["status"], "failed", record)
        self.assertIn("ValueError: no luck", record["error"])
        self.assertIn("Traceback", record["error"])

    def test_code_tasks_wait_for_their_dependencies(self) -> None:
        with tempfile.TemporaryDirectory() as cwd:
            made = self.client.submit_command(["sh", "-c", "sleep 0.2; echo made > out.txt"], cwd=cwd)
            read = self.client.submit_command(["cat", "out.txt"], cwd=cwd, depends_on=[made])
            added = self.client.submit_python(
                "td_sample:add", 1, 2,
                taskdeck_options={"depends_on": [read], "on_dependency_failure": "run"},
            )
            first, second, third = self.client.wait_many([made, read, added], timeout=30)
        self.assertEqual([r["status"] for r in (first, second, third)], ["completed"] * 3)
        self.assertIn("made", second["log"]["tail"])
        self.assertGreaterEqual(second["started_at"], first["finished_at"])
        self.assertGreaterEqual(third["started_at"], second["finished_at"])
        self.assertEqual((second["depends_on"], third["depends_on"]), ([made], [read]))
        self.assertEqual(third["on_dependency_failure"], "run")

    def test_code_tasks_go_to_the_queue_they_name(self) -> None:
        command = self.client.submit_command(["true"], queue="shell")
        function = self.client.submit_python("td_sample:add", 1, 2, taskdeck_options={"queue": "py"})
        plain = self.client.submit_python("td_sample:add", 3, 4)
        records = self.client.wait_many([command, function, plain], timeout=30)
        self.assertEqual([r["status"] for r in records], ["completed"] * 3, records)
        self.assertEqual([r["queue"] for r in records], ["shell", "py", "default"])
        self.assertEqual(self.client.queue("py")["completed"], 1)
        with self.assertRaises(BadRequest):
            self.client.submit_command(["true"], queue="no spaces")
        with self.assertRaises(BadRequest):
            self.client.submit_python("td_sample:add", 1, 2, taskdeck_options={"queue": ""})

    def test_a_server_without_the_opt_in_refuses_code_tasks(self) -> None:
        with TaskClient(SERVERS["closed"].url, timeout=10) as closed:
            with self.assertRaises(Forbidden) as caught:
                closed.submit_command(["true"])
            self.assertIn("--allow-code-tasks", str(caught.exception))
            with self.assertRaises(Forbidden):
                closed.submit_python("td_sample:add", 1, 2)
            self.assertEqual(closed.list(), [], "nothing was accepted")

    def test_gpu_tasks_see_their_assigned_devices(self) -> None:
        task_id = self.client.submit_command(
            ["sh", "-c", 'echo "visible=[$CUDA_VISIBLE_DEVICES]"'], gpus=1
        )
        record = self.client.wait(task_id, timeout=30)
        self.assertEqual(record["status"], "completed", record)
        self.assertEqual(record["gpus"], 1)
        self.assertEqual(len(record["gpu_ids"]), 1)
        self.assertIn(f"visible=[{record['gpu_ids'][0]}]", record["log"]["tail"])
        value_id = self.client.submit_python(
            "td_sample:add", 1, 2, taskdeck_options={"gpus": 2}
        )
        self.assertEqual(self.client.wait(value_id, timeout=30)["gpu_ids"], [0, 1])
        with self.assertRaises(BadRequest) as caught:
            self.client.submit_command(["true"], gpus=3)
        self.assertIn("3 GPU", str(caught.exception))

    def test_the_real_jobs_example_runs_a_function_and_a_command(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(EXAMPLES.parent))
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / "real_jobs.py"), "--url", SERVERS["open"].url],
            capture_output=True, text=True, timeout=120, env=env,
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn("python word_count: task", done.stdout)
        self.assertIn("'words': 11", done.stdout)
        self.assertIn("| counted 11 words", done.stdout)
        self.assertIn("| running on", done.stdout)


if __name__ == "__main__":
    unittest.main()
