"""The reconcile loop against real NATS and a real Caddy, without containers."""

from __future__ import annotations

import pytest

from slipway.contracts.scheduler import Dyno
from slipway.libs.caddy import CaddyServer
from slipway.services.network_wirer.caddy import CaddyAdmin
from tests.network_wirer.conftest import RunningWirer, World

pytestmark = [pytest.mark.integration]


def _dyno(app_id: str, port: int) -> Dyno:
    return Dyno(
        app_id=app_id,
        app_name="kept",
        team_id="team",
        name="web.1",
        process_type="web",
        release_version=1,
        state="up",
        host_id="local",
        address="127.0.0.1",
        port=port,
    )


async def test_an_unanswering_scheduler_keeps_the_last_routes(
    world: World, wirer: RunningWirer, caddy: CaddyServer
) -> None:
    """When DYNOS_LIST goes unanswered, the routes the wirer knew stay in Caddy."""
    app = world.app("kept")
    await world.set_dyno(_dyno(app.app_id, 40001), announce=False)
    running = await wirer.start()
    admin = CaddyAdmin(caddy.admin_socket)
    try:
        route = await admin.by_id(f"app-{app.app_id}-http")
        proxy = route["handle"][0]["routes"][-1]["handle"][-1]
        assert proxy["upstreams"] == [{"dial": "127.0.0.1:40001"}]

        await world.scheduler.close()  # nobody answers DYNOS_LIST any more
        world.dynos.clear()
        await running.refresh()

        route = await admin.by_id(f"app-{app.app_id}-http")
        assert route["handle"][0]["routes"][-1]["handle"][-1]["upstreams"] == proxy["upstreams"]
    finally:
        await admin.close()


async def test_a_new_app_is_routed_on_the_next_pass(
    world: World, wirer: RunningWirer, caddy: CaddyServer
) -> None:
    """An app the wirer learns about at a reconcile gets its route; before, it has none."""
    running = await wirer.start()
    admin = CaddyAdmin(caddy.admin_socket)
    try:
        app = world.app("later")
        config = await admin.config("apps/http/servers/router_http/routes")
        assert all(not r.get("@id", "").startswith(f"app-{app.app_id}") for r in config)
        await world.set_dyno(_dyno(app.app_id, 40002), announce=False)
        await running.refresh()
        route = await admin.by_id(f"app-{app.app_id}-https")
        assert route["match"] == [{"host": ["later.localhost"]}]
    finally:
        await admin.close()
