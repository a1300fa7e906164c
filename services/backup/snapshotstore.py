"""Platform snapshots as the backup storage holds them: their folders, states and checks.

    platform/snapshots/<id>/manifest.json, manifest.sig, <part>/<NNN>.age   a whole one
    platform/snapshots/<id>/state.json                                       one without a
                                                                              manifest (yet)

The layout inside a folder is libs/snapshot/manifest.py's. `state.json` (a `Record`) says
who is taking a snapshot that has no manifest yet, or why it failed; it is deleted once
the manifest is stored. The storage is the record: any backup instance lists and checks
from it. A running snapshot whose state.json was not refreshed for longer than one export
may take is shown failed (its taker died).
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import hashlib
import os
import re
import secrets
import time

import msgspec

from slipway.contracts import snapshot as sc
from slipway.libs.errors import NotFound
from slipway.libs.snapshot import manifest as mf
from slipway.services.backup.errors import StorageError
from slipway.services.backup.storage import LocalFolder, Mirrored, ObjectStore

PREFIX = mf.STORAGE_PREFIX.rstrip("/")
STATE = "state.json"
SNAPSHOT_ID = re.compile(r"^s\d{8}T\d{6}Z-[0-9a-f]{4}\Z")
CHECK_BYTES = 8 << 20  # read at a time when hashing a stored piece


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """`state.json`: a snapshot that has no manifest (yet), and who is taking it."""

    info: sc.SnapshotInfo
    taker: str
    updated_at: float


def new_id(now: float) -> str:
    """An id that sorts by time: `s20261203T101500Z-3f9a`."""
    return time.strftime("s%Y%m%dT%H%M%SZ", time.gmtime(now)) + f"-{secrets.token_hex(2)}"


def id_time(snapshot_id: str) -> float:
    """The POSIX time a snapshot id was made at."""
    return float(calendar.timegm(time.strptime(snapshot_id[1:17], "%Y%m%dT%H%M%S")))


async def time_after(latest: str) -> float:
    """Now, once a new id sorts after `latest` (ids tell seconds: wait for the next one)."""
    while True:
        now = time.time()
        if not latest or new_id(now)[:17] > latest[:17]:
            return now
        await asyncio.sleep(1.0 - now % 1.0)


def folder(snapshot_id: str) -> str:
    """A snapshot's folder in the storage."""
    return f"{PREFIX}/{snapshot_id}"


def check_id(snapshot_id: str) -> str:
    if not SNAPSHOT_ID.match(snapshot_id):
        raise NotFound(f"{snapshot_id[:40]!r} is not a snapshot id (s20261203T101500Z-3f9a)")
    return snapshot_id


