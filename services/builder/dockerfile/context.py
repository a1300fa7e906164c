"""Tar streams for COPY and ADD, built from the build context on the host.

The context is the customer's unpacked source: hostile. Nothing here follows a
link: a symbolic link is copied as a link (the engine resolves it inside the
image, never on the host); a source path that goes through a link or `..` to
leave the context is refused; files are opened with O_NOFOLLOW. Paths the
`.dockerignore` leaves out are neither matched nor copied.

Entries are named by their absolute path in the image, without the leading `/`,
and the archive is put at `/`: the engine creates missing parent folders
(root-owned, 0755) and resolves links in the image within the container's root.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from slipway.services.builder.dockerfile.dockerignore import Ignore, component_regex
from slipway.services.builder.dockerfile.errors import DockerfileError

_WILDCARD = ("*", "?", "[")


@dataclass(frozen=True)
class Placement:
    """Where sources land: the destination, whether it is a folder, owner and mode."""

    dest: str  # absolute, normalised
    into_folder: bool
    uid: int = 0
    gid: int = 0
    mode: int | None = None  # --chmod, for files and folders alike


def absolute_dest(dest: str, workdir: str) -> str:
    """The destination as an absolute path in the image (relative ones are from WORKDIR)."""
    joined = posixpath.join(workdir or "/", dest)
    return posixpath.normpath(joined).replace("//", "/")


def context_sources(context: Path, source: str, ignore: Ignore, where: str) -> list[str]:
    """The context paths (relative, '/'-separated) that `source` names, wildcards expanded."""
    clean = posixpath.normpath("/" + source).lstrip("/")
    if clean.startswith("..") or ".." in clean.split("/"):
        raise DockerfileError(f"{where}: {source} is outside the build context")
    if clean in ("", "."):
        return [""]
    found = [""]
    for part in clean.split("/"):
        found = [
            f"{base}/{name}".lstrip("/") for base in found for name in _match(context, base, part)
        ]
    found = [path for path in found if not ignore.ignored(path)]
    if not found:
        raise DockerfileError(
            f"{where}: {source} is not in the build context (or .dockerignore leaves it out)"
        )
    return sorted(found)


def _match(context: Path, base: str, part: str) -> list[str]:
    folder = context / base if base else context
    # Only a real folder is looked into: a link to a folder would lead off the context.
    if folder.is_symlink() or not folder.is_dir():
        if base:
            raise DockerfileError(f"{base} is a link or a file, not a folder, in the build context")
        return []
    if not any(char in part for char in _WILDCARD):
        return [part] if os.path.lexists(folder / part) else []
    regex = component_regex(part)
    return sorted(entry.name for entry in os.scandir(folder) if regex.fullmatch(entry.name))


def is_folder(context: Path, relative: str) -> bool:
    """Whether a context path is a real folder (a link to one is not)."""
    path = context / relative if relative else context
    return not path.is_symlink() and path.is_dir()


def write_context_tar(
    context: Path, sources: list[str], place: Placement, ignore: Ignore, out: BinaryIO
) -> int:
    """Write the tar that puts `sources` at `place`; return how many entries it has."""
    count = 0
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if place.into_folder and (place.mode is not None or place.uid or place.gid):
            count += _add_folder_entry(tar, place)
        for source in sources:
            for relative, target in _walk(context, source, place, ignore):
                _add(tar, context / relative if relative else context, target, place)
                count += 1
    return count


def _walk(
    context: Path, source: str, place: Placement, ignore: Ignore
) -> Iterator[tuple[str, str]]:
    """(context path, image path) pairs: a folder's contents, or the one file or link."""
    if not is_folder(context, source):
        name = posixpath.basename(source)
        yield source, posixpath.join(place.dest, name) if place.into_folder else place.dest
        return
    root = context / source if source else context
    for folder, dirs, files in os.walk(root, followlinks=False):
        rel_folder = os.path.relpath(folder, context)
        rel_folder = "" if rel_folder == "." else rel_folder
        kept_dirs = []
        for name in sorted(dirs):
            relative = posixpath.join(rel_folder, name) if rel_folder else name
            if ignore.ignored(relative) and not ignore.has_exceptions:
                continue
            kept_dirs.append(name)
            if not ignore.ignored(relative):
                yield relative, _target(relative, source, place)
        dirs[:] = kept_dirs
        for name in sorted(files):
            relative = posixpath.join(rel_folder, name) if rel_folder else name
            if not ignore.ignored(relative):
                yield relative, _target(relative, source, place)


