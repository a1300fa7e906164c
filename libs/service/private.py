"""Everything Slipway writes under SLIPWAY_HOME is its owner's alone: 0600 files, 0700 folders.

Three layers, because files are made in three ways:

- `private_umask()` at the start of the supervisor and of every service: what
  Python, SQLite (its -wal and -shm copy the database's mode) and child
  processes create is owner-only by default;
- `private_dir(path)` for folders that may already exist with a looser mode;
- `tighten(home)` once at the supervisor's start: files an older Slipway, or a
  child that ignores the umask, left readable by others lose those bits.

Files a build container must read (it runs as another uid) are given their
modes explicitly by the builder, so this policy does not depend on the umask
they were written under.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

PRIVATE_UMASK = 0o077
_OTHERS = 0o077


def private_umask() -> int:
    """Make files and folders this process (and its children) creates owner-only."""
    return os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner may enter, made if missing."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def tighten(home: Path, keep: Iterable[Path] = ()) -> int:
    """Remove group and other permissions from everything under `home`; how many changed.

    Links are not followed (a link under `home` may point anywhere) and the
    owner's own bits are kept, so executables stay executable. What is inside a
    `keep` folder is left as it is: its access is by group on purpose (the add-on
    databases' run folders, shared by a database's postgres and the backup user).
    """
    kept = {Path(os.path.abspath(path)) for path in keep}
    changed = 0
    for root, folders, files in os.walk(home, followlinks=False):
        if Path(os.path.abspath(root)) in kept:
            folders[:] = []
            continue
        for name in [*folders, *files]:
            changed += _tighten_one(Path(root, name))
    return changed + _tighten_one(home)


def _tighten_one(path: Path) -> int:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return 0  # removed while we walked (a build's scratch folder)
    if stat.S_ISLNK(info.st_mode) or not info.st_mode & _OTHERS:
        return 0
    path.chmod(stat.S_IMODE(info.st_mode) & ~_OTHERS)
    return 1
