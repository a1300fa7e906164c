"""A streaming pass over a source archive that refuses bombs before anything is unpacked.

`scan` reads the archive once, as a stream, writing nothing, and raises
`SourceRejected` at the first of:

- more than `max_entries` entries (a tar of a million empty files);
- member sizes adding up to more than `max_bytes` (refused at the header, before
  its data is even decompressed);
- more than `max_bytes` decompressed in all (headers and padding included), or a
  single read asking for more than what is left: the counter stops a bomb while
  it inflates, not after;
- a decompressed/compressed ratio above `max_ratio` once past `ratio_floor`
  bytes (a small upload that inflates into gigabytes);
- a pax or GNU long-name header over `MAX_META_BYTES`: tarfile reads those
  into memory whole, so their size is checked from the header first.

Only then does `source.extract` unpack, reading the same, now known bounded, file.
"""

from __future__ import annotations

import bz2
import copy
import gzip
import lzma
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from slipway.services.builder.errors import SourceRejected

MAX_ENTRIES = 100_000
MAX_RATIO = 100.0
RATIO_FLOOR = 16 * 1024 * 1024
MAX_META_BYTES = 1024 * 1024
# A tar member costs at least one 512-byte header and pads its data to 512 bytes.
_BLOCK = 512

_META_TYPES = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)


