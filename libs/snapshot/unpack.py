"""Unpacking a snapshot part's tar into a staging folder, refusing anything but files and folders.

A part's tar comes from a snapshot that was signed, but a signature says who made it, not
that what it holds is harmless: a restore runs as root, so the tar is read as hostile.
What `Staging.unpack` accepts, and nothing else:

- regular files and folders; a link of either kind, a device, a FIFO or a sparse file is
  refused, as is a member of any type this module does not know;
- relative names without `.`, `..` or empty components, whose first component is a plain
  folder name (`gateway`, `log-shipper`): every member belongs in a service's folder;
- each name once per part; a folder may be named again by a later part (two hosts' parts
  both hold `log-shipper/`), a file never;
- a member whose parent is a folder this unpacking made (named by a member, or made for
  one on the way down, as tar does); never one whose parent is a file;
- modes reduced to the owner's: 0700 for folders and executables, 0600 for other files,
  so no setuid, setgid or sticky bit, and nothing readable by others, comes out of a tar.

Everything is made relative to descriptors of folders this module made, with O_NOFOLLOW
and O_EXCL: nothing is written through a link, and nothing that existed is overwritten.
Memory stays bounded: files are copied a block at a time from the stream.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from slipway.libs.snapshot.manifest import SnapshotError

READ_BLOCK = 1024 * 1024
# A service's folder under SLIPWAY_HOME: no hidden names, nothing a shell would misread.
PLAIN_FOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]*")
# The master key is made by the restore from its sealed copy, never taken from a tar.
NEVER_IN_A_PART = frozenset({"keyring/master.key", "keyring/master.key.next"})
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Unpacked:
    """What one part put in the staging folder (names relative to it)."""

    files: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    bytes: int = 0


class ChunkStream(io.RawIOBase):
    """A readable stream over an iterator of byte chunks, refusing more than `limit` bytes."""

    def __init__(self, chunks: Iterator[bytes], *, limit: int, label: str) -> None:
        super().__init__()
        self._chunks = chunks
        self._pending = memoryview(b"")
        self._limit = limit
        self._label = label
        self.produced = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self.produced += len(chunk)
            if self.produced > self._limit:
                # A zstd bomb, or a manifest that lies: stop before the disk fills.
                raise SnapshotError(
                    f"{self._label}: its pieces hold more than the {self._limit} tar bytes"
                    " its manifest states"
                )
            self._pending = memoryview(chunk)
        size = min(len(target), len(self._pending))
        target[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


class Staging:
    """A fresh, empty folder that parts are unpacked into, one after another."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root_fd = os.open(root, _DIR_FLAGS)
        if os.listdir(self._root_fd):
            os.close(self._root_fd)
            raise SnapshotError(f"{root} is not empty: a restore unpacks into a fresh folder")
        # Every path made so far, whichever part made it: a later part may add to a folder.
        self._folders: set[str] = set()
        self._files: set[str] = set()

    def close(self) -> None:
        """Release the staging folder's descriptor (the folder itself stays)."""
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def unpack(self, label: str, stream: IO[bytes] | io.RawIOBase) -> Unpacked:
        """Unpack one part's tar from `stream`; SnapshotError names the member refused."""
        done = Unpacked()
        seen: set[str] = set()
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    name = member.name
                    check_name(label, name)
                    if name in seen:
                        raise refused(label, name, "it appears twice in the part")
                    seen.add(name)
                    if member.isdir():
                        self._folder(label, name, done)
                    elif member.isreg() and not member.issparse():
                        source = tar.extractfile(member)
                        assert source is not None  # a regular member always has content
                        with source:
                            self._file(label, member, source, done)
                    elif member.issym() or member.islnk():
                        kind = "symbolic" if member.issym() else "hard"
                        raise refused(label, name, f"it is a {kind} link (to {member.linkname!r})")
                    elif member.ischr() or member.isblk() or member.isfifo():
                        raise refused(label, name, "it is a device or a FIFO")
                    else:
                        raise refused(label, name, f"its type {member.type!r} is not a file")
        except tarfile.TarError as exc:
            raise SnapshotError(f"{label}: its tar is damaged ({exc})") from None
        _drain(label, stream)
        return done

    # ---- members ------------------------------------------------------------------------------

    def _folder(self, label: str, name: str, done: Unpacked) -> None:
        if name in self._folders:
            return  # made by an earlier part, or on the way down to a file of this one
        if name in self._files:
            raise refused(label, name, "another part restored it as a file")
        parent, leaf = self._parent(label, name, done)
        try:
            self._mkdir(label, name, parent, leaf, done)
        finally:
            _close(parent, self._root_fd)

    def _file(self, label: str, member: tarfile.TarInfo, source: IO[bytes], done: Unpacked) -> None:
        name = member.name
        if "/" not in name:
            raise refused(label, name, "a file outside any service's folder")
        if name in self._folders or name in self._files:
            raise refused(label, name, "another part restored it already")
        parent, leaf = self._parent(label, name, done)
        # The owner's bits only: 0700 keeps a git hook runnable, nothing else survives.
        mode = 0o700 if member.mode & 0o100 else 0o600
        try:
            fd = os.open(leaf, _NEW_FILE_FLAGS, mode, dir_fd=parent)
        except FileExistsError:
            raise refused(label, name, "it exists already in the staging folder") from None
        finally:
            _close(parent, self._root_fd)
        self._files.add(name)
        written = 0
        with os.fdopen(fd, "wb") as out:
            while block := source.read(READ_BLOCK):
                out.write(block)
                written += len(block)
            os.fchmod(out.fileno(), mode)  # the umask does not decide what a restore makes
            with contextlib.suppress(OverflowError, ValueError, OSError):
                os.utime(out.fileno(), (member.mtime, member.mtime))
        if written != member.size:
            raise refused(label, name, f"{written} bytes of {member.size}: the tar is cut short")
        done.files.append(name)
        done.bytes += written

    def _parent(self, label: str, name: str, done: Unpacked) -> tuple[int, str]:
        """A descriptor of `name`'s folder (made on the way if missing) and its last component."""
        *above, leaf = name.split("/")
        fd = self._root_fd
        path = ""
        try:
            for component in above:
                path = f"{path}/{component}" if path else component
                if path in self._files:
                    raise refused(label, name, f"its parent {path} is a file")
                if path not in self._folders:
                    self._mkdir(label, path, fd, component, done)
                opened = os.open(component, _DIR_FLAGS, dir_fd=fd)
                _close(fd, self._root_fd)
                fd = opened
        except BaseException:
            _close(fd, self._root_fd)
            raise
        return fd, leaf

    def _mkdir(self, label: str, path: str, parent: int, leaf: str, done: Unpacked) -> None:
        try:
            os.mkdir(leaf, 0o700, dir_fd=parent)
        except FileExistsError:
            # Only what this unpacking made may be there: anything else is not ours.
            raise refused(
                label, path, "it exists already and was not made by this restore"
            ) from None
        made = os.open(leaf, _DIR_FLAGS, dir_fd=parent)
        try:
            os.fchmod(made, 0o700)  # whatever the umask
        finally:
            os.close(made)
        self._folders.add(path)
        done.folders.append(path)


