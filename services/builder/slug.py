"""The slug's layers: the compiled build folder as tarballs to put on the run stack.

    run stack   slipway/stack-run:bookworm, as it is
    layer 1     /app's dependency folders (DEPENDENCY_FOLDERS), when the build made any
    layer 2     the rest of /app, and the launcher

`slugimage.py` turns them into an image. The split exists for warm deploys: a
one-line change to the app's code leaves layer 1 byte for byte what it was, so
the engine reuses the image holding it (found by `dependency_key`), the registry
already has its blob and a host that ran the last release already has the layer;
only layer 2 is written, pushed and pulled again.

Build code ran in the build folder, so it is read through `libs/safefs`: links
are stored as links (never followed on the host), only regular files are read,
and a FIFO, socket or device fails the build. Owners and modes are set here as
the image must have them (root owns the code, the dyno user cannot change it),
and the engine applies a tarball's owner to a folder that already exists, so the
run stack's /app (the dyno user's) becomes root's too.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from enum import Enum
from pathlib import Path

from slipway.contracts.builder import LAUNCHER
from slipway.libs import safefs
from slipway.services.builder.errors import BuildpackFailed

LAUNCHER_SCRIPT = """#!/bin/bash
# Slipway's dyno launcher: the app's .profile.d scripts, then the process command.
cd /app || exit 1
for script in /app/.profile.d/*.sh; do
  if [ -r "$script" ]; then
    # shellcheck disable=SC1090
    . "$script"
  fi
done
if [ $# -eq 0 ]; then
  echo "slipway-launch: no command given" >&2
  exit 64
fi
exec bash -c "$1"
"""

# Where classic buildpacks put what an app depends on, by their own conventions:
# .heroku (Heroku's Python, Node.js, PHP runtimes and packages), .venv (Slipway's Python),
# node_modules, .apt (the apt buildpack), .jdk (Java), vendor/bundle (Ruby gems).
# A declared list rather than a guess from what changed: a build folder holds no record
# of which files a buildpack regenerates on every build (compiled assets, a `dist/`),
# and putting those in the lower layer would make it change with every commit. The
# split never changes what the dyno sees: the two layers hold disjoint paths whose
# union is the build folder, so a folder missing from this list (a buildpack we do not
# know) only costs speed: it travels with the app's own files, as everything did before.
DEPENDENCY_FOLDERS = (".apt", ".heroku", ".jdk", ".venv", "node_modules", "vendor/bundle")
# Part of the key: a change to how the layer is written must not reuse older images.
_KEY_FORMAT = b"slipway-dependency-layer-v1\n"


class Part(Enum):
    """Which of the slug's two layers."""

    DEPENDENCIES = "dependencies"
    APP = "app"


def dependency_key(build_dir: Path, base_id: str) -> str | None:
    """A digest naming the dependency layer on `base_id`, or None if the build made none.

    It covers every byte of the layer but its modification times: two builds that
    installed the same packages again (same names, modes, links, contents) share the
    layer, as Docker's own build cache shares a COPY of unchanged files. The reused
    layer keeps the times of the build that wrote it; files and times then still agree
    with each other (a .pyc names its source's time, and both come from that build).
    """
    digest = _Digest()
    digest.write(_KEY_FORMAT + base_id.encode() + b"\n")
    with tarfile.open(fileobj=digest, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        found = _add_part(tar, build_dir, Part.DEPENDENCIES, keep_times=False)
    return digest.hexdigest() if found else None


def write_layer(build_dir: Path, dest: Path, part: Part) -> None:
    """Write one layer of the slug (an uncompressed tar, to be put at `/`) to `dest`."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        if part is Part.APP:
            parents = Path(LAUNCHER).parent.parts[1:]  # ("usr", "local", "bin")
            for depth in range(len(parents)):
                _add_dir(tar, "/".join(parents[: depth + 1]))
            _add_bytes(tar, LAUNCHER.lstrip("/"), LAUNCHER_SCRIPT.encode(), 0o755)
        _add_part(tar, build_dir, part, keep_times=True)


def place(rel: str) -> Part | None:
    """The layer a path of the build folder goes to; None for a folder on the way to a
    dependency folder (`vendor` for `vendor/bundle`), which both layers hold."""
    for folder in DEPENDENCY_FOLDERS:
        if rel == folder or rel.startswith(folder + "/"):
            return Part.DEPENDENCIES
    if any(folder.startswith(rel + "/") for folder in DEPENDENCY_FOLDERS):
        return None
    return Part.APP


def _add_part(tar: tarfile.TarFile, build_dir: Path, part: Part, *, keep_times: bool) -> bool:
    """Add /app and the entries of `part`; whether any entry (not just a folder on the
    way) belongs to it."""
    _add_dir(tar, "app")
    found = False
    try:
        for entry in safefs.walk(build_dir):
            where = place(entry.rel)
            if where is None:
                # Only a real folder is a way to a dependency folder: the walk does not
                # go through a link, so there is nothing of `part` below one.
                if part is Part.APP or stat.S_ISDIR(entry.info.st_mode):
                    _add_entry(tar, entry, keep_times)
            elif where is part:
                _add_entry(tar, entry, keep_times)
                found = True
    except safefs.SafePathError as exc:
        raise BuildpackFailed(f"{exc.message} (the build left it in /app)") from None
    return found


def _add_entry(tar: tarfile.TarFile, entry: safefs.Entry, keep_times: bool) -> None:
    # Build code ran here: links are stored as links (they resolve inside the dyno),
    # only regular files are read, and anything else is refused.
    info = tarfile.TarInfo(f"app/{entry.rel}")
    info.mtime = int(entry.info.st_mtime) if keep_times else 0
    info.mode = stat.S_IMODE(entry.info.st_mode)
    kind = stat.S_IFMT(entry.info.st_mode)
    if kind == stat.S_IFDIR:
        info.type = tarfile.DIRTYPE
        tar.addfile(_root_owned(info))
    elif kind == stat.S_IFLNK:
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(entry.name, dir_fd=entry.parent)
        tar.addfile(_root_owned(info))
    elif kind == stat.S_IFREG:
        with os.fdopen(entry.open_regular(), "rb") as file:
            info.size = os.fstat(file.fileno()).st_size
            tar.addfile(_root_owned(info), file)
    else:
        raise safefs.SafePathError(
            f"/app/{entry.rel} is {safefs.describe(entry.info.st_mode)}: a slug holds only"
            " files, folders and links; remove it at the end of the build"
        )


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    # /app and the launcher's folders: root's, readable by all, times fixed so that they
    # never make two layers differ.
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # The dyno user must not change its own code: root owns it, group/other cannot write.
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode &= ~0o022 & 0o7777 & ~(0o6000)
    return info


class _Digest(io.RawIOBase):
    """A write-only file that only hashes what is written (the tar stream of a key)."""

    def __init__(self) -> None:
        super().__init__()
        self._hash = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._hash.update(data)
        return len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