@dataclass(frozen=True)
class Limits:
    """What one source may unpack to."""

    max_bytes: int
    max_entries: int = MAX_ENTRIES
    max_ratio: float = MAX_RATIO
    ratio_floor: int = RATIO_FLOOR

    @property
    def max_stream_bytes(self) -> int:
        """Decompressed bytes allowed: the members plus a header and padding for each."""
        return self.max_bytes + 3 * _BLOCK * (self.max_entries + 2)


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class _Counted:
    """The compressed file, counting what the decompressor took from it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        return data


class _Bounded:
    """The decompressed stream, refusing to go past the limits while it inflates."""

    def __init__(self, plain: _Readable, compressed: _Counted, limits: Limits) -> None:
        self.plain = plain
        self.compressed = compressed
        self.limits = limits
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        # Never ask the decompressor for more than one byte past the limit: a bomb is
        # stopped while it inflates, and no single read allocates past the limit either.
        left = self.limits.max_stream_bytes - self.count
        data = self.plain.read(left + 1 if size < 0 else min(size, left + 1))
        self.count += len(data)
        if self.count > self.limits.max_stream_bytes:
            raise SourceRejected(_too_large(self.limits.max_bytes))
        self._check_ratio()
        return data

    def _check_ratio(self) -> None:
        limits = self.limits
        if self.count < limits.ratio_floor:
            return
        if self.count > limits.max_ratio * max(self.compressed.count, 1):
            raise SourceRejected(
                f"source rejected: it inflates more than {limits.max_ratio:g} times its"
                " compressed size (a compression bomb?); upload the files uncompressed"
                " or leave generated data out of the source"
            )


class _CheckedInfo(tarfile.TarInfo):
    """A TarInfo whose in-memory headers (pax, GNU long names) are size-checked first."""

    def _proc_member(self, tarfile: tarfile.TarFile) -> Any:
        if self.type in _META_TYPES and self.size > MAX_META_BYTES:
            raise SourceRejected(
                f"source rejected: an extended tar header of {self.size} bytes is over the"
                f" limit of {MAX_META_BYTES}; make the archive with plain `tar` or `git archive`"
            )
        return super()._proc_member(tarfile)  # type: ignore[misc]


def scan(archive: Path, limits: Limits) -> int:
    """Stream through `archive` without writing; the entry count, or SourceRejected."""
    with archive.open("rb") as raw:
        compressed = _Counted(raw)
        plain = _decompressed(compressed, _magic(raw))
        try:
            return _walk(_Bounded(plain, compressed, limits), limits)
        finally:
            plain.close()


def _walk(stream: _Bounded, limits: Limits) -> int:
    entries = 0
    declared = 0
    # Stream mode ("r|"): headers are read in order and data skipped by reading through
    # it, so every byte passes the counters and nothing seeks back.
    with tarfile.open(fileobj=stream, mode="r|", tarinfo=_CheckedInfo) as tar:  # type: ignore[call-overload]
        for member in tar:
            entries += 1
            if entries > limits.max_entries:
                raise SourceRejected(
                    f"source rejected: it holds more than {limits.max_entries} files and"
                    " folders; leave dependencies and build output out of the source"
                )
            declared += member.size
            if declared > limits.max_bytes:
                raise SourceRejected(_too_large(limits.max_bytes))
    return entries


def _too_large(limit: int) -> str:
    return (
        f"source unpacks to more than the limit of {limit} bytes; leave large generated"
        " files out of it (.slugignore, .gitignore)"
    )


def _magic(raw: IO[bytes]) -> bytes:
    head = raw.read(6)
    raw.seek(0)
    return head


def _decompressed(compressed: _Counted, magic: bytes) -> _Readable:
    source: Any = compressed  # the decompressors only ever call read()
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=source, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(source, mode="rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(source, mode="rb")
    return _Plain(compressed)


class _Plain:
    """An uncompressed tar, read as it is (its ratio is 1)."""

    def __init__(self, compressed: _Counted) -> None:
        self.compressed = compressed

    def read(self, size: int = -1) -> bytes:
        return self.compressed.read(size)

    def close(self) -> None:
        return None


# Pythons with extraction filters (3.11.4+) warn when none is named, and 3.14 applies
# "data" by default; the judging is done here (`_judged`) on every Python, so the standard
# library is told to apply none of its own. Debian's 3.11.2 has no such argument.
_OWN_FILTER: dict[str, Any] = (
    {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
)


def unpack(tar: tarfile.TarFile, members: list[tarfile.TarInfo], dest: Path) -> None:
    """Unpack `members` of `tar` into `dest`, judging each where it lands, as it lands.

    The same rules as the standard library's "data" filter, written out so that they hold
    on a Python without it: what a member writes and where a link leads are resolved on
    disk just before it is unpacked (links unpacked earlier count), so nothing is written
    or linked outside `dest`; ownership is the builder's, never the archive's; no setuid,
    setgid, sticky or group/world-write bit survives. Folders keep the mode they are made
    with (owner only): the archive's folder modes are not applied, as with "data".
    """
    root = os.path.realpath(dest)
    for member in members:
        judged = _judged(member, root)
        tar.extract(judged, root, set_attrs=not judged.isdir(), numeric_owner=True, **_OWN_FILTER)


def _judged(member: tarfile.TarInfo, root: str) -> tarfile.TarInfo:
    """A copy of `member` that is safe to unpack under `root` now, or SourceRejected."""
    name = member.name
    path = os.path.join(root, name)
    _inside(root, path, f"{name!r} would be written outside the source")
    if not member.isdir() and os.path.isdir(path) and not os.path.islink(path):
        # tarfile cannot put a file or link there; for a link it would then fall back to
        # unpacking the link's target member there, with that member's own mode and owner.
        raise SourceRejected(f"source rejected: {name!r} is both a folder and a file or link")
    if member.issym() or member.islnk():
        # A symlink's target is relative to its own folder, a hard link's to the root.
        base = os.path.dirname(name) if member.issym() else ""
        if os.path.isabs(member.linkname):
            raise SourceRejected(f"source rejected: link {name!r} points to an absolute path")
        target = os.path.join(root, base, member.linkname)
        _inside(root, target, f"link {name!r} points outside the source ({member.linkname!r})")
        if member.islnk() and not os.path.isfile(target):
            # Else tarfile unpacks the target member there itself, with its own mode and owner.
            raise SourceRejected(
                f"source rejected: hard link {name!r} names no file unpacked before it"
            )
    elif not (member.isreg() or member.isdir()):
        raise SourceRejected(f"source rejected: {name!r} is a device, FIFO or other special file")
    judged = copy.copy(member)
    # Owned by whoever unpacks (numeric ids, so the archive's user names are not looked up).
    judged.uid, judged.gid, judged.uname, judged.gname = os.geteuid(), os.getegid(), "", ""
    mode = member.mode & 0o755  # no setuid/setgid/sticky, nothing writable by others
    if member.isreg() or member.islnk():
        # Executable only if the owner may execute it; always readable and writable by them.
        mode = (mode if mode & 0o100 else mode & ~0o111) | 0o600
    judged.mode = mode
    return judged


def _inside(root: str, path: str, problem: str) -> None:
    # realpath follows the links already on disk: that is where a write or a link lands.
    landed = os.path.realpath(path)
    if landed != root and not landed.startswith(root + os.sep):
        raise SourceRejected(f"source rejected: {problem}")
