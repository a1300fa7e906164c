"""Distribution lives and dies with registry-proxy; images survive both."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import msgspec
import nats.js.errors
import pytest

from slipway.contracts.registry import IMAGE_PUSHED, IMAGES_LIST, ImagePushed, ListImages
from slipway.contracts.subjects import STREAM_EVT
from slipway.libs.natsserver import NatsServer
from slipway.services.registry_proxy.client import docker_auth
from tests.conftest import assert_eventually
from tests.registry_proxy.conftest import BusFactory, RegistryHttp, RunningRegistry

pytestmark = [pytest.mark.integration]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_distribution_that_dies_is_started_again(
    registry: RunningRegistry, http: RegistryHttp, bus_factory: BusFactory, app_id: str
) -> None:
    """Killing Distribution costs a restart, not the images."""
    auth = await docker_auth(await bus_factory("builder"), app_id, "push")
    image = await http.push_image(auth, "v1", b"layer-" + uuid.uuid4().bytes)
    distribution = registry.state.distribution
    old = distribution.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)

    def restarted() -> None:
        assert distribution.pid not in (None, old)
        assert distribution.ready.is_set()

    await assert_eventually(restarted, timeout=30)
    assert await http.manifest_status(auth, image.digest) == 200


async def test_service_restart_restarts_distribution_and_keeps_images(
    registry: RunningRegistry, http: RegistryHttp, bus_factory: BusFactory, app_id: str
) -> None:
    """Stopping the service stops its Distribution; starting it again serves the same images."""
    builder = await bus_factory("builder")
    auth = await docker_auth(builder, app_id, "push")
    layer = b"layer-" + uuid.uuid4().bytes
    image = await http.push_image(auth, "v1", layer)
    old = registry.state.distribution.pid
    assert old is not None

    await registry.stop()
    assert not _alive(old)
    await registry.restart_stopped()

    assert registry.state.distribution.pid not in (None, old)
    assert await http.manifest_status(auth, image.digest) == 200  # the old credential too
    status, _, body = await http.request("GET", f"/v2/apps/{app_id}/blobs/{image.layer}", auth)
    assert (status, body) == (200, layer)
    listed = await builder.call(IMAGES_LIST, ListImages(app_id=app_id))
    assert [i.digest for i in listed.images] == [image.digest]


async def test_a_child_left_by_a_killed_service_is_replaced(
    registry: RunningRegistry, http: RegistryHttp, bus_factory: BusFactory, app_id: str
) -> None:
    """A Distribution still running from a registry-proxy that died is stopped at start."""
    auth = await docker_auth(await bus_factory("builder"), app_id, "push")
    image = await http.push_image(auth, "v1", b"layer-" + uuid.uuid4().bytes)
    await registry.stop()
    distribution = registry.state.distribution
    # What a SIGKILLed registry-proxy leaves: its child running, the pidfile naming it.
    distribution.socket.parent.mkdir(mode=0o700, exist_ok=True)
    orphan = await asyncio.create_subprocess_exec(
        distribution.binary,
        "serve",
        str(distribution.config_path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    distribution.pidfile.write_text(f"{orphan.pid}\n")
    await assert_eventually(lambda: _socket_exists(distribution.socket))
    try:
        await registry.restart_stopped()
        assert await asyncio.wait_for(orphan.wait(), 30) is not None
        assert registry.state.distribution.pid != orphan.pid
        assert await http.manifest_status(auth, image.digest) == 200
    finally:
        if orphan.returncode is None:
            orphan.kill()
            await orphan.wait()


def _socket_exists(path: Path) -> None:
    assert path.exists()


async def test_a_push_while_nats_is_away_is_announced_when_it_returns(
    registry: RunningRegistry,
    http: RegistryHttp,
    bus_factory: BusFactory,
    nats_server: NatsServer,
    app_id: str,
) -> None:
    """Pushes need no NATS; their IMAGE_PUSHED waits in the outbox (on disk) meanwhile."""
    auth = await docker_auth(await bus_factory("builder"), app_id, "push")
    nats_server.stop()
    image = await http.push_image(auth, "v1", b"layer-" + uuid.uuid4().bytes)
    assert [i.digest for i in await registry.state.store.images(app_id)] == [image.digest]
    announcer = registry.state.announcer

    def gave_up_once() -> None:
        assert announcer.failures >= 1

    await assert_eventually(gave_up_once, timeout=60, interval=0.2)
    assert len(await registry.state.store.pending_events()) == 1
    nats_server.start()
    reader = await bus_factory("gateway")

    async def announced() -> None:
        try:
            msg = await reader.js.get_last_msg(STREAM_EVT, IMAGE_PUSHED.subject)
        except nats.js.errors.NotFoundError:
            raise AssertionError("not announced yet") from None
        assert msgspec.json.decode(msg.data or b"", type=ImagePushed).digest == image.digest

    await assert_eventually(announced, timeout=60, interval=0.5)
