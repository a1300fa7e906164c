"""The receiver's record parser alone: splits anywhere, bounds, clamps, refusals."""

from __future__ import annotations

import time

import pytest

from slipway.contracts import dynoinit as d
from slipway.services.log_shipper.receiver import LineParser

NOW = time.time_ns()


def stream(*records: bytes) -> bytes:
    return d.LOG_MAGIC + b"".join(records)


def test_records_split_anywhere_become_whole_lines() -> None:
    """Fed one byte at a time, lines come out whole, in order, stderr marked."""
    data = stream(
        d.encode_line(d.KIND_STDOUT, NOW, b"one"),
        d.encode_line(d.KIND_STDERR, NOW, "tw\u00f6".encode()),
        d.encode_line(d.KIND_STDOUT, NOW, b""),
    )
    parser = LineParser("web.1", NOW - 10**9)
    lines = []
    for i in range(len(data)):
        found, error = parser.feed(data[i : i + 1])
        assert error is None
        lines += found
    assert [(src, dyno, text, err) for _, src, dyno, text, err in lines] == [
        ("app", "web.1", "one", False),
        ("app", "web.1", "tw\u00f6", True),
        ("app", "web.1", "", False),
    ]
    assert parser.held == 0


def test_at_most_one_record_is_held_between_reads() -> None:
    """A record of MAX_LINE bytes missing its last byte: that much held, no more."""
    record = d.encode_line(d.KIND_STDOUT, NOW, b"x" * d.MAX_LINE)
    parser = LineParser("web.1", 0)
    assert parser.feed(stream(record)[:-1]) == ([], None)
    assert parser.held == d.RECORD.size + d.MAX_LINE - 1
    (line,), error = parser.feed(b"x")
    assert (len(line[3]), error, parser.held) == (d.MAX_LINE, None, 0)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"SLPWLOG2", "SLPWLOG1"),
        (stream(d.RECORD.pack(1, d.MAX_LINE + 1, NOW)), "claims 16385 bytes"),
        (stream(d.RECORD.pack(4, 0, NOW)), "malformed"),
        (stream(b"\x01\x00\x00\x01" + bytes(12)), "malformed"),
        (stream(d.RECORD.pack(3, 8, NOW) + bytes(8)), "malformed"),
    ],
    # Named, not shown: the records carry the time, and ids must be the same in every
    # collecting process (pytest-xdist's workers compare them).
    ids=["wrong-hello", "oversized", "unknown-kind", "non-zero-padding", "short-dropped"],
)
def test_what_no_init_sends_is_refused(data: bytes, why: str) -> None:
    """Wrong hello, oversized length, unknown kind, non-zero padding, short dropped record."""
    lines, error = LineParser("web.1", 0).feed(data)
    assert lines == []
    assert error is not None and why in error


def test_lines_before_a_refused_record_are_kept() -> None:
    """They were the dyno's: the refusal drops only what follows."""
    data = stream(d.encode_line(1, NOW, b"kept"), d.RECORD.pack(1, 2**32 - 1, NOW))
    lines, error = LineParser("web.1", 0).feed(data)
    assert [line[3] for line in lines] == ["kept"]
    assert error is not None


def test_times_are_clamped_to_the_containers_life() -> None:
    """Before start - 5 s becomes that; after now becomes now; a dropped record's `since` too."""
    earliest = NOW - 5 * 10**9
    parser = LineParser("web.1", earliest)
    lines, _ = parser.feed(
        stream(
            d.encode_line(1, 0, b"past"),
            d.encode_line(1, 2**64 - 1, b"future"),
            d.encode_dropped(NOW, 7, 1),
        )
    )
    past, future, l10 = lines
    assert past[0] == earliest / 1e9
    assert NOW / 1e9 <= future[0] <= time.time()
    assert (l10[1], l10[2]) == ("heroku", "logplex")
    assert l10[3].startswith("Error L10 (output buffer overflow): 7 messages dropped since ")
