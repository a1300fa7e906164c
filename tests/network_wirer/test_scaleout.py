"""Scale-out: one router per host that receives traffic, each HAProxy driven by its own
network-wirer from the same events (issue 16, item 4).

Two real HAProxy servers, two network-wirers (router ids `east` and `west`) on one NATS,
real dyno containers. Each wirer has its own copy of the route events (a per-router
durable consumer), so a change announced once reaches both routers at once; with one
shared durable, each event would reach only one of them and the other would wait for its
periodic pass (an hour here).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import aiohttp
import pytest

from slipway.libs.haproxy import HAProxyServer, RouterPorts
from tests.conftest import assert_eventually
from tests.network_wirer.conftest import Dynos, RunningWirer, World, booted_haproxy

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def second_router() -> Iterator[HAProxyServer]:
    """Another HAProxy, as on a second host (its own folder and ports)."""
    with booted_haproxy(RouterPorts(0, 0, "127.0.0.1"), "slipway-nw2-") as server:
        yield server


async def _dynos_seen(server: HAProxyServer, host: str, times: int = 6) -> set[str]:
    """The dynos that answered `times` requests to `host` through `server` (non-200: none)."""
    seen: set[str] = set()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for _ in range(times):
            async with session.get(
                f"http://127.0.0.1:{server.ports.http_port}/", headers={"Host": host}
            ) as response:
                if response.status == 200:
                    seen.add(json.loads(await response.text())["dyno"])
    return seen


async def test_two_routers_serve_the_same_apps_from_the_same_events(
    world: World,
    dynos: Dynos,
    wirer: RunningWirer,
    haproxy_server: HAProxyServer,
    second_router: HAProxyServer,
) -> None:
    """Both routers route an app; a dyno announced once is routed by both, no periodic pass."""
    app = world.app("spread")
    await world.set_dyno(await dynos.start(app, "web.1"), announce=False)
    east = await wirer.start(router_id="east", reconcile_interval=3600.0)
    west_wirer = RunningWirer(wirer.settings)
    try:
        west = await west_wirer.start(
            router_id="west",
            reconcile_interval=3600.0,
            router_http_port=second_router.ports.http_port,
            router_https_port=second_router.ports.https_port,
            haproxy_data=str(second_router.paths.data_dir),
        )
        for server in (haproxy_server, second_router):
            assert await _dynos_seen(server, "spread.localhost") == {"web.1"}
        passes = (east.snapshot.reconciles, west.snapshot.reconciles)

        await world.set_dyno(await dynos.start(app, "web.2"))  # one DYNO_CHANGED event

        async def both_route_both() -> None:
            for server in (haproxy_server, second_router):
                assert await _dynos_seen(server, "spread.localhost") == {"web.1", "web.2"}

        await assert_eventually(both_route_both, timeout=20)
        # Each wirer ran a pass of its own for the event (the periodic one is an hour away).
        assert east.snapshot.reconciles > passes[0]
        assert west.snapshot.reconciles > passes[1]
    finally:
        await west_wirer.stop()
