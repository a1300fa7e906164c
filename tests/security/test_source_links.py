"""A source tarball whose links leave the build folder only once they are all unpacked."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from slipway.services.builder.errors import SourceRejected
from slipway.services.builder.source import extract


def _tarball(path: Path, links: list[tuple[str, str]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        data = b"web: python app.py\n"
        info = tarfile.TarInfo("app.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for name, target in links:
            link = tarfile.TarInfo(name)
            link.type = tarfile.SYMTYPE
            link.linkname = target
            tar.addfile(link)
    return path


def test_link_chain_unpacked_before_its_links_is_refused(tmp_path: Path) -> None:
    """`Procfile -> l/l/l/../../../x` first, `l -> .` second: the source is refused."""
    outside = tmp_path / "x"
    outside.write_text("the host's file\n")
    dest = tmp_path / "a" / "b" / "app"
    dest.mkdir(parents=True)
    archive = _tarball(tmp_path / "s.tgz", [("Procfile", "l/l/l/../../../x"), ("l", ".")])
    with pytest.raises(SourceRejected, match="'Procfile' leads outside the source"):
        extract(archive, dest, max_bytes=10_000)


def test_link_chains_that_stay_inside_are_kept(tmp_path: Path) -> None:
    """Links through links that end inside the source unpack as before."""
    dest = tmp_path / "app"
    dest.mkdir()
    archive = _tarball(tmp_path / "s.tgz", [("alias.py", "l/app.py"), ("l", ".")])
    extract(archive, dest, max_bytes=10_000)
    assert (dest / "alias.py").read_text() == "web: python app.py\n"
