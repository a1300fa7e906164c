"""The two wire formats of the dyno init (`/.slipway/init`): scheduler, init, log-shipper.

Every dyno container runs a small static init as PID 1. It speaks two formats,
both big-endian and both defined only here (the C init mirrors these constants):

1. **Env frame** (scheduler -> init, on the container's stdin), so config vars
   never sit in Docker's container config:

       ENV_MAGIC (8 bytes) | length u32 | payload[length]

   The payload is `KEY=VALUE` entries joined by NUL bytes (no trailing NUL; an
   empty payload holds no entry), at most `ENV_MAX` bytes. A one-off with a TTY
   first writes `TTY_READY` once its terminal is raw, and the scheduler writes
   the frame only after seeing it; then `TTY_GO` once the terminal is back to
   its own mode, and the scheduler relays typed input only after that (input
   that arrived in raw mode would not be read as lines).

2. **Log stream** (init -> log-shipper, on the unix socket `LOG_SOCKET`), so dyno
   output never sits in Docker's on-disk logs:

       LOG_MAGIC (8 bytes, once) then records:
       kind u8 | 3 zero bytes | length u32 | time_ns u64 | payload[length]

   Kinds: `KIND_STDOUT` / `KIND_STDERR` (one line without its newline, at most
   `MAX_LINE` bytes; longer lines arrive cut), `KIND_DROPPED` (payload
   `count u64 | since_ns u64`: lines the init had to drop since then). `time_ns`
   is the init's clock, chosen by whoever controls the container: untrusted. The
   sender's identity is never in the stream: the receiver takes it from the kernel.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# Where the platform mounts things inside every dyno container.
INIT_PATH: Final = "/.slipway/init"
LOG_DIR: Final = "/.slipway/log"  # a directory is mounted, so a re-created socket is found
LOG_SOCKET_NAME: Final = "logs.sock"
LOG_SOCKET: Final = f"{LOG_DIR}/{LOG_SOCKET_NAME}"


def log_root(dyno_log_dir: str, home: str | Path) -> Path:
    """The host folder holding one socket folder per host id (`SLIPWAY_DYNO_LOG_DIR`).

    Empty: `<home>/run/dynolog`. The scheduler and log-shipper both read it, so
    the folder one mounts is the folder the other listens in.
    """
    return Path(dyno_log_dir) if dyno_log_dir else Path(home) / "run" / "dynolog"


def host_log_dir(dyno_log_dir: str, home: str | Path, host_id: str) -> Path:
    """The folder of one host's log-shipper socket, mounted read-only at `LOG_DIR` in dynos."""
    return log_root(dyno_log_dir, home) / host_id


# --- 1. env frame -----------------------------------------------------------------------

ENV_MAGIC: Final = b"SLPWENV1"
ENV_HEADER: Final = struct.Struct(">8sL")
ENV_MAX: Final = 1 << 20  # payload bytes; the init refuses more
# An APC string ("ESC _ ... ESC \"): terminals ignore it, should one ever reach a user.
TTY_READY: Final = b"\x1b_SLPWRDY\x1b\\"
TTY_GO: Final = b"\x1b_SLPWGO\x1b\\"  # the frame is read, the terminal is back in its mode

# --- 2. log stream ----------------------------------------------------------------------

LOG_MAGIC: Final = b"SLPWLOG1"
RECORD: Final = struct.Struct(">BxxxLQ")  # kind, length, time_ns; padding must be zero
# The same 16 bytes read as (kind << 24 | padding, length, time_ns): one comparison checks both.
RECORD_WORDS: Final = struct.Struct(">LLQ")
DROPPED: Final = struct.Struct(">QQ")  # count, since_ns
KIND_STDOUT: Final = 1
KIND_STDERR: Final = 2
KIND_DROPPED: Final = 3
KINDS: Final = frozenset({KIND_STDOUT, KIND_STDERR, KIND_DROPPED})
KIND_WORDS: Final = {kind << 24: kind for kind in KINDS}
MAX_LINE: Final = 16 * 1024  # a longer line is cut into records of this size
RING_DEFAULT: Final = 1 << 20  # the init's in-memory buffer of payload bytes (`--buffer`)


class FrameError(ValueError):
    """Bytes that are not a valid frame or record: the reader drops the connection."""


# --- env frame helpers ------------------------------------------------------------------


def encode_env(entries: Mapping[str, str] | Iterable[tuple[str, str]]) -> bytes:
    """One env frame holding `entries` in order (a later entry overrides an earlier one)."""
    pairs = entries.items() if isinstance(entries, Mapping) else entries
    parts: list[bytes] = []
    for key, value in pairs:
        if not key or "=" in key or "\0" in key:
            raise FrameError(f"env key {key!r} must be non-empty, without '=' or NUL")
        if "\0" in value:
            raise FrameError(f"the value of env key {key!r} holds a NUL byte")
        parts.append(f"{key}={value}".encode())
    payload = b"\0".join(parts)
    if len(payload) > ENV_MAX:
        raise FrameError(f"env frame of {len(payload)} bytes exceeds {ENV_MAX}")
    return ENV_HEADER.pack(ENV_MAGIC, len(payload)) + payload


