"""Buildpacks are named, not fetched from anywhere: only built-ins and https:// URLs.

Each test runs a real build through the real builder against real Docker. The
refused forms (`file://`, host paths, plain `http://`, `ssh://`) each point at
something real on the host (a repository or folder holding a secret, a server
on loopback), and the test checks that the build fails naming the allowed
forms, that the secret never shows, and that nothing was contacted. Allowed
https:// URLs are fetched in a hardened container within a size and a time
limit, without following redirects, and the host never writes through a link
in what was fetched.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import tarfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from slipway.libs.natsserver import NatsServer
from tests.builder.buildpack_server import BuildpackServer, tar_folder
from tests.builder.conftest import BuildResult, Harness, builder_stack, tarball
from tests.builder.test_builds import HELLO_APP, third_party_buildpack

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.timeout(300),
]

MAX_BYTES = 1024 * 1024
FETCH_TIMEOUT = 8.0
ALLOWED = "name a built-in buildpack (python, nodejs, static) or an https:// URL"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    """A builder of its own with small buildpack limits (1 MiB, 8 s)."""
    home = tmp_path_factory.mktemp("buildpacks-home")
    nats = NatsServer(home / "nats")
    nats.start()
    try:
        async with builder_stack(
            nats, home, buildpack_max_bytes=MAX_BYTES, buildpack_fetch_timeout=FETCH_TIMEOUT
        ) as h:
            yield h
    finally:
        nats.stop()


def leaky_buildpack(folder: Path) -> tuple[Path, str]:
    """A buildpack whose compile prints a secret file it carries (a host repo's content)."""
    token = "SECRET-" + uuid.uuid4().hex
    script = '#!/bin/bash\necho "leaked: $(cat "$(dirname "$0")/../secret.txt")"\n'
    bp = third_party_buildpack(folder, script)
    (bp / "secret.txt").write_text(token + "\n")
    return bp, token


def commit(folder: Path) -> None:
    """Make `folder` a git repository with everything committed on `main`."""
    for args in (
        ["init", "--quiet", "--initial-branch=main"],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "bp"],
    ):
        subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True)


async def build(h: Harness, buildpack: str) -> BuildResult:
    return await h.build(tarball(HELLO_APP), app_id=h.app_id(), buildpacks=[buildpack])


def assert_refused(result: BuildResult, token: str) -> None:
    assert result.status == "failed"
    assert ALLOWED in result.text
    assert ALLOWED in (result.finished.error or "")
    assert token not in result.text
    assert result.release is None


@pytest.fixture
def loopback_listener() -> Iterator[tuple[int, list[bytes]]]:
    """A raw TCP listener on loopback recording whatever connects (an ssh server stand-in)."""
    seen: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            seen.append(b"connected")
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], seen
    finally:
        stop.set()
        thread.join()
        server.close()


async def test_file_url_buildpack_is_refused(stack: Harness, tmp_path: Path) -> None:
    """A file:// git URL to a host repository fails the build; the repository is not read."""
    bp, token = leaky_buildpack(tmp_path / "host-repo")
    commit(bp)
    result = await build(stack, f"file://{bp}#main")
    assert_refused(result, token)


async def test_host_path_buildpack_is_refused(stack: Harness, tmp_path: Path) -> None:
    """A host folder named as a buildpack fails the build; the folder is not copied."""
    bp, token = leaky_buildpack(tmp_path / "host-folder")
    result = await build(stack, str(bp))
    assert_refused(result, token)


async def test_plain_http_buildpack_is_refused(stack: Harness, tmp_path: Path) -> None:
    """A plain http:// git URL fails the build; the server is never contacted."""
    bp, token = leaky_buildpack(tmp_path / "bp")
    server = await BuildpackServer.start(tmp_path / "http", "127.0.0.1", tls=False)
    try:
        result = await build(stack, server.git(bp) + "#main")
    finally:
        await server.close()
    assert_refused(result, token)
    assert server.requests == []


async def test_ssh_buildpack_is_refused(
    stack: Harness, loopback_listener: tuple[int, list[bytes]]
) -> None:
    """An ssh:// git URL fails the build; nothing connects to the ssh server it names."""
    port, seen = loopback_listener
    result = await build(stack, f"ssh://git@127.0.0.1:{port}/buildpack.git")
    assert_refused(result, "no secret here")
    assert seen == []


@pytest.mark.parametrize(
    "name",
    ["git://127.0.0.1/bp.git", "git@127.0.0.1:bp.git", "../../etc", "-uexploit", "python "],
)
async def test_other_buildpack_forms_are_refused(stack: Harness, name: str) -> None:
    """git://, scp-style, relative and option-like names fail the build naming the forms."""
    result = await build(stack, name)
    assert_refused(result, "no secret here")


