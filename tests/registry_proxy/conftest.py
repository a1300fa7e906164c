"""A real registry-proxy (with its real Distribution child) in the test's event loop.

    async def test_x(registry: RunningRegistry, engine: Engine, bus_factory: BusFactory):
        builder = await bus_factory("builder")
        auth = await docker_auth(builder, app_id, "push")
        image = await engine.build_image()
        await engine.push(image, auth, "v1")

Images are built FROM the local run stack with one unique file, so every image
has a layer of its own; every image and tag a test makes is removed afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import tarfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import msgspec
import pytest
from multidict import CIMultiDictProxy
from yarl import URL

from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from slipway.services.registry_proxy.app import create_service
from slipway.services.registry_proxy.client import DockerAuth
from slipway.services.registry_proxy.settings import RegistryProxySettings
from slipway.services.registry_proxy.state import STATE, RegistryProxy

BusFactory = Callable[[str], Awaitable[Bus]]
RUN_STACK = "slipway/stack-run:bookworm"
TEST_LABEL = "slipway.test.registry-proxy"


@dataclass
class RunningRegistry:
    """One registry-proxy running in the test's event loop."""

    settings: RegistryProxySettings
    app: ServiceApp
    task: asyncio.Task[None]

    @property
    def state(self) -> RegistryProxy:
        return self.app[STATE]

    @property
    def address(self) -> str:
        """host:port of the proxy, as credentials name it."""
        return self.state.proxy.registry

    async def stop(self) -> None:
        self.app.stop()
        await asyncio.wait_for(self.task, 60)

    async def restart(self) -> None:
        """Stop, then start a fresh service on the same home and the same port."""
        await self.stop()
        await self.restart_stopped()

    async def restart_stopped(self) -> None:
        """Start a fresh service on the stopped one's home and port."""
        port = int(self.address.rsplit(":", 1)[1])
        settings = _replace(self.settings, registry_port=port)
        started = await start_registry(settings)
        self.settings, self.app, self.task = settings, started.app, started.task


def _replace(settings: RegistryProxySettings, **changes: Any) -> RegistryProxySettings:
    return msgspec.structs.replace(settings, **changes)


