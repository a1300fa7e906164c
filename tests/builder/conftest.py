"""A real builder for the builder's tests: nats-server, keyring, builder, Docker, a source server.

One harness per test session (builds are slow; each example is built once):

    result = await harness.build(EXAMPLES / "python-hello", app_id=harness.app_id())

`result.lines` is the live output, `result.status` the final chunk's status,
`result.finished` the BUILD_FINISHED event and `result.release` the
CreateRelease command the builder sent (None when it sent none). Sources are
gzipped tarballs served by an aiohttp server on loopback. Every image, volume,
container and network the builder makes for these tests is removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import tarfile
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import msgspec
import pytest
import pytest_asyncio
from aiohttp import web
from nats.aio.msg import Msg

from slipway.contracts.builder import (
    BUILD_FINISHED,
    BUILD_REQUEST,
    BuildFinished,
    BuildOutput,
    BuildRequested,
    SourceBlob,
    output_subject,
)
from slipway.contracts.gateway import RELEASE_CREATE, CreateRelease
from slipway.libs.bus import Bus
from slipway.libs.egress import EgressPolicy
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from slipway.services.builder.app import create_service
from slipway.services.builder.container import ensure_network
from slipway.services.builder.firewall import BuildFirewall
from slipway.services.builder.settings import BuilderSettings
from slipway.services.keyring.app import create_service as create_keyring
from slipway.services.keyring.settings import KeyringSettings
from tests.builder.buildpack_server import BuildpackServer, network_gateway
from tests.gateway.conftest import run_in_background, stop

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
TEAM = "team-builder-tests"


def tarball(
    files: Mapping[str, bytes | str] | Path, *, extra: Sequence[tarfile.TarInfo] = ()
) -> bytes:
    """A gzipped tarball of a folder or of {name: content}, plus raw `extra` members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        if isinstance(files, Path):
            for path in sorted(files.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(files)), recursive=False)
        else:
            for name, content in files.items():
                data = content.encode() if isinstance(content, str) else content
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o755 if name.startswith("bin/") else 0o644
                tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return buffer.getvalue()


@dataclass
class BuildResult:
    """What a client and the gateway saw of one build."""

    build_id: str
    app_id: str
    lines: list[str]
    status: str
    finished: BuildFinished
    release: CreateRelease | None

    @property
    def text(self) -> str:
        return "".join(self.lines)


@dataclass
class Harness:
    """The running builder and everything it talks to."""

    bus: Bus
    builder: ServiceApp
    settings: BuilderSettings
    docker: aiodocker.Docker
    base_url: str
    blobs: dict[str, bytes]
    # https:// buildpacks (tarballs, git) reachable from the build network, under a test CA.
    buildpacks: BuildpackServer
    finished: dict[str, BuildFinished] = field(default_factory=dict)
    releases: dict[str, list[CreateRelease]] = field(default_factory=dict)
    app_ids: list[str] = field(default_factory=list)

    def app_id(self) -> str:
        """A fresh app id; its images and cache are removed at the end."""
        app = "app" + uuid.uuid4().hex[:12]
        self.app_ids.append(app)
        return app

    def serve(self, blob: bytes) -> SourceBlob:
        """Serve `blob` on loopback as the gateway would; its SourceBlob, with its checksum."""
        name = uuid.uuid4().hex + ".tgz"
        self.blobs[name] = blob
        digest = hashlib.sha256(blob).hexdigest()
        # The gateway's own source URLs (platform=True) are the ones a builder fetches from
        # loopback; a customer's URL to loopback is refused by the egress guard.
        return SourceBlob(
            url=f"{self.base_url}/sources/{name}", checksum=f"SHA256:{digest}", platform=True
        )

    async def build(
        self,
        source: Path | bytes | SourceBlob,
        *,
        app_id: str,
        buildpacks: list[str] | None = None,
        version: str | None = None,
        build_id: str | None = None,
    ) -> BuildResult:
        """Send a build command and wait for its final chunk and BUILD_FINISHED."""
        if isinstance(source, Path):
            source = tarball(source)
        blob = self.serve(source) if isinstance(source, bytes) else source
        if version is not None:
            blob = SourceBlob(
                url=blob.url, checksum=blob.checksum, version=version, platform=blob.platform
            )
        cmd = BuildRequested(
            build_id=build_id or uuid.uuid4().hex,
            app_id=app_id,
            app_name=f"name-{app_id}",
            team_id=TEAM,
            source=blob,
            buildpacks=buildpacks or [],
            actor="user:tester@example.com",
        )
        return await self.send(cmd)

    async def send(self, cmd: BuildRequested) -> BuildResult:
        """Send `cmd` as is (a redelivery test sends one twice)."""
        chunks = await self.bus.live_subscribe(output_subject(cmd.build_id))
        await self.bus.send(BUILD_REQUEST, cmd)
        lines, status = await asyncio.wait_for(_read_output(chunks), 280)
        finished = await self.wait_finished(cmd.build_id)
        # The release command, if any, goes out before BUILD_FINISHED; both were awaited.
        await self.bus.nc.flush()
        releases = self.releases.get(cmd.build_id, [])
        return BuildResult(
            cmd.build_id, cmd.app_id, lines, status, finished, releases[0] if releases else None
        )

    async def wait_finished(self, build_id: str) -> BuildFinished:
        for _ in range(600):
            if build_id in self.finished:
                return self.finished[build_id]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no BUILD_FINISHED for {build_id}")


