"""The reconcile loop against real NATS and a real HAProxy, without containers: what
HAProxy holds is read back through its runtime API."""

from __future__ import annotations

import pytest

from slipway.contracts.scheduler import Dyno
from slipway.libs.haproxy import HAProxyServer
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


async def _dials(server: HAProxyServer, host: str) -> set[str]:
    """The addresses of the servers HAProxy routes `host` to (its map, then its backend)."""
    runtime = server.runtime()
    try:
        hosts = await runtime.show_map(str(server.paths.data_dir / "hosts.map"))
        if host not in hosts:
            return set()
        backend = hosts[host].split(":")[0]
        return {s.dial for s in await runtime.show_servers(backend)}
    finally:
        await runtime.close()


async def test_an_unanswering_scheduler_keeps_the_last_routes(
    world: World, wirer: RunningWirer, haproxy_server: HAProxyServer
) -> None:
    """When DYNOS_LIST goes unanswered, the routes the wirer knew stay in HAProxy."""
    app = world.app("kept")
    await world.set_dyno(_dyno(app.app_id, 40001), announce=False)
    running = await wirer.start()
    assert await _dials(haproxy_server, "kept.localhost") == {"127.0.0.1:40001"}

    await world.scheduler.close()  # nobody answers DYNOS_LIST any more
    world.dynos.clear()
    await running.refresh()
    await running.reconcile(full=True)
    assert await _dials(haproxy_server, "kept.localhost") == {"127.0.0.1:40001"}


async def test_a_new_app_is_routed_on_the_next_pass(
    world: World, wirer: RunningWirer, haproxy_server: HAProxyServer
) -> None:
    """An app the wirer learns about at a reconcile gets its route; before, it has none."""
    running = await wirer.start()
    app = world.app("later")
    assert await _dials(haproxy_server, "later.localhost") == set()
    await world.set_dyno(_dyno(app.app_id, 40002), announce=False)
    await running.refresh()
    assert await _dials(haproxy_server, "later.localhost") == {"127.0.0.1:40002"}


async def test_changed_settings_take_effect_with_one_reload(
    world: World, wirer: RunningWirer, haproxy_server: HAProxyServer
) -> None:
    """HAProxy reads timeouts and server options from its file only: a wirer restarted with
    other settings writes it again and reloads once; with the same settings, never."""
    app = world.app("tuned")
    await world.set_dyno(_dyno(app.app_id, 40003), announce=False)
    await wirer.start()
    await wirer.stop()
    same = await wirer.start()
    assert same.reconciler.reloads == 0
    await wirer.stop()

    config = haproxy_server.paths.config
    assert "timeout server 7000ms" not in config.read_text()
    changed = await wirer.start(router_upstream_timeout=7.0)
    assert changed.reconciler.reloads == 1
    assert "timeout server 7000ms" in config.read_text()
    assert await _dials(haproxy_server, "tuned.localhost") == {"127.0.0.1:40003"}
    await changed.refresh()
    assert changed.reconciler.reloads == 1
