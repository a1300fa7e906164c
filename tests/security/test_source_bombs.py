"""Source bombs: archives that inflate past every limit are refused while streaming.

Each test builds the hostile archive for real (gzip of zeros, a tar of thousands
of entries, an oversized pax header), hands it to the builder's `extract`, to the
real builder service over NATS, or to the gateway's Sources and Builds APIs, and
checks that the customer is told why and that nothing was unpacked.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import pytest

from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from slipway.services.builder.app import create_service as create_builder
from slipway.services.builder.errors import SourceRejected
from slipway.services.builder.settings import BuilderSettings
from slipway.services.builder.source import extract
from tests.builder.conftest import builder_stack
from tests.conftest import assert_eventually
from tests.gateway import conftest as gateway_fixtures
from tests.gateway.conftest import Stack, run_in_background, stop

MIB = 1024 * 1024
UNPACKED_LIMIT = 1024 * MIB  # the builder's default extracted_max_bytes
ENTRY_LIMIT = 1000
RATIO_REFUSAL = "inflates more than 100 times its compressed size"
ENTRIES_REFUSAL = f"holds more than {ENTRY_LIMIT} files and folders"

slipway_home = gateway_fixtures.slipway_home
keyring_service = gateway_fixtures.keyring_service
gateway_service = gateway_fixtures.gateway_service
stack = gateway_fixtures.stack


class Zeros:
    """A file of `size` zero bytes that is never held in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        return bytes(size)


def zero_member(name: str, size: int) -> tuple[tarfile.TarInfo, Zeros]:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    return info, Zeros(size)


def gzip_bomb(path: Path, size: int = 256 * MIB) -> Path:
    """One file of `size` zeros: about a thousandth of that once gzipped."""
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(*zero_member("app/data.bin", size))
    return path


def many_entries(path: Path, count: int = 5 * ENTRY_LIMIT) -> Path:
    """`count` empty files: tiny, yet each one costs the unpacker an inode."""
    with tarfile.open(path, "w:gz") as tar:
        for i in range(count):
            tar.addfile(tarfile.TarInfo(f"app/f{i}"))
    return path


def many_zero_files(path: Path, count: int = 600, size: int = 64 * 1024) -> Path:
    """Many modest files of zeros: none is large, the whole inflates ~1000 times."""
    with tarfile.open(path, "w:gz") as tar:
        for i in range(count):
            tar.addfile(*zero_member(f"app/chunk{i}.bin", size))
    return path


