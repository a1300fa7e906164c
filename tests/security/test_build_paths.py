"""Build code cannot make the builder (root, on the host) read or write through its folders.

Each test runs a real build through the real builder against real Docker: a
buildpack (fetched over https from a server on the test's own build network)
plants a link, a FIFO or a huge file where the builder reads or writes after
the build container ran. A secret planted on the host must never show up in
the output, the event or the release, a host file targeted for overwrite must
be unchanged, and the build must fail saying what was wrong.
"""

from __future__ import annotations

import io
import os
import tarfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
import pytest_asyncio

from slipway.libs import safefs
from slipway.libs.natsserver import NatsServer
from tests.builder.conftest import BuildResult, Harness, builder_stack, tarball
from tests.builder.test_builds import HELLO_APP, third_party_buildpack

T = TypeVar("T", bound=Callable[..., Awaitable[None]])


def real_build(test: T) -> T:
    """The marks of a test that runs a real build (the module also has plain unit tests)."""
    for mark in (
        pytest.mark.asyncio(loop_scope="session"),
        pytest.mark.docker,
        pytest.mark.slow,
        pytest.mark.integration,
        pytest.mark.timeout(300),
    ):
        test = mark(test)
    return test


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    """A builder of its own for this module (its home holds the secrets' neighbours)."""
    home = tmp_path_factory.mktemp("build-paths-home")
    nats = NatsServer(home / "nats")
    nats.start()
    try:
        async with builder_stack(nats, home) as h:
            yield h
    finally:
        nats.stop()


def plant_secret(folder: Path) -> tuple[Path, str]:
    """A host file only root may read, holding a unique token."""
    token = "SECRET-" + uuid.uuid4().hex
    path = folder / "host-secret.txt"
    # Its first line names it; the rest would become a release's process and config var.
    path.write_text(
        f"# {token}\ndefault_process_types:\n  web: {token}\nconfig_vars:\n  LEAK: {token}\n"
    )
    path.chmod(0o600)
    return path, token


async def build_with(
    h: Harness, folder: Path, compile_script: str, *, release: bool = True
) -> BuildResult:
    """Build HELLO_APP with a third-party buildpack running `compile_script`."""
    bp = third_party_buildpack(folder, compile_script)
    if not release:
        (bp / "bin" / "release").unlink()
    url = h.buildpacks.tarball(bp)
    return await h.build(tarball(HELLO_APP), app_id=h.app_id(), buildpacks=[url])


def assert_not_leaked(result: BuildResult, token: str) -> None:
    assert token not in result.text
    assert token not in (result.finished.error or "")
    assert token not in str(result.finished.process_types)
    assert result.release is None


@real_build
async def test_failure_link_to_a_host_file_is_not_read(stack: Harness, tmp_path: Path) -> None:
    """/slipway/out/failure linked to a host file fails the build without reading it."""
    secret, token = plant_secret(tmp_path)
    script = f"#!/bin/bash\nln -s {secret} /slipway/out/failure\nexit 1\n"
    result = await build_with(stack, tmp_path / "bp", script)
    assert result.status == "failed"
    assert_not_leaked(result, token)
    assert "/slipway/out/failure is a symbolic link, not a regular file" in result.text


@real_build
async def test_release_link_to_a_host_file_is_not_read(stack: Harness, tmp_path: Path) -> None:
    """/slipway/out/release-0.yml linked to a host file fails the build without reading it."""
    secret, token = plant_secret(tmp_path)
    script = f"#!/bin/bash\nln -s {secret} /slipway/out/release-0.yml\n"
    result = await build_with(stack, tmp_path / "bp", script, release=False)
    assert result.status == "failed"
    assert_not_leaked(result, token)
    assert "/slipway/out/release-0.yml is a symbolic link, not a regular file" in result.text


