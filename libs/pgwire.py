"""A small PostgreSQL frontend (protocol 3.0) over a unix socket, for the backup service.

It speaks what the backup service needs and nothing more: simple queries with text rows,
and the physical replication commands (IDENTIFY_SYSTEM, CREATE_REPLICATION_SLOT,
READ_REPLICATION_SLOT, BASE_BACKUP, START_REPLICATION). Authentication is `trust` only:
the socket's file permissions are the authentication (the add-on's run folder, reachable
by the backup service's group alone), so any other request from the server means the
socket is not the one we expect, and the connection fails with a PgError saying so.

BASE_BACKUP (PostgreSQL 15, TARGET 'client') answers with a result set (start LSN,
timeline), a result set of tablespaces, one CopyOutResponse whose CopyData messages each
start with a type byte ('n' new archive: name and tablespace path, 'd' archive or manifest
bytes, 'p' progress, 'm' the manifest begins), CopyDone, and a last result set (end LSN,
timeline). START_REPLICATION answers with CopyBothResponse; the server's CopyData carry
'w' XLogData (start, server's WAL end, clock, bytes) and 'k' keepalives (WAL end, clock,
reply requested); ours carry 'r' standby status updates (write, flush, apply, clock,
reply requested) whose flush position lets the slot release WAL.

Every length the server sends is checked against MAX_MESSAGE before anything is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

MAX_MESSAGE = 64 * 1024 * 1024  # a backend message over this is an error, not a buffer
SEGMENT_SIZE = 16 * 1024 * 1024
PROTOCOL_VERSION = 3 << 16
STATUS_INTERVAL = 10.0  # seconds between standby status updates when nothing else prompts one
CLOSE_TIMEOUT = 30.0
APPLICATION_NAME = "slipway-backup"
_SUN_PATH_MAX = 108  # sizeof(sockaddr_un.sun_path) on Linux, the final NUL included
# PostgreSQL's clock counts microseconds from 2000-01-01 00:00 UTC.
_PG_EPOCH = 946_684_800
_SLOT = re.compile(r"^[a-z0-9_]{1,63}\Z")
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\Z")
_AUTH_METHODS = {
    2: "Kerberos V5",
    3: "password (cleartext)",
    5: "MD5 password",
    7: "GSSAPI",
    9: "SSPI",
    10: "SASL (SCRAM)",
}


class PgError(Exception):
    """An ErrorResponse from the server (`code` is its SQLSTATE), or a refusal of ours."""

    def __init__(self, message: str, code: str = "", severity: str = "ERROR") -> None:
        super().__init__(f"{message} ({code})" if code else message)
        self.message = message
        self.code = code
        self.severity = severity


class ProtocolViolation(PgError):
    """The server sent something this client cannot make sense of; the connection is closed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "08P01")


@dataclass(frozen=True, slots=True)
class SystemId:
    """IDENTIFY_SYSTEM's answer."""

    systemid: str
    timeline: int
    xlogpos: int
    dbname: str | None


@dataclass(frozen=True, slots=True)
class BackupPiece:
    """One step of a base backup: start, a new archive, data or manifest bytes, end."""

    kind: Literal["start", "archive", "data", "manifest", "end"]
    lsn: int = 0
    timeline: int = 0
    name: str = ""
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class WalData:
    """WAL bytes from `start_lsn` on; `wal_end` is how far the server's WAL went when sent."""

    start_lsn: int
    data: bytes
    wal_end: int = 0


def format_lsn(lsn: int) -> str:
    """PostgreSQL's text form of an LSN: "16/B374D848"."""
    if not 0 <= lsn < 1 << 64:
        raise ValueError(f"not an LSN: {lsn}")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """The LSN written as "16/B374D848"; ValueError on anything else."""
    found = _LSN.match(text)
    if not found:
        raise ValueError(f"not an LSN: {text[:40]!r}")
    return (int(found[1], 16) << 32) | int(found[2], 16)


def segment_start(lsn: int, segment_size: int = SEGMENT_SIZE) -> int:
    """The first LSN of the WAL segment holding `lsn`."""
    return lsn - lsn % segment_size


def segment_name(timeline: int, lsn: int, segment_size: int = SEGMENT_SIZE) -> str:
    """The 24-hex-digit file name of the WAL segment holding `lsn` on `timeline`."""
    number = lsn // segment_size
    per_id = 0x1_0000_0000 // segment_size
    return f"{timeline:08X}{number // per_id:08X}{number % per_id:08X}"


