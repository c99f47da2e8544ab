"""The client against a real `taskdeck serve --tls`: a pinned fingerprint and
a CA file are trusted, anything else is refused before a request is sent,
and options that cannot work are told at once."""

from __future__ import annotations

import contextlib
import hashlib
import os
import ssl
import unittest
from unittest import mock

from servers import Server, wait_until

from taskdeck import BadRequest, ConnectionFailed, TaskClient

SERVERS = {}


def setUpModule() -> None:
    SERVERS["tls"] = Server(workers=1, extra_args=["--tls"]).start()
    SERVERS["fingerprint"] = SERVERS["tls"].stdout_line("taskdeck certificate SHA-256 fingerprint ")


def tearDownModule() -> None:
    for server in SERVERS.values():
        if isinstance(server, Server):
            server.stop()


def cert_file() -> str:
    return os.path.join(SERVERS["tls"].data_dir, "tls", "cert.pem")


def task_count(client: TaskClient) -> int:
    return len(client.list(limit=1000))


class TlsTest(unittest.TestCase):
    def test_the_printed_fingerprint_is_the_certificate_s(self) -> None:
        with open(cert_file(), encoding="ascii") as file:
            der = ssl.PEM_cert_to_DER_cert(file.read())
        digest = hashlib.sha256(der).hexdigest().upper()
        expected = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
        self.assertEqual(SERVERS["fingerprint"], expected)
        self.assertTrue(SERVERS["tls"].url.startswith("https://127.0.0.1:"))

    def test_a_pinned_fingerprint_and_a_ca_file_are_trusted_and_the_owner_passes_no_token(self) -> None:
        url = SERVERS["tls"].url
        with TaskClient(url, fingerprint=SERVERS["fingerprint"]) as pinned:
            self.assertIsNotNone(pinned.token, "the local secret was found for an https:// URL")
            task_id = pinned.submit("noop", 1)
            self.assertEqual(pinned.wait(task_id, timeout=30)["status"], "completed")
        with TaskClient(url, ca_file=cert_file()) as by_file:
            self.assertIn(task_id, [task["id"] for task in by_file.list(limit=1000)])
            # The event stream runs on a TLS connection of its own.
            with contextlib.closing(by_file.events(kinds="task", timeout=30)) as stream:
                second = by_file.submit("noop", 2)
                seen = wait_until(
                    lambda: next(
                        (e for e in stream if e.type == "task" and e.data["task"]["id"] == second),
                        None,
                    ),
                    timeout_s=30,
                    what="the second task's event",
                )
                self.assertEqual(seen.data["task"]["id"], second)

    def test_the_environment_can_name_the_pin(self) -> None:
        with mock.patch.dict(os.environ, {"TASKDECK_TLS_FINGERPRINT": SERVERS["fingerprint"]}):
            with TaskClient(SERVERS["tls"].url) as client:
                self.assertIsInstance(client.list(limit=1), list)

    def test_another_certificate_is_refused_before_anything_is_sent(self) -> None:
        url = SERVERS["tls"].url
        with TaskClient(url, fingerprint=SERVERS["fingerprint"]) as trusted:
            before = task_count(trusted)
            wrong = "00" * 32
            with TaskClient(url, fingerprint=wrong) as client:
                with self.assertRaises(ConnectionFailed) as caught:
                    client.submit("noop")
            self.assertIn("not the pinned", str(caught.exception))
            self.assertIn(SERVERS["fingerprint"], str(caught.exception))
            # Not signed by an authority this machine trusts.
            with mock.patch.dict(os.environ, {}, clear=False):
                os.environ.pop("TASKDECK_CA_FILE", None)
                os.environ.pop("TASKDECK_TLS_FINGERPRINT", None)
                with TaskClient(url) as client:
                    with self.assertRaises(ConnectionFailed) as caught:
                        client.submit("noop")
            self.assertIn("certificate", str(caught.exception))
            self.assertEqual(task_count(trusted), before)

    def test_options_that_cannot_work_are_refused_at_once(self) -> None:
        url = SERVERS["tls"].url
        with self.assertRaisesRegex(ValueError, "not both"):
            TaskClient(url, ca_file=cert_file(), fingerprint=SERVERS["fingerprint"])
        with self.assertRaisesRegex(ValueError, "not a SHA-256 fingerprint"):
            TaskClient(url, fingerprint="12:34")
        with self.assertRaisesRegex(ValueError, "cannot use the CA file"):
            TaskClient(url, ca_file="/no/such/ca.pem")
        plain = url.replace("https://", "http://")
        with self.assertRaisesRegex(ValueError, "clear text"):
            TaskClient(plain, fingerprint=SERVERS["fingerprint"])

    def test_plain_http_to_the_tls_port_is_told_to_use_https(self) -> None:
        plain = SERVERS["tls"].url.replace("https://", "http://")
        with TaskClient(plain) as client:
            with self.assertRaises(BadRequest) as caught:
                client.list()
        self.assertEqual(caught.exception.code, "tls_required")
        self.assertIn("https://", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