def env_length(header: bytes) -> int:
    """The payload length announced by an env frame's 12-byte header (checked, bounded)."""
    if len(header) != ENV_HEADER.size:
        raise FrameError(f"env header must be {ENV_HEADER.size} bytes, got {len(header)}")
    magic, length = ENV_HEADER.unpack(header)
    if magic != ENV_MAGIC:
        raise FrameError("env frame does not start with SLPWENV1")
    if length > ENV_MAX:
        raise FrameError(f"env frame of {length} bytes exceeds {ENV_MAX}")
    return int(length)


def decode_env(frame: bytes) -> list[tuple[str, str]]:
    """The entries of one complete env frame (exactly one frame, nothing after it)."""
    length = env_length(frame[: ENV_HEADER.size])
    payload = frame[ENV_HEADER.size :]
    if len(payload) != length:
        raise FrameError(f"env frame announces {length} bytes but holds {len(payload)}")
    if not payload:
        return []
    out: list[tuple[str, str]] = []
    for raw in payload.split(b"\0"):
        try:
            entry = raw.decode()
        except UnicodeDecodeError as exc:
            raise FrameError("env entry is not UTF-8") from exc
        key, eq, value = entry.partition("=")
        if not key or not eq:
            raise FrameError(f"env entry {entry[:40]!r} is not KEY=VALUE")
        out.append((key, value))
    return out


# --- log stream helpers -----------------------------------------------------------------


def encode_record(kind: int, time_ns: int, payload: bytes) -> bytes:
    """One log-stream record (header + payload)."""
    if kind not in KINDS:
        raise FrameError(f"unknown record kind {kind}")
    if kind == KIND_DROPPED and len(payload) != DROPPED.size:
        raise FrameError("a dropped record's payload is 16 bytes")
    if len(payload) > MAX_LINE:
        raise FrameError(f"record payload of {len(payload)} bytes exceeds {MAX_LINE}")
    return RECORD.pack(kind, len(payload), time_ns) + payload


def encode_line(kind: int, time_ns: int, line: bytes) -> bytes:
    """The records of one output line (no newline), cut into `MAX_LINE`-byte pieces."""
    if kind not in (KIND_STDOUT, KIND_STDERR):
        raise FrameError(f"kind {kind} is not an output stream")
    if not line:
        return encode_record(kind, time_ns, b"")
    return b"".join(
        encode_record(kind, time_ns, line[i : i + MAX_LINE]) for i in range(0, len(line), MAX_LINE)
    )


def encode_dropped(time_ns: int, count: int, since_ns: int) -> bytes:
    """The record saying `count` lines were dropped since `since_ns`."""
    return encode_record(KIND_DROPPED, time_ns, DROPPED.pack(count, since_ns))


def decode_header(header: bytes) -> tuple[int, int, int]:
    """`(kind, length, time_ns)` of a 16-byte record header; refuses what no init sends."""
    word, length, time_ns = RECORD_WORDS.unpack(header)
    kind = KIND_WORDS.get(word)
    if kind is None:
        raise FrameError(f"malformed record header ({word:#010x})")
    if length > MAX_LINE or (kind == KIND_DROPPED and length != DROPPED.size):
        raise FrameError(f"record of kind {kind} claims {length} bytes")
    return int(kind), int(length), int(time_ns)


def decode_dropped(payload: bytes) -> tuple[int, int]:
    """`(count, since_ns)` of a dropped record's payload."""
    if len(payload) != DROPPED.size:
        raise FrameError("a dropped record's payload is 16 bytes")
    count, since_ns = DROPPED.unpack(payload)
    return int(count), int(since_ns)


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded log-stream record."""

    kind: int
    time_ns: int
    payload: bytes


class LogStreamDecoder:
    """Incremental, bounded decoder of one connection's log stream.

    It never holds more than one header plus `MAX_LINE` bytes of an unfinished
    record: a header claiming more is refused before its payload is read.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._hello = False

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete record."""
        return len(self._buf)

    def want(self) -> int:
        """How many more bytes complete the next item: never more than `MAX_LINE` + 16."""
        if not self._hello:
            return len(LOG_MAGIC) - len(self._buf)
        if len(self._buf) < RECORD.size:
            return RECORD.size - len(self._buf)
        _, length, _ = decode_header(bytes(self._buf[: RECORD.size]))
        return RECORD.size + length - len(self._buf)

    def feed(self, data: bytes) -> list[Record]:
        """The records completed by `data`; `FrameError` on anything malformed."""
        buf = self._buf
        buf += data
        out: list[Record] = []
        pos = 0
        if not self._hello:
            if len(buf) < len(LOG_MAGIC):
                if not LOG_MAGIC.startswith(bytes(buf)):
                    raise FrameError("log stream does not start with SLPWLOG1")
                return out
            if buf[: len(LOG_MAGIC)] != LOG_MAGIC:
                raise FrameError("log stream does not start with SLPWLOG1")
            self._hello = True
            pos = len(LOG_MAGIC)
        end = len(buf)
        header = RECORD.size
        while pos + header <= end:
            kind, length, time_ns = decode_header(bytes(buf[pos : pos + header]))
            if pos + header + length > end:
                break
            start = pos + header
            out.append(Record(kind, time_ns, bytes(buf[start : start + length])))
            pos = start + length
        del buf[:pos]
        return out
