"""The slug image: the compiled build folder on top of the run stack.

    FROM slipway/stack-run:bookworm
    COPY root/ /                     /app and the launcher, owned by root
    ENTRYPOINT ["<LAUNCHER>"]

The launcher sources /app/.profile.d/*.sh, then runs `exec bash -c "$1"`.
Build code ran in the build folder, so it is read through `libs/safefs`: links
are stored as links (never followed on the host), only regular files are read,
and a FIFO, socket or device fails the build.
The context tarball is written here, with ownership and modes set as the
image must have them, so the engine runs no container to fix them up. The
run stack's /app belongs to the dyno user; copying `root/` onto `/` (rather
than into /app) makes the engine apply the tarball's owner to /app itself.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

from slipway.contracts.builder import LAUNCHER
from slipway.libs import safefs
from slipway.services.builder.errors import BuildpackFailed
from slipway.services.builder.image import json_list

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


def dockerfile(run_image: str, web: str | None) -> str:
    """The slug's Dockerfile; `web` (if any) becomes the default command."""
    lines = [
        f"FROM {run_image}",
        "COPY root/ /",
        "WORKDIR /app",
        "USER 10000",
        f"ENTRYPOINT {json_list([LAUNCHER])}",
    ]
    if web:
        lines.append(f"CMD {json_list([web])}")
    return "\n".join(lines) + "\n"


def write_context(build_dir: Path, dest: Path, *, run_image: str, web: str | None) -> None:
    """Write the slug's build context (gzipped tar) to `dest`."""
    with tarfile.open(dest, "w:gz", compresslevel=1) as tar:
        _add_bytes(tar, "Dockerfile", dockerfile(run_image, web).encode(), 0o644)
        parents = Path(LAUNCHER).parent.parts[1:]  # ("usr", "local", "bin")
        for depth in range(len(parents)):
            _add_dir(tar, "root/" + "/".join(parents[: depth + 1]))
        _add_bytes(tar, "root" + LAUNCHER, LAUNCHER_SCRIPT.encode(), 0o755)
        _add_dir(tar, "root/app")
        try:
            _add_tree(tar, build_dir, "root/app")
        except safefs.SafePathError as exc:
            raise BuildpackFailed(f"{exc.message} (the build left it in /app)") from None


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def _add_tree(tar: tarfile.TarFile, root: Path, prefix: str) -> None:
    # Build code ran in `root`: walk it through folder fds, store links as links (they
    # resolve inside the dyno), read only regular files, and refuse anything else.
    for entry in safefs.walk(root):
        info = tarfile.TarInfo(f"{prefix}/{entry.rel}")
        info.mtime = int(entry.info.st_mtime)
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


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # The dyno user must not change its own code: root owns it, group/other cannot write.
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode &= ~0o022 & 0o7777 & ~(0o6000)
    return info


def write_source_context(build_dir: Path, dest: Path) -> None:
    """Tar a Dockerfile app's folder as its build context (its size was capped at unpacking)."""
    with tarfile.open(dest, "w:gz", compresslevel=1) as tar:
        for entry in sorted(os.listdir(build_dir)):
            tar.add(build_dir / entry, arcname=entry, recursive=True)
