"""One service's state as sealed snapshot pieces: what it holds, written as one tar stream.

A service describes its state as `Sources`: SQLite databases, folders, single files and
generated files, each with the member name it has in the tar (the folder under
SLIPWAY_HOME it restores into: `gateway/gateway.db`, `gateway/repos/<id>.git/…`), and
`left_out` lines naming what does not come back. `export()` writes them as one tar
stream, cut into pieces of at most `piece_size` tar bytes, each `age(zstd(piece))`
sealed to the recovery recipients, as `NNN.age` in a folder of the caller's.

What it promises:

- a database is copied with SQLite's online backup API into a private temporary file
  first, so a database in use is exported as one consistent state, never torn;
- nothing is read through a link: every file and folder is opened relative to its
  parent's descriptor with O_NOFOLLOW, so a symlink planted in a folder (by a build, by
  a push) is skipped and named in `left_out`, as are devices, FIFOs and sockets;
- the order is deterministic (declaration order, names sorted within a folder);
- memory stays bounded by about one piece: the tar is cut as it is written;
- the blocking work runs in threads; locks and generated files are awaited in the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import io
import os
import sqlite3
import stat
import tarfile
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import zstandard

from slipway.contracts.snapshot import Piece
from slipway.libs.crypto import age

PIECE_SIZE = 64 * 1024 * 1024  # tar bytes per piece, before compression and sealing
ZSTD_LEVEL = 3
READ_BLOCK = 1024 * 1024
# Left-out lines named one by one before the rest are only counted.
MAX_NAMED_SKIPS = 50

# (path relative to the folder in POSIX form, is it a folder) -> export it (or descend)
Filter = Callable[[str, bool], bool]
Lock = Callable[[], AbstractAsyncContextManager[Any]]


class ExportError(Exception):
    """The state could not be exported; the message says what to fix."""


@dataclass(frozen=True)
class Database:
    """A SQLite database, exported through the online backup API as `member`."""

    path: Path
    member: str  # "gateway/gateway.db"; counts are keyed by its file name ("gateway.db:apps")


@dataclass(frozen=True)
class Folder:
    """A folder's regular files and subfolders, as members under `prefix`."""

    path: Path
    prefix: str  # "gateway/repos/x.git/": ends with "/"
    # The key its file count is added to ("<key>:files"); "" is the prefix without its "/".
    count: str = ""
    filter: Filter | None = None
    # Held while the folder is read (a git repository's push lock, the registry's GC lock).
    lock: Lock | None = None

    @property
    def count_key(self) -> str:
        return f"{self.count or self.prefix.rstrip('/')}:files"


@dataclass(frozen=True)
class File:
    """One regular file as `member`; a missing one is skipped, or fails with `required`."""

    path: Path
    member: str
    required: str = ""  # the message an export fails with when the file is missing


@dataclass(frozen=True)
class Generated:
    """A file made at export time (`produce` returns its bytes), as `member`."""

    member: str
    produce: Callable[[], Awaitable[bytes]]


@dataclass(frozen=True)
class Sources:
    """Everything one service instance exports, and what it does not."""

    databases: Sequence[Database] = ()
    files: Sequence[File] = ()
    folders: Sequence[Folder] = ()
    generated: Sequence[Generated] = ()
    left_out: Sequence[str] = ()


@dataclass
class Exported:
    """What `export()` wrote: the pieces in order, and what the tar holds."""

    pieces: list[Piece]
    plain_bytes: int
    counts: dict[str, int] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    schema: dict[str, int] = field(default_factory=dict)


