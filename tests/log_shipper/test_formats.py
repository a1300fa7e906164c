"""Pure pieces: line formats, syslog framing, Docker timestamps and frames, cursor skipping."""

from __future__ import annotations

import struct

from slipway.contracts.log_shipper import LogEntry
from slipway.contracts.logs import RouterAccess
from slipway.services.log_shipper import formats
from slipway.services.log_shipper.follower import Dyno, TimestampParser, _LineParser, since_param
from slipway.services.log_shipper.store import Cursor

DYNO = Dyno(container_id="c1", app_id="a1", team_id="t1", dyno="web.1")


def entry(text: str, *, stderr: bool = False) -> LogEntry:
    return LogEntry(
        host="h",
        seq=1,
        timestamp=1795813200.123456,
        source="app",
        dyno="web.1",
        text=text,
        stderr=stderr,
    )


def frame(stamp: str, text: str, stream: int = 1) -> bytes:
    payload = f"{stamp} {text}\n".encode()
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def test_a_line_reads_like_heroku_logs() -> None:
    """`<iso timestamp with microseconds> app[web.1]: text`."""
    assert formats.text_line(entry("hi")) == "2026-11-27T21:00:00.123456+00:00 app[web.1]: hi"


def test_a_router_error_line_names_its_code() -> None:
    """The router's own answers read `at=error code=H14 desc="No web processes running"`."""
    access = RouterAccess(
        app_id="a",
        timestamp=0,
        method="GET",
        path='/a"b',
        host="h",
        request_id="r",
        fwd="1.2.3.4",
        dyno="",
        connect_ms=0,
        service_ms=0,
        status=503,
        bytes=0,
        code="H14",
    )
    text = formats.router_text(access)
    assert text.startswith('at=error code=H14 desc="No web processes running" method=GET')
    assert 'path="/a\\"b"' in text and "status=503" in text


def test_syslog_frames_count_bytes_not_characters() -> None:
    """RFC 6587: the length prefix is the UTF-8 byte count of an RFC 5424 message."""
    message = formats.syslog_message(entry("héllo"), "d.tok")
    assert message == b"<190>1 2026-11-27T21:00:00.123456+00:00 d.tok app web.1 - - h\xc3\xa9llo"
    assert formats.octet_frame(message) == b"%d %b" % (len(message), message)
    assert formats.syslog_message(entry("x", stderr=True), "d").startswith(b"<187>1 ")


def test_docker_timestamps_of_any_precision_parse_to_nanoseconds() -> None:
    """RFC 3339 nano with trailing zeros trimmed, or no fraction at all."""
    parse = TimestampParser().ns
    base = 1795813200 * 10**9
    assert parse("2026-11-27T21:00:00.123456789Z") == base + 123456789
    assert parse("2026-11-27T21:00:00.1Z") == base + 100000000
    assert parse("2026-11-27T21:00:00Z") == base
    assert since_param(base + 5) == "1795813200.000000005"


def test_frames_split_across_chunks_become_whole_lines() -> None:
    """A frame cut anywhere is completed by the next chunk; stderr is marked."""
    data = frame("2026-11-27T21:00:00.1Z", "one") + frame("2026-11-27T21:00:00.2Z", "two", 2)
    parser = _LineParser(DYNO, Cursor("c1", "a1", "web.1", 0, 0))
    lines = parser.feed(data[:5]) + parser.feed(data[5:20]) + parser.feed(data[20:])
    assert [(text, err) for _, _, _, text, err in lines] == [("one", False), ("two", True)]
    assert parser.cursor.ts_ns == 1795813200 * 10**9 + 200000000


def test_lines_a_cursor_covers_are_skipped_by_count_at_its_timestamp() -> None:
    """Docker resends lines at the cursor's nanosecond: the first `count` of them are skipped."""
    stamp = "2026-11-27T21:00:00.5Z"
    ns = 1795813200 * 10**9 + 500000000
    data = b"".join(frame(stamp, t) for t in ("a", "b", "c")) + frame("2026-11-27T21:00:01Z", "d")
    parser = _LineParser(DYNO, Cursor("c1", "a1", "web.1", ns, 2))
    assert [line[3] for line in parser.feed(data)] == ["c", "d"]
    assert (parser.cursor.ts_ns, parser.cursor.count) == (1795813201 * 10**9, 1)
