"""Continuous WAL archiving: a replication stream per database, stored in sealed pieces.

Each database on this host has one `WalStreamer`: a physical replication connection
on the slot `slipway_backup` (so the server keeps every WAL byte until it is stored),
from the last stored LSN on. New bytes collect in memory and are sealed and stored
as a piece every `wal_flush_seconds`, and whenever a segment fills; the piece's
manifest commits with the new stored position, and only then is the position
confirmed to the server, which lets the slot move on. A crash loses nothing: the
next session starts again from the stored position.

A database restored in place (the scheduler's recovery.py, after a platform restore)
has no slot and runs on a new timeline: no session starts while it still replays its
WAL (a slot made then would name the old timeline's files); once promoted, the slot is
made again and streaming goes on from where the stored WAL ends, on the new timeline,
and the service is told (`on_session`) so it takes a base backup of that timeline.

When streaming is down, PostgreSQL's archive_command still copies each finished
segment (at least every archive_timeout = 60 s) into the run folder's `archive/`;
`sweep_archive` stores whatever of those the stream had not, then removes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path

import aiosqlite
import structlog

from slipway.contracts.backup import REPLICATION_SLOT
from slipway.libs import pgwire
from slipway.libs.pgwire import SEGMENT_SIZE
from slipway.services.backup import sealing
from slipway.services.backup.archive import Archive
from slipway.services.backup.capture import connect
from slipway.services.backup.sealing import Recipients
from slipway.services.backup.store import DatabaseRow, ObjectRow

log = structlog.get_logger("slipway.backup.wal")

SEGMENT_NAME = re.compile(r"^[0-9A-F]{24}\Z")
QUEUE_MESSAGES = 256


def segment_lsn(name: str) -> tuple[int, int]:
    """The timeline and first LSN of a WAL segment file name (16 MiB segments)."""
    timeline = int(name[:8], 16)
    log_id, seg = int(name[8:16], 16), int(name[16:], 16)
    return timeline, (log_id << 32) + seg * SEGMENT_SIZE


class WalStreamer:
    """The WAL archive of one database, kept for as long as it runs on this host."""

    def __init__(
        self,
        archive: Archive,
        db: DatabaseRow,
        run_dir: Path,
        on_session: Callable[[WalStreamer], None] | None = None,
    ) -> None:
        self.archive = archive
        self.db = db
        self.run_dir = run_dir
        self.streaming = False
        self.stored_lsn = 0
        self.timeline = 0  # the server's, as its last session began
        # Told at each session's start, when `timeline` is known (a restored database
        # begins a new one: its WAL no longer follows any base backup, service.py).
        self._on_session = on_session
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"wal-{self.db.addon_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.streaming = False

    async def _run(self) -> None:
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a loop that keeps the archive going must never die
                if self.streaming:
                    log.warning("wal stream stopped", addon=self.db.addon_name, error=str(exc))
            self.streaming = False
            try:
                await self.sweep_archive()
            except Exception as exc:
                log.warning("archive sweep failed", addon=self.db.addon_name, error=str(exc))
            await asyncio.sleep(self.archive.settings.retry_seconds)

    async def _session(self) -> None:
        if await self._recovering():
            # A restore replaying its WAL: the slot is made once it is promoted, at a
            # position of its new timeline (one made now would name the old one's WAL).
            raise ConnectionError("the database is still replaying its WAL")
        conn = await connect(self.run_dir, replication=True)
        try:
            ident = await conn.identify_system()
            # Made again whenever missing: a cluster restored from a base backup has none.
            await conn.create_physical_slot(REPLICATION_SLOT)
            self.timeline = ident.timeline
            if self._on_session is not None:
                self._on_session(self)
            position = await self.archive.catalog.wal_position(self.db.addon_id)
            if position and position[0] == ident.timeline:
                start = position[1]
            else:
                restart = await conn.slot_restart_lsn(REPLICATION_SLOT)
                start = pgwire.segment_start(restart or ident.xlogpos)
                if position and position[0] < ident.timeline:
                    # Restored in place: the new timeline branched off at most where the
                    # stored WAL ends; its files begin with that segment.
                    start = max(start, pgwire.segment_start(position[1]))
            stream = conn.stream_wal(
                slot=REPLICATION_SLOT, start_lsn=start, timeline=ident.timeline
            )
            await self._follow(stream, ident.timeline, start)
        finally:
            await conn.close()

    async def _recovering(self) -> bool:
        """Whether the server is still in recovery (a restore replaying its WAL)."""
        conn = await connect(self.run_dir, database=self.db.database)
        try:
            rows = await conn.query("SELECT pg_is_in_recovery()")
        finally:
            await conn.close()
        return bool(rows) and rows[0][0] == "t"

    async def _follow(self, stream: pgwire.WalStream, timeline: int, start: int) -> None:
        queue: asyncio.Queue[pgwire.WalData | BaseException] = asyncio.Queue(QUEUE_MESSAGES)

        async def read() -> None:
            try:
                async for item in stream:
                    await queue.put(item)
                await queue.put(ConnectionError("the server ended the WAL stream"))
            except Exception as exc:
                await queue.put(exc)

        reader = asyncio.create_task(read())
        pending = bytearray()
        pending_start = expected = start
        last_flush = time.monotonic()
        flush_every = self.archive.settings.wal_flush_seconds
        self.streaming = True
        self.stored_lsn = start
        log.info("wal stream started", addon=self.db.addon_name, lsn=pgwire.format_lsn(start))
        try:
            while True:
                wait = max(flush_every - (time.monotonic() - last_flush), 0.01)
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=wait)
                except TimeoutError:
                    item = None
                if isinstance(item, BaseException):
                    raise item
                if item is not None and item.data:
                    data = item.data
                    if item.start_lsn > expected:
                        raise pgwire.ProtocolViolation(
                            f"WAL jumped from {pgwire.format_lsn(expected)} to"
                            f" {pgwire.format_lsn(item.start_lsn)}"
                        )
                    data = data[expected - item.start_lsn :]  # drop what was already received
                    pending += data
                    expected += len(data)
                    # A piece never spans two segments: cut at each boundary.
                    while pending:
                        to_boundary = SEGMENT_SIZE - pending_start % SEGMENT_SIZE
                        if len(pending) < to_boundary:
                            break
                        await self._flush(timeline, pending_start, bytes(pending[:to_boundary]))
                        stream.confirm(pending_start + to_boundary)
                        pending_start += to_boundary
                        del pending[:to_boundary]
                        last_flush = time.monotonic()
                if pending and time.monotonic() - last_flush >= flush_every:
                    await self._flush(timeline, pending_start, bytes(pending))
                    pending_start += len(pending)
                    stream.confirm(pending_start)
                    pending.clear()
                    last_flush = time.monotonic()
                elif not pending and time.monotonic() - last_flush >= flush_every:
                    last_flush = time.monotonic()
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stream.close(), timeout=5)

    async def _flush(self, timeline: int, start: int, data: bytes) -> None:
        """Seal and store WAL bytes [start, start+len(data)) of one segment, then publish them."""
        recipients = await self.archive.sealer.recipients(self.db.team_id)
        await self.store_piece(timeline, start, data, recipients)

    async def store_piece(
        self, timeline: int, start: int, data: bytes, recipients: Recipients
    ) -> None:
        segment = pgwire.segment_name(timeline, start)
        offset = start % SEGMENT_SIZE
        sealed, digest = await asyncio.to_thread(
            sealing.compress_and_seal, data, recipients, self.archive.settings.zstd_level
        )
        row = ObjectRow(
            key=f"{self.db.addon_id}/wal/{timeline:08X}/{segment}/{offset:08X}",
            addon_id=self.db.addon_id,
            kind="wal",
            backup_num=0,
            part=0,
            timeline=timeline,
            segment=segment,
            offset=offset,
            length=len(data),
            start_lsn=start,
            end_lsn=start + len(data),
            size=len(sealed),
            sha256=digest,
            created_at=time.time(),
        )
        stored = await self.archive.store_object(row, sealed)
        end = start + len(data)
        catalog = self.archive.catalog
        addon_id = self.db.addon_id

        async def advance(conn: aiosqlite.Connection) -> None:
            await catalog.set_wal_position(conn, addon_id, timeline, end)

        await self.archive.publish_manifest(
            self.db,
            kind="wal",
            objects=[stored],
            recipients=recipients,
            fields={
                "timeline": timeline,
                "start_lsn": pgwire.format_lsn(start),
                "end_lsn": pgwire.format_lsn(end),
            },
            progress=advance,
        )
        self.stored_lsn = max(self.stored_lsn, end)

    async def sweep_archive(self) -> int:
        """Store what archive_command copied that streaming did not have; remove the copies."""
        folder = self.run_dir / "archive"
        try:
            names = sorted(os.listdir(folder))
        except FileNotFoundError:
            return 0
        stored = 0
        for name in names:
            if not SEGMENT_NAME.match(name):
                continue  # .tmp copies in progress, .history and .partial files
            timeline, first = segment_lsn(name)
            position = await self.archive.catalog.wal_position(self.db.addon_id)
            have = position[1] if position and position[0] == timeline else first
            if have < first + SEGMENT_SIZE:
                data = _read_segment(folder, name)
                skip = max(have - first, 0)
                recipients = await self.archive.sealer.recipients(self.db.team_id)
                await self.store_piece(timeline, first + skip, data[skip:], recipients)
                stored += 1
            with contextlib.suppress(FileNotFoundError):
                os.unlink(folder / name)
        return stored


def _read_segment(folder: Path, name: str) -> bytes:
    """A whole segment that PostgreSQL's archive_command wrote: a regular file, never a link."""
    fd = os.open(folder / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size != SEGMENT_SIZE:
            raise pgwire.ProtocolViolation(f"archive/{name} is not a whole WAL segment")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
