"""Garbage collection keeps the images of the rollback window and frees the rest."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import msgspec
import pytest

from slipway.contracts.gateway import APP_DESTROYED, RELEASE_CREATED, AppDestroyed, ReleaseCreated
from slipway.contracts.registry import IMAGES_LIST, ListImages
from slipway.libs.bus import Bus
from slipway.services.registry_proxy.client import docker_auth
from slipway.services.registry_proxy.settings import RegistryProxySettings
from tests.conftest import assert_eventually
from tests.registry_proxy.conftest import (
    BusFactory,
    RegistryHttp,
    RunningRegistry,
    blob_file,
)

pytestmark = [pytest.mark.integration]


@pytest.fixture
def registry_settings(registry_settings: RegistryProxySettings) -> RegistryProxySettings:
    """A rollback window of two releases."""
    return msgspec.structs.replace(registry_settings, rollback_window=2)


async def _release(gateway: Bus, app_id: str, version: int, digest: str) -> None:
    await gateway.publish(
        RELEASE_CREATED,
        ReleaseCreated(
            app_id=app_id,
            app_name="app",
            team_id="team",
            release_id=str(uuid.uuid4()),
            version=version,
            description=f"Deploy v{version}",
            image_ref=f"127.0.0.1:5000/apps/{app_id}@{digest}",
            image_digest=digest,
            actor="test",
        ),
    )


def _layer() -> bytes:
    return b"layer-" + uuid.uuid4().bytes * 64


async def test_images_beyond_the_last_releases_are_deleted_and_collected(
    registry: RunningRegistry, http: RegistryHttp, bus_factory: BusFactory, app_id: str
) -> None:
    """Three releases, keep two: the first release's own blobs go, the layer it shares with
    the others stays; so does an image no release uses yet (a build still finishing)."""
    builder, gateway = await bus_factory("builder"), await bus_factory("gateway")
    auth = await docker_auth(builder, app_id, "push")
    storage = registry.settings.storage_path()
    stack = _layer()  # the run stack every image is built on
    images = [await http.push_image(auth, f"v{n}", _layer(), base=stack) for n in (1, 2, 3, 4)]
    for version, image in enumerate(images[:3], start=1):
        await _release(gateway, app_id, version, image.digest)

    async def first_image_collected() -> None:
        assert registry.state.collector.collections >= 1
        assert not blob_file(storage, images[0].layer).exists()
        assert not blob_file(storage, images[0].config).exists()

    await assert_eventually(first_image_collected, timeout=60)
    assert await http.manifest_status(auth, images[0].digest) == 404
    for image in images[1:]:
        assert await http.manifest_status(auth, image.digest) == 200
        assert blob_file(storage, image.layer).exists()
    assert blob_file(storage, "sha256:" + hashlib.sha256(stack).hexdigest()).exists()
    listed = await builder.call(IMAGES_LIST, ListImages(app_id=app_id))
    assert [i.tag for i in listed.images] == ["v4", "v3", "v2"]


async def test_a_destroyed_app_loses_all_its_images(
    registry: RunningRegistry, http: RegistryHttp, bus_factory: BusFactory, app_id: str
) -> None:
    """APP_DESTROYED deletes every image of the app; other apps keep theirs."""
    builder, gateway = await bus_factory("builder"), await bus_factory("gateway")
    auth = await docker_auth(builder, app_id, "push")
    other = await docker_auth(builder, str(uuid.uuid4()), "push")
    doomed = await http.push_image(auth, "v1", _layer())
    kept = await http.push_image(other, "v1", _layer())
    await gateway.publish(
        APP_DESTROYED, AppDestroyed(app_id=app_id, name="app", team_id="team", actor="test")
    )
    storage = registry.settings.storage_path()

    async def collected() -> None:
        assert not blob_file(storage, doomed.layer).exists()

    await assert_eventually(collected, timeout=60)
    assert await http.manifest_status(other, kept.digest) == 200
    assert blob_file(storage, kept.layer).exists()


async def test_collection_waits_for_a_push_in_flight(
    registry: RunningRegistry, http: RegistryHttp, bus_factory: BusFactory, app_id: str
) -> None:
    """A layer uploaded before its manifest survives a collection asked for meanwhile."""
    auth = await docker_auth(await bus_factory("builder"), app_id, "push")
    layer_bytes = _layer()
    layer = await http.upload_blob(auth, f"apps/{app_id}", layer_bytes)
    storage = registry.settings.storage_path()
    assert blob_file(storage, layer).exists()  # uploaded, referenced by no manifest yet

    collection = asyncio.create_task(registry.state.collector.collect())
    # Without the gate the collection would run to its end now and delete the layer.
    await assert_eventually(lambda: _held_or_done(registry, collection))
    assert not collection.done()

    image = await http.push_image(auth, "v1", layer_bytes)  # the push's manifest lands...
    await asyncio.wait_for(collection, 60)  # ...and only then the collection runs
    assert image.layer == layer
    assert blob_file(storage, layer).exists()
    assert await http.manifest_status(auth, image.digest) == 200


def _held_or_done(registry: RunningRegistry, task: asyncio.Task[str]) -> None:
    assert registry.state.gate.closed or task.done()
