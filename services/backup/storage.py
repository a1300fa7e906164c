"""Where sealed objects are kept: one small interface, a local folder by default.

Everything stored is already sealed (age) or public (signed manifests), so a
destination needs no trust beyond keeping bytes: a local disk, a mounted off-site
folder (`SLIPWAY_BACKUP_COPY_TO`), later an S3-compatible bucket behind the same
four calls. A `put` is atomic and durable: a reader sees the whole object or none,
and a crash (kill -9) leaves at most a temporary file that `put` of the same key
replaces and `sweep_partial` removes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import structlog

from slipway.services.backup.errors import StorageError

log = structlog.get_logger("slipway.backup.storage")

# Keys are made by the backup service from ids, numbers and hex: nothing else is accepted,
# so no key can climb out of its destination.
KEY = re.compile(r"^[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*\Z")
# A platform snapshot's files keep the names of its layout (libs/snapshot/manifest.py), so
# its folder can be copied out and restored as it is: these names and no others.
SNAPSHOT_KEY = re.compile(
    r"^platform/snapshots/s[0-9]{8}T[0-9]{6}Z-[0-9a-f]{4}/"
    r"(?:manifest\.json|manifest\.sig|state\.json"
    r"|[a-z][a-z-]*(?:@[A-Za-z0-9_][A-Za-z0-9_.-]{0,62})?/[0-9]{3,6}\.age)\Z"
)
PARTIAL = ".partial"


def check_key(key: str) -> str:
    if not (KEY.match(key) or SNAPSHOT_KEY.match(key)) or len(key) > 400:
        raise StorageError(f"refusing the object key {key[:80]!r}")
    return key


class ObjectStore(Protocol):
    """A destination for objects."""

    name: str

    async def put(self, key: str, data: bytes) -> None: ...

    async def read(self, key: str, offset: int = 0, length: int = -1) -> bytes: ...

    async def delete(self, key: str) -> None: ...

    async def keys(self, prefix: str) -> list[str]: ...


class LocalFolder:
    """Objects as files under one folder (0700), written to a temporary name then renamed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = str(root)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, self._path(key), data)

    @staticmethod
    def _put(path: Path, data: bytes) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = path.with_name(path.name + PARTIAL)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(partial, flags, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, path)
        # The rename is durable once the folder is: fsync it too.
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def read(self, key: str, offset: int = 0, length: int = -1) -> bytes:
        return await asyncio.to_thread(self._read, self._path(key), offset, length)

    @staticmethod
    def _read(path: Path, offset: int, length: int) -> bytes:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise StorageError(f"the object {path.name} is missing from storage") from None
        with os.fdopen(fd, "rb") as handle:
            handle.seek(offset)
            return handle.read() if length < 0 else handle.read(length)

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await asyncio.to_thread(_unlink_quietly, path)

    async def keys(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self._keys, check_key(prefix))

    def _keys(self, prefix: str) -> list[str]:
        base = self.root / prefix
        found: list[str] = []
        for folder, _, files in os.walk(base):
            for name in files:
                if not name.endswith(PARTIAL):
                    found.append(str(Path(folder, name).relative_to(self.root)))
        return sorted(found)

    def sweep_partial(self) -> int:
        """Remove temporary files a crash left behind; how many."""
        removed = 0
        for folder, _, files in os.walk(self.root):
            for name in files:
                if name.endswith(PARTIAL):
                    _unlink_quietly(Path(folder, name))
                    removed += 1
        return removed


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class Mirrored:
    """The primary destination plus copies: a put lands everywhere or fails (and is retried)."""

    def __init__(self, primary: ObjectStore, copies: Sequence[ObjectStore] = ()) -> None:
        self.primary = primary
        self.copies = tuple(copies)
        self.name = primary.name

    async def put(self, key: str, data: bytes) -> None:
        await self.primary.put(key, data)
        for copy in self.copies:
            await copy.put(key, data)

    async def read(self, key: str, offset: int = 0, length: int = -1) -> bytes:
        try:
            return await self.primary.read(key, offset, length)
        except StorageError:
            # The primary lost it: a copy still serves restores.
            for copy in self.copies:
                try:
                    return await copy.read(key, offset, length)
                except StorageError:
                    continue
            raise

    async def delete(self, key: str) -> None:
        for store in (self.primary, *self.copies):
            await store.delete(key)

    async def keys(self, prefix: str) -> list[str]:
        return await self.primary.keys(prefix)