def pax_bomb(path: Path, size: int = 64 * MIB) -> Path:
    """A pax extended header of `size` bytes, which tarfile would read into memory whole."""
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = size
    with tarfile.open(path, "w:gz", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(info, Zeros(size))
        tar.addfile(tarfile.TarInfo("app/after"))
    return path


def unpacked(folder: Path) -> list[Path]:
    return list(folder.rglob("*")) if folder.exists() else []


def test_gzip_bomb_is_refused_while_inflating(tmp_path: Path) -> None:
    """A 256 MiB file of zeros in a ~250 KiB upload is refused by its ratio, nothing unpacked."""
    archive = gzip_bomb(tmp_path / "bomb.tgz")
    assert archive.stat().st_size < MIB
    with pytest.raises(SourceRejected, match=RATIO_REFUSAL):
        extract(archive, tmp_path / "app", max_bytes=UNPACKED_LIMIT)
    assert unpacked(tmp_path / "app") == []


def test_tar_with_a_huge_entry_count_is_refused(tmp_path: Path) -> None:
    """A tar of 5000 empty files is refused at the 1001st entry, nothing unpacked."""
    archive = many_entries(tmp_path / "entries.tgz")
    with pytest.raises(SourceRejected, match=ENTRIES_REFUSAL):
        extract(archive, tmp_path / "app", max_bytes=UNPACKED_LIMIT, max_entries=ENTRY_LIMIT)
    assert unpacked(tmp_path / "app") == []


def test_high_ratio_archive_of_small_files_is_refused(tmp_path: Path) -> None:
    """600 files of 64 KiB zeros, each harmless, are refused together by their ratio."""
    archive = many_zero_files(tmp_path / "ratio.tgz")
    with pytest.raises(SourceRejected, match=RATIO_REFUSAL):
        extract(archive, tmp_path / "app", max_bytes=UNPACKED_LIMIT)
    assert unpacked(tmp_path / "app") == []


def test_oversized_pax_header_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A 64 MiB pax header is refused from its size, not read into memory."""
    archive = pax_bomb(tmp_path / "pax.tgz")
    with pytest.raises(SourceRejected, match="extended tar header of 67108864 bytes"):
        extract(archive, tmp_path / "app", max_bytes=UNPACKED_LIMIT)
    assert unpacked(tmp_path / "app") == []


def test_ordinary_source_still_unpacks(tmp_path: Path) -> None:
    """A normal source passes the streaming checks and unpacks."""
    archive = tmp_path / "ok.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        body = b"web: python app.py\n"
        info = tarfile.TarInfo("app/Procfile")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    extract(archive, tmp_path / "app", max_bytes=UNPACKED_LIMIT, max_entries=ENTRY_LIMIT)
    assert (tmp_path / "app" / "Procfile").read_bytes() == body


# ---- the real builder service ---------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.docker
@pytest.mark.slow
async def test_builder_service_refuses_an_entry_bomb(tmp_path: Path) -> None:
    """BUILD_REQUEST with a 5000-entry tar fails with the entry-count line."""
    nats = NatsServer(tmp_path / "nats")
    nats.start()
    try:
        home = tmp_path / "home"
        home.mkdir()
        async with builder_stack(nats, home, extracted_max_entries=ENTRY_LIMIT) as harness:
            data = many_entries(tmp_path / "entries.tgz").read_bytes()
            result = await harness.build(data, app_id=harness.app_id())
            assert result.status == "failed"
            assert ENTRIES_REFUSAL in result.text
            assert unpacked(home / "builder" / "builds") == []
    finally:
        nats.stop()


# ---- through the gateway: POST /sources, PUT, POST /apps/{app}/builds -------------------------


@pytest.fixture
async def real_builder(
    nats_server: NatsServer, slipway_home: Path, keyring_service: ServiceApp
) -> AsyncIterator[BuilderSettings]:
    """The real builder on the gateway's bus, with its default unpack limits."""
    settings = BuilderSettings(
        nats_url=nats_server.url,
        home=str(slipway_home),
        registry_mode="local",
        build_network=f"slipway-sec-bombs-{uuid.uuid4().hex[:8]}",
        shutdown_grace=10.0,
    )
    service = create_builder(settings)
    task = await run_in_background(service)
    yield settings
    await stop(service, task)
    async with aiodocker.Docker() as docker:
        with contextlib.suppress(aiodocker.DockerError):
            await (await docker.networks.get(settings.build_network)).delete()


@pytest.mark.integration
@pytest.mark.docker
@pytest.mark.slow
async def test_gzip_bomb_uploaded_as_a_source_fails_its_build(
    stack: Stack, real_builder: BuilderSettings, tmp_path: Path
) -> None:
    """A gzip bomb PUT to a source's put_url fails its build with the ratio line."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "bombed")
    blob = (await alice.ok("POST", "/apps/bombed/sources", status=201))["source_blob"]
    bomb = gzip_bomb(tmp_path / "bomb.tgz")
    async with stack.session.put(blob["put_url"], data=bomb.read_bytes()) as answer:
        assert answer.status == 200, await answer.text()
    build = await alice.ok(
        "POST", "/apps/bombed/builds", {"source_blob": {"url": blob["get_url"]}}, status=201
    )

    async def failed() -> None:
        info = await alice.ok("GET", f"/apps/bombed/builds/{build['id']}")
        assert info["status"] == "failed"

    await assert_eventually(failed, timeout=120)
    async with stack.session.get(build["output_stream_url"]) as answer:
        output = await answer.text()
    assert f" !     source rejected: it {RATIO_REFUSAL}" in output
    assert unpacked(Path(real_builder.home) / "builder" / "builds") == []
