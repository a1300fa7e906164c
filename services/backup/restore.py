"""Staging a restore: a base backup and the WAL after it, opened into a new add-on's run folder.

The scheduler asks for this before it first starts the new database's container;
the container's start script finds `restore/READY`, unpacks `base.tar`, and
PostgreSQL replays `wal/` up to the target time, then promotes (addons/postgresql/start).

Every object is checked against the catalog's SHA-256 before it is opened (a flipped
byte names the object and stops the restore), and the WAL must run without a hole
from the end of the base backup on (a hole names the missing range). The folder is
the new database's, writable by its container: files are made next to a directory
descriptor with O_NOFOLLOW|O_EXCL, never through a name something else could have
replaced with a link.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import structlog
import zstandard

from slipway.contracts.backup import RestoreStaged, StageRestore, addon_run_dir
from slipway.libs import pgwire
from slipway.libs.crypto import age
from slipway.libs.pgwire import SEGMENT_SIZE
from slipway.services.backup import sealing
from slipway.services.backup.archive import Archive
from slipway.services.backup.errors import IntegrityError, InvalidRequest, NoBackup, NotFound
from slipway.services.backup.store import BackupRow, ObjectRow

log = structlog.get_logger("slipway.backup.restore")

# Pieces stored this long after the target time are still read: a commit made just
# before the target is stored within one flush interval (and one slow round trip).
TARGET_GRACE = 30.0
HEADER_PEEK = 16 * 1024
FILE_MODE = 0o640  # the database's postgres reads them through the run folder's group


def parse_time(text: str) -> float:
    """An ISO 8601 time (naive = UTC) as a POSIX timestamp; InvalidRequest otherwise."""
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{text[:60]!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


@dataclass
class Plan:
    """What a restore will stage."""

    backup: BackupRow
    base: list[ObjectRow]
    counts: ObjectRow | None
    wal: list[ObjectRow]
    target: float | None  # None: replay everything staged
    end_lsn: int


async def plan(archive: Archive, addon_id: str, num: int, to_time: str) -> Plan:
    """Choose the base backup and the WAL pieces a restore (to `to_time`) needs."""
    catalog = archive.catalog
    target = parse_time(to_time) if to_time else None
    if num:
        backup = await catalog.backup(addon_id, num)
        if backup is None or backup.state != "completed":
            raise NoBackup(f"backup b{num:03d} does not exist or did not complete")
        if target is not None and (backup.finished_at or 0) > target:
            raise NoBackup(
                f"backup b{num:03d} finished after {to_time}: it cannot go back before its end"
            )
    else:
        found = await catalog.latest_completed(addon_id, before=target)
        if found is None:
            raise NoBackup(
                "no completed backup ends before that time"
                if target is not None
                else "this database has no completed backup yet"
            )
        backup = found
    objects = await catalog.base_objects(addon_id, backup.num)
    base = sorted((o for o in objects if o.kind == "base"), key=lambda o: o.part)
    counts = next((o for o in objects if o.kind == "counts"), None)
    if not base:
        raise IntegrityError(f"backup b{backup.num:03d} has no stored parts")
    # restore_command's copy of a segment wins over the one in base.tar's pg_wal: the
    # segment the backup ends in is staged whole, from its first byte, or not at all.
    first = pgwire.segment_start(backup.end_lsn)
    wal = await catalog.wal_objects(
        addon_id,
        backup.timeline,
        first,
        created_before=None if target is None else target + TARGET_GRACE,
    )
    if not any(o.end_lsn > backup.end_lsn for o in wal):
        wal = []
    end = _check_continuous(wal, first) if wal else backup.end_lsn
    # Recovery to a target it never reaches is fatal in PostgreSQL: when nothing was stored
    # after the target, replaying everything staged is the same restore.
    if target is not None and not any(o.created_at > target for o in wal):
        target = None
    return Plan(backup=backup, base=base, counts=counts, wal=wal, target=target, end_lsn=end)


def _check_continuous(pieces: list[ObjectRow], start: int) -> int:
    """The end of WAL covered without a hole from `start`; IntegrityError names a hole."""
    covered = start
    for piece in pieces:
        if piece.start_lsn > covered:
            raise IntegrityError(
                f"WAL from {pgwire.format_lsn(covered)} to {pgwire.format_lsn(piece.start_lsn)}"
                f" is missing (segment {pgwire.segment_name(piece.timeline, covered)}): a"
                " restore past it is impossible"
            )
        covered = max(covered, piece.end_lsn)
    return covered


class Stager:
    """Writes one restore into a run folder."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    async def stage(self, req: StageRestore) -> RestoreStaged:
        source = await self.archive.catalog.database(req.source_addon_id)
        if source is None or source.app_id != req.app_id:
            raise NotFound(f"no backups of add-on {req.source_addon_id} in this app")
        chosen = await plan(self.archive, source.addon_id, req.num, req.to_time)
        run = addon_run_dir(self.archive.settings.run_root(), req.host_id, req.target_addon_id)
        if not run.is_dir() or run.is_symlink():
            raise NotFound(f"the new database's run folder {run.name} is not there")
        team = source.team_id
        restore = await asyncio.to_thread(_fresh_folder, run, "restore")
        try:
            await self._base(team, chosen, restore)
            await self._wal(team, chosen, restore)
            target = "" if chosen.target is None else _iso(chosen.target)
            await asyncio.to_thread(_write_at, restore, "target", (target + "\n").encode())
            await asyncio.to_thread(_write_at, restore, "READY", b"")
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, run / "restore", True)
            raise
        log.info(
            "restore staged",
            source=source.addon_name,
            target=req.target_addon_id,
            backup=chosen.backup.num,
            wal_pieces=len(chosen.wal),
            to_time=target,
        )
        return RestoreStaged(
            backup_num=chosen.backup.num, to_time=target, end_lsn=pgwire.format_lsn(chosen.end_lsn)
        )

    async def _fetch(self, row: ObjectRow) -> bytes:
        sealed = await self.archive.storage.read(row.key)
        sealing.check_hash(row.key, sealed, row.sha256)
        return sealed

    async def _base(self, team: str, chosen: Plan, restore: Path) -> None:
        # File keys first, from the headers alone: nothing is written if the platform
        # cannot open the backup at all.
        headers = [await self.archive.storage.read(o.key, 0, HEADER_PEEK) for o in chosen.base]
        keys = await self.archive.sealer.file_keys(team, [age.header_bytes(h) for h in headers])
        decompressor = zstandard.ZstdDecompressor().decompressobj()
        fd = await asyncio.to_thread(_create_at, restore, "base.tar")
        try:
            for row, key in zip(chosen.base, keys, strict=True):
                sealed = await self._fetch(row)
                plain = await asyncio.to_thread(_open_part, row, sealed, key, decompressor)
                await asyncio.to_thread(_write_all, fd, plain)
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)

    async def _wal(self, team: str, chosen: Plan, restore: Path) -> None:
        if not chosen.wal:
            await asyncio.to_thread(_fresh_folder, restore, "wal")
            return
        wal_dir = await asyncio.to_thread(_fresh_folder, restore, "wal")
        by_segment: dict[str, list[ObjectRow]] = {}
        for piece in chosen.wal:
            by_segment.setdefault(piece.segment, []).append(piece)
        for segment, pieces in sorted(by_segment.items()):
            blobs = [await self._fetch(p) for p in pieces]
            opened = await sealing.open_many(self.archive.sealer, team, blobs)
            buffer = bytearray(SEGMENT_SIZE)
            for piece, compressed in zip(pieces, opened, strict=True):
                plain = zstandard.ZstdDecompressor().decompress(
                    compressed, max_output_size=SEGMENT_SIZE
                )
                if len(plain) != piece.length or piece.offset + len(plain) > SEGMENT_SIZE:
                    raise IntegrityError(f"the WAL piece {piece.key} has the wrong length")
                buffer[piece.offset : piece.offset + len(plain)] = plain
            await asyncio.to_thread(_write_at, wal_dir, segment, bytes(buffer))