def _target(relative: str, source: str, place: Placement) -> str:
    inner = posixpath.relpath(relative, source) if source else relative
    return posixpath.join(place.dest, inner)


def _add_folder_entry(tar: tarfile.TarFile, place: Placement) -> int:
    name = place.dest.lstrip("/")
    if not name:
        return 0  # never re-own or re-mode the image's root
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = place.mode if place.mode is not None else 0o755
    info.uid, info.gid = place.uid, place.gid
    info.mtime = int(time.time())
    tar.addfile(info)
    return 1


def _add(tar: tarfile.TarFile, path: Path, target: str, place: Placement) -> None:
    st = os.lstat(path)
    info = tarfile.TarInfo(target.lstrip("/"))
    info.uid, info.gid = place.uid, place.gid
    info.mtime = int(st.st_mtime)
    info.mode = place.mode if place.mode is not None else stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
        info.mode = 0o777
        tar.addfile(info)
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif stat.S_ISREG(st.st_mode):
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(descriptor, "rb") as fileobj:
            info.size = os.fstat(descriptor).st_size
            tar.addfile(info, fileobj)
    # Sockets, fifos and devices are not copied (the unpacked source has none anyway).


def add_file(tar_out: BinaryIO, path: Path, target: str, place: Placement, mode: int) -> None:
    """A tar with one host file (an ADD download) at `target`."""
    with tarfile.open(fileobj=tar_out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, path, target, Placement(place.dest, False, place.uid, place.gid, mode))


def folder_tar(tar_out: BinaryIO, folder: str, place: Placement) -> None:
    """A tar that only creates `folder` (for ADD of a local archive into a new folder)."""
    with tarfile.open(fileobj=tar_out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_folder_entry(tar, Placement(folder, True, place.uid, place.gid, place.mode or 0o755))


def archive_size(archive: BinaryIO, name: str, limit: int) -> int:
    """What a (compressed) tar unpacks to, read as a stream; stops once past `limit`."""
    total = 0
    try:
        with tarfile.open(fileobj=archive, mode="r|*") as tar:
            for member in tar:
                total += member.size + 512  # each entry costs at least a block
                if total > limit:
                    break
    except (tarfile.TarError, OSError, EOFError):
        raise DockerfileError(f"{name} is a damaged archive: ADD cannot unpack it") from None
    return total


def rewrite_stage_tar(
    fetched: BinaryIO, source: str, root: str, place: Placement, out: BinaryIO
) -> None:
    """Re-root the engine's archive of `source` (an earlier stage's path) at `root`.

    A folder's own entry is dropped (its contents go into `root`, which keeps its
    metadata); a file's single entry becomes `root`.
    """
    top = posixpath.basename(posixpath.normpath("/" + source)) or "."
    with (
        tarfile.open(fileobj=fetched, mode="r|") as given,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for member in given:
            target = _stage_target(member.name, top, root, member.isdir())
            if target is None:
                continue
            _reroot(member, target, top, root, place)
            if member.isreg():
                tar.addfile(member, given.extractfile(member))
            elif member.isdir() or member.issym() or member.islnk():
                tar.addfile(member)


def _stage_target(name: str, top: str, root: str, folder: bool) -> str | None:
    name = name.rstrip("/")
    if name == top:
        return None if folder else root
    if not name.startswith(top + "/"):
        return None
    return posixpath.join(root, name[len(top) + 1 :])


def _reroot(member: tarfile.TarInfo, target: str, top: str, root: str, place: Placement) -> None:
    member.name = target.lstrip("/")
    member.uid, member.gid, member.uname, member.gname = place.uid, place.gid, "", ""
    if place.mode is not None and not member.issym():
        member.mode = place.mode
    if member.islnk():
        linked = _stage_target(member.linkname, top, root, False)
        member.linkname = (linked or member.linkname).lstrip("/")