async def test_buildpack_url_with_credentials_is_refused_without_showing_them(
    stack: Harness,
) -> None:
    """An https:// URL carrying `user:token@` fails the build and never prints the token."""
    token = "tok-" + uuid.uuid4().hex
    result = await build(stack, f"{stack.buildpacks.base_url.replace('//', f'//u:{token}@')}/x.git")
    assert result.status == "failed"
    assert "buildpack URLs cannot carry credentials" in result.text
    assert token not in result.text
    assert not any(path.startswith("/x.git") for path in stack.buildpacks.requests)


async def test_https_buildpack_on_loopback_is_refused(stack: Harness, tmp_path: Path) -> None:
    """An https:// URL to a loopback address is refused by the egress guard, never fetched."""
    bp, token = leaky_buildpack(tmp_path / "bp")
    server = await BuildpackServer.start(tmp_path / "loop", "127.0.0.1")
    try:
        result = await build(stack, server.tarball(bp))
    finally:
        await server.close()
    assert result.status == "failed"
    assert "127.0.0.1 is a loopback address: Slipway does not connect there" in result.text
    assert token not in result.text
    assert server.requests == []


async def test_fetched_link_named_like_a_marker_is_not_written(
    stack: Harness, tmp_path: Path
) -> None:
    """A fetched buildpack's `.slipway-name` link to a host file: the host file is unchanged."""
    victim = tmp_path / "host-victim.conf"
    victim.write_text("original\n")
    bp = third_party_buildpack(tmp_path / "bp")
    (bp / ".slipway-name").symlink_to(victim)
    url = stack.buildpacks.tarball(bp)
    result = await build(stack, url)
    assert result.status == "succeeded", result.text
    assert victim.read_text() == "original\n"


def zero_bomb(bp: Path, size: int) -> bytes:
    """A buildpack tarball carrying `size` zero bytes: tiny compressed, big unpacked."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar_bytes = tar_folder(bp)
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:gz") as inner:
            for member in inner.getmembers():
                tar.addfile(member, inner.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo("zeros.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
    return buffer.getvalue()


async def test_buildpack_unpacking_past_the_size_limit_fails(
    stack: Harness, tmp_path: Path
) -> None:
    """A small tarball that unpacks past SLIPWAY_BUILDPACK_MAX_BYTES fails the build."""
    blob = zero_bomb(third_party_buildpack(tmp_path / "bp"), 40 * MAX_BYTES)
    assert len(blob) < MAX_BYTES
    result = await build(stack, stack.buildpacks.blob(blob))
    assert result.status == "failed"
    assert f"it may unpack to at most {MAX_BYTES} bytes" in result.text


async def test_buildpack_download_past_the_size_limit_fails(stack: Harness, tmp_path: Path) -> None:
    """A tarball larger than SLIPWAY_BUILDPACK_MAX_BYTES fails the build."""
    bp = third_party_buildpack(tmp_path / "bp")
    (bp / "noise.bin").write_bytes(os.urandom(2 * MAX_BYTES))
    result = await build(stack, stack.buildpacks.tarball(bp))
    assert result.status == "failed"
    assert f"downloading the tarball failed (see above; at most {MAX_BYTES} bytes)" in result.text


async def test_buildpack_server_that_never_finishes_is_cut_at_the_time_limit(
    stack: Harness,
) -> None:
    """A fetch that never ends is stopped after SLIPWAY_BUILDPACK_FETCH_TIMEOUT, saying so."""
    url = f"{stack.buildpacks.base_url}/stall/{uuid.uuid4().hex}.tgz"
    try:
        result = await build(stack, url)
    finally:
        stack.buildpacks.release_stalled.set()
    assert result.status == "failed"
    assert f"took longer than {FETCH_TIMEOUT:g}s and was stopped" in result.text
    assert "SLIPWAY_BUILDPACK_FETCH_TIMEOUT" in (result.finished.error or "")


async def test_buildpack_redirect_is_not_followed(stack: Harness, tmp_path: Path) -> None:
    """A buildpack URL answering a redirect fails the build; the target is never fetched."""
    target = stack.buildpacks.tarball(third_party_buildpack(tmp_path / "bp"))
    result = await build(stack, stack.buildpacks.redirect(target))
    assert result.status == "failed"
    assert "redirects are not followed" in result.text
    assert target.rsplit("/", 1)[1] not in "".join(stack.buildpacks.requests)


async def test_fetch_container_is_removed(stack: Harness, tmp_path: Path) -> None:
    """After a fetch no container of the build is left on the engine."""
    result = await build(stack, stack.buildpacks.tarball(third_party_buildpack(tmp_path / "bp")))
    assert result.status == "succeeded", result.text
    left = await stack.docker.containers.list(
        all=True, filters={"label": [f"slipway.build={result.build_id}"]}
    )
    assert left == []
