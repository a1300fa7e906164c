"""The source of a build: fetched over HTTP, checked, and unpacked without trusting it.

A tarball is rejected, with a reason the customer can act on, when it is larger
than the limit (downloaded or unpacked), does not match its `SHA256:<hex>`
checksum, or holds a member that would land outside the build folder: an
absolute path, a `..` component, a link whose target leaves the folder, or a
device or FIFO.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tarfile
from pathlib import Path

import aiohttp

from slipway.services.builder.errors import SourceRejected

_CHUNK = 64 * 1024


async def fetch(
    url: str, dest: Path, *, checksum: str | None, max_bytes: int, timeout: float
) -> int:
    """Download `url` to `dest` (at most `max_bytes`), verify `checksum`; return the size."""
    digest = hashlib.sha256()
    size = 0
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    try:
        async with (
            aiohttp.ClientSession(timeout=client_timeout) as session,
            session.get(url) as response,
        ):
            if response.status != 200:
                raise SourceRejected(f"fetching the source failed: HTTP {response.status}")
            with dest.open("wb") as out:
                async for chunk in response.content.iter_chunked(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise SourceRejected(
                            f"source is larger than the limit of {max_bytes} bytes"
                        )
                    digest.update(chunk)
                    out.write(chunk)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise SourceRejected(f"fetching the source failed: {exc or type(exc).__name__}") from None
    if checksum is not None:
        _verify(checksum, digest.hexdigest())
    return size


def _verify(checksum: str, actual: str) -> None:
    kind, _, expected = checksum.partition(":")
    if kind.upper() != "SHA256" or not expected:
        raise SourceRejected(f"unsupported checksum {checksum!r}: expected SHA256:<hex>")
    if expected.lower() != actual:
        raise SourceRejected(f"source checksum mismatch: expected {expected.lower()}, got {actual}")


def extract(archive: Path, dest: Path, *, max_bytes: int) -> None:
    """Unpack a gzipped tarball into `dest` after checking every member; see the module doc."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            check_members(members, max_bytes=max_bytes)
            # The "data" filter repeats the checks above and also drops modes that a
            # source has no business carrying (setuid, group/world-writable).
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, tarfile.FilterError):
            raise SourceRejected(f"source rejected: {exc}") from None
        raise SourceRejected(f"source is not a readable gzipped tarball: {exc}") from None
    _hoist_single_folder(dest)


def check_members(members: list[tarfile.TarInfo], *, max_bytes: int) -> None:
    """Raise SourceRejected for the first member that could escape or overflow the build dir."""
    total = 0
    for member in members:
        name = member.name
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if name.startswith("/") or os.path.isabs(name):
            raise SourceRejected(f"source rejected: {name!r} is an absolute path")
        if ".." in parts:
            raise SourceRejected(f"source rejected: {name!r} leaves the source folder (..)")
        if member.isdev() or member.isfifo():
            raise SourceRejected(f"source rejected: {name!r} is a device or FIFO")
        if member.issym() or member.islnk():
            _check_link(member, parts)
        total += member.size
        if total > max_bytes:
            raise SourceRejected(f"source unpacks to more than the limit of {max_bytes} bytes")


def _check_link(member: tarfile.TarInfo, parts: list[str]) -> None:
    target = member.linkname
    if target.startswith("/"):
        raise SourceRejected(
            f"source rejected: link {member.name!r} points outside the source ({target!r})"
        )
    # A symlink's target is relative to its own folder, a hard link's to the archive root.
    base = "/".join(parts[:-1]) if member.issym() else ""
    resolved = posixpath.normpath(posixpath.join("/root", base, target))
    if resolved != "/root" and not resolved.startswith("/root/"):
        raise SourceRejected(
            f"source rejected: link {member.name!r} points outside the source ({target!r})"
        )


def _hoist_single_folder(dest: Path) -> None:
    # `git archive --prefix` and GitHub tarballs wrap everything in one folder.
    entries = list(dest.iterdir())
    if len(entries) != 1 or not entries[0].is_dir() or entries[0].is_symlink():
        return
    inner = entries[0]
    if (inner / inner.name).exists():
        return
    for child in list(inner.iterdir()):
        shutil.move(str(child), dest / child.name)
    inner.rmdir()