def _quote(value: str) -> str:
    if "\x00" in value:
        raise ValueError("a NUL byte cannot be sent")
    return "'" + value.replace("'", "''") + "'"


def _slot_name(name: str) -> str:
    if not _SLOT.match(name):
        raise ValueError(f"not a replication slot name: {name[:70]!r}")
    return name


def _pg_now() -> int:
    return int((time.time() - _PG_EPOCH) * 1_000_000)


def _cstrings(body: bytes, count: int) -> list[str]:
    parts = body.split(b"\x00")
    if len(parts) < count + 1:
        raise ProtocolViolation("a message is missing a string terminator")
    return [p.decode("utf-8", "replace") for p in parts[:count]]


def _error(body: bytes) -> PgError:
    fields: dict[str, str] = {}
    for item in body.split(b"\x00"):
        if item:
            fields[chr(item[0])] = item[1:].decode("utf-8", "replace")
    return PgError(fields.get("M", "unknown error"), fields.get("C", ""), fields.get("S", "ERROR"))


def _data_row(body: bytes) -> tuple[str | None, ...]:
    if len(body) < 2:
        raise ProtocolViolation("a short DataRow")
    (count,) = struct.unpack_from("!h", body)
    offset = 2
    values: list[str | None] = []
    for _ in range(count):
        if offset + 4 > len(body):
            raise ProtocolViolation("a short DataRow")
        (size,) = struct.unpack_from("!i", body, offset)
        offset += 4
        if size < 0:
            values.append(None)
            continue
        if offset + size > len(body):
            raise ProtocolViolation("a DataRow value runs past its message")
        values.append(body[offset : offset + size].decode("utf-8", "replace"))
        offset += size
    return tuple(values)


def _message(kind: bytes, payload: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(payload) + 4) + payload


def _int(value: str | None, what: str) -> int:
    if value is None or not value.lstrip("-").isdigit():
        raise ProtocolViolation(f"{what} is not a number: {value!r}")
    return int(value)


