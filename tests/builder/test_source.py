"""Unpacking sources without trusting them (no Docker, no network)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from slipway.services.builder.errors import SourceRejected
from slipway.services.builder.source import check_members, extract


def _member(name: str, *, link: str | None = None, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    if link is not None:
        info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
        info.linkname = link
    return info


def _write(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_links_inside_the_source_are_kept(tmp_path: Path) -> None:
    """A relative symlink that stays inside the folder is fine."""
    check_members(
        [_member("lib/real.py"), _member("lib/alias.py", link="real.py"),
         _member("a/b/up.py", link="../../lib/real.py")],
        max_bytes=1000,
    )  # fmt: skip


@pytest.mark.parametrize(
    "member",
    [
        _member("a/escape", link="../../etc/passwd"),
        _member("escape", link="/etc/passwd"),
        _member("hard", link="../x", hard=True),
        _member("a/../../x"),
        _member("/abs"),
    ],
)
def test_members_that_leave_the_folder_are_rejected(member: tarfile.TarInfo) -> None:
    """Absolute paths, `..` and links pointing outside raise SourceRejected."""
    with pytest.raises(SourceRejected):
        check_members([member], max_bytes=1000)


def test_unpacked_size_over_the_limit_is_rejected(tmp_path: Path) -> None:
    """The sum of member sizes counts, whatever the compressed size."""
    archive = _write(tmp_path / "big.tgz", {"zeros": b"\0" * 5000})
    with pytest.raises(SourceRejected, match="unpacks to more than"):
        extract(archive, tmp_path / "out", max_bytes=4000)


def test_a_single_top_folder_is_hoisted(tmp_path: Path) -> None:
    """`git archive --prefix=app/` style tarballs unpack with the app at the root."""
    archive = _write(tmp_path / "src.tgz", {"app-1.0/Procfile": b"web: x\n"})
    (tmp_path / "out").mkdir()
    extract(archive, tmp_path / "out", max_bytes=4000)
    assert (tmp_path / "out" / "Procfile").read_text() == "web: x\n"


def test_not_a_tarball_is_rejected(tmp_path: Path) -> None:
    """Garbage is reported as such."""
    path = tmp_path / "junk.tgz"
    path.write_bytes(b"this is not gzip")
    with pytest.raises(SourceRejected, match="not a readable gzipped tarball"):
        extract(path, tmp_path / "out", max_bytes=4000)