@real_build
async def test_profile_d_link_to_a_host_folder_is_not_written(
    stack: Harness, tmp_path: Path
) -> None:
    """/app/.profile.d linked to a host folder: nothing is written there, the build fails."""
    host_dir = tmp_path / "host-etc"
    host_dir.mkdir()
    (host_dir / "keep.conf").write_text("untouched\n")
    script = f"#!/bin/bash\nrm -rf /app/.profile.d\nln -s {host_dir} /app/.profile.d\n"
    result = await build_with(stack, tmp_path / "bp", script)  # its release has config_vars
    assert result.status == "failed"
    assert sorted(p.name for p in host_dir.iterdir()) == ["keep.conf"]
    assert (host_dir / "keep.conf").read_text() == "untouched\n"
    assert "/app/.profile.d is a symbolic link, not a folder" in result.text
    assert result.release is None


@real_build
async def test_fifo_in_out_fails_the_build_without_hanging(stack: Harness, tmp_path: Path) -> None:
    """A FIFO as /slipway/out/release-0.yml fails the build (the builder does not block on it)."""
    script = "#!/bin/bash\nmkfifo /slipway/out/release-0.yml\n"
    result = await build_with(stack, tmp_path / "bp", script, release=False)
    assert result.status == "failed"
    assert "/slipway/out/release-0.yml is a FIFO (named pipe), not a regular file" in result.text


@real_build
async def test_huge_release_file_is_not_read_whole(stack: Harness, tmp_path: Path) -> None:
    """A release file over the bound fails the build instead of being read into memory."""
    script = "#!/bin/bash\nhead -c 20000000 /dev/zero | tr '\\0' '#' > /slipway/out/release-0.yml\n"
    result = await build_with(stack, tmp_path / "bp", script, release=False)
    assert result.status == "failed"
    assert "/slipway/out/release-0.yml is larger than 65536 bytes" in result.text


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


@real_build
async def test_procfile_link_chain_out_of_the_source_is_not_read(
    stack: Harness, tmp_path: Path
) -> None:
    """A Procfile link that leaves the source through a chain of links is refused, not read."""
    secret, token = plant_secret(tmp_path)
    secret.write_text(f"web: {token}\n")
    build_id = uuid.uuid4().hex
    app_dir = stack.settings.builds_dir() / build_id / "app"
    up = os.path.relpath(secret, app_dir)
    # `l -> .` makes `l/l/../..` climb for real while looking balanced to a lexical check.
    hops = up.count("../")
    chain = "l/" * hops + up
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.addfile(_link("Procfile", chain))
        tar.addfile(_link("l", "."))
        data = b"flask\n"
        info = tarfile.TarInfo("requirements.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    result = await stack.build(buffer.getvalue(), app_id=stack.app_id(), build_id=build_id)
    assert result.status == "failed"
    assert_not_leaked(result, token)
    assert "Procfile" in (result.finished.error or "")


def test_safefs_refuses_a_link_in_the_middle_of_a_path(tmp_path: Path) -> None:
    """A linked folder on the way to a file is refused, naming it, for reads and writes."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_text("outside\n")
    root = tmp_path / "root"
    root.mkdir()
    (root / "dir").symlink_to(outside)
    with pytest.raises(safefs.SafePathError, match="dir is a symbolic link, not a folder"):
        safefs.read_regular(root, "dir/f", max_bytes=100)
    with pytest.raises(safefs.SafePathError, match="dir is a symbolic link, not a folder"):
        safefs.write_regular(root, "dir/f", b"overwritten\n")
    assert (outside / "f").read_text() == "outside\n"


def test_safefs_write_refuses_a_hard_linked_file(tmp_path: Path) -> None:
    """A file with another hard link is not written (its other name may be anywhere)."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "a").write_text("original\n")
    os.link(root / "a", root / "b")
    with pytest.raises(safefs.SafePathError, match="has other hard links"):
        safefs.write_regular(root, "b", b"changed\n")
    assert (root / "a").read_text() == "original\n"
