"""Base backups: BASE_BACKUP through the database's socket, compressed, cut, sealed, stored.

The tar the server streams (the data directory, with the WAL that makes it
consistent) goes through one zstd stream; the compressed bytes are cut into parts
of `part_bytes`, each sealed on its own, so a restore can fetch and check them one
by one. Receiving and compressing run side by side (the server keeps sending while
a worker thread compresses and seals). The row count of every table and the
server's own backup_manifest travel sealed in the backup's `counts` object; the
signed manifest that names all the parts is written last, which is when the backup
becomes visible.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import structlog
import zstandard

from slipway.contracts.backup import BACKUP_ROLE
from slipway.libs import pgwire
from slipway.services.backup import sealing
from slipway.services.backup.archive import Archive
from slipway.services.backup.errors import Conflict, DatabaseUnreachable, InvalidRequest
from slipway.services.backup.sealing import Recipients
from slipway.services.backup.store import BackupRow, DatabaseRow, ObjectRow

log = structlog.get_logger("slipway.backup.capture")

# Plain bytes handed to the compressor at a time. Big blocks matter: the worker thread
# takes the GIL back after each block, and while the receiving loop is busy each of
# those waits can cost a switch interval (4 MiB blocks through compressobj ran ~15%
# slower than 16 MiB on bench/backup.py's database).
BLOCK = 16 * 1024 * 1024
MAX_TABLES = 10_000


async def connect(
    socket_dir: Path, *, database: str = "", replication: bool = False
) -> pgwire.Connection:
    try:
        return await pgwire.connect(
            socket_dir, user=BACKUP_ROLE, database=database, replication=replication
        )
    except (OSError, pgwire.PgError) as exc:
        raise DatabaseUnreachable(
            f"the database does not answer on its backup socket ({exc.__class__.__name__}:"
            f" {exc}); it may be stopped or its host down"
        ) from exc


class Capture:
    """One base backup of one database."""

    def __init__(self, archive: Archive, db: DatabaseRow, socket_dir: Path, num: int) -> None:
        self.archive = archive
        self.db = db
        self.socket_dir = socket_dir
        self.num = num
        self.settings = archive.settings
        self.stored: list[ObjectRow] = []
        self.size = 0
        self.start_lsn = 0
        self.end_lsn = 0
        self.timeline = 0
        self.server_manifest = bytearray()

    async def run(self) -> None:
        recipients = await self.archive.sealer.recipients(self.db.team_id)
        conn = await connect(self.socket_dir, replication=True)
        try:
            # Three stages side by side: receiving, compressing, sealing and storing.
            plain: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=2)
            parts: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=2)
            async with asyncio.TaskGroup() as group:
                group.create_task(self._receive(conn, plain))
                group.create_task(self._compress(plain, parts))
                group.create_task(self._store(parts, recipients))
        finally:
            await conn.close()
        counts = await self._row_counts()
        await self._finish(recipients, counts)

    async def _receive(self, conn: pgwire.Connection, queue: asyncio.Queue[bytes | None]) -> None:
        chunks: list[bytes] = []  # joined once per block: one copy of each byte, not two
        pending = 0
        archives = 0
        async for piece in conn.base_backup(label=f"slipway {self.db.addon_name} b{self.num:03d}"):
            if piece.kind == "data":
                chunks.append(piece.data)
                pending += len(piece.data)
                self.size += len(piece.data)
                if pending >= BLOCK:
                    await queue.put(b"".join(chunks))
                    chunks.clear()
                    pending = 0
            elif piece.kind == "manifest":
                self.server_manifest += piece.data
            elif piece.kind == "archive":
                archives += 1
                if archives > 1:
                    raise InvalidRequest(
                        "the database uses more than one tablespace, which backups do not support"
                    )
            elif piece.kind == "start":
                self.start_lsn, self.timeline = piece.lsn, piece.timeline
            elif piece.kind == "end":
                self.end_lsn = piece.lsn
                self.timeline = piece.timeline or self.timeline
        if chunks:
            await queue.put(b"".join(chunks))
        await queue.put(None)

    async def _compress(
        self, plain: asyncio.Queue[bytes | None], parts: asyncio.Queue[bytes | None]
    ) -> None:
        """One zstd frame over the whole tar, cut into parts of `part_bytes` compressed bytes."""
        out = _Collected()
        # threads=1: zstd compresses in its own thread, which never needs the GIL, while
        # ours hands it input (what the zstd CLI does by default: ~20% faster here than
        # compressing in the calling thread). Output is buffered a block at a time, so
        # ours takes the GIL back once per block, not every 128 KiB.
        compressor = zstandard.ZstdCompressor(level=self.settings.zstd_level, threads=1)
        writer = compressor.stream_writer(
            out,  # type: ignore[arg-type]
            write_size=BLOCK,
            closefd=False,
        )
        limit = self.settings.part_bytes
        sent = False
        while (block := await plain.get()) is not None:
            await asyncio.to_thread(writer.write, block)
            while len(out.data) >= limit:
                await parts.put(bytes(out.data[:limit]))
                del out.data[:limit]
                sent = True
        await asyncio.to_thread(writer.flush, zstandard.FLUSH_FRAME)
        if out.data or not sent:
            await parts.put(bytes(out.data))
        await parts.put(None)

    async def _store(self, parts: asyncio.Queue[bytes | None], recipients: Recipients) -> None:
        while (part := await parts.get()) is not None:
            await self._store_part(part, recipients)

    async def _store_part(self, compressed: bytes, recipients: Recipients) -> None:
        number = len([o for o in self.stored if o.kind == "base"])
        sealed, digest = await asyncio.to_thread(sealing.seal_compressed, compressed, recipients)
        row = ObjectRow(
            key=f"{self.db.addon_id}/base/{self.num:06d}/{number:05d}",
            addon_id=self.db.addon_id,
            kind="base",
            backup_num=self.num,
            part=number,
            timeline=self.timeline,
            segment="",
            offset=0,
            length=len(compressed),
            start_lsn=0,
            end_lsn=0,
            size=len(sealed),
            sha256=digest,
            created_at=time.time(),
        )
        self.stored.append(await self.archive.store_object(row, sealed))

    async def _row_counts(self) -> dict[str, int]:
        """Rows of every table, counted right after the backup ended (for verification)."""
        conn = await connect(self.socket_dir, database=self.db.database)
        try:
            tables = await conn.query(
                "SELECT schemaname, relname FROM pg_stat_user_tables"  # noqa: S608 - a constant
                f" ORDER BY schemaname, relname LIMIT {MAX_TABLES}"
            )
            counts: dict[str, int] = {}
            for schema, table in tables:
                if schema is None or table is None:
                    continue
                # Both names quoted by _ident: a table called anything stays one identifier.
                sql = f"SELECT count(*) FROM {_ident(schema)}.{_ident(table)}"  # noqa: S608
                rows = await conn.query(sql)
                counts[f"{schema}.{table}"] = int(rows[0][0] or 0)
            return counts
        finally:
            await conn.close()

    async def _finish(self, recipients: Recipients, counts: dict[str, int]) -> None:
        plain = json.dumps(
            {"tables": counts, "backup_manifest": self.server_manifest.decode("utf-8", "replace")}
        ).encode()
        sealed, digest = await asyncio.to_thread(
            sealing.compress_and_seal, plain, recipients, self.settings.zstd_level
        )
        counts_row = ObjectRow(
            key=f"{self.db.addon_id}/base/{self.num:06d}/counts",
            addon_id=self.db.addon_id,
            kind="counts",
            backup_num=self.num,
            part=0,
            timeline=self.timeline,
            segment="",
            offset=0,
            length=len(plain),
            start_lsn=0,
            end_lsn=0,
            size=len(sealed),
            sha256=digest,
            created_at=time.time(),
        )
        self.stored.append(await self.archive.store_object(counts_row, sealed))
        stored_bytes = sum(o.size for o in self.stored)
        catalog = self.archive.catalog

        async def completed(conn: object) -> None:
            await catalog.complete_backup(
                conn,  # type: ignore[arg-type]
                addon_id=self.db.addon_id,
                num=self.num,
                size_bytes=self.size,
                stored_bytes=stored_bytes,
                start_lsn=self.start_lsn,
                end_lsn=self.end_lsn,
                timeline=self.timeline,
                recipients=list(recipients.fingerprints),
            )

        await self.archive.publish_manifest(
            self.db,
            kind="base",
            objects=self.stored,
            recipients=recipients,
            fields={
                "backup_num": self.num,
                "timeline": self.timeline,
                "start_lsn": pgwire.format_lsn(self.start_lsn),
                "end_lsn": pgwire.format_lsn(self.end_lsn),
                "size_bytes": self.size,
            },
            progress=completed,
        )

    async def abandon(self, error: str) -> None:
        """A failed capture: its objects are removed, the backup is marked failed."""
        keys = [o.key for o in self.stored]
        for key in keys:
            await self.archive.storage.delete(key)
        await self.archive.catalog.forget_objects(keys)
        await self.archive.catalog.fail_backup(self.db.addon_id, self.num, error)


class Captures:
    """At most one capture per database at a time."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.running: set[str] = set()

    async def capture(self, db: DatabaseRow, socket_dir: Path, kind: str) -> BackupRow:
        if db.addon_id in self.running:
            raise Conflict(f"a backup of {db.addon_name} is already running; wait for it")
        self.running.add(db.addon_id)
        try:
            num = await self.archive.catalog.start_backup(db.addon_id, kind)
            job = Capture(self.archive, db, socket_dir, num)
            started = time.monotonic()
            try:
                await job.run()
            except BaseException as exc:
                message = _first_error(exc)
                await asyncio.shield(job.abandon(message))
                log.warning("capture failed", addon=db.addon_name, num=num, error=message)
                inner = _innermost(exc)
                if inner is not exc and isinstance(inner, Exception):
                    raise inner from None  # the TaskGroup's first failure, as its own kind
                raise
            log.info(
                "capture completed",
                addon=db.addon_name,
                num=num,
                size=job.size,
                seconds=round(time.monotonic() - started, 2),
            )
            row = await self.archive.catalog.backup(db.addon_id, num)
            assert row is not None
            return row
        finally:
            self.running.discard(db.addon_id)


class _Collected:
    """What the zstd stream writer writes: read and trimmed between blocks, never during."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


def _ident(name: str) -> str:
    """A quoted SQL identifier: table names are the customer's, so every quote is doubled."""
    return '"' + name.replace('"', '""') + '"'


def _innermost(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _first_error(exc: BaseException) -> str:
    inner = _innermost(exc)
    return f"{inner.__class__.__name__}: {inner}"[:500]