async def connect(
    socket_dir: str | Path,
    *,
    user: str,
    database: str = "",
    replication: bool = False,
    port: int = 5432,
) -> Connection:
    """Open a connection on `<socket_dir>/.s.PGSQL.<port>` (a physical replication one if
    `replication`), authenticated by trust; PgError if the server refuses or asks for more."""
    name = f".s.PGSQL.{int(port)}"
    path = Path(socket_dir) / name
    if len(os.fsencode(path)) < _SUN_PATH_MAX:
        reader, writer = await asyncio.open_unix_connection(str(path))
    else:
        # A socket address holds 107 bytes; a deep folder is reached through its descriptor.
        folder = os.open(socket_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            reader, writer = await asyncio.open_unix_connection(f"/proc/self/fd/{folder}/{name}")
        finally:
            os.close(folder)
    conn = Connection(reader, writer, replication=replication)
    try:
        await conn._startup(user=user, database=database or user)
    except BaseException:
        await conn.close()
        raise
    return conn


class Connection:
    """One backend session; use it from one task at a time."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, replication: bool
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.replication = replication
        self.parameters: dict[str, str] = {}
        self._busy = False
        self._closed = False
        self._header = b""

    @property
    def closed(self) -> bool:
        """True once closed, or abandoned in the middle of a stream."""
        return self._closed

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Say goodbye (Terminate) and close the socket."""
        if not self._closed and not self._busy:
            with contextlib.suppress(OSError):
                self._writer.write(_message(b"X"))
        self._closed = True
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    def _abandon(self) -> None:
        """Drop a connection left in the middle of a protocol exchange."""
        self._closed = True
        self._writer.close()

    async def _send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def _read(self) -> tuple[bytes, bytes]:
        """The next message that matters: notices and parameter reports are taken here."""
        while True:
            try:
                # A reader cancelled while waiting for a body finds its header here next time.
                header = self._header or await self._reader.readexactly(5)
                self._header = header
                kind = header[:1]
                (length,) = struct.unpack_from("!i", header, 1)
                if length < 4 or length > MAX_MESSAGE:
                    self._abandon()
                    raise ProtocolViolation(f"a {kind!r} message of {length} bytes")
                body = await self._reader.readexactly(length - 4)
                self._header = b""
            except asyncio.IncompleteReadError:
                self._abandon()
                raise ConnectionResetError("the server closed the connection") from None
            if kind == b"S":
                name, value = _cstrings(body, 2)
                self.parameters[name] = value
            elif kind not in (b"N", b"A"):  # notices and notifications carry nothing we need
                return kind, body

    def _enter(self) -> None:
        if self._closed:
            raise PgError("the connection is closed", "08003")
        if self._busy:
            raise PgError("the connection is in use by another operation", "55000")
        self._busy = True

    async def _startup(self, *, user: str, database: str) -> None:
        params = {"user": user, "database": database, "application_name": APPLICATION_NAME}
        if self.replication:
            params["replication"] = "true"
        payload = struct.pack("!i", PROTOCOL_VERSION)
        for key, value in params.items():
            if "\x00" in value:
                raise ValueError(f"{key} holds a NUL byte")
            payload += key.encode() + b"\x00" + value.encode() + b"\x00"
        payload += b"\x00"
        await self._send(struct.pack("!i", len(payload) + 4) + payload)
        while True:
            kind, body = await self._read()
            if kind == b"R":
                (method,) = struct.unpack_from("!i", body)
                if method != 0:
                    name = _AUTH_METHODS.get(method, f"method {method}")
                    raise PgError(
                        f"the server asks for {name} authentication as {user!r}; this client"
                        " speaks trust only (pg_hba.conf must trust this socket)",
                        "28000",
                        "FATAL",
                    )
            elif kind == b"E":
                raise _error(body)
            elif kind == b"K":
                continue
            elif kind == b"Z":
                return
            else:
                raise ProtocolViolation(f"unexpected {kind!r} while starting up")

    async def query(self, sql: str) -> list[tuple[str | None, ...]]:
        """Run `sql` (simple query protocol); the rows of its last result set, as text."""
        self._enter()
        try:
            await self._send(_message(b"Q", sql.encode() + b"\x00"))
            rows: list[tuple[str | None, ...]] = []
            error: PgError | None = None
            while True:
                kind, body = await self._read()
                if kind == b"T":
                    rows = []
                elif kind == b"D":
                    rows.append(_data_row(body))
                elif kind == b"E":
                    error = _error(body)
                elif kind in (b"C", b"I"):
                    continue
                elif kind == b"Z":
                    break
                else:
                    # A COPY or anything else we did not ask for: the session is unusable.
                    self._abandon()
                    raise ProtocolViolation(f"unexpected {kind!r} answering a query")
            if error is not None:
                raise error
            return rows
        finally:
            self._busy = False

    async def identify_system(self) -> SystemId:
        """The cluster's system id, current timeline and WAL flush position."""
        rows = await self.query("IDENTIFY_SYSTEM")
        if len(rows) != 1 or len(rows[0]) < 4:
            raise ProtocolViolation("IDENTIFY_SYSTEM answered no row")
        systemid, timeline, xlogpos, dbname = rows[0][:4]
        return SystemId(
            systemid=systemid or "",
            timeline=_int(timeline, "the timeline"),
            xlogpos=parse_lsn(xlogpos or ""),
            dbname=dbname,
        )

    async def create_physical_slot(self, name: str) -> None:
        """Create the physical slot `name`, reserving WAL from now; nothing if it exists."""
        name = _slot_name(name)
        if self.replication:
            sql = f"CREATE_REPLICATION_SLOT {name} PHYSICAL RESERVE_WAL"
        else:
            sql = f"SELECT pg_create_physical_replication_slot({_quote(name)}, true)"
        try:
            await self.query(sql)
        except PgError as exc:
            if exc.code != "42710":  # duplicate_object: made before, which is what we want
                raise

    async def slot_restart_lsn(self, name: str) -> int | None:
        """The oldest LSN the slot keeps; None if there is no such slot (or it holds no WAL)."""
        name = _slot_name(name)
        if self.replication:
            rows = await self.query(f"READ_REPLICATION_SLOT {name}")
            value = rows[0][1] if rows and len(rows[0]) > 1 else None
        else:
            rows = await self.query(
                "SELECT restart_lsn FROM pg_replication_slots"  # noqa: S608 - name checked
                f" WHERE slot_name = {_quote(name)}"
            )
            value = rows[0][0] if rows else None
        return parse_lsn(value) if value else None

    def base_backup(self, *, label: str, wal: bool = True) -> AsyncIterator[BackupPiece]:
        """A base backup of the whole cluster as a plain tar (WAL for consistency inside if
        `wal`) and its manifest; the connection must be a replication one."""
        if not self.replication:
            raise PgError("BASE_BACKUP needs a replication connection", "42000")
        # WAIT false: the tar carries the WAL it needs (WAL true), and the backup service
        # streams the rest; waiting for archive_command would hang the backup whenever
        # archiving fails, for as long as it fails.
        options = (
            f"LABEL {_quote(label)}, CHECKPOINT 'fast', WAL {'true' if wal else 'false'},"
            " MANIFEST 'yes', TARGET 'client', WAIT false"
        )
        return self._base_backup(f"BASE_BACKUP ({options})")

    async def _base_backup(self, command: str) -> AsyncIterator[BackupPiece]:
        self._enter()
        finished = False
        try:
            await self._send(_message(b"Q", command.encode() + b"\x00"))
            result_sets = 0
            rows: list[tuple[str | None, ...]] = []
            in_manifest = False
            archives = 0
            error: PgError | None = None
            end: BackupPiece | None = None
            while True:
                kind, body = await self._read()
                if kind == b"T":
                    result_sets += 1
                    rows = []
                elif kind == b"D":
                    rows.append(_data_row(body))
                    if result_sets == 1:
                        lsn, tli = rows[0][:2]
                        yield BackupPiece(
                            kind="start", lsn=parse_lsn(lsn or ""), timeline=_int(tli, "tli")
                        )
                    elif result_sets == 2 and len(rows) > 1:
                        raise PgError(
                            "the database has more than one tablespace; backups of extra"
                            " tablespaces are not supported",
                            "0A000",
                        )
                    elif result_sets == 3:
                        lsn, tli = rows[0][:2]
                        end = BackupPiece(
                            kind="end", lsn=parse_lsn(lsn or ""), timeline=_int(tli, "tli")
                        )
                elif kind == b"H":
                    continue  # the one COPY OUT carrying every archive and the manifest
                elif kind == b"d":
                    piece = self._backup_copy_data(body, in_manifest)
                    if piece is None:
                        continue
                    if piece.kind == "manifest" and not piece.data:
                        in_manifest = True
                        continue
                    if piece.kind == "archive":
                        archives += 1
                        if archives > 1:
                            raise PgError(
                                "the server sent a second archive (another tablespace);"
                                " not supported",
                                "0A000",
                            )
                    yield piece
                elif kind in (b"c", b"C"):
                    continue
                elif kind == b"E":
                    error = _error(body)
                elif kind == b"Z":
                    break
                else:
                    raise ProtocolViolation(f"unexpected {kind!r} during BASE_BACKUP")
            finished = True
            if error is not None:
                raise error
            if end is None:
                raise ProtocolViolation("BASE_BACKUP ended without its end position")
            yield end
        finally:
            self._busy = False
            if not finished:
                self._abandon()

    @staticmethod
    def _backup_copy_data(body: bytes, in_manifest: bool) -> BackupPiece | None:
        if not body:
            raise ProtocolViolation("an empty CopyData in BASE_BACKUP")
        kind, rest = body[:1], body[1:]
        if kind == b"n":
            name, _location = _cstrings(rest, 2)
            return BackupPiece(kind="archive", name=name)
        if kind == b"d":
            return BackupPiece(kind="manifest" if in_manifest else "data", data=bytes(rest))
        if kind == b"m":
            return BackupPiece(kind="manifest")  # empty: the manifest begins
        if kind == b"p":
            return None
        raise ProtocolViolation(f"unknown BASE_BACKUP CopyData type {kind!r}")

    def stream_wal(self, *, slot: str, start_lsn: int, timeline: int) -> WalStream:
        """Stream WAL from `start_lsn` on `timeline` through the physical slot `slot`."""
        if not self.replication:
            raise PgError("START_REPLICATION needs a replication connection", "42000")
        command = (
            f"START_REPLICATION SLOT {_slot_name(slot)} PHYSICAL {format_lsn(start_lsn)}"
            f" TIMELINE {int(timeline)}"
        )
        return WalStream(self, command)


class WalStream:
    """The WAL a START_REPLICATION sends, as WalData; keepalives are answered here.

    `confirm(lsn)` tells the server (write = flush = apply = lsn) what is stored for
    good, so the slot keeps only the WAL after it. A status update goes out at each
    confirm, whenever the server asks, and at least every STATUS_INTERVAL seconds.
    """

    def __init__(self, conn: Connection, command: str) -> None:
        self._conn = conn
        self._command = command
        self._state: Literal["new", "streaming", "ended", "closed"] = "new"
        self._confirmed = 0
        self._ticker: asyncio.Task[None] | None = None
        self.next_timeline: int | None = None  # set when the server ends its timeline

    @property
    def confirmed(self) -> int:
        """The last LSN passed to confirm()."""
        return self._confirmed

    def __aiter__(self) -> WalStream:
        return self

    async def start(self) -> None:
        """Send START_REPLICATION and wait for the server to begin (iterating does it too)."""
        if self._state == "new":
            await self._start()

    async def __anext__(self) -> WalData:
        if self._state == "new":
            await self._start()
        while self._state == "streaming":
            kind, body = await self._conn._read()
            if kind == b"d":
                data = self._copy_data(body)
                if data is not None:
                    return data
            elif kind == b"c":
                await self._server_done()
            elif kind == b"E":
                self._fail()
                raise _error(body)
            else:
                self._fail()
                raise ProtocolViolation(f"unexpected {kind!r} while streaming WAL")
        raise StopAsyncIteration

    async def _start(self) -> None:
        conn = self._conn
        conn._enter()
        self._state = "streaming"
        try:
            await conn._send(_message(b"Q", self._command.encode() + b"\x00"))
            while True:
                kind, body = await conn._read()
                if kind == b"W":
                    break
                if kind == b"E":
                    error = _error(body)
                    await self._until_ready()
                    self._state = "ended"
                    conn._busy = False
                    raise error
                raise ProtocolViolation(f"unexpected {kind!r} answering START_REPLICATION")
        except PgError:
            if self._state == "streaming":
                self._fail()
            raise
        except BaseException:
            self._fail()
            raise
        self._ticker = asyncio.create_task(self._tick(), name="pgwire-status")

    def _copy_data(self, body: bytes) -> WalData | None:
        kind = body[:1]
        if kind == b"w" and len(body) >= 25:
            start, wal_end, _clock = struct.unpack_from("!QQq", body, 1)
            return WalData(start_lsn=start, data=bytes(body[25:]), wal_end=wal_end)
        if kind == b"k" and len(body) >= 18:
            _end, _clock, reply = struct.unpack_from("!QqB", body, 1)
            if reply:
                self._status()
            return None
        self._fail()
        raise ProtocolViolation(f"unknown replication CopyData type {kind!r}")

    async def _server_done(self) -> None:
        """The server ended the stream (its timeline ended): answer, read where it goes next."""
        await self._conn._send(_message(b"c"))
        rows: list[tuple[str | None, ...]] = []
        while True:
            kind, body = await self._conn._read()
            if kind == b"D":
                rows.append(_data_row(body))
            elif kind == b"E":
                self._fail()
                raise _error(body)
            elif kind == b"Z":
                break
        if rows and rows[0] and rows[0][0]:
            self.next_timeline = _int(rows[0][0], "the next timeline")
        self._finish()

    def confirm(self, flushed_lsn: int) -> None:
        """`flushed_lsn` and all WAL before it are stored for good; tell the server now."""
        if flushed_lsn > self._confirmed:
            self._confirmed = flushed_lsn
            self._status()

    def _status(self) -> None:
        if self._state != "streaming" or self._conn.closed:
            return
        lsn = self._confirmed
        update = b"r" + struct.pack("!QQQqB", lsn, lsn, lsn, _pg_now(), 0)
        with contextlib.suppress(OSError, RuntimeError):
            self._conn._writer.write(_message(b"d", update))

    async def _tick(self) -> None:
        # The server drops a silent standby after wal_sender_timeout (60 s by default).
        # It ends with the stream, or with the connection if the stream was never closed.
        while self._state == "streaming" and not self._conn.closed:
            await asyncio.sleep(STATUS_INTERVAL)
            self._status()

    async def _until_ready(self) -> None:
        while True:
            kind, _ = await self._conn._read()
            if kind == b"Z":
                return

    def _stop_ticker(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def _finish(self) -> None:
        self._stop_ticker()
        self._state = "ended"
        self._conn._busy = False

    def _fail(self) -> None:
        self._stop_ticker()
        self._state = "closed"
        self._conn._busy = False
        self._conn._abandon()

    async def close(self) -> None:
        """End the stream (CopyDone), read what the server still sends, free the connection."""
        if self._state != "streaming":
            self._stop_ticker()
            return
        self._status()
        self._stop_ticker()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._conn._send(_message(b"c"))
                while True:
                    kind, _ = await self._conn._read()
                    if kind == b"Z":
                        break
        except (TimeoutError, OSError, asyncio.IncompleteReadError, PgError):
            self._fail()
            return
        self._finish()
