"""The rollback window: SLIPWAY_ROLLBACK_WINDOW releases keep their images, older ones go."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from slipway.contracts.gateway import RELEASE_CREATED, ReleaseCreated
from slipway.contracts.registry import IMAGES_LIST, ListImages
from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer
from slipway.libs.service.settings import SettingsError, load_settings
from slipway.services.registry_proxy.client import docker_auth
from slipway.services.registry_proxy.gc import doomed
from slipway.services.registry_proxy.settings import RegistryProxySettings
from slipway.services.registry_proxy.store import Image, Release
from tests.conftest import assert_eventually
from tests.registry_proxy.conftest import BusFactory, RegistryHttp, RunningRegistry, blob_file

WINDOW = 3


@pytest.fixture
def registry_settings(nats_server: NatsServer, tmp_path: Path) -> RegistryProxySettings:
    """Settings read from the environment, as the service reads them, with a window of 3."""
    return load_settings(
        RegistryProxySettings,
        {
            "SLIPWAY_NATS_URL": nats_server.url,
            "SLIPWAY_HOME": str(tmp_path / "home"),
            "SLIPWAY_REGISTRY_PORT": "0",
            "SLIPWAY_REGISTRY_GC_DELAY_S": "0",
            "SLIPWAY_SHUTDOWN_GRACE": "10",
            "SLIPWAY_ROLLBACK_WINDOW": str(WINDOW),
        },
    )


def test_the_window_defaults_to_ten_releases_and_is_at_least_one() -> None:
    """Unset: 10 releases; a window of 0 would delete the current image, so it is refused."""
    assert load_settings(RegistryProxySettings, {}).rollback_window == 10
    with pytest.raises(SettingsError, match="rollback_window"):
        load_settings(RegistryProxySettings, {"SLIPWAY_ROLLBACK_WINDOW": "0"})


def test_the_current_release_keeps_its_image_whatever_the_window() -> None:
    """Even a window of 0 given in code keeps what the newest release runs."""
    releases = [Release(f"r{v}", "app", v, d) for v, d in ((1, "a"), (2, "b"))]
    images = [Image("app", d, d, 0.0) for d in ("a", "b")]
    assert doomed(images, releases, keep=0, now=10.0, grace=1.0) == {"a"}


async def _release(gateway: Bus, app_id: str, version: int, digest: str) -> None:
    await gateway.publish(
        RELEASE_CREATED,
        ReleaseCreated(
            app_id=app_id,
            app_name="app",
            team_id="team",
            release_id=str(uuid.uuid4()),
            version=version,
            description=f"v{version}",
            image_ref=f"127.0.0.1:5000/apps/{app_id}@{digest}",
            image_digest=digest,
            actor="test",
        ),
    )


@pytest.mark.integration
async def test_images_of_the_window_stay_and_older_ones_are_collected(
    registry: RunningRegistry, http: RegistryHttp, bus_factory: BusFactory, app_id: str
) -> None:
    """v1..v5 run a, b, c, c (a config change), d: the last 3 releases run c and d, so a
    and b are deleted and their blobs collected, c and d stay pullable."""
    assert registry.settings.rollback_window == WINDOW
    builder, gateway = await bus_factory("builder"), await bus_factory("gateway")
    auth = await docker_auth(builder, app_id, "push")
    a, b, c, d = [
        await http.push_image(auth, tag, b"layer-" + uuid.uuid4().bytes * 64)
        for tag in ("a", "b", "c", "d")
    ]
    for version, image in enumerate((a, b, c, c, d), start=1):
        await _release(gateway, app_id, version, image.digest)
    storage = registry.settings.storage_path()

    async def all_recorded() -> None:
        assert len(await registry.state.store.releases(app_id)) == 5

    await assert_eventually(all_recorded)
    # v5's own prune may still be running: a second one (idempotent) settles the outcome, so
    # the state checked below is the final one, not a moment between two releases.
    await registry.state.collector.prune(app_id)

    async def collected() -> None:
        listed = await builder.call(IMAGES_LIST, ListImages(app_id=app_id))
        assert {i.tag for i in listed.images} == {"c", "d"}
        assert registry.state.collector.collections >= 1
        assert not blob_file(storage, a.layer).exists()
        assert not blob_file(storage, b.layer).exists()

    await assert_eventually(collected, timeout=60)
    for image in (c, d):
        assert await http.manifest_status(auth, image.digest) == 200
        assert blob_file(storage, image.layer).exists()
    for image in (a, b):
        assert await http.manifest_status(auth, image.digest) == 404