async def _read_output(chunks: AsyncIterator[bytes]) -> tuple[list[str], str]:
    decode = msgspec.json.Decoder(BuildOutput).decode
    lines: list[str] = []
    async for data in chunks:
        chunk = decode(data)
        if chunk.final:
            return lines, chunk.status
        lines.append(chunk.text)
    raise AssertionError("output ended without a final chunk")


@pytest.fixture(scope="session")
def builder_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("builder-home")


@pytest.fixture(scope="session")
def session_nats(builder_home: Path) -> Iterator[NatsServer]:
    server = NatsServer(builder_home / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def harness(session_nats: NatsServer, builder_home: Path) -> AsyncIterator[Harness]:
    """Keyring + builder (local image mode) + a source server, for the whole session."""
    async with builder_stack(session_nats, builder_home) as h:
        yield h


@contextlib.asynccontextmanager
async def builder_stack(nats: NatsServer, home: Path, **overrides: Any) -> AsyncIterator[Harness]:
    """Start keyring, builder and source server on `nats`; remove all they made at the end."""
    token = uuid.uuid4().hex[:8]
    network = f"slipway-test-builds-{token}"
    docker = aiodocker.Docker()
    # The buildpack server listens on the build network's host side, made here first.
    await ensure_network(docker, network)
    gateway = await network_gateway(docker, network)
    packs = await BuildpackServer.start(home / f"buildpack-server-{token}", gateway)
    values: dict[str, Any] = {
        "nats_url": nats.url,
        "home": str(home),
        "registry_mode": "local",
        # The TLS-inspecting proxy's CA (for pip and npm) plus the buildpack server's.
        "ca_bundle": str(packs.ca_bundle),
        "egress_allow": f"{gateway}/32",
        "build_network": network,
        "build_timeout": 240.0,
        "config_timeout": 0.3,
        "concurrency": 4,
        "source_max_bytes": 4 * 1024 * 1024,
        "shutdown_grace": 10.0,
        **overrides,
    }
    settings = BuilderSettings(**values)
    keyring = create_keyring(KeyringSettings(nats_url=nats.url, home=str(home), shutdown_grace=5.0))
    # A helper for the whole session, not under test: its loop is the tests' own, which
    # block it with synchronous git and docker calls. Leased, a stall past the lease's ttl
    # makes it stand down (as a real leader must) and fails every later builder test; two
    # test processes on two cores did that once.
    keyring.leased = False
    keyring_task = await run_in_background(keyring)
    builder = create_service(settings)
    builder_task = await run_in_background(builder)
    bus = await Bus.connect(nats.url, "gateway")  # output and cache purges are the gateway's
    blobs: dict[str, bytes] = {}
    runner = await _source_server(blobs)
    port = runner.addresses[0][1]
    h = Harness(bus, builder, settings, docker, f"http://127.0.0.1:{port}", blobs, packs)
    await _listen(h)
    try:
        yield h
    finally:
        await stop(builder, builder_task)
        await stop(keyring, keyring_task)
        await bus.close()
        await runner.cleanup()
        await packs.close()
        await _remove_everything(docker, h)
        await docker.close()


async def _listen(h: Harness) -> None:
    finished = msgspec.json.Decoder(BuildFinished).decode
    release = msgspec.json.Decoder(CreateRelease).decode

    async def on_finished(msg: Msg) -> None:
        event = finished(msg.data)
        h.finished[event.build_id] = event

    async def on_release(msg: Msg) -> None:
        cmd = release(msg.data)
        h.releases.setdefault(cmd.build_id or "", []).append(cmd)

    # Core subscriptions see what is published into the streams, without consuming it.
    await h.bus.nc.subscribe(BUILD_FINISHED.subject, cb=on_finished)
    await h.bus.nc.subscribe(RELEASE_CREATE.subject, cb=on_release)
    await h.bus.nc.flush()


async def _source_server(blobs: dict[str, bytes]) -> web.AppRunner:
    async def blob(request: web.Request) -> web.Response:
        data = blobs.get(request.match_info["name"])
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="application/gzip")

    app = web.Application()
    app.router.add_get("/sources/{name}", blob)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


