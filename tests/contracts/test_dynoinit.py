"""The dyno init's wire formats: env frames and the log stream (contracts/dynoinit.py)."""

from __future__ import annotations

import pytest

from slipway.contracts import dynoinit as d


def test_env_frame_round_trips_in_order() -> None:
    """Entries come back in the order given, values may hold '=' and newlines."""
    entries = [("A", "1"), ("DATABASE_URL", "postgres://u:p@h/db?x=y"), ("M", "a\nb"), ("E", "")]
    frame = d.encode_env(entries)
    assert frame[:8] == b"SLPWENV1"
    assert int.from_bytes(frame[8:12], "big") == len(frame) - 12
    assert d.decode_env(frame) == entries


def test_env_frame_layout_is_nul_joined() -> None:
    """The payload is KEY=VALUE entries joined by NUL, without a trailing NUL."""
    assert d.encode_env({"A": "1", "B": "2"}) == b"SLPWENV1\0\0\0\x07A=1\0B=2"
    assert d.encode_env({}) == b"SLPWENV1\0\0\0\0"
    assert d.decode_env(b"SLPWENV1\0\0\0\0") == []


@pytest.mark.parametrize(("key", "value"), [("", "x"), ("A=B", "x"), ("A\0", "x"), ("A", "x\0y")])
def test_env_frame_refuses_entries_the_init_could_not_split(key: str, value: str) -> None:
    """Keys without '=' or NUL, values without NUL: anything else is refused."""
    with pytest.raises(d.FrameError):
        d.encode_env([(key, value)])


def test_env_frame_bounded() -> None:
    """More than 1 MiB of payload is refused on both sides."""
    with pytest.raises(d.FrameError):
        d.encode_env({"BIG": "x" * d.ENV_MAX})
    with pytest.raises(d.FrameError):
        d.env_length(b"SLPWENV1" + (d.ENV_MAX + 1).to_bytes(4, "big"))


@pytest.mark.parametrize(
    "frame",
    [
        b"SLPWENV2\0\0\0\0",
        b"SLPWENV1\0\0\0\x05A=1",
        b"SLPWENV1\0\0\0\x03A=1\0",
        b"SLPWENV1\0\0\0\x01A",
        b"SLPWENV1\0\0\0\x04A=1\0",
        b"SLPWENV1\0\0\0\x02\xff=",
    ],
)
def test_env_frame_malformed_refused(frame: bytes) -> None:
    """Wrong magic, wrong length, an entry without '=', an empty entry, bad UTF-8."""
    with pytest.raises(d.FrameError):
        d.decode_env(frame)


def test_record_layout() -> None:
    """kind u8, 3 zero bytes, length u32, time_ns u64, payload: big-endian."""
    rec = d.encode_record(d.KIND_STDERR, 0x0102030405060708, b"hi")
    assert rec == b"\x02\0\0\0\0\0\0\x02\x01\x02\x03\x04\x05\x06\x07\x08hi"
    assert d.decode_header(rec[:16]) == (2, 2, 0x0102030405060708)


def test_long_line_cut_into_max_line_records() -> None:
    """A 40 KiB line becomes three records, none above 16 KiB."""
    line = bytes(range(256)) * 160
    stream = d.LOG_MAGIC + d.encode_line(d.KIND_STDOUT, 5, line)
    records = d.LogStreamDecoder().feed(stream)
    assert [len(r.payload) for r in records] == [16384, 16384, 40960 - 32768]
    assert b"".join(r.payload for r in records) == line


def test_dropped_record_round_trips() -> None:
    """A kind-3 record carries count and since_ns."""
    (rec,) = d.LogStreamDecoder().feed(d.LOG_MAGIC + d.encode_dropped(9, 1234, 5678))
    assert rec.kind == d.KIND_DROPPED
    assert rec.time_ns == 9
    assert d.decode_dropped(rec.payload) == (1234, 5678)


def test_decoder_reassembles_byte_by_byte() -> None:
    """Records split anywhere across reads come out whole and in order."""
    stream = d.LOG_MAGIC + b"".join(
        d.encode_line(d.KIND_STDOUT if i % 2 else d.KIND_STDERR, i, f"line {i}".encode())
        for i in range(50)
    )
    decoder = d.LogStreamDecoder()
    records = [r for i in range(len(stream)) for r in decoder.feed(stream[i : i + 1])]
    assert [r.payload.decode() for r in records] == [f"line {i}" for i in range(50)]
    assert [r.time_ns for r in records] == list(range(50))
    assert decoder.pending == 0


@pytest.mark.parametrize(
    "stream",
    [
        b"SLPWLOG2",
        b"XX",
        d.LOG_MAGIC + b"\x04\0\0\0\0\0\0\0" + bytes(8),
        d.LOG_MAGIC + b"\x01\0\x01\0\0\0\0\0" + bytes(8),
        d.LOG_MAGIC + b"\x03\0\0\0\0\0\0\x08" + bytes(8),
    ],
)
def test_decoder_refuses_malformed(stream: bytes) -> None:
    """Wrong hello, unknown kind, non-zero padding, a dropped record of the wrong size."""
    with pytest.raises(d.FrameError):
        d.LogStreamDecoder().feed(stream)


def test_decoder_refuses_oversized_length_from_header_alone() -> None:
    """A header claiming 4 GiB is refused before any payload arrives."""
    decoder = d.LogStreamDecoder()
    with pytest.raises(d.FrameError):
        decoder.feed(d.LOG_MAGIC + b"\x01\0\0\0\xff\xff\xff\xff" + bytes(8))


def test_decoder_asks_for_at_most_one_record() -> None:
    """`want` never exceeds a header plus MAX_LINE."""
    decoder = d.LogStreamDecoder()
    assert decoder.want() == 8
    decoder.feed(d.LOG_MAGIC)
    assert decoder.want() == 16
    decoder.feed(d.RECORD.pack(1, d.MAX_LINE, 0))
    assert decoder.want() == d.MAX_LINE


def test_host_log_dir_defaults_under_home() -> None:
    """Empty SLIPWAY_DYNO_LOG_DIR: `<home>/run/dynolog/<host>`; else the folder given."""
    assert str(d.host_log_dir("", "/srv/slipway", "h1")) == "/srv/slipway/run/dynolog/h1"
    assert str(d.host_log_dir("/run/slw", "/srv/slipway", "h1")) == "/run/slw/h1"
