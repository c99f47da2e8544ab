"""The client benchmark (clients/python/benchmarks/client_bench.py) keeps
working: run in its quick mode against the real server, its one JSON line
has every workload with sane, positive figures. It checks the shape, not the
speed: speed is measured in release builds and recorded in
docs/BENCHMARKS.md."""

from __future__ import annotations

import json
import subprocess
import sys
import unittest

from servers import CLIENT_DIR, find_binary

BENCH = CLIENT_DIR / "benchmarks" / "client_bench.py"


class ClientBenchmarkTest(unittest.TestCase):
    def test_quick_run_reports_every_workload(self):
        done = subprocess.run(
            [sys.executable, str(BENCH), "--quick", "--binary", str(find_binary())],
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        lines = done.stdout.strip().splitlines()
        self.assertEqual(len(lines), 1, done.stdout)
        report = json.loads(lines[0])
        self.assertTrue(report["url"].startswith("http://127.0.0.1:"))
        self.assertEqual(report["server_args"][0], "serve")
        for name in ("single", "batch"):
            workload = report[name]
            self.assertEqual(workload["tasks"], 200, name)
            self.assertGreater(workload["tasks_per_s"], 0, name)
            self.assertGreaterEqual(workload["submit_s"], 0, name)
            self.assertGreaterEqual(workload["wait_s"], 0, name)
        self.assertEqual(report["batch"]["batch"], 50)
        self.assertEqual(report["batch"]["waited_with"], "wait_many")
        for name, unit, count in (("closed_loop", "ms", 50), ("run", "ms", 50), ("health", "us", 50)):
            latency = report[name]
            self.assertEqual((latency["unit"], latency["count"]), (unit, count), name)
            self.assertGreater(latency["p50"], 0, name)
            self.assertLessEqual(latency["p50"], latency["p95"], name)
            self.assertLessEqual(latency["p95"], latency["p99"], name)
            self.assertLessEqual(latency["p99"], latency["max"], name)


if __name__ == "__main__":
    unittest.main()
