"""tighten: owner-only under the home, except the folders shared by group on purpose."""

from __future__ import annotations

import stat
from pathlib import Path

from slipway.libs.service.private import tighten


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_tighten_removes_group_and_other_bits_but_keeps_the_owners(tmp_path: Path) -> None:
    """A file readable by others and an executable: others lose access, the owner keeps x."""
    readable = tmp_path / "state" / "db"
    readable.parent.mkdir()
    readable.write_bytes(b"x")
    readable.chmod(0o644)
    tool = tmp_path / "tool"
    tool.write_bytes(b"#!/bin/sh\n")
    tool.chmod(0o755)
    assert tighten(tmp_path) >= 2
    assert mode(readable) == 0o600
    assert mode(tool) == 0o700


def test_tighten_leaves_the_add_on_run_folders_as_they_are(tmp_path: Path) -> None:
    """Each database's run folder is shared with its postgres by group (setgid, 2770)."""
    runs = tmp_path / "run" / "addons"
    folder = runs / "local" / "a1"
    folder.mkdir(parents=True)
    folder.chmod(0o2770)
    archived = folder / "000000010000000000000001"
    archived.write_bytes(b"wal")
    archived.chmod(0o640)
    other = tmp_path / "run" / "other"
    other.mkdir()
    other.chmod(0o755)
    tighten(tmp_path, keep=[runs])
    assert mode(folder) == 0o2770
    assert mode(archived) == 0o640
    assert mode(other) == 0o700
