"""A test-side builder that speaks the builder's contracts for real, without building anything.

It takes `BUILD_REQUEST` from the CMD work queue like the real builder, fetches
the source URL over HTTP, checks its checksum, publishes `BuildOutput` chunks on
the build's live subject, then sends `RELEASE_CREATE` and publishes
`BUILD_FINISHED`; it answers `BUILD_OUTPUT_GET` and `CACHE_PURGE`. So the
gateway's side of the contract is exercised end to end; only the image is
imaginary. A source whose tarball holds a file named `FAIL` fails its build.
A test may hold a build half-way (`hold`) to watch output stream as it comes.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest

from slipway.contracts.base import Ok, encode
from slipway.contracts.builder import (
    BUILD_FINISHED,
    BUILD_OUTPUT_GET,
    BUILD_REQUEST,
    CACHE_PURGE,
    BuildFinished,
    BuildOutput,
    BuildOutputText,
    BuildRequested,
    BuildStatus,
    GetBuildOutput,
    PurgeCache,
    output_subject,
)
from slipway.contracts.gateway import RELEASE_CREATE, CreateRelease
from slipway.contracts.subjects import Service
from slipway.libs.errors import NotFound
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp, Settings
from tests.gateway.conftest import run_in_background, stop


@dataclass
class FakeBuilder:
    """What the fake builder saw and did, and the knobs a test turns."""

    service: ServiceApp
    requests: list[BuildRequested] = field(default_factory=list)
    purges: list[PurgeCache] = field(default_factory=list)
    outputs: dict[str, list[BuildOutput]] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    # Set per test: a build waits at `hold` after its first two chunks until released.
    hold: asyncio.Event | None = None
    holding: asyncio.Event = field(default_factory=asyncio.Event)

    def text(self, build_id: str) -> str:
        return "".join(chunk.text for chunk in self.outputs.get(build_id, []))

    async def publish(
        self, build_id: str, text: str, *, final: bool = False, status: BuildStatus = "pending"
    ) -> None:
        chunks = self.outputs.setdefault(build_id, [])
        chunk = BuildOutput(
            build_id=build_id, seq=len(chunks), text=text, final=final, status=status
        )
        chunks.append(chunk)
        await self.service.bus.live_publish(output_subject(build_id), encode(chunk))

    async def build(self, cmd: BuildRequested) -> None:
        self.requests.append(cmd)
        async with aiohttp.ClientSession() as session, session.get(cmd.source.url) as answer:
            tarball = await answer.read() if answer.status == 200 else b""
        await self.publish(cmd.build_id, f"-----> Fetched source ({len(tarball)} bytes)\n")
        checksum = "SHA256:" + hashlib.sha256(tarball).hexdigest()
        names = _names(tarball)
        await self.publish(cmd.build_id, f"-----> Files: {', '.join(sorted(names))}\n")
        if self.hold is not None:
            self.holding.set()
            await self.hold.wait()
        failed = checksum != cmd.source.checksum or not names or "FAIL" in names
        digest = "sha256:" + hashlib.sha256(cmd.build_id.encode()).hexdigest()
        if failed:
            await self.publish(cmd.build_id, " !     Buildpack failed: FAIL is present\n")
        else:
            await self.publish(cmd.build_id, "-----> Compiled slug\n")
            await self.service.bus.send(
                RELEASE_CREATE,
                CreateRelease(
                    app_id=cmd.app_id,
                    image_ref=f"127.0.0.1:5000/{cmd.app_name}@{digest}",
                    image_digest=digest,
                    process_types={"web": "python app.py"},
                    build_id=cmd.build_id,
                    actor=cmd.actor,
                ),
            )
        status: BuildStatus = "failed" if failed else "succeeded"
        await self.publish(cmd.build_id, "", final=True, status=status)
        self.finished.add(cmd.build_id)
        await self.service.bus.publish(
            BUILD_FINISHED,
            BuildFinished(
                build_id=cmd.build_id,
                app_id=cmd.app_id,
                app_name=cmd.app_name,
                team_id=cmd.team_id,
                status=status,
                image_ref=None if failed else f"127.0.0.1:5000/{cmd.app_name}@{digest}",
                image_digest=None if failed else digest,
                error="FAIL is present" if failed else None,
            ),
        )

    async def output(self, request: GetBuildOutput) -> BuildOutputText:
        if request.build_id not in self.outputs:
            raise NotFound("no such build")
        finished = request.build_id in self.finished
        return BuildOutputText(
            build_id=request.build_id,
            text=self.text(request.build_id),
            finished=finished,
            status=self.outputs[request.build_id][-1].status if finished else "pending",
        )

    async def purge(self, request: PurgeCache) -> Ok:
        self.purges.append(request)
        return Ok()


def _names(tarball: bytes) -> set[str]:
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
            return {member.name.removeprefix("./") for member in archive.getmembers()}
    except (tarfile.TarError, OSError):
        return set()


def create_fake_builder(nats_url: str) -> FakeBuilder:
    service = ServiceApp(Service.BUILDER, settings=Settings(nats_url=nats_url, shutdown_grace=5.0))
    fake = FakeBuilder(service)
    service.command(BUILD_REQUEST)(fake.build)
    service.rpc(BUILD_OUTPUT_GET)(fake.output)
    service.rpc(CACHE_PURGE)(fake.purge)
    return fake


@pytest.fixture
async def builder(nats_server: NatsServer) -> AsyncIterator[FakeBuilder]:
    """The fake builder, serving in this event loop."""
    fake = create_fake_builder(nats_server.url)
    task = await run_in_background(fake.service)
    yield fake
    if fake.hold is not None:
        fake.hold.set()
    await stop(fake.service, task)
