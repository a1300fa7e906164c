"""`AppNetworks` on the real engine: made for a container, removed after the last, never raced.

Containers here are created, never started: Docker refuses to create one on a missing
network, which is exactly what a race between a create and a remove would cause, and
created containers cost nothing to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import uuid
from collections.abc import AsyncIterator

import aiodocker
import pytest

from slipway.contracts.scheduler import LABEL_APP, LABEL_MANAGED
from slipway.contracts.scope import Scope
from slipway.libs.appnet import AppNetworks, NetworkPoolExhausted, used_subnets
from slipway.libs.service.settings import SettingsError, load_settings
from slipway.services.network_wirer.settings import WirerSettings
from slipway.services.scheduler.settings import SchedulerSettings
from tests.conftest import new_scope, remove_scope_objects

IMAGE = "slipway/stack-run:bookworm"  # present wherever scripts/up ran; only created here
HOST = "main"


@pytest.mark.parametrize("settings", [SchedulerSettings, WirerSettings])
@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"SLIPWAY_APP_SUBNET_PREFIX": "30"}, "app_subnet_prefix"),
        ({"SLIPWAY_APP_SUBNET_PREFIX": "16"}, "app_subnet_prefix"),
        ({"SLIPWAY_APP_NETWORK_POOL": "10.9.0.0/28"}, "smaller than one app subnet"),
        (
            {"SLIPWAY_APP_NETWORK_POOL": "10.9.0.0/26", "SLIPWAY_APP_SUBNET_PREFIX": "24"},
            "smaller than one app subnet (/24",
        ),
        ({"SLIPWAY_APP_NETWORK_POOL": "10.9.0.1/16"}, "not an IPv4 range"),
    ],
)
def test_both_services_refuse_a_pool_that_holds_no_subnet(
    settings: type[SchedulerSettings | WirerSettings], environ: dict[str, str], says: str
) -> None:
    """A bad pool or subnet size stops the service at start with one line naming it."""
    with pytest.raises(SettingsError, match="bad setting") as refused:
        load_settings(settings, environ)
    assert says in str(refused.value)
    assert "\n" not in str(refused.value)


def test_the_default_subnet_is_a_27_in_both_services() -> None:
    for settings in (load_settings(SchedulerSettings, {}), load_settings(WirerSettings, {})):
        assert settings.app_subnet_prefix == 27
    tuned = load_settings(SchedulerSettings, {"SLIPWAY_APP_SUBNET_PREFIX": "29"})
    assert tuned.app_subnet_prefix == 29


@pytest.fixture
async def docker(scope: Scope) -> AsyncIterator[aiodocker.Docker]:
    async with aiodocker.Docker() as client:
        try:
            yield client
        finally:
            await asyncio.to_thread(remove_scope_objects, scope)


async def free_pool(docker: aiodocker.Docker, prefix: int) -> str:
    """A /`prefix` nobody on this engine uses, off every scope's pool (parallel runs differ)."""
    taken = used_subnets(await docker.networks.list())
    outer = ipaddress.IPv4Network("10.213.0.0/16")
    choices = list(outer.subnets(new_prefix=prefix))
    random.shuffle(choices)
    return str(next(c for c in choices if not any(c.overlaps(t) for t in taken)))


async def network_of(
    docker: aiodocker.Docker, scope: Scope, app_id: str
) -> dict[str, object] | None:
    listed = await docker.networks.list(filters={"label": [scope.managed_label]})
    return next((n for n in listed if n["Name"] == scope.network(app_id)), None)


async def subnet_of(docker: aiodocker.Docker, scope: Scope, app_id: str) -> ipaddress.IPv4Network:
    found = await network_of(docker, scope, app_id)
    assert found is not None, app_id
    (subnet,) = used_subnets([found])
    return subnet


async def create_container(docker: aiodocker.Docker, scope: Scope, app_id: str) -> str:
    """A container of `app_id` on its network, created (Docker checks the network) not run."""
    container = await docker.containers.create(
        {
            "Image": IMAGE,
            "Cmd": ["true"],
            "Labels": {LABEL_MANAGED: scope.managed, LABEL_APP: app_id},
            "HostConfig": {"NetworkMode": scope.network(app_id)},
        },
        name=scope.container(f"appnet-{uuid.uuid4().hex[:10]}"),
    )
    return str(container.id)


async def remove_container(docker: aiodocker.Docker, container_id: str) -> None:
    await docker.containers.container(container_id).delete(force=True)