def _open_part(
    row: ObjectRow, sealed: bytes, key: bytes, decompressor: zstandard.ZstdDecompressionObj
) -> bytes:
    try:
        compressed = sealing.open_object(sealed, key)
    except Exception as exc:
        raise IntegrityError(f"the stored object {row.key} does not open: {exc}") from exc
    return decompressor.decompress(compressed)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def _fresh_folder(parent: Path, name: str) -> Path:
    """An empty folder `parent/name` (what a failed attempt left is removed), no link followed."""
    path = parent / name
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    os.mkdir(path, 0o2750)
    # The umask trims mkdir's mode; the database's postgres reads through the group.
    os.chmod(path, 0o2750)  # noqa: S103
    return path


def _create_at(folder: Path, name: str) -> int:
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, FILE_MODE, dir_fd=dir_fd)
        os.fchmod(fd, FILE_MODE)
        return fd
    finally:
        os.close(dir_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_at(folder: Path, name: str, data: bytes) -> None:
    fd = _create_at(folder, name)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def counts_of(opened: bytes) -> dict[str, int]:
    """The row counts inside a backup's opened `counts` object."""
    with contextlib.suppress(ValueError):
        tables = json.loads(zstandard.ZstdDecompressor().decompress(opened)).get("tables", {})
        return {str(k): int(v) for k, v in tables.items()}
    return {}
