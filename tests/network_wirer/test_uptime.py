"""Uptime probes (#20 item 4): real HAProxy, a real dyno, the real network-wirer probing.

The probe interval is short here (0.3 s) and the tests wait for whole probe rounds
(`Prober.rounds_after`), never for a time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import msgspec
import pytest

from slipway.contracts.gateway import APP_DESTROYED, AppDestroyed
from slipway.contracts.logs import RouterAccess, router_subject
from slipway.contracts.router import UPTIME_GET, GetUptime, Uptime
from slipway.services.network_wirer.app import PROBER
from slipway.services.network_wirer.haproxy.config import PROBE_HEADER
from slipway.services.network_wirer.uptime import Prober
from tests.conftest import assert_eventually
from tests.network_wirer.conftest import Dynos, Router, RunningWirer, World
from tests.network_wirer.test_quiet import requests_seen

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]

INTERVAL = 0.3


def prober_of(wirer: RunningWirer) -> Prober:
    assert wirer.service is not None
    return wirer.service[PROBER]


async def uptime(world: World, app_id: str) -> Uptime:
    """What the gateway would get for the app."""
    return await world.gateway.call(UPTIME_GET, GetUptime(app_id=app_id), timeout=10)


def availability(answer: Uptime) -> dict[str, float | None]:
    return {w.name: w.availability for w in answer.windows}


def responses(wirer: RunningWirer, app_id: str, status_class: str = "2xx") -> float:
    """The router metric of the app (0 when it has no series)."""
    assert wirer.service is not None
    registry = wirer.service.metrics.registry
    value = registry.get_sample_value(
        "slipway_router_responses_total", {"app_id": app_id, "status_class": status_class}
    )
    return value or 0.0


async def lines_until(chunks: AsyncIterator[bytes], path: str) -> list[RouterAccess]:
    """The app's access records up to and including the one for `path`."""
    seen: list[RouterAccess] = []
    while not seen or seen[-1].path != path:
        data = await asyncio.wait_for(anext(chunks), 10)
        seen.append(msgspec.json.decode(data, type=RouterAccess))
    return seen


async def test_an_answering_app_is_100_percent_up_and_its_probes_are_not_logged(
    world: World, dynos: Dynos, wirer: RunningWirer, router: Router
) -> None:
    """Probes reach the dyno, count 100 %, and make no access line and no router metric;
    a request with a wrong marker is logged and counted as any other."""
    app = world.app("steady")
    dyno = await dynos.start(app)
    await world.set_dyno(dyno, announce=False)
    chunks = await world.gateway.live_subscribe(router_subject(app.app_id))
    before = await requests_seen(dynos, dyno)
    await wirer.start(probe_interval=INTERVAL)
    await prober_of(wirer).rounds_after(3)

    answer = await uptime(world, app.app_id)
    assert availability(answer) == {"24h": 100.0, "7d": 100.0, "30d": 100.0}
    assert answer.windows[0].probes >= 3
    assert answer.windows[0].probes == answer.windows[0].up
    assert answer.incidents == []
    assert answer.probe_interval == INTERVAL
    # The probes did reach the app: `GET /` lines in its own access log.
    probes = [
        line for line in (await requests_seen(dynos, dyno))[len(before) :] if "GET / " in line
    ]
    assert len(probes) >= 3

    # Ours: one plain request, one with a wrong marker (its header stripped before the dyno),
    # then a last one, so every probe made before them has had its line by then.
    status, _, _ = await router.get("steady.localhost", "/mine")
    assert status == 200
    status, body, _ = await router.get("steady.localhost", "/forged", {PROBE_HEADER: "guessed"})
    assert status == 200
    assert PROBE_HEADER.lower() not in json.loads(body)["headers"]
    status, _, _ = await router.get("steady.localhost", "/last")
    assert status == 200
    seen = await lines_until(chunks, "/last")
    assert [a.path for a in seen] == ["/mine", "/forged", "/last"]
    assert responses(wirer, app.app_id) == 3


async def test_a_dead_dyno_opens_an_incident_with_the_router_code_and_recovery_closes_it(
    world: World, dynos: Dynos, wirer: RunningWirer, router: Router
) -> None:
    """Killed: probes get the router's H-code, an incident opens with it; a new dyno up:
    the incident ends and availability is below 100 %."""
    app = world.app("shaky")
    first = await dynos.start(app)
    await world.set_dyno(first, announce=False)
    await wirer.start(probe_interval=INTERVAL)
    prober = prober_of(wirer)
    await prober.rounds_after(2)
    assert availability(await uptime(world, app.app_id))["24h"] == 100.0

    await dynos.kill(first)  # the scheduler has not noticed: the router finds out itself
    status, _, headers = await router.get("shaky.localhost")
    assert status == 503
    code = headers["X-Router-Error"]
    await prober.rounds_after(2)
    down = await uptime(world, app.app_id)
    (incident,) = down.incidents
    assert incident.ended_at is None
    assert incident.codes[0] == code
    assert down.windows[0].up < down.windows[0].probes

    second = await dynos.start(app)
    await world.set_dyno(second)  # DYNO_CHANGED: the router routes to the new one

    async def recovered() -> Uptime:
        await prober.rounds_after(1)
        answer = await uptime(world, app.app_id)
        assert answer.incidents and answer.incidents[0].ended_at is not None
        return answer

    back = await assert_eventually(recovered, timeout=30)
    (closed,) = back.incidents
    assert closed.started_at == incident.started_at
    assert closed.ended_at is not None and closed.ended_at > closed.started_at
    window = back.windows[0]
    assert window.availability is not None and 0 < window.availability < 100
    assert window.probes > window.up > 0
    # Probes of a down app are not customer traffic either: no 5xx in the router metric
    # but the one our own request above received.
    assert responses(wirer, app.app_id, "5xx") == 1


async def test_a_destroyed_app_loses_its_uptime_and_an_unknown_one_has_none(
    world: World, dynos: Dynos, wirer: RunningWirer
) -> None:
    """APP_DESTROYED drops the app's counters and incidents: it answers empty windows
    (availability None, no incident), as an app never probed does."""
    app = world.app("brief")
    await world.set_dyno(await dynos.start(app), announce=False)
    await wirer.start(probe_interval=INTERVAL)
    await prober_of(wirer).rounds_after(2)
    assert (await uptime(world, app.app_id)).windows[0].probes >= 2

    del world.apps[app.app_id]
    world.dynos.clear()
    await world.gateway.publish(
        APP_DESTROYED, AppDestroyed(app_id=app.app_id, name="brief", team_id="team", actor="t")
    )

    async def forgotten() -> None:
        answer = await uptime(world, app.app_id)
        assert [w.probes for w in answer.windows] == [0, 0, 0]
        assert availability(answer) == {"24h": None, "7d": None, "30d": None}
        assert answer.incidents == []

    await assert_eventually(forgotten, timeout=30)
    assert [w.probes for w in (await uptime(world, "no-such-app")).windows] == [0, 0, 0]
