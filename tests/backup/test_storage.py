"""The object storage: atomic puts, keys that cannot climb out, copies, crash leftovers."""

from __future__ import annotations

from pathlib import Path

import pytest

from slipway.services.backup.errors import StorageError
from slipway.services.backup.storage import PARTIAL, LocalFolder, Mirrored


async def test_put_then_read_back(tmp_path: Path) -> None:
    """What is put reads back whole, or by range."""
    store = LocalFolder(tmp_path / "objects")
    await store.put("a1/base/000001/00000", b"0123456789")
    assert await store.read("a1/base/000001/00000") == b"0123456789"
    assert await store.read("a1/base/000001/00000", 2, 3) == b"234"
    assert await store.keys("a1") == ["a1/base/000001/00000"]


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "a/../../b", "a//b", "a/b/", "a b"])
async def test_keys_that_could_leave_the_folder_are_refused(tmp_path: Path, key: str) -> None:
    """A key is ids and hex separated by slashes: nothing that names another place."""
    store = LocalFolder(tmp_path / "objects")
    with pytest.raises(StorageError):
        await store.put(key, b"x")
    assert not (tmp_path / "escape").exists()


async def test_a_leftover_partial_file_is_neither_listed_nor_kept(tmp_path: Path) -> None:
    """A crash mid-put leaves a .partial file: never listed, removed by the sweep."""
    store = LocalFolder(tmp_path / "objects")
    await store.put("a1/wal/x", b"whole")
    (tmp_path / "objects" / "a1" / "wal" / f"y{PARTIAL}").write_bytes(b"half")
    assert await store.keys("a1") == ["a1/wal/x"]
    assert store.sweep_partial() == 1
    assert sorted(p.name for p in (tmp_path / "objects" / "a1" / "wal").iterdir()) == ["x"]


async def test_a_put_replaces_a_link_instead_of_writing_through_it(tmp_path: Path) -> None:
    """A link planted at an object's name is replaced by the rename, its target untouched."""
    store = LocalFolder(tmp_path / "objects")
    target = tmp_path / "victim"
    target.write_bytes(b"precious")
    (tmp_path / "objects" / "a1").mkdir()
    (tmp_path / "objects" / "a1" / "obj").symlink_to(target)
    await store.put("a1/obj", b"sealed")
    assert target.read_bytes() == b"precious"
    assert not (tmp_path / "objects" / "a1" / "obj").is_symlink()


async def test_copies_get_every_object_and_serve_when_the_primary_lost_one(tmp_path: Path) -> None:
    """SLIPWAY_BACKUP_COPY_TO: each put lands in both; a read falls back to the copy."""
    primary, copy = LocalFolder(tmp_path / "p"), LocalFolder(tmp_path / "c")
    mirrored = Mirrored(primary, [copy])
    await mirrored.put("a1/base/000001/00000", b"sealed bytes")
    assert (tmp_path / "c" / "a1" / "base" / "000001" / "00000").read_bytes() == b"sealed bytes"
    (tmp_path / "p" / "a1" / "base" / "000001" / "00000").unlink()
    assert await mirrored.read("a1/base/000001/00000") == b"sealed bytes"
