"""An app's network on a host lives while the app has containers there, and no longer.

One real engine (the main one; the extra engines of `cluster` are not needed), the real
scheduler service and the stand-in gateway of tests/scheduler/conftest.py.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import pytest

from slipway.contracts import scheduler as sc
from slipway.contracts.oneoff import ONEOFF_RUN, OneOffStarted, RunOneOff
from slipway.contracts.scope import Scope
from slipway.libs.appnet import used_subnets
from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer
from tests.conftest import assert_eventually, new_scope, remove_scope_objects
from tests.scheduler.conftest import Cluster, StandInGateway

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
async def one_host(
    nats_server: NatsServer, sched_image: str, tmp_path: Path
) -> AsyncIterator[Cluster]:
    """A scheduler over the main engine only, and the stand-in gateway."""
    bus = await Bus.connect(nats_server.url, "gateway")
    await bus.ensure_streams()
    gateway = StandInGateway(bus=bus, image=sched_image)
    await gateway.serve()
    scope = new_scope()
    made = Cluster(
        nats=nats_server, bus=bus, gateway=gateway, hosts=[], scope=scope, home=tmp_path / "home"
    )
    try:
        yield made
    finally:
        try:
            await made.stop()
        finally:
            await bus.close()
            remove_scope_objects(scope)


@pytest.fixture
async def docker() -> AsyncIterator[aiodocker.Docker]:
    async with aiodocker.Docker() as client:
        yield client


def new_app() -> str:
    return uuid.uuid4().hex[:12]


async def network(docker: aiodocker.Docker, scope: Scope, app_id: str) -> dict[str, object] | None:
    """The app's network on the main engine, or None."""
    listed = await docker.networks.list(filters={"label": [scope.managed_label]})
    return next((n for n in listed if n["Name"] == scope.network(app_id)), None)


async def web_up(cluster: Cluster, app_id: str, count: int) -> list[sc.Dyno]:
    async def check() -> list[sc.Dyno]:
        dynos = [d for d in await cluster.dynos(app_id) if not d.one_off]
        assert [d.state for d in dynos] == ["up"] * count, dynos
        return dynos

    return await assert_eventually(check, timeout=60, interval=0.2)


async def gone(docker: aiodocker.Docker, scope: Scope, app_id: str) -> None:
    async def check() -> None:
        assert await network(docker, scope, app_id) is None

    await assert_eventually(check, timeout=30, interval=0.2)


async def dyno_containers(docker: aiodocker.Docker, scope: Scope, app_id: str) -> list[str]:
    """The app's containers on the main engine, every state, by their dyno label."""
    wanted = [scope.managed_label, f"{sc.LABEL_APP}={app_id}"]
    listed = await docker.containers.list(all=True, filters={"label": wanted})
    return sorted(c._container["Labels"].get(sc.LABEL_DYNO, "") for c in listed)


async def test_a_network_comes_with_the_first_dyno_and_goes_at_scale_to_zero(
    one_host: Cluster, docker: aiodocker.Docker
) -> None:
    """No network before any dyno; a /27 of the pool with it; none after; another app's stays."""
    cluster = one_host
    await cluster.start()
    await cluster.add_hosts()
    scope = cluster.scope
    app, other = new_app(), new_app()
    await cluster.gateway.release(app, 1, {"web": 0})
    await cluster.gateway.release(other, 1, {"web": 1})
    await web_up(cluster, other, 1)
    assert await network(docker, scope, app) is None  # an app without dynos holds none

    await cluster.gateway.scale(app, {"web": 2})
    await web_up(cluster, app, 2)
    found = await network(docker, scope, app)
    assert found is not None
    (subnet,) = used_subnets([found])
    assert subnet.prefixlen == 27
    assert subnet.subnet_of(ipaddress.IPv4Network(scope.pool))

    await cluster.gateway.scale(app, {"web": 0})
    await gone(docker, scope, app)
    assert await dyno_containers(docker, scope, app) == []
    assert await network(docker, scope, other) is not None  # nothing else was removed
    await web_up(cluster, other, 1)

    # Back from zero: a network again, and the dyno on it answers its health check.
    await cluster.gateway.scale(app, {"web": 1})
    await web_up(cluster, app, 1)
    assert await network(docker, scope, app) is not None


async def test_scaling_to_zero_and_straight_back_leaves_a_running_dyno_on_a_network(
    one_host: Cluster, docker: aiodocker.Docker
) -> None:
    """The removal after the last dyno and the create of the next one race: the dyno wins."""
    cluster = one_host
    await cluster.start()
    await cluster.add_hosts()
    app = new_app()
    await cluster.gateway.release(app, 1, {"web": 1})
    await web_up(cluster, app, 1)
    scope = cluster.scope

    async def no_containers() -> None:
        assert await dyno_containers(docker, scope, app) == []

    for _ in range(3):
        await cluster.gateway.scale(app, {"web": 0})
        # The last container is gone: its network's removal is starting or under way now.
        await assert_eventually(no_containers, timeout=60, interval=0.05)
        await cluster.gateway.scale(app, {"web": 1})
        await web_up(cluster, app, 1)
    (dyno,) = await web_up(cluster, app, 1)
    assert await network(docker, cluster.scope, app) is not None
    assert dyno.container_id is not None
    info = await docker.containers.container(dyno.container_id).show()
    assert cluster.scope.network(app) in info["NetworkSettings"]["Networks"]


async def test_a_one_off_keeps_the_network_until_it_ends(
    one_host: Cluster, docker: aiodocker.Docker, sched_image: str
) -> None:
    """At zero web dynos a running one-off keeps the app's network; its end frees it."""
    cluster = one_host
    await cluster.start()
    await cluster.add_hosts()
    scope = cluster.scope
    app = new_app()
    await cluster.gateway.release(app, 1, {"web": 1})
    await web_up(cluster, app, 1)
    started = await cluster.bus.call(
        ONEOFF_RUN,
        RunOneOff(
            app_id=app,
            app_name=f"app-{app[:8]}",
            team_id="team-test",
            release_version=1,
            image=sched_image,
            command="sleep 600",
        ),
        timeout=30,
    )
    assert isinstance(started, OneOffStarted)
    one_off = started.dyno
    assert one_off.container_id is not None

    await cluster.gateway.scale(app, {"web": 0})

    async def only_the_one_off() -> None:
        assert await dyno_containers(docker, scope, app) == [one_off.name]

    await assert_eventually(only_the_one_off, timeout=60, interval=0.2)
    # Whatever the release after the web dyno decided, a sweep now must keep it too.
    rt = cluster.sched.rt
    assert await rt.networks.sweep(rt.engines["main"].docker, "main") == 0
    assert await network(docker, scope, app) is not None

    await docker.containers.container(one_off.container_id).kill()
    await gone(docker, scope, app)
    assert await dyno_containers(docker, scope, app) == []