def check_name(label: str, name: str) -> None:
    """Refuse a member name that could land outside its service's folder."""
    if not name:
        raise refused(label, name, "an empty name")
    if name.startswith("/"):
        raise refused(label, name, "an absolute name")
    components = name.split("/")
    if any(part in ("", ".", "..") for part in components):
        raise refused(label, name, "a name with '..', '.' or an empty component")
    if not PLAIN_FOLDER.fullmatch(components[0]):
        raise refused(label, name, "its first component is not a plain folder name")
    if name in NEVER_IN_A_PART:
        raise refused(label, name, "the master key never travels in a snapshot in the clear")


def refused(label: str, name: str, why: str) -> SnapshotError:
    """The error for one refused member: which part, which member, why."""
    return SnapshotError(f"{label}: member {name!r} refused: {why}")


def _drain(label: str, stream: IO[bytes] | io.RawIOBase) -> None:
    # tarfile stops at the end-of-archive block; what follows must be its zero padding,
    # and reading it to the end checks every remaining piece too.
    while block := stream.read(READ_BLOCK):
        if block.count(0) != len(block):
            raise SnapshotError(f"{label}: data follows the end of its tar")


def _close(fd: int, keep: int) -> None:
    if fd != keep:
        with contextlib.suppress(OSError):
            os.close(fd)