class SnapshotStore:
    """The snapshots in one backup storage."""

    def __init__(self, storage: ObjectStore, host_id: str, stale_after: float) -> None:
        self.storage = storage
        self.host_id = host_id  # written as the taker of what this instance saves
        self.stale_after = stale_after

    def location(self, snapshot_id: str) -> str:
        return f"{self.storage.name}/{folder(snapshot_id)}"

    async def save(self, info: sc.SnapshotInfo) -> None:
        """Store (or refresh) the state of a snapshot that has no manifest."""
        record = Record(info=info, taker=self.host_id, updated_at=time.time())
        await self.storage.put(f"{folder(info.id)}/{STATE}", msgspec.json.encode(record))

    async def touch(self, snapshot_id: str) -> None:
        """Refresh a running snapshot's state: its taker is alive (long pulls)."""
        body = await self.storage.read(f"{folder(snapshot_id)}/{STATE}")
        await self.save(msgspec.json.decode(body, type=Record).info)

    async def drop_pieces(self, snapshot_id: str) -> None:
        """Delete everything of a snapshot but its state (a failed one keeps saying why)."""
        base = folder(snapshot_id)
        for key in await self.storage.keys(base):
            if key != f"{base}/{STATE}":
                await self.storage.delete(key)

    async def delete(self, snapshot_id: str) -> None:
        base = folder(snapshot_id)
        # The manifest first: a folder half deleted is never taken for a whole snapshot.
        await self.storage.delete(f"{base}/{mf.MANIFEST}")
        for key in await self.storage.keys(base):
            await self.storage.delete(key)
        await asyncio.to_thread(_prune, self.storage, base)

    async def manifest_bytes(self, snapshot_id: str) -> bytes:
        return await self.storage.read(f"{folder(snapshot_id)}/{mf.MANIFEST}")

    async def records(self) -> list[Record]:
        """The state of every snapshot that has one."""
        records = []
        for snapshot_id, keys in (await self.folders()).items():
            if f"{folder(snapshot_id)}/{STATE}" in keys:
                with contextlib.suppress(StorageError, msgspec.DecodeError):
                    body = await self.storage.read(f"{folder(snapshot_id)}/{STATE}")
                    records.append(msgspec.json.decode(body, type=Record))
        return records

    async def folders(self) -> dict[str, set[str]]:
        """Each snapshot id in the storage, with the keys under its folder."""
        found: dict[str, set[str]] = {}
        for key in await self.storage.keys(PREFIX):
            snapshot_id = key[len(PREFIX) + 1 :].split("/", 1)[0]
            if SNAPSHOT_ID.match(snapshot_id):
                found.setdefault(snapshot_id, set()).add(key)
        return found

    async def listing(self) -> list[sc.SnapshotInfo]:
        """Every snapshot in the storage, newest first, without the parts' pieces (`brief`)."""
        found = []
        for snapshot_id, keys in sorted((await self.folders()).items(), reverse=True):
            with contextlib.suppress(StorageError):
                found.append(brief(await self._info(snapshot_id, keys)))
        return found

    async def _info(self, snapshot_id: str, keys: set[str]) -> sc.SnapshotInfo:
        base = folder(snapshot_id)
        location = self.location(snapshot_id)
        if f"{base}/{mf.MANIFEST}" in keys:
            body = await self.storage.read(f"{base}/{mf.MANIFEST}")
            signer = ""
            with contextlib.suppress(StorageError, msgspec.DecodeError, msgspec.ValidationError):
                raw = await self.storage.read(f"{base}/{mf.SIGNATURE}")
                signer = msgspec.json.decode(raw, type=mf.Signature).public_key
            try:
                return completed(mf.decode(body), signer, location)
            except mf.SnapshotError as exc:
                return _broken(snapshot_id, location, str(exc))
        if f"{base}/{STATE}" in keys:
            record = msgspec.json.decode(await self.storage.read(f"{base}/{STATE}"), type=Record)
            info = record.info
            if info.state == "running" and time.time() - record.updated_at > self.stale_after:
                info = msgspec.structs.replace(
                    info,
                    state="failed",
                    error=f"interrupted: its taker ({record.taker}) stopped updating it",
                )
            return info
        return _broken(snapshot_id, location, "incomplete: pieces without a manifest")

    async def verify(
        self, snapshot_id: str, trusted: set[str] | None, problems: list[str]
    ) -> sc.SnapshotCheck:
        """Keyless checks: the manifest signed by one of `trusted`, every piece read back.

        `problems` may already hold lines (why the signer could not be checked); every
        missing, resized or altered piece adds one.
        """
        base = folder(check_id(snapshot_id))
        keys = (await self.folders()).get(snapshot_id)
        if not keys:
            raise NotFound(f"no snapshot {snapshot_id}")
        if f"{base}/{mf.MANIFEST}" not in keys:
            missing = f"{mf.MANIFEST}: missing (the snapshot failed or is still running)"
            return sc.SnapshotCheck(snapshot_id=snapshot_id, ok=False, problems=[missing])
        body = await self.storage.read(f"{base}/{mf.MANIFEST}")
        try:
            signature = await self.storage.read(f"{base}/{mf.SIGNATURE}")
        except StorageError:
            signature = b""
        try:
            manifest = mf.decode(body)
            mf.check_signature(body, signature, trusted)
        except mf.SnapshotError as exc:
            return sc.SnapshotCheck(snapshot_id=snapshot_id, ok=False, problems=[str(exc)])
        checked = 0
        for part in manifest.parts:
            for piece in part.pieces:
                name = mf.piece_path(part, piece)
                problem, size = await self._check_piece(f"{base}/{name}", piece)
                checked += size
                if problem:
                    problems.append(f"{name}: {problem}")
        return sc.SnapshotCheck(
            snapshot_id=snapshot_id,
            ok=not problems,
            problems=problems,
            pieces_checked=sum(len(p.pieces) for p in manifest.parts),
            bytes_checked=checked,
        )

    async def _check_piece(self, key: str, piece: sc.Piece) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        while True:
            try:
                block = await self.storage.read(key, size, CHECK_BYTES)
            except StorageError:
                return ("missing", 0) if size == 0 else ("unreadable", size)
            digest.update(block)
            size += len(block)
            if len(block) < CHECK_BYTES or size > piece.size:
                break
        if size != piece.size:
            return f"{size} bytes, the manifest says {piece.size} (truncated?)", size
        if digest.hexdigest() != piece.sha256:
            return "its SHA-256 differs from the manifest's (altered)", size
        return "", size


def completed(manifest: mf.Manifest, signer: str, location: str) -> sc.SnapshotInfo:
    """A whole snapshot as listed, from its manifest."""
    return sc.SnapshotInfo(
        id=manifest.id,
        state="completed",
        kind=manifest.kind,
        started_at=manifest.started_at,
        finished_at=manifest.finished_at,
        size=sum(p.size for part in manifest.parts for p in part.pieces),
        plain_bytes=sum(part.plain_bytes for part in manifest.parts),
        parts=manifest.parts,
        signer=signer,
        location=location,
        requested_by=manifest.requested_by,
    )


def brief(info: sc.SnapshotInfo) -> sc.SnapshotInfo:
    """The snapshot without each part's pieces and counts: a list must fit one message."""
    parts = [msgspec.structs.replace(p, pieces=[], counts={}) for p in info.parts]
    return msgspec.structs.replace(info, parts=parts)


def _broken(snapshot_id: str, location: str, error: str) -> sc.SnapshotInfo:
    return sc.SnapshotInfo(
        id=snapshot_id,
        state="failed",
        kind="manual",
        started_at="",
        location=location,
        error=error,
    )


def _prune(storage: ObjectStore, base: str) -> None:
    """Remove a deleted snapshot's empty folders from local destinations (one an hour adds up).

    Only under `base`, which nothing writes to any more: elsewhere a folder emptied by
    expiry may be about to receive an object.
    """
    stores = [storage.primary, *storage.copies] if isinstance(storage, Mirrored) else [storage]
    for store in stores:
        if not isinstance(store, LocalFolder):
            continue
        top = store.root / base
        for path, _, _ in sorted(os.walk(top), key=lambda found: -len(found[0])):
            with contextlib.suppress(OSError):  # not empty (a file appeared), or gone
                os.rmdir(path)
