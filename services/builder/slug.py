"""The slug image: the compiled build folder on top of the run stack.

    FROM slipway/stack-run:bookworm
    COPY root/ /                     /app and the launcher, owned by root
    ENTRYPOINT ["<LAUNCHER>"]

The launcher sources /app/.profile.d/*.sh, then runs `exec bash -c "$1"`.
The context tarball is written here, with ownership and modes set as the
image must have them, so the engine runs no container to fix them up. The
run stack's /app belongs to the dyno user; copying `root/` onto `/` (rather
than into /app) makes the engine apply the tarball's owner to /app itself.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from slipway.contracts.builder import LAUNCHER
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
        tar.add(build_dir, arcname="root/app", recursive=True, filter=_root_owned)


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
