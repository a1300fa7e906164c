"""The source of a build: fetched over HTTP, checked, and unpacked without trusting it.

A tarball is rejected, with a reason the customer can act on, when it is larger
than the limit (downloaded or unpacked), does not match its `SHA256:<hex>`
checksum, or holds a member that would land outside the build folder: an
absolute path, a `..` component, a link whose target leaves the folder, or a
device or FIFO.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
import posixpath
import shutil
import socket
import stat
import tarfile
from pathlib import Path

import yarl

from slipway.contracts.builder import SourceBlob
from slipway.libs import egress
from slipway.services.builder import untar
from slipway.services.builder.errors import SourceRejected
from slipway.services.builder.settings import BuilderSettings

_CHUNK = 64 * 1024


async def fetch(source: SourceBlob, dest: Path, settings: BuilderSettings) -> int:
    """Download `source` to `dest` within the settings' limits, verify its checksum; its size.

    A customer's URL passes the egress guard (libs/egress.py): checked address only, every
    redirect re-checked. The gateway's own signed get_url (`source.platform`) is fetched
    from the gateway only, with no redirect, since the guard refuses the platform's ports.
    """
    try:
        if source.platform:
            size = await _from_gateway(source.url, dest, settings)
        else:
            size = await egress.fetch_to_file(
                source.url,
                dest,
                policy=egress.policy_for(settings.egress_allow, settings.egress_deny),
                max_bytes=settings.source_max_bytes,
                timeout=settings.fetch_timeout,
            )
    except egress.EgressRefused as exc:
        raise SourceRejected(f"the source URL is refused: {exc.message}") from None
    except egress.FetchFailed as exc:
        if exc.details.get("reason") == "too_large":
            raise SourceRejected(
                f"source is larger than the limit of {settings.source_max_bytes} bytes"
            ) from None
        raise SourceRejected(f"fetching the source failed: {exc.message}") from None
    if source.checksum is not None:
        _verify(source.checksum, await asyncio.to_thread(_sha256, dest))
    return size


async def _from_gateway(url: str, dest: Path, settings: BuilderSettings) -> int:
    """GET a gateway get_url: only from the gateway's address, only /sources/, no redirect."""
    destination = await _gateway_destination(url, settings.gateway_url)
    return await egress.fetch_once_to_file(
        destination, dest, max_bytes=settings.source_max_bytes, timeout=settings.fetch_timeout
    )


async def _gateway_destination(url: str, gateway_url: str) -> egress.Destination:
    wrong = SourceRejected(
        "the build names a platform source that is not on the gateway: push again, or "
        "upload the source with POST /sources"
    )
    parsed = yarl.URL(url)
    if not parsed.path.startswith("/sources/") or parsed.host is None or parsed.port is None:
        raise wrong
    if gateway_url:
        gateway = yarl.URL(gateway_url)
        if parsed.origin() != gateway.origin():
            raise wrong
        addresses = await _addresses(parsed.host, parsed.port)
    else:
        # Without a configured gateway, the gateway is on loopback (its default bind).
        addresses = await _addresses(parsed.host, parsed.port)
        if not all(ipaddress.ip_address(a).is_loopback for a in addresses):
            raise wrong
    return egress.Destination(
        scheme=parsed.scheme, host=parsed.host, port=parsed.port, addresses=addresses, url=url
    )


async def _addresses(host: str, port: int) -> tuple[str, ...]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise SourceRejected(f"the gateway's address {host} does not resolve: {exc}") from None
    return tuple(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(checksum: str, actual: str) -> None:
    kind, _, expected = checksum.partition(":")
    if kind.upper() != "SHA256" or not expected:
        raise SourceRejected(f"unsupported checksum {checksum!r}: expected SHA256:<hex>")
    if expected.lower() != actual:
        raise SourceRejected(f"source checksum mismatch: expected {expected.lower()}, got {actual}")


def extract(
    archive: Path,
    dest: Path,
    *,
    max_bytes: int,
    max_entries: int = untar.MAX_ENTRIES,
    max_ratio: float = untar.MAX_RATIO,
) -> None:
    """Unpack a gzipped tarball into `dest` after checking every member; see the module doc."""
    try:
        # First a streaming pass that writes nothing: bombs stop there (untar.py).
        untar.scan(archive, untar.Limits(max_bytes, max_entries, max_ratio))
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            check_members(members, max_bytes=max_bytes)
            # Then each member is judged again on disk as it is unpacked, where links
            # unpacked before it count, and loses modes a source has no business carrying
            # (setuid, group/world-writable): untar.unpack, the same on every Python.
            untar.unpack(tar, members, dest)
        _open_implicit_folders(dest, members)
        _links_stay_inside(dest)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise SourceRejected(f"source is not a readable gzipped tarball: {exc}") from None
    _hoist_single_folder(dest)


def _open_implicit_folders(dest: Path, members: list[tarfile.TarInfo]) -> None:
    # Folders the archive only implies (`a/b.py` with no `a/` entry) are made under the
    # builder's umask 077; the slug's dyno user must still enter them, as before.
    explicit = {posixpath.normpath(m.name) for m in members if m.isdir()}
    for root, folders, _ in os.walk(dest, followlinks=False):
        for name in folders:
            path = Path(root, name)
            if posixpath.normpath(str(path.relative_to(dest))) in explicit:
                continue
            if stat.S_ISDIR(path.lstat().st_mode):
                path.chmod(0o755)


def _links_stay_inside(dest: Path) -> None:
    # Each link was checked on its own as it was unpacked, but a chain can only be judged
    # once every link exists: `Procfile -> l/l/l/../../../x` unpacked before `l -> .`
    # looked inside then and leaves the folder now. Resolve every link on disk, once all
    # are there.
    root = os.path.realpath(dest)
    for folder, folders, files in os.walk(dest, followlinks=False):
        for name in folders + files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                continue
            target = os.path.realpath(path)
            if target != root and not target.startswith(root + os.sep):
                shown = os.path.relpath(path, dest)
                raise SourceRejected(
                    f"source rejected: link {shown!r} leads outside the source"
                    f" through other links ({os.readlink(path)!r})"
                )


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
