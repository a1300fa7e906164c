"""Dyno output from the dyno init, on this host's unix socket: who sent it comes from the kernel.

Every dyno's init (`/.slipway/init`, see contracts/dynoinit.py) connects to
`<dyno_log_dir>/<host_id>/logs.sock`, which dynos see read-only at
`/.slipway/log/logs.sock`, and streams its output as records. Docker's log
driver is `none` for dynos, so nothing of it is written to disk before
log-shipper seals it.

Who is speaking is never read from the stream. At accept, the peer's process
comes from the kernel (`SO_PEERPIDFD`, else `SO_PEERCRED`), its container from
`/proc/<pid>/cgroup` (`.../docker/<id>` with cgroupfs, `docker-<id>.scope` with
systemd), and that container must be a dyno the scheduler announced for this
host (dynos.DynoRegistry; one not announced yet waits a few seconds, unread).
Anything else is closed unread. With a pidfd the process is checked alive
after its cgroup and start time are read, so a connection whose process
exited (its pid free for reuse) is refused.

Memory is bounded per connection: the transport's read size plus one unfinished record
(`MAX_LINE` + header). A header claiming more than `MAX_LINE` bytes, an unknown kind or
a wrong hello closes the connection before its payload is read. Times are the init's
(untrusted) and clamped to [start of the connecting process (the init, the container's
first) - 5 s, now]. When history has no room (the keyring is slow), reading pauses: the
init's ring fills, and it counts what it drops (kind 3, turned into Heroku's `Error L10`
line for the app).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from slipway.contracts.dynoinit import DROPPED, LOG_MAGIC, LOG_SOCKET_NAME, MAX_LINE, RECORD_WORDS
from slipway.services.log_shipper import formats
from slipway.services.log_shipper.dynos import Dyno, DynoRegistry
from slipway.services.log_shipper.history import History, RawLine

log = structlog.get_logger("slipway.log_shipper.receiver")

CLOCK_SKEW_NS = 5_000_000_000  # lines may carry a time this much before their container started
MAX_CONNECTIONS_PER_DYNO = 4  # an init needs one; a few more cover a reconnect racing a close
_SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)  # Linux 6.5; Python 3.11 lacks the name
_UCRED = struct.Struct("3i")  # pid, uid, gid
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_HEADER = RECORD_WORDS.size
_STDOUT, _STDERR, _DROPPED = 0x01000000, 0x02000000, 0x03000000
# cgroup v1 (cgroupfs driver: `/docker/<id>`), v2 or systemd (`/system.slice/docker-<id>.scope`).
_CGROUP = re.compile(r"/docker[-/]([0-9a-f]{64})(?:\.scope)?$")

LineSink = Callable[[Dyno, list[RawLine]], None]


class Refused(Exception):
    """A connection that is not a dyno of this installation speaking the protocol."""


def container_of_cgroup(text: str) -> str | None:
    """The one Docker container id a `/proc/<pid>/cgroup` names (None: none, or several)."""
    found = {m.group(1) for line in text.splitlines() if (m := _CGROUP.search(line.strip()))}
    return found.pop() if len(found) == 1 else None


def _pidfd_pid(pidfd: int) -> int:
    with open(f"/proc/self/fdinfo/{pidfd}") as info:
        for line in info:
            if line.startswith("Pid:"):
                return int(line.split()[1])
    return -1


def _alive(pidfd: int) -> bool:
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start_ns(pid: int) -> int:
    """When `pid` started, in ns since the epoch (the kernel counts clock ticks since boot)."""
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read(4096)
    # The command name (field 2) may hold spaces and parentheses; the fields after it do not.
    ticks = int(text.rsplit(")", 1)[1].split()[19])
    since_boot_ns = ticks * 1_000_000_000 // _CLK_TCK
    now_ns, boot_ns = time.time_ns(), time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    return now_ns - (boot_ns - since_boot_ns)


def peer_container(sock: socket.socket) -> tuple[str, int]:
    """The container id of the process that connected `sock`, and when that process started.

    Both from the kernel; `Refused` when it is gone or in no container.
    """
    try:
        pidfd = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERPIDFD)
    except OSError:
        pidfd = -1
    try:
        if pidfd >= 0:
            pid = _pidfd_pid(pidfd)
        else:  # an older kernel: the pid at connect time, which a reuse could reassign
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            pid = _UCRED.unpack(creds)[0]
        if pid <= 0:
            raise Refused("the connecting process is gone")
        try:
            with open(f"/proc/{pid}/cgroup") as cgroup:
                text = cgroup.read(65536)
            started_ns = process_start_ns(pid)
        except (OSError, ValueError, IndexError) as exc:
            raise Refused("the connecting process is gone") from exc
        if pidfd >= 0 and not _alive(pidfd):
            raise Refused("the connecting process is gone")
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    container_id = container_of_cgroup(text)
    if container_id is None:
        raise Refused("the connecting process is in no container")
    return container_id, started_ns


@dataclass
class ReceiverStats:
    """Counters the tests and the bench read."""

    accepted: int = 0
    refused: int = 0
    records: int = 0
    peak_held: int = 0  # the most bytes one connection kept between reads


class DynoOutput:
    """The socket server: one per log-shipper, in `<dyno_log_dir>/<host_id>/`."""

    def __init__(
        self, folder: Path, registry: DynoRegistry, history: History, sink: LineSink
    ) -> None:
        self.folder = folder
        self.registry = registry
        self.history = history
        self.sink = sink
        self.stats = ReceiverStats()
        self.connections: dict[str, int] = {}  # container id -> open connections
        self._server: asyncio.Server | None = None
        self._dirfd = -1
        self._inode = 0
        self._open: set[_Connection] = set()

    @property
    def path(self) -> Path:
        return self.folder / LOG_SOCKET_NAME

    async def start(self) -> None:
        """Listen, replacing a stale socket; 0755 folder and 0666 socket (dynos run as 10000)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o755)  # noqa: S103 - dynos (uid 10000) traverse it, read-only
        self._dirfd = os.open(self.folder, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(LOG_SOCKET_NAME, dir_fd=self._dirfd)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # Through the folder's descriptor: a deep SLIPWAY_HOME may pass sun_path's 108 bytes.
            sock.bind(f"/proc/self/fd/{self._dirfd}/{LOG_SOCKET_NAME}")
            # Any local process may connect: who it is comes from the kernel, not from modes.
            os.chmod(LOG_SOCKET_NAME, 0o666, dir_fd=self._dirfd)  # noqa: S103
            self._inode = os.stat(LOG_SOCKET_NAME, dir_fd=self._dirfd).st_ino
            loop = asyncio.get_running_loop()
            self._server = await loop.create_unix_server(
                lambda: _Connection(self), sock=sock, backlog=256
            )
        except BaseException:
            sock.close()
            raise
        log.info("receiver.listening", path=str(self.path))

    async def stop(self) -> None:
        """Stop accepting, close every connection, remove the socket if it is still ours."""
        if self._server is not None:
            self._server.close()
            for connection in list(self._open):
                connection.close()
            await self._server.wait_closed()
            self._server = None
        if self._dirfd >= 0:
            with contextlib.suppress(OSError):
                if os.stat(LOG_SOCKET_NAME, dir_fd=self._dirfd).st_ino == self._inode:
                    os.unlink(LOG_SOCKET_NAME, dir_fd=self._dirfd)
            os.close(self._dirfd)
            self._dirfd = -1


class LineParser:
    """One connection's records to lines: bounded, clamped, refusing what no init sends."""

    def __init__(self, dyno: str, earliest_ns: int) -> None:
        self.dyno = dyno
        self.earliest_ns = max(earliest_ns, 0)
        self._hello = False
        self._rest = b""

    @property
    def held(self) -> int:
        """Bytes kept between reads: at most one unfinished record (its length checked)."""
        return len(self._rest)

    def feed(self, data: bytes) -> tuple[list[RawLine], str | None]:
        """The lines completed by `data`, and why the stream is refused (None: it is not).

        Lines before a refused record are returned: they were the dyno's.
        """
        buf = self._rest + data if self._rest else data
        pos = 0
        if not self._hello:
            if not (LOG_MAGIC.startswith(buf) or buf.startswith(LOG_MAGIC)):
                return [], "the stream does not start with SLPWLOG1"
            if len(buf) < len(LOG_MAGIC):
                self._rest = buf
                return [], None
            self._hello = True
            pos = len(LOG_MAGIC)
        end = len(buf)
        low, high = self.earliest_ns, time.time_ns()
        name = self.dyno
        unpack = RECORD_WORDS.unpack_from
        out: list[RawLine] = []
        append = out.append  # the loop below runs once per line: every lookup counts
        error = None
        while pos + _HEADER <= end:
            word, length, at = unpack(buf, pos)
            if length > MAX_LINE:  # refused from the header alone: the payload is never read
                error = f"a record claims {length} bytes"
                break
            start = pos + _HEADER
            stop = start + length
            if stop > end:
                break
            if at < low or at > high:
                at = low if at < low else high
            if word == _STDOUT:
                append((at / 1e9, "app", name, buf[start:stop].decode("utf-8", "replace"), False))
            elif word == _STDERR:
                append((at / 1e9, "app", name, buf[start:stop].decode("utf-8", "replace"), True))
            elif word == _DROPPED and length == DROPPED.size:
                count, since = DROPPED.unpack_from(buf, start)
                since = low if since < low else high if since > high else since
                text = formats.l10_text(count, since / 1e9)
                append((at / 1e9, "heroku", "logplex", text, False))
            else:
                error = f"malformed record header {word:#010x}"
                break
            pos = stop
        self._rest = b"" if error is not None else buf[pos:]
        return out, error


class _Connection(asyncio.Protocol):
    """One init's stream: identified first, then records to lines, bounded."""

    def __init__(self, server: DynoOutput) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.dyno: Dyno | None = None
        self.container_id = ""
        self.started_ns = 0
        self._parser: LineParser | None = None
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.pause_reading()  # nothing is read before the sender is known
        self.server._open.add(self)
        try:
            self.container_id, self.started_ns = peer_container(transport.get_extra_info("socket"))
        except (Refused, OSError) as exc:
            self._refuse(str(exc))
            return
        self._task = asyncio.create_task(self._identify())

    async def _identify(self) -> None:
        dyno = await self.server.registry.identify(self.container_id)
        if dyno is None:
            self._refuse("not a dyno the scheduler announced for this host")
            return
        count = self.server.connections.get(self.container_id, 0)
        if count >= MAX_CONNECTIONS_PER_DYNO:
            self._refuse("too many connections from one dyno")
            return
        assert self.transport is not None
        if self.transport.is_closing():
            return
        self.server.connections[self.container_id] = count + 1
        self.dyno = dyno
        self._parser = LineParser(dyno.dyno, self.started_ns - CLOCK_SKEW_NS)
        self.server.stats.accepted += 1
        self.transport.resume_reading()

    def _refuse(self, why: str) -> None:
        self.server.stats.refused += 1
        log.warning("receiver.refused", container=self.container_id[:12] or None, reason=why)
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()  # what the peer sent is discarded unread

    def data_received(self, data: bytes) -> None:
        dyno, parser = self.dyno, self._parser
        if dyno is None or parser is None:
            return
        lines, error = parser.feed(data)
        if parser.held > self.server.stats.peak_held:
            self.server.stats.peak_held = parser.held
        if lines:
            self.server.stats.records += len(lines)
            self.server.sink(dyno, lines)
        if error is not None:  # the lines before it were the dyno's: kept
            self._refuse(error)
            return
        if not self.server.history.has_room():
            assert self.transport is not None
            self.transport.pause_reading()  # the init's ring takes the wait, then drops
            self._task = asyncio.create_task(self._resume_with_room())

    async def _resume_with_room(self) -> None:
        await self.server.history.wait_room()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._open.discard(self)
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self.dyno is not None:
            left = self.server.connections.get(self.container_id, 1) - 1
            if left > 0:
                self.server.connections[self.container_id] = left
            else:
                self.server.connections.pop(self.container_id, None)
            self.server.history.seal_soon(self.dyno.app_id)
            self.dyno = None
        self._parser = None
