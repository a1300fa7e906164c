"""The archive of one host's backup service: objects stored, manifests chained and signed.

Every writer (a capture, a WAL stream, the archive sweep) stores its sealed objects
with `store_object` (recorded invisible), then makes them visible with
`publish_manifest`: a signed, hash-chained manifest naming them, stored, then
recorded with them in one transaction together with the writer's own progress.
Manifests of one database are written one at a time (a lock per add-on), so the
chain has no forks.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite
import msgspec
import structlog

from slipway.services.backup import sealing
from slipway.services.backup.errors import StorageError
from slipway.services.backup.sealing import Recipients, Sealer
from slipway.services.backup.settings import BackupSettings
from slipway.services.backup.storage import LocalFolder, Mirrored, ObjectStore
from slipway.services.backup.store import Catalog, DatabaseRow, ObjectRow, object_info

if TYPE_CHECKING:
    from slipway.services.backup.s3 import S3Bucket

log = structlog.get_logger("slipway.backup.archive")

# Runs inside the manifest's transaction: the writer's own progress, committed with it.
Progress = Callable[[aiosqlite.Connection], Awaitable[None]]


class Archive:
    """Storage, catalog and sealing of one backup service."""

    def __init__(self, settings: BackupSettings, catalog: Catalog, sealer: Sealer) -> None:
        self.settings = settings
        self.catalog = catalog
        self.sealer = sealer
        self._folders: list[LocalFolder] = []
        self._buckets: list[S3Bucket] = []
        primary = self._destination(settings.backup_s3_url or str(settings.storage_root()))
        copies: list[ObjectStore] = []
        if settings.backup_copy_to:
            copies.append(self._destination(settings.backup_copy_to))
        self.storage = Mirrored(primary, copies)
        self._primary = primary
        self._locks: dict[str, asyncio.Lock] = {}

    def _destination(self, where: str) -> ObjectStore:
        """A folder, or an S3-compatible bucket for an `s3://bucket/prefix` URL."""
        if not where.startswith("s3://"):
            folder = LocalFolder(Path(where))
            self._folders.append(folder)
            return folder
        try:
            # aiobotocore is the optional extra `s3`: needed only once a bucket is named.
            from slipway.services.backup.s3 import S3Bucket, S3Options
        except ImportError as exc:
            raise StorageError(
                f"an s3:// destination needs `pip install slipway[s3]`: {exc}"
            ) from None
        bucket = S3Bucket(where, S3Options.from_settings(self.settings))
        self._buckets.append(bucket)
        return bucket

    async def close(self) -> None:
        """Close the destinations' connections (a bucket's client)."""
        for bucket in self._buckets:
            await bucket.close()

    def lock(self, addon_id: str) -> asyncio.Lock:
        return self._locks.setdefault(addon_id, asyncio.Lock())

    async def recover(self) -> None:
        """After a crash: uploads without a manifest are dropped, interrupted captures failed."""
        removed = 0
        for folder in self._folders:
            removed += await asyncio.to_thread(folder.sweep_partial)
        for bucket in self._buckets:
            try:
                removed += await bucket.sweep_partial()
            except StorageError as exc:
                # An unreachable bucket must not stop the archiving to the others;
                # what it keeps unfinished is swept at the next start.
                log.warning("unfinished uploads not swept", destination=bucket.name, error=str(exc))
        orphans = await self.catalog.forget_orphans()
        visible = await self.catalog.visible_keys()
        for key in orphans:
            if key not in visible:
                await self.storage.delete(key)
        failed = await self.catalog.fail_running()
        if removed or orphans or failed:
            log.info(
                "archive recovered",
                partial_files=removed,
                orphan_objects=len(orphans),
                interrupted_captures=failed,
            )

    async def store_object(self, row: ObjectRow, sealed: bytes) -> ObjectRow:
        """Store sealed bytes under `row.key` (recorded, not yet visible)."""
        stored = replace(row, size=len(sealed), created_at=row.created_at or time.time())
        await self.catalog.add_object(stored)
        await self.storage.put(row.key, sealed)
        return stored

    async def publish_manifest(
        self,
        db: DatabaseRow,
        *,
        kind: str,
        objects: list[ObjectRow],
        recipients: Recipients,
        fields: dict[str, Any],
        progress: Progress,
    ) -> int:
        """Sign and store the manifest naming `objects`; they and `progress` commit together."""
        async with self.lock(db.addon_id):
            seq, prev = await self.catalog.next_manifest(db.addon_id)
            manifest = {
                "format": sealing.MANIFEST_FORMAT,
                "team_id": db.team_id,
                "addon_id": db.addon_id,
                "seq": seq,
                "prev": prev,
                "created_at": time.time(),
                "kind": kind,
                "recipients": list(recipients.fingerprints),
                "objects": [msgspec.to_builtins(object_info(o)) for o in objects],
                **fields,
            }
            canonical = sealing.canonical(manifest)
            signature = await self.sealer.sign(db.team_id, canonical)
            body = json.dumps({"manifest": manifest, **signature}, sort_keys=True).encode()
            key = f"{db.addon_id}/manifests/{seq:08d}"
            await self.storage.put(key, body)
            async with self.catalog.db.transaction() as conn:
                await self.catalog.commit_manifest(
                    conn,
                    addon_id=db.addon_id,
                    seq=seq,
                    digest=hashlib.sha256(canonical).hexdigest(),
                    key=key,
                    object_keys=[o.key for o in objects],
                )
                await progress(conn)
            return seq