async def _remove_everything(docker: aiodocker.Docker, h: Harness) -> None:
    for app_id in h.app_ids:
        for image in await docker.images.list(filters={"label": [f"slipway.app={app_id}"]}):
            for tag in image.get("RepoTags") or [image["Id"]]:
                with contextlib.suppress(aiodocker.DockerError):
                    await docker.images.delete(tag, force=True)
        with contextlib.suppress(aiodocker.DockerError):
            volume = await docker.volumes.get(f"slipway-build-cache-{app_id}")  # type: ignore[no-untyped-call]
            await volume.delete()
    with contextlib.suppress(aiodocker.DockerError):
        network = await docker.networks.get(h.settings.build_network)
        await network.delete()
    # The builder fenced the test's network at start: its chains go with it.
    await BuildFirewall(h.settings.build_network, EgressPolicy()).remove()


@contextlib.asynccontextmanager
async def running(
    docker: aiodocker.Docker, image: str, cmd: list[str] | None = None
) -> AsyncIterator[str]:
    """Run `image` as a dyno would (PORT=5000, published on loopback); yield its base URL."""
    config: dict[str, Any] = {
        "Image": image,
        "Env": ["PORT=5000", "DYNO=web.1"],
        "ExposedPorts": {"5000/tcp": {}},
        "Labels": {"slipway.test": "builder"},
        "HostConfig": {"PortBindings": {"5000/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}},
    }
    if cmd is not None:
        config["Cmd"] = cmd
    container = await docker.containers.run(config)
    try:
        info = await container.show()
        port = info["NetworkSettings"]["Ports"]["5000/tcp"][0]["HostPort"]
        yield f"http://127.0.0.1:{port}"
    finally:
        await container.delete(force=True)


async def http_get(url: str) -> str:
    """The body of a 200 answer from `url`, retried while the app starts (up to 30 s)."""
    last: Exception | None = None
    async with aiohttp.ClientSession() as session:
        for _ in range(150):
            try:
                async with session.get(url) as response:
                    assert response.status == 200, response.status
                    return await response.text()
            except (aiohttp.ClientError, AssertionError) as exc:
                last = exc
                await asyncio.sleep(0.2)
    raise AssertionError(f"{url} never answered 200: {last}")


async def run_once(docker: aiodocker.Docker, image: str, command: str) -> str:
    """Run `command` through the image's launcher and return its output."""
    container = await docker.containers.run(
        {"Image": image, "Cmd": [command], "Labels": {"slipway.test": "builder"}}
    )
    try:
        await container.wait(timeout=60)
        return "".join(await container.log(stdout=True, stderr=True))
    finally:
        await container.delete(force=True)
