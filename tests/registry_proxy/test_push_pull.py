"""Docker engines push and pull through the proxy with the credentials it issues."""

from __future__ import annotations

import asyncio
import time
import uuid

import aiodocker
import msgspec
import pytest

from slipway.contracts.registry import (
    IMAGE_PUSHED,
    IMAGES_LIST,
    ImagePushed,
    ListImages,
)
from slipway.libs.errors import Forbidden
from slipway.services.registry_proxy.client import DockerAuth, docker_auth
from tests.registry_proxy.conftest import BusFactory, Engine, RunningRegistry

pytestmark = [pytest.mark.docker, pytest.mark.integration]


@pytest.mark.slow
async def test_push_records_announces_and_pulls_back(
    registry: RunningRegistry, engine: Engine, bus_factory: BusFactory, app_id: str
) -> None:
    """An engine pushes with push credentials: the digest is recorded, IMAGE_PUSHED
    published, and the image comes back with pull credentials after removing it locally."""
    builder = await bus_factory("builder")
    scheduler = await bus_factory("scheduler")
    events = await builder.nc.subscribe(IMAGE_PUSHED.subject)
    image = await engine.build_image()
    push = await docker_auth(builder, app_id, "push")
    assert push.repository == f"{registry.address}/apps/{app_id}"
    await engine.push(image, push, "v1")

    listed = await builder.call(IMAGES_LIST, ListImages(app_id=app_id))
    assert [i.tag for i in listed.images] == ["v1"]
    digest = listed.images[0].digest
    assert digest.startswith("sha256:")
    msg = await asyncio.wait_for(events.next_msg(timeout=10), 15)
    event = msgspec.json.decode(msg.data, type=ImagePushed)
    assert (event.app_id, event.tag, event.digest) == (app_id, "v1", digest)
    assert event.repository == push.repository

    await engine.forget(f"{push.repository}:v1")
    await engine.forget(image)
    assert not await engine.has(image)
    pull = await docker_auth(scheduler, app_id, "pull")
    await engine.pull(f"{pull.repository}@{digest}", pull)
    assert await engine.has(image)  # the same content is the same image id


async def test_only_builder_gets_push_and_only_builder_and_scheduler_pull(
    registry: RunningRegistry, bus_factory: BusFactory, app_id: str
) -> None:
    """The policy table: push for the builder, pull for the builder and the scheduler."""
    builder = await bus_factory("builder")
    scheduler = await bus_factory("scheduler")
    gateway = await bus_factory("gateway")
    await docker_auth(builder, app_id, "push")
    await docker_auth(builder, app_id, "pull")
    await docker_auth(scheduler, app_id, "pull")
    with pytest.raises(Forbidden):
        await docker_auth(scheduler, app_id, "push")
    with pytest.raises(Forbidden):
        await docker_auth(gateway, app_id, "pull")


async def test_pull_credentials_cannot_push(
    registry: RunningRegistry, engine: Engine, bus_factory: BusFactory, app_id: str
) -> None:
    """The engine's push with pull credentials is refused and nothing is recorded."""
    scheduler = await bus_factory("scheduler")
    pull = await docker_auth(scheduler, app_id, "pull")
    with pytest.raises(aiodocker.DockerError, match=r"pull credentials may not"):
        await engine.push(await engine.build_image(), pull, "v1")
    assert await registry.state.store.images(app_id) == []


async def test_push_without_credentials_is_refused(
    registry: RunningRegistry, engine: Engine, app_id: str
) -> None:
    """An engine with no credentials meets the Basic challenge and gets nothing in."""
    repository = f"{registry.address}/apps/{app_id}"
    await engine.docker.images.tag(await engine.build_image(), repository, tag="v1")
    engine.names.append(f"{repository}:v1")
    with pytest.raises(aiodocker.DockerError, match=r"no basic auth credentials"):
        await engine.docker.images.push(repository, tag="v1")
    assert await registry.state.store.images(app_id) == []


async def test_expired_credentials_are_refused(
    registry: RunningRegistry, engine: Engine, app_id: str
) -> None:
    """A credential signed by the service but past its expiry opens nothing."""
    token = registry.state.issuer.issue(app_id, "push", 60, now=time.time() - 3600)
    repository = f"{registry.address}/apps/{app_id}"
    auth = DockerAuth(
        {"username": "push", "password": token, "serveraddress": registry.address},
        repository,
        time.time() - 3540,
    )
    with pytest.raises(aiodocker.DockerError, match=r"registry credential expired"):
        await engine.push(await engine.build_image(), auth, "v1")
    assert await registry.state.store.images(app_id) == []


async def test_credentials_for_another_app_are_refused(
    registry: RunningRegistry, engine: Engine, bus_factory: BusFactory, app_id: str
) -> None:
    """Push credentials of one app cannot push into another app's repository."""
    builder = await bus_factory("builder")
    mine = await docker_auth(builder, app_id, "push")
    other = f"{registry.address}/apps/{uuid.uuid4()}"
    with pytest.raises(aiodocker.DockerError, match=r"denied: this credential is for apps/"):
        await engine.push(await engine.build_image(), mine._replace(repository=other), "v1")
    assert await registry.state.store.images(app_id) == []