async def start_registry(settings: RegistryProxySettings) -> RunningRegistry:
    """Run registry-proxy until it serves; re-raise its start-up error if it stops first."""
    app = create_service(settings)
    task = asyncio.create_task(app.run(install_signals=False))
    started = asyncio.create_task(app.started.wait())
    await asyncio.wait({task, started}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if not app.started.is_set():
        started.cancel()
        if task.done():
            task.result()
        raise TimeoutError("registry-proxy did not start")
    return RunningRegistry(settings, app, task)


@pytest.fixture
def registry_settings(nats_server: NatsServer, tmp_path: Path) -> RegistryProxySettings:
    """Settings for a test: own home, a free port, collections without delay."""
    return RegistryProxySettings(
        nats_url=nats_server.url,
        home=str(tmp_path / "home"),
        registry_port=0,
        registry_gc_delay_s=0.0,
        shutdown_grace=10.0,
    )


@pytest.fixture
async def registry(registry_settings: RegistryProxySettings) -> AsyncIterator[RunningRegistry]:
    """The real registry-proxy and its Distribution child."""
    running = await start_registry(registry_settings)
    yield running
    if not running.task.done():
        await running.stop()


@dataclass
class Engine:
    """The local Docker engine, remembering every image name a test made."""

    docker: aiodocker.Docker
    names: list[str] = field(default_factory=list)

    async def build_image(self, content: str | None = None) -> str:
        """A tiny image FROM the run stack with one unique file; returns its id."""
        content = content or uuid.uuid4().hex
        name = f"slipway-test-registry:{uuid.uuid4().hex[:12]}"
        dockerfile = f"FROM {RUN_STACK}\nCOPY marker.txt /app/marker.txt\nLABEL {TEST_LABEL}=1\n"
        await self.docker.images.build(
            fileobj=_context({"Dockerfile": dockerfile, "marker.txt": content}),
            encoding="identity",
            tag=name,
            rm=True,
            forcerm=True,
        )
        self.names.append(name)
        info = await self.docker.images.inspect(name)
        return str(info["Id"])

    async def push(self, image: str, auth: DockerAuth, tag: str) -> None:
        """Tag `image` into the app's repository and push it with `auth`."""
        await self.docker.images.tag(image, auth.repository, tag=tag)
        self.names.append(f"{auth.repository}:{tag}")
        await self.docker.images.push(auth.repository, tag=tag, auth=auth.auth)

    async def pull(self, reference: str, auth: DockerAuth) -> None:
        """Pull `reference` (repository:tag or repository@digest) with `auth`."""
        self.names.append(reference)
        await self.docker.images.pull(reference, auth=auth.auth)

    async def forget(self, reference: str) -> None:
        """Remove one name from the engine (the image goes when no name is left)."""
        try:
            await self.docker.images.delete(reference, force=True)
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise

    async def has(self, reference: str) -> bool:
        try:
            await self.docker.images.inspect(reference)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return False
            raise
        return True


def _context(files: dict[str, str]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    """The local Docker engine; every name a test created is removed afterwards."""
    docker = aiodocker.Docker()
    try:
        await docker.images.inspect(RUN_STACK)
    except aiodocker.DockerError:
        await docker.close()
        pytest.fail(f"{RUN_STACK} is missing: run scripts/build-stack first")
    engine = Engine(docker)
    try:
        yield engine
    finally:
        for name in reversed(engine.names):
            await engine.forget(name)
        await docker.close()


@pytest.fixture
def app_id() -> str:
    """A fresh app id, shaped like the gateway's (a UUID)."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class PushedImage:
    """An image pushed through the registry API by hand: its manifest and blob digests."""

    digest: str
    config: str
    layer: str


class RegistryHttp:
    """The registry HTTP API spoken by hand (what an engine does, in small steps)."""

    def __init__(self, address: str) -> None:
        self.base = f"http://{address}"
        self.session = aiohttp.ClientSession()

    async def close(self) -> None:
        await self.session.close()

    async def request(
        self,
        method: str,
        path: str,
        auth: DockerAuth | None = None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        """One request; its status, headers and body."""
        headers = dict(headers or {})
        if auth is not None:
            pair = f"{auth.auth['username']}:{auth.auth['password']}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        async with self.session.request(
            method,
            # encoded: sent exactly as written, dot segments and all
            URL(self.base + path, encoded=True),
            data=data,
            headers=headers,
            params=params,
            allow_redirects=False,
        ) as resp:
            return resp.status, resp.headers, await resp.read()

    async def upload_blob(self, auth: DockerAuth, repository: str, data: bytes) -> str:
        """Upload one blob (POST, then PUT with the digest); its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        status, headers, body = await self.request("POST", f"/v2/{repository}/blobs/uploads/", auth)
        assert status == 202, body
        location = URL(headers["Location"])
        assert not location.is_absolute()  # resolved against the proxy's own address
        status, _, body = await self.request(
            "PUT",
            location.path,
            auth,
            data=data,
            params={**dict(location.query), "digest": digest},
            headers={"Content-Type": "application/octet-stream"},
        )
        assert status == 201, body
        return digest

    async def push_image(
        self, auth: DockerAuth, tag: str, layer: bytes, *, base: bytes | None = None
    ) -> PushedImage:
        """Push an image (schema 2 manifest) tagged `tag`: `layer` on top of `base`, if any."""
        repository = auth.repository.split("/", 1)[1]
        config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
        config_digest = await self.upload_blob(auth, repository, config)
        layers = [base, layer] if base is not None else [layer]
        digests = [await self.upload_blob(auth, repository, data) for data in layers]
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_V2,
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "size": len(config),
                    "digest": config_digest,
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "size": len(data),
                        "digest": digest,
                    }
                    for data, digest in zip(layers, digests, strict=True)
                ],
            }
        ).encode()
        status, headers, body = await self.request(
            "PUT",
            f"/v2/{repository}/manifests/{tag}",
            auth,
            data=manifest,
            headers={"Content-Type": MANIFEST_V2},
        )
        assert status == 201, body
        return PushedImage(headers["Docker-Content-Digest"], config_digest, digests[-1])

    async def manifest_status(self, auth: DockerAuth, reference: str) -> int:
        repository = auth.repository.split("/", 1)[1]
        status, _, _ = await self.request(
            "HEAD",
            f"/v2/{repository}/manifests/{reference}",
            auth,
            headers={"Accept": MANIFEST_V2},
        )
        return status


MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture
async def http(registry: RunningRegistry) -> AsyncIterator[RegistryHttp]:
    """A registry API client pointed at the proxy."""
    client = RegistryHttp(registry.address)
    yield client
    await client.close()


def blob_file(storage: Path, digest: str) -> Path:
    """Where Distribution's filesystem driver keeps a blob's bytes."""
    algorithm, hexa = digest.split(":", 1)
    return storage / "docker/registry/v2/blobs" / algorithm / hexa[:2] / hexa / "data"