async def export(
    sources: Sources,
    recipients: Sequence[bytes],
    out_dir: Path,
    *,
    piece_size: int = PIECE_SIZE,
    level: int = ZSTD_LEVEL,
) -> Exported:
    """Write `sources` as sealed pieces `000.age`, `001.age`, … into `out_dir` (made 0700).

    Raises ExportError when a required file is missing or a source cannot be read; the
    pieces already written stay in `out_dir` for the caller to delete.
    """
    if not recipients:
        raise ExportError("a snapshot needs at least one recovery recipient to be sealed to")
    if piece_size <= 0:
        raise ValueError("piece_size must be positive")
    await asyncio.to_thread(_private_folder, out_dir)
    pieces = _Pieces(out_dir, list(recipients), piece_size, level)
    result = Exported(pieces=pieces.written, plain_bytes=0, left_out=list(sources.left_out))
    skips = _Skips()
    try:
        with tarfile.open(fileobj=pieces, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for database in sources.databases:
                counts, version = await asyncio.to_thread(_add_database, tar, database, out_dir)
                if version is None:
                    result.left_out.append(
                        f"{database.member}: no database yet, nothing to restore"
                    )
                    continue
                result.counts.update(counts)
                result.schema[Path(database.member).name] = version
            for file in sources.files:
                await asyncio.to_thread(_add_file, tar, file, skips)
            for folder in sources.folders:
                async with folder.lock() if folder.lock else contextlib.nullcontext():
                    files = await asyncio.to_thread(_add_folder, tar, folder, skips)
                key = folder.count_key
                result.counts[key] = result.counts.get(key, 0) + files
            for generated in sources.generated:
                data = await generated.produce()
                await asyncio.to_thread(_add_bytes, tar, generated.member, data)
            await asyncio.to_thread(tar.close)  # the end-of-archive blocks, in the last piece
        await asyncio.to_thread(pieces.close)
    except BaseException:
        pieces.abandon()
        raise
    result.plain_bytes = pieces.plain_bytes
    result.left_out.extend(skips.lines())
    return result


# ---- the pieces -------------------------------------------------------------------------------


class _Pieces(io.RawIOBase):
    """A write-only stream that cuts what is written into sealed pieces as it goes."""

    def __init__(self, folder: Path, recipients: list[bytes], size: int, level: int) -> None:
        super().__init__()
        self.folder = folder
        self.recipients = recipients
        self.size = size
        self.compressor = zstandard.ZstdCompressor(level=level)
        self.buffer = bytearray()
        self.written: list[Piece] = []
        self.plain_bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.buffer += view
        self.plain_bytes += len(view)
        while len(self.buffer) >= self.size:
            piece = bytes(self.buffer[: self.size])
            del self.buffer[: self.size]
            self._seal(piece)
        return len(view)

    def close(self) -> None:
        if not self.closed and (self.buffer or not self.written):
            self._seal(bytes(self.buffer))
            self.buffer.clear()
        super().close()

    def abandon(self) -> None:
        """Drop what is buffered without sealing it (a failed export)."""
        self.buffer.clear()
        with contextlib.suppress(Exception):
            super().close()

    def _seal(self, plain: bytes) -> None:
        sealed = age.seal(self.compressor.compress(plain), self.recipients)
        name = f"{len(self.written):03d}.age"
        fd = os.open(self.folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(sealed)
            out.flush()
            os.fsync(out.fileno())
        self.written.append(
            Piece(name=name, size=len(sealed), sha256=hashlib.sha256(sealed).hexdigest())
        )


def _private_folder(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


# ---- members ----------------------------------------------------------------------------------


class _Skips:
    """What a folder walk did not export (links, devices), as left-out lines."""

    def __init__(self) -> None:
        self.named: list[str] = []
        self.more = 0

    def add(self, member: str, why: str) -> None:
        if len(self.named) < MAX_NAMED_SKIPS:
            self.named.append(f"{member}: {why}, not exported")
        else:
            self.more += 1

    def lines(self) -> list[str]:
        extra = [f"and {self.more} more links or special files, not exported"] if self.more else []
        return self.named + extra


def _info(member: str, st: os.stat_result) -> tarfile.TarInfo:
    # Owners are not kept: a restore makes every file its service's own.
    info = tarfile.TarInfo(member)
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = int(st.st_mtime)
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    else:
        info.size = st.st_size
    return info


def _add_fd(tar: tarfile.TarFile, member: str, fd: int, st: os.stat_result) -> None:
    """Add the regular file open on `fd` (its size as `fstat` gave it)."""
    with os.fdopen(os.dup(fd), "rb", buffering=READ_BLOCK) as source:
        tar.addfile(_info(member, st), source)


def _add_bytes(tar: tarfile.TarFile, member: str, data: bytes) -> None:
    info = tarfile.TarInfo(member)
    info.size = len(data)
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, file: File, skips: _Skips) -> None:
    try:
        fd = os.open(file.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        if file.required:
            raise ExportError(file.required) from None
        return
    except OSError as exc:
        raise ExportError(f"{file.path} cannot be read for {file.member}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            skips.add(file.member, "not a regular file")
            return
        _add_fd(tar, file.member, fd, st)
    finally:
        os.close(fd)


def _add_folder(tar: tarfile.TarFile, folder: Folder, skips: _Skips) -> int:
    """Add a folder's tree; the number of regular files added."""
    if not folder.prefix.endswith("/"):
        raise ValueError(f"a folder's prefix ends with '/': {folder.prefix!r}")
    try:
        root = os.open(folder.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            skips.add(folder.prefix.rstrip("/"), "a symbolic link or not a folder")
            return 0
        raise ExportError(f"{folder.path} cannot be read: {exc.strerror}") from None
    try:
        return _walk(tar, root, "", folder, skips)
    finally:
        os.close(root)


def _walk(tar: tarfile.TarFile, dir_fd: int, rel: str, folder: Folder, skips: _Skips) -> int:
    files = 0
    for name in sorted(os.listdir(dir_fd)):
        path = f"{rel}{name}"
        member = f"{folder.prefix}{path}"
        try:
            kind = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            continue  # removed while we looked (a finished upload, a temporary file)
        if not (stat.S_ISREG(kind) or stat.S_ISDIR(kind) or stat.S_ISLNK(kind)):
            # Opening a FIFO or a device could block or act on hardware: never opened.
            skips.add(member, "a device, FIFO or socket")
            continue
        if folder.filter is not None and not folder.filter(path, stat.S_ISDIR(kind)):
            continue
        # The open itself refuses links (O_NOFOLLOW), so a file swapped for a link after the
        # stat above is refused too; O_NONBLOCK keeps a swapped-in FIFO from blocking.
        try:
            fd = os.open(
                name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
            )
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                skips.add(member, "a symbolic link")
                continue
            raise ExportError(f"{folder.path / path} cannot be read: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                tar.addfile(_info(f"{member}/", st))
                files += _walk(tar, fd, f"{path}/", folder, skips)
            elif stat.S_ISREG(st.st_mode):
                _add_fd(tar, member, fd, st)
                files += 1
            else:
                skips.add(member, "not a regular file or folder")
        finally:
            os.close(fd)
    return files


# ---- databases --------------------------------------------------------------------------------


def _add_database(
    tar: tarfile.TarFile, database: Database, scratch: Path
) -> tuple[dict[str, int], int | None]:
    """Copy, count and add one database; (counts, user_version), or ({}, None) if absent."""
    if not database.path.is_file():
        return {}, None
    copy = scratch / f".{Path(database.member).name}.copy"
    _remove_copy(copy)
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        # mode=rw: never create a database that vanished between the check and here.
        source = sqlite3.connect(f"file:{quote(str(database.path))}?mode=rw", uri=True)
        try:
            target = sqlite3.connect(copy)
            try:
                source.backup(target)  # every page in one step: one consistent state
                counts, version = _measure(target, Path(database.member).name)
                # A copy that needs no -wal beside it on restore.
                target.execute("PRAGMA journal_mode=DELETE")
            finally:
                target.close()
        finally:
            source.close()
        fd = os.open(copy, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            _add_fd(tar, database.member, fd, st)
        finally:
            os.close(fd)
    except sqlite3.Error as exc:
        raise ExportError(f"{database.path} could not be copied: {exc}") from None
    finally:
        _remove_copy(copy)
    return counts, version


def _measure(conn: sqlite3.Connection, name: str) -> tuple[dict[str, int], int]:
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
            " AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    counts: dict[str, int] = {}
    for table in tables:
        quoted = table.replace('"', '""')
        # A table name from sqlite_master, quoted as an identifier: no outside input.
        (rows,) = conn.execute(f'SELECT COUNT(*) FROM "{quoted}"').fetchone()  # noqa: S608
        counts[f"{name}:{table}"] = int(rows)
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    return counts, int(version)


def _remove_copy(copy: Path) -> None:
    for path in (copy, copy.with_name(copy.name + "-wal"), copy.with_name(copy.name + "-shm")):
        path.unlink(missing_ok=True)
