"""Several Docker hosts: every log-shipper answers for its own lines, the gateway merges them.

Two log-shippers run as hosts h1 and h2, each receiving its own dynos (its own managed
label stands for its own engine). Reads through the gateway must hold both hosts' lines,
in time order; a host whose log-shipper is gone is named, not silently left out.
"""

from __future__ import annotations

import contextlib
import datetime
import uuid
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import pytest

from slipway.contracts.log_shipper import ReadHistory
from slipway.libs.bus import Bus
from slipway.services.gateway.logs import shippers
from tests.conftest import assert_eventually
from tests.gateway.conftest import Stack
from tests.log_shipper.conftest import Dynos, ShipperFactory, socket_folder

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.alone]

# Two dynos printing at the same pace: their lines interleave in time.
PRINTER = """
import time
for i in range(40):
    print(f"{NAME} {i}")
    time.sleep(0.02)
"""
STAY = "import signal\nsignal.pause()\n"  # until the test removes the container


@pytest.fixture
async def other_host_dynos(slipway_home: Path, bus_factory: Any) -> Any:
    docker = aiodocker.Docker()
    scheduler: Bus = await bus_factory("scheduler")
    managed = f"test-{uuid.uuid4().hex[:10]}"
    made = Dynos(docker, managed, socket_folder(slipway_home, "h2"), scheduler, "h2")
    try:
        yield made
    finally:
        await made.remove_all()
        await docker.close()


def stamp(line: str) -> float:
    return datetime.datetime.fromisoformat(line.split(" ", 1)[0]).timestamp()


async def session_lines(api: Any, app: str, lines: int) -> list[str]:
    body = {"lines": lines, "dyno": "web", "source": "app"}  # no release or sample lines
    created = await api.ok("POST", f"/apps/{app}/log-sessions", body, status=201)
    async with aiohttp.ClientSession() as http, http.get(created["logplex_url"]) as stream:
        assert stream.status == 200
        return (await stream.text()).splitlines()


async def test_history_and_metrics_merge_every_hosts_log_shipper(
    stack: Stack,
    dynos: Dynos,
    other_host_dynos: Dynos,
    shipper_settings: ShipperFactory,
    start_shipper: Any,
) -> None:
    """web.1 on h1 and web.2 on h2: one log session shows both, in time order; metrics too."""
    await start_shipper(shipper_settings(host_id="h1", metrics_interval=0.5))
    await start_shipper(
        shipper_settings(host_id="h2", managed_value=other_host_dynos.managed, metrics_interval=0.5)
    )
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "twohosts")
    app_id, team_id = app["id"], app["team"]["id"]
    # They stay up after printing, so that both are there to be sampled for metrics.
    await dynos.run(app_id, team_id, "web.1", "NAME = 'one'" + PRINTER + STAY)
    await other_host_dynos.run(app_id, team_id, "web.2", "NAME = 'two'" + PRINTER + STAY)

    async def all_lines() -> list[str]:
        found = await session_lines(alice, "twohosts", 1500)
        assert len(found) == 80, found
        return found

    found = await assert_eventually(all_lines, timeout=30)
    assert [line.rsplit(": ", 1)[1] for line in found if "[web.1]" in line] == [
        f"one {i}" for i in range(40)
    ]
    assert [line.rsplit(": ", 1)[1] for line in found if "[web.2]" in line] == [
        f"two {i}" for i in range(40)
    ]
    stamps = [stamp(line) for line in found]
    assert stamps == sorted(stamps)  # merged by time, not host after host
    hosts_in_order = ["1" if "[web.1]" in line else "2" for line in found]
    assert "".join(hosts_in_order).count("12") + "".join(hosts_in_order).count("21") > 2

    # The last 10 lines of the app are the last 10 in time over both hosts.
    last = await session_lines(alice, "twohosts", 10)
    assert last == found[-10:]

    async def both_sampled() -> None:
        metrics = await alice.ok("GET", "/apps/twohosts/metrics")
        assert [d["dyno"] for d in metrics["dynos"]] == ["web.1", "web.2"]

    await assert_eventually(both_sampled, timeout=30)


async def test_a_silent_host_is_named_and_the_others_lines_still_come(
    stack: Stack,
    dynos: Dynos,
    other_host_dynos: Dynos,
    shipper_settings: ShipperFactory,
    start_shipper: Any,
    gateway_bus: Bus,
) -> None:
    """With h2's log-shipper stopped, a read expecting h1 and h2 returns h1's lines and a notice."""
    await start_shipper(shipper_settings(host_id="h1"))
    second = await start_shipper(
        shipper_settings(host_id="h2", managed_value=other_host_dynos.managed)
    )
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "onegone")
    app_id, team_id = app["id"], app["team"]["id"]
    await dynos.run(app_id, team_id, "web.1", "print('from h1')")
    await other_host_dynos.run(app_id, team_id, "web.2", "print('from h2')")
    ask = ReadHistory(app_id=app_id, team_id=team_id, lines=10, dyno="web")

    async def both() -> None:
        found = await shippers.read_history(gateway_bus, ask, expect={"h1", "h2"})
        assert sorted(e.text for e in found.lines) == ["from h1", "from h2"]
        assert not found.notices

    await assert_eventually(both, timeout=20)
    second.service.stop()
    await assert_eventually(lambda: _gone(second), timeout=20)
    found = await shippers.read_history(gateway_bus, ask, expect={"h1", "h2"}, timeout=1.0)
    assert [e.text for e in found.lines] == ["from h1"]
    assert found.notices == [
        "The log-shipper of host h2 did not answer: its history is missing here."
    ]


async def _gone(running: Any) -> None:
    with contextlib.suppress(Exception):
        assert running.service.bus.nc.is_closed
        return
    raise AssertionError("h2's log-shipper is still connected")
