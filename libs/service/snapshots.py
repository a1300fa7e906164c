"""Exporting a service's state for platform snapshots: the three RPCs the runner serves.

A service that holds state declares it, and the runner does the rest:

    service.snapshot_sources = lambda: Sources(databases=[Database(path, "gateway/gateway.db")])

It then answers, for the backup service only (`context.require_caller`):

- SNAPSHOT_EXPORT: its state as sealed pieces in `<state>/snapshot-out/<id>/` (0700;
  `<id>@<host>` for a per-host service), sealed to the request's recipients
  (libs/snapshot/export.py);
- SNAPSHOT_PIECE_READ: a chunk of a piece it wrote for that snapshot, nothing else;
- SNAPSHOT_RELEASE: the snapshot's folder deleted.

A per-host service (log-shipper, backup: `service.responder` set to its host id) answers
as that host and stays silent about requests naming another host. Export folders a
crashed or interrupted snapshot left behind are deleted at start once a day old.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from slipway.contracts.base import Ok
from slipway.contracts.snapshot import (
    MAX_PIECE_READ,
    SNAPSHOT_EXPORT,
    SNAPSHOT_PIECE_READ,
    SNAPSHOT_RELEASE,
    ExportedState,
    ExportState,
    PieceChunk,
    ReadPiece,
    ReleaseExport,
)
from slipway.contracts.subjects import Service
from slipway.libs.bus import context
from slipway.libs.crypto import age
from slipway.libs.crypto.errors import InvalidKey
from slipway.libs.errors import InvalidRequest, NotFound, Unavailable
from slipway.libs.snapshot.export import ExportError, Sources, export

if TYPE_CHECKING:
    from slipway.libs.service.runner import ServiceApp

log = structlog.get_logger("slipway.service.snapshots")

SourcesFactory = Callable[[], Sources | Awaitable[Sources]]
OUT_FOLDER = "snapshot-out"
STALE_AFTER = 86400.0  # seconds an export folder may outlive its snapshot
# Snapshot ids become folder names: letters, digits and dashes only ("s20261203T101500Z-3f9a").
SNAPSHOT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,99}\Z")


class Exporter:
    """One service instance's exports: where they are written, and which pieces it wrote."""

    def __init__(
        self,
        service: Service,
        state_dir: Path,
        sources: SourcesFactory,
        *,
        host_id: str = "",
        piece_size: int | None = None,
    ) -> None:
        if service not in SNAPSHOT_EXPORT:
            raise ValueError(f"{service} is not among contracts.snapshot.EXPORTERS")
        self.service = service
        self.root = state_dir / OUT_FOLDER
        self.sources = sources
        self.host_id = host_id
        self.piece_size = piece_size
        # snapshot id -> {piece name: size} of what this process wrote and has not released.
        self.written: dict[str, dict[str, int]] = {}
        self._one_at_a_time = asyncio.Lock()

    def folder(self, snapshot_id: str) -> Path:
        """The private folder of one snapshot's pieces; InvalidRequest for an unsafe id."""
        if not SNAPSHOT_ID.match(snapshot_id):
            raise InvalidRequest(
                f"{snapshot_id[:60]!r} is not a snapshot id (letters, digits and dashes only)"
            )
        # Per-host instances may share one home (several hosts on one machine).
        return self.root / (f"{snapshot_id}@{self.host_id}" if self.host_id else snapshot_id)

    def sweep(self, *, now: float | None = None) -> list[str]:
        """Delete export folders older than a day (a snapshot that never released them)."""
        now = time.time() if now is None else now
        removed: list[str] = []
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return removed
        for entry in entries:
            try:
                old = entry.stat(follow_symlinks=False).st_mtime < now - STALE_AFTER
            except FileNotFoundError:
                continue
            if old:
                _remove(Path(entry.path))
                removed.append(entry.name)
        if removed:
            log.info("snapshot.export_swept", folders=removed)
        return removed

    async def export(self, request: ExportState) -> ExportedState:
        """Write this instance's state as pieces sealed to the request's recipients."""
        folder = self.folder(request.snapshot_id)
        try:
            recipients = [age.parse_recipient(text) for text in request.recipients]
        except InvalidKey as exc:
            raise InvalidRequest(f"a recovery recipient is unusable: {exc}") from None
        if not recipients:
            raise InvalidRequest(
                "no recovery recipients: set SLIPWAY_RECOVERY_RECIPIENTS to the operator's"
                " age public key(s) so that someone can open the snapshot"
            )
        async with self._one_at_a_time:
            # A second request for the same snapshot (a retry) starts again from nothing.
            self.written.pop(request.snapshot_id, None)
            await asyncio.to_thread(_remove, folder)
            await asyncio.to_thread(_private, self.root)
            started = time.monotonic()
            try:
                made = self.sources()
                sources = await made if inspect.isawaitable(made) else made
                options = {"piece_size": self.piece_size} if self.piece_size else {}
                done = await export(sources, recipients, folder, **options)
            except ExportError as exc:
                await asyncio.to_thread(_remove, folder)
                raise Unavailable(f"{self.service} cannot export its state: {exc}") from None
            except BaseException:
                await asyncio.to_thread(_remove, folder)
                raise
            self.written[request.snapshot_id] = {p.name: p.size for p in done.pieces}
        log.info(
            "snapshot.exported",
            snapshot_id=request.snapshot_id,
            pieces=len(done.pieces),
            plain_bytes=done.plain_bytes,
            seconds=round(time.monotonic() - started, 3),
        )
        return ExportedState(
            snapshot_id=request.snapshot_id,
            service=str(self.service),
            host_id=self.host_id,
            pieces=done.pieces,
            plain_bytes=done.plain_bytes,
            counts=done.counts,
            left_out=done.left_out,
            schema=done.schema,
        )

    async def read(self, request: ReadPiece) -> PieceChunk | None:
        """A chunk of a piece this instance wrote; None when another host is asked."""
        if request.host_id != self.host_id:
            return None
        if request.service != self.service:
            raise InvalidRequest(f"this is {self.service}, not {request.service[:40]!r}")
        folder = self.folder(request.snapshot_id)
        size = self.written.get(request.snapshot_id, {}).get(request.piece)
        if size is None:
            # Only a name from our own list is ever joined to a path.
            raise NotFound(
                f"{self.service} holds no piece {request.piece[:40]!r} of snapshot"
                f" {request.snapshot_id} (never exported here, released, or restarted since)"
            )
        if request.offset < 0 or request.length <= 0:
            raise InvalidRequest("a piece is read from offset >= 0, length > 0")
        length = min(request.length, MAX_PIECE_READ)
        data = await asyncio.to_thread(_read, folder / request.piece, request.offset, length)
        return PieceChunk(data=data, eof=request.offset + len(data) >= size)

    async def release(self, request: ReleaseExport) -> Ok | None:
        """Delete the snapshot's pieces here; None when the request names another host."""
        if request.host_id not in ("", self.host_id):
            return None
        folder = self.folder(request.snapshot_id)
        async with self._one_at_a_time:
            self.written.pop(request.snapshot_id, None)
            await asyncio.to_thread(_remove, folder)
        return Ok()


def serve_snapshots(app: ServiceApp, sources: SourcesFactory) -> Exporter:
    """Register the three snapshot RPCs of `app`'s service, answered from `sources`."""
    service = app.service
    host_id = app.responder or ""
    exporter = Exporter(service, app.settings.state_dir(service), sources, host_id=host_id)
    exporter.sweep()
    export_rpc, read_rpc, release_rpc = (
        SNAPSHOT_EXPORT[service],
        SNAPSHOT_PIECE_READ[service],
        SNAPSHOT_RELEASE[service],
    )

    @app.rpc(export_rpc)
    async def export_state(request: ExportState) -> ExportedState:
        context.require_caller(export_rpc)
        return await exporter.export(request)

    @app.rpc(read_rpc)
    async def read_piece(request: ReadPiece) -> PieceChunk | None:
        context.require_caller(read_rpc)
        return await exporter.read(request)

    @app.rpc(release_rpc)
    async def release(request: ReleaseExport) -> Ok | None:
        context.require_caller(release_rpc)
        return await exporter.release(request)

    return exporter


def _private(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _read(path: Path, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)