@pytest.mark.docker
async def test_a_small_pool_allocates_refuses_and_reuses_after_freeing(
    docker: aiodocker.Docker, scope: Scope
) -> None:
    """A /26 pool holds two /27s: two apps get one each, a third is refused until one frees."""
    pool = await free_pool(docker, 26)
    nets = AppNetworks(scope, pool)
    a, b, c = (uuid.uuid4().hex[:12] for _ in range(3))
    async with nets.held(docker, HOST, a):
        first = await create_container(docker, scope, a)
    async with nets.held(docker, HOST, b):
        await create_container(docker, scope, b)
    subnets = {await subnet_of(docker, scope, a), await subnet_of(docker, scope, b)}
    assert subnets == set(ipaddress.IPv4Network(pool).subnets(new_prefix=27))

    with pytest.raises(NetworkPoolExhausted, match=f"no free /27 left in {pool}"):
        async with nets.held(docker, HOST, c):
            pytest.fail("a third app got a network from a full pool")
    assert await network_of(docker, scope, c) is None

    # App a's last container goes: so does its network, and app c gets its subnet.
    freed = await subnet_of(docker, scope, a)
    await remove_container(docker, first)
    assert await nets.release(docker, HOST, a)
    assert await network_of(docker, scope, a) is None
    async with nets.held(docker, HOST, c):
        await create_container(docker, scope, c)
    assert await subnet_of(docker, scope, c) == freed
    assert await network_of(docker, scope, b) is not None  # nothing else was removed


@pytest.mark.docker
async def test_a_network_stays_while_any_container_of_the_app_is_there(
    docker: aiodocker.Docker, scope: Scope
) -> None:
    """A stopped (crashed) container keeps it, as does a create under way; the last one frees it."""
    nets = AppNetworks(scope, await free_pool(docker, 25))
    app, other = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    async with nets.held(docker, HOST, other):
        await create_container(docker, scope, other)
    async with nets.held(docker, HOST, app):
        one = await create_container(docker, scope, app)
        # Held: a release while this block creates containers leaves the network alone.
        assert not await nets.release(docker, HOST, app)
        two = await create_container(docker, scope, app)
    await remove_container(docker, one)
    assert not await nets.release(docker, HOST, app)  # `two` is still there (never started)
    assert await network_of(docker, scope, app) is not None
    await remove_container(docker, two)
    assert await nets.release(docker, HOST, app)
    assert await network_of(docker, scope, app) is None
    assert await network_of(docker, scope, other) is not None
    assert not await nets.release(docker, HOST, app)  # gone already: nothing to do


@pytest.mark.docker
async def test_a_create_right_after_a_remove_gets_a_network(
    docker: aiodocker.Docker, scope: Scope
) -> None:
    """Removal and creation started together, either order first, never leave a create without
    its network: the create waits for the removal, then makes a new one."""
    nets = AppNetworks(scope, await free_pool(docker, 25))
    app = uuid.uuid4().hex[:12]

    async def create() -> str:
        async with nets.held(docker, HOST, app):
            return await create_container(docker, scope, app)

    for round_ in range(6):
        # An empty network to remove, as after the app's last dyno stopped.
        async with nets.held(docker, HOST, app):
            pass
        assert await network_of(docker, scope, app) is not None
        remover = nets.release(docker, HOST, app)
        pair = (remover, create()) if round_ % 2 == 0 else (create(), remover)
        results = await asyncio.gather(*pair)
        container_id = str(results[1] if round_ % 2 == 0 else results[0])
        removed = results[0] if round_ % 2 == 0 else results[1]
        # Whichever ran first, the container exists on a network that exists.
        info = await docker.containers.container(container_id).show()
        assert info["HostConfig"]["NetworkMode"] == scope.network(app)
        assert await network_of(docker, scope, app) is not None
        if round_ % 2 == 0:
            assert removed is True  # the remove went first: the create made a new network
        await remove_container(docker, container_id)
        assert await nets.release(docker, HOST, app)
    # The created containers can start: their network is the one that exists now.
    async with nets.held(docker, HOST, app):
        last = await create_container(docker, scope, app)
    await docker.containers.container(last).start()
    with contextlib.suppress(aiodocker.DockerError):
        await docker.containers.container(last).wait()
    info = await docker.containers.container(last).show()
    assert info["State"]["ExitCode"] == 0, info["State"]


@pytest.mark.docker
async def test_the_sweep_removes_only_networks_no_container_uses(
    docker: aiodocker.Docker, scope: Scope
) -> None:
    """A network left by a create that failed goes; one with a container, or another
    scope's, stays."""
    nets = AppNetworks(scope, await free_pool(docker, 25))
    left, used = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    async with nets.held(docker, HOST, left):
        pass  # the create failed after the network was made
    async with nets.held(docker, HOST, used):
        await create_container(docker, scope, used)
    stranger = new_scope()  # another installation on the same engine
    foreign = AppNetworks(stranger, await free_pool(docker, 25))
    try:
        async with foreign.held(docker, HOST, left):
            pass
        assert await nets.sweep(docker, HOST) == 1
        assert await network_of(docker, scope, left) is None
        assert await network_of(docker, scope, used) is not None
        assert await network_of(docker, stranger, left) is not None
    finally:
        await asyncio.to_thread(remove_scope_objects, stranger)
