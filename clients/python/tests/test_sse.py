"""The Server-Sent Events parser on bytes alone: framing, comments, ids,
retry, and events split anywhere between pieces."""

from __future__ import annotations

import unittest

import servers  # noqa: F401  (puts this checkout's client on sys.path)

from taskdeck import Event
from taskdeck._sse import SseParser

STREAM = (
    b"retry: 1000\n\n"
    b": keep-alive\n\n"
    b"id: 7\nevent: task\ndata: {\"kind\": \"submitted\", \"task\": {\"id\": 1}}\n\n"
    b"id: 8\nevent: reset\ndata: {\"reason\": \"fell behind\"}\n\n"
    b"data: first\ndata: second\n\n"
    b"id: 9\nevent: queue\ndata:{\"queue\":{\"name\":\"caf\xc3\xa9\"}}\n\n"
)
EXPECTED = [
    Event("7", "task", {"kind": "submitted", "task": {"id": 1}}),
    Event("8", "reset", {"reason": "fell behind"}),
    Event("8", "message", "first\nsecond"),
    Event("9", "queue", {"queue": {"name": "caf\u00e9"}}),
]


class SseParserTest(unittest.TestCase):
    def test_a_whole_stream_gives_its_events_in_order(self) -> None:
        parser = SseParser()
        self.assertEqual(parser.feed(STREAM), EXPECTED)
        self.assertEqual(parser.last_id, "9")
        self.assertEqual(parser.retry_ms, 1000)

    def test_every_split_point_gives_the_same_events(self) -> None:
        for cut in range(1, len(STREAM)):
            parser = SseParser()
            events = parser.feed(STREAM[:cut]) + parser.feed(STREAM[cut:])
            self.assertEqual(events, EXPECTED, f"split at byte {cut}")

    def test_byte_by_byte(self) -> None:
        parser = SseParser()
        events = []
        for index in range(len(STREAM)):
            events += parser.feed(STREAM[index : index + 1])
        self.assertEqual(events, EXPECTED)

    def test_crlf_and_cr_line_ends(self) -> None:
        for ending in (b"\r\n", b"\r"):
            text = STREAM.replace(b"\n", ending)
            for cut in range(1, len(text)):
                parser = SseParser()
                events = parser.feed(text[:cut]) + parser.feed(text[cut:])
                self.assertEqual(events, EXPECTED, f"{ending!r} split at byte {cut}")

    def test_an_event_without_data_is_not_dispatched_but_its_id_counts(self) -> None:
        parser = SseParser("3")
        self.assertEqual(parser.feed(b"id: 4\nevent: task\n\n"), [])
        self.assertEqual(parser.last_id, "4")
        self.assertEqual(parser.feed(b"data: {}\n\n"), [Event("4", "message", {})])

    def test_an_unfinished_event_waits_for_its_blank_line(self) -> None:
        parser = SseParser("0")
        self.assertEqual(parser.feed(b"id: 1\nevent: task\ndata: {}\n"), [])
        self.assertEqual(parser.last_id, "0", "an event cut off here was not seen")
        self.assertEqual(parser.feed(b"\n"), [Event("1", "task", {})])
        self.assertEqual(parser.last_id, "1")

    def test_odd_fields(self) -> None:
        parser = SseParser()
        events = parser.feed(
            b"id: a\0b\n"          # NUL: ignored
            b"retry: soon\n"       # not digits: ignored
            b"data\n"              # no colon: empty value
            b"unknown: x\n"
            b"data:  two spaces\n"  # only one space is dropped
            b"\n"
        )
        self.assertEqual(events, [Event(None, "message", "\n two spaces")])
        self.assertIsNone(parser.retry_ms)


if __name__ == "__main__":
    unittest.main()
