"""Reading and writing files below a folder that untrusted code could have written.

A build container runs customer code as an unprivileged user in folders the
host later reads and writes as root (`out/`, `app/`, buildpack folders). That
code can plant a symbolic link (`out/failure -> /etc/shadow`), a FIFO (the
reader hangs), a device, or a huge file. A plain `path.read_text()` as root
follows the link; a `mkdir` + write through a linked folder writes anywhere on
the host.

Everything here walks from a trusted root folder one component at a time,
through directory file descriptors (`openat` semantics), with `O_NOFOLLOW` at
every step, and checks with `fstat` what was opened:

    read_regular(root, "out/failure", max_bytes=4096)      bytes, or SafePathError
    read_optional(root, "out/release-0.yml", max_bytes=n)   the same, None when missing
    write_regular(root, ".profile.d/x.sh", data, mode=0o644, uid=10000)
    is_regular(root, "Procfile")                            False if missing; error if a link
    for entry in walk(root): ...                            every entry, links not followed

`root` itself is trusted: it is a folder the caller made (its own parents are
not writable by the untrusted side). Relative paths are given with `/` and may
not contain `..` or be absolute. A link or a special file anywhere on the way
is a `SafePathError` whose message names the path and what it is, for the
customer: "/slipway/out/failure is a symbolic link, not a regular file: ..."
(`label` is put before the relative path in messages: where the customer sees it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from slipway.libs.errors import SlipwayError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO for reading must not wait for a writer that never comes.
_LEAF_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_LEAF_WRITE = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_CHUNK = 64 * 1024
# Deeper trees are refused rather than walked: each level holds a file descriptor.
MAX_DEPTH = 256


class SafePathError(SlipwayError):
    """A path below an untrusted folder is a link, a special file, too big, or malformed."""

    code = "unsafe_path"


def describe(mode: int) -> str:
    """What kind of file `mode` is, in words a customer understands."""
    kinds = (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISREG, "a regular file"),
    )
    return next((words for check, words in kinds if check(mode)), "a special file")


def read_regular(root: Path, rel: str, *, max_bytes: int, label: str = "") -> bytes:
    """The content of the regular file `root/rel`, at most `max_bytes`, following no link.

    Raises FileNotFoundError when it does not exist and SafePathError when any
    component is a link, the leaf is not a regular file, or it is over `max_bytes`.
    """
    parts = _split(rel)
    shown = label + rel
    with _parent_fd(root, parts, label, create=False) as parent:
        fd = _open_leaf(parent, parts[-1], shown, _LEAF_READ)
        try:
            _require_regular(fd, shown)
            return _read_bounded(fd, shown, max_bytes)
        finally:
            os.close(fd)


def open_regular(root: Path, rel: str, *, label: str = "") -> BinaryIO:
    """The regular file `root/rel` opened for reading, following no link (the caller closes it).

    For files too big to read whole (an archive a Dockerfile ADDs); the same errors as
    `read_regular`, without its size bound: the caller bounds what it reads.
    """
    parts = _split(rel)
    shown = label + rel
    with _parent_fd(root, parts, label, create=False) as parent:
        fd = _open_leaf(parent, parts[-1], shown, _LEAF_READ)
    try:
        _require_regular(fd, shown)
        os.set_blocking(fd, True)  # O_NONBLOCK only kept a FIFO from hanging the open
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def create_nofollow(path: Path) -> BinaryIO:
    """A fresh file at `path` (a trusted folder's scratch), read-write, refusing a link there.

    For the builder's own work files: nothing customer-made should be beside them, and a
    link planted there anyway is an error rather than a write somewhere else.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.fdopen(os.open(path, flags, 0o600), "w+b")


def read_optional(root: Path, rel: str, *, max_bytes: int, label: str = "") -> bytes | None:
    """Like `read_regular`, but None when `root/rel` (or a folder on the way) is missing."""
    try:
        return read_regular(root, rel, max_bytes=max_bytes, label=label)
    except FileNotFoundError:
        return None


def is_regular(root: Path, rel: str, *, label: str = "") -> bool:
    """Whether `root/rel` is a regular file: False if missing, SafePathError if not regular."""
    parts = _split(rel)
    try:
        with _parent_fd(root, parts, label, create=False) as parent:
            info = _lstat_at(parent, parts[-1])
    except FileNotFoundError:
        return False
    if info is None:
        return False
    if stat.S_ISREG(info.st_mode):
        return True
    raise SafePathError(_not_regular(label + rel, info.st_mode))


def write_regular(
    root: Path,
    rel: str,
    data: bytes,
    *,
    mode: int = 0o644,
    uid: int | None = None,
    dir_mode: int = 0o755,
    label: str = "",
) -> None:
    """Create or replace the regular file `root/rel` with `data`, following no link.

    Missing folders are created (`mkdirat`, owned by `uid` if given); an existing
    link, special file or multiply-linked file at any step is a SafePathError,
    never written through.
    """
    parts = _split(rel)
    shown = label + rel
    with _parent_fd(root, parts, label, create=True, uid=uid, dir_mode=dir_mode) as parent:
        fd = _open_leaf(parent, parts[-1], shown, _LEAF_WRITE, mode)
        try:
            info = _require_regular(fd, shown)
            if info.st_nlink > 1:
                # Another name for the same file could be anywhere in the folder.
                raise SafePathError(f"{shown} has other hard links: Slipway does not write to it")
            os.ftruncate(fd, 0)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            if uid is not None:
                os.fchown(fd, uid, uid)
        finally:
            os.close(fd)


def _split(rel: str) -> list[str]:
    parts = [part for part in rel.split("/") if part not in ("", ".")]
    if rel.startswith("/") or not parts or ".." in parts:
        raise SafePathError(f"{rel!r} is not a relative path inside the folder")
    return parts


@contextlib.contextmanager
def _parent_fd(
    root: Path,
    parts: list[str],
    label: str,
    *,
    create: bool,
    uid: int | None = None,
    dir_mode: int = 0o755,
) -> Iterator[int]:
    """An fd of the folder holding the leaf of `parts`, reached without following links."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for depth, name in enumerate(parts[:-1], start=1):
            shown = label + "/".join(parts[:depth])
            if create:
                _mkdir_at(fd, name, uid, dir_mode)
            child = _open_dir_at(fd, name, shown)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _mkdir_at(parent: int, name: str, uid: int | None, dir_mode: int) -> None:
    try:
        os.mkdir(name, dir_mode, dir_fd=parent)
    except FileExistsError:
        return  # whatever is there is checked when it is opened
    if uid is not None:
        os.chown(name, uid, uid, dir_fd=parent, follow_symlinks=False)


def _open_dir_at(parent: int, name: str, shown: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            info = _lstat_at(parent, name)
            kind = describe(info.st_mode) if info is not None else "not a folder"
            raise SafePathError(
                f"{shown} is {kind}, not a folder: Slipway does not follow it"
            ) from None
        raise


def _open_leaf(parent: int, name: str, rel: str, flags: int, mode: int = 0o600) -> int:
    try:
        return os.open(name, flags, mode, dir_fd=parent)
    except OSError as exc:
        # ELOOP: a link (O_NOFOLLOW); ENXIO: a FIFO with no reader or a socket opened for
        # writing; EISDIR: a folder; ENODEV/EOPNOTSUPP/ETXTBSY: special files.
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.ENODEV, errno.EOPNOTSUPP):
            info = _lstat_at(parent, name)
            if info is not None:
                raise SafePathError(_not_regular(rel, info.st_mode)) from None
        raise


def _lstat_at(parent: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _require_regular(fd: int, rel: str) -> os.stat_result:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise SafePathError(_not_regular(rel, info.st_mode))
    return info


def _not_regular(rel: str, mode: int) -> str:
    return f"{rel} is {describe(mode)}, not a regular file: Slipway does not follow or read it"


def _read_bounded(fd: int, rel: str, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, min(_CHUNK, max_bytes + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise SafePathError(f"{rel} is larger than {max_bytes} bytes: Slipway does not read it")
    return b"".join(chunks)


@dataclass(frozen=True)
class Entry:
    """One thing found by `walk`: its path below the root, its `lstat`, where it is."""

    rel: str
    info: os.stat_result
    parent: int  # fd of its folder; valid only until the walk moves on
    name: str

    def open_regular(self) -> int:
        """An fd of this entry, which must still be a regular file (no link followed)."""
        fd = _open_leaf(self.parent, self.name, self.rel, _LEAF_READ)
        try:
            _require_regular(fd, self.rel)
        except BaseException:
            os.close(fd)
            raise
        return fd


def walk(root: Path) -> Iterator[Entry]:
    """Every entry below `root`, parents before children, sorted; links are listed, not followed."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        yield from _walk_fd(fd, "", 1)
    finally:
        os.close(fd)


def _walk_fd(fd: int, prefix: str, depth: int) -> Iterator[Entry]:
    if depth > MAX_DEPTH:
        raise SafePathError(f"{prefix.rstrip('/')} is nested more than {MAX_DEPTH} folders deep")
    for name in sorted(os.listdir(fd)):
        info = _lstat_at(fd, name)
        if info is None:
            continue
        rel = prefix + name
        yield Entry(rel, info, fd, name)
        if stat.S_ISDIR(info.st_mode):
            child = _open_dir_at(fd, name, rel)
            try:
                yield from _walk_fd(child, rel + "/", depth + 1)
            finally:
                os.close(child)
