"""10,000 apps on one HAProxy: loaded once, then a route change without any reload.

Durations are printed (run with -s), never asserted: this machine is shared.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import assert_eventually
from tests.network_wirer.haproxy.conftest import Dynos, HAProxyRouter, route

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APPS = 10_000


async def test_ten_thousand_apps_then_a_route_change(haproxy: HAProxyRouter, dynos: Dynos) -> None:
    """Every app routed after one pass; scaling the last app up reaches clients with no
    reload, and a second pass sends nothing."""
    web1 = await dynos.start("web.1")
    # Scaled to zero but each with its backend; the last app has the dyno (10,000 servers
    # on one test dyno would be 10,000 health checks, not routing).
    apps = [route(f"app{i:05d}") for i in range(APPS - 1)] + [route(f"app{APPS - 1:05d}", web1)]

    started = time.perf_counter()
    first = await haproxy.reconciler.reconcile(apps)
    loaded = time.perf_counter() - started
    assert first.reloaded  # the pool of 4 grew to hold 10,000 backends
    last = apps[-1].hosts[0]
    status, body, _ = await haproxy.get(last)
    assert (status, json.loads(body)["dyno"]) == (200, "web.1")
    assert (await haproxy.get(apps[0].hosts[0]))[0] == 503  # H14

    web2 = await dynos.start("web.2")
    scaled = [*apps[:-1], route(f"app{APPS - 1:05d}", web1, web2)]
    reloads = haproxy.reconciler.reloads
    started = time.perf_counter()
    change = await haproxy.reconciler.reconcile(scaled)
    changed = time.perf_counter() - started

    async def web2_answers() -> None:
        names = {json.loads((await haproxy.get(last))[1])["dyno"] for _ in range(2)}
        assert names == {"web.1", "web.2"}

    await assert_eventually(web2_answers)
    visible = time.perf_counter() - started
    assert haproxy.reconciler.reloads == reloads
    assert change.commands == 3  # add server, enable health, enable server

    started = time.perf_counter()
    idle = await haproxy.reconciler.reconcile(scaled)
    noop = time.perf_counter() - started
    assert idle.commands == 0
    started = time.perf_counter()
    await haproxy.reconciler.reconcile(scaled, full=True)
    full = time.perf_counter() - started
    print(
        f"\n{APPS} apps: first load (reload + map) {loaded:.2f} s; scale-up pass"
        f" {changed * 1000:.0f} ms, visible to a client after {visible * 1000:.0f} ms;"
        f" idle pass {noop * 1000:.0f} ms; full read-back pass {full * 1000:.0f} ms"
    )
