"""GET /apps/{app}/uptime and `slipway apps:uptime` through the real gateway.

network-wirer's part here is its real store (services/network_wirer/uptimestore.py) behind
UPTIME_GET on a bus connected as network-wirer, so the gateway's access rules, the
answer's shape and the CLI's table are checked against real counts; the probes
themselves run against the real router in tests/network_wirer/test_uptime.py.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from slipway.contracts.router import UPTIME_GET, GetUptime, Uptime
from slipway.libs.bus import Bus
from slipway.services.network_wirer.uptimestore import ProbeResult, UptimeStore
from tests.gateway.conftest import Stack

pytestmark = [pytest.mark.integration]

SLIPWAY = str(Path(sys.executable).parent / "slipway")
INTERVAL = 30.0


@pytest.fixture
async def uptime_store(
    tmp_path: Path, bus_factory: Callable[[str], Awaitable[Bus]]
) -> AsyncIterator[UptimeStore]:
    """A real uptime store answering UPTIME_GET as network-wirer does."""
    store = await UptimeStore.open(tmp_path / "uptime.db")
    wirer = await bus_factory("network-wirer")

    async def answer(request: GetUptime) -> Uptime:
        return await store.uptime(request.app_id, incidents=request.incidents, interval=INTERVAL)

    await wirer.serve(UPTIME_GET, answer)
    yield store
    await store.close()


async def probed_history(store: UptimeStore, app_id: str) -> None:
    """An hour ago 4 probes answered and 2 failed with H10 then H12; now 2 more answered."""
    now = time.time()
    start = now - 3600
    results = [ProbeResult(app_id=app_id, at=start + i, up=True, status=200) for i in range(3)]
    results += [ProbeResult(app_id=app_id, at=start + 3, up=True, status=500)]
    await store.record(results)
    await store.record([ProbeResult(app_id=app_id, at=start + 4, up=False, status=503, code="H10")])
    await store.record([ProbeResult(app_id=app_id, at=start + 5, up=False, status=503, code="H12")])
    await store.record([ProbeResult(app_id=app_id, at=start + 65, up=True, status=200)])
    await store.record([ProbeResult(app_id=app_id, at=now - 5, up=True, status=200)])


async def test_members_and_viewers_read_the_windows_and_incidents(
    stack: Stack, uptime_store: UptimeStore
) -> None:
    """The three windows, the incident with both codes, the same for a viewer; not for others."""
    alice = await stack.user("alice@example.com")
    await alice.ok("POST", "/teams", {"name": "acme"}, status=201)
    app = await stack.app(alice, "watched", team="acme")
    await probed_history(uptime_store, app["id"])

    body = await alice.ok("GET", "/apps/watched/uptime")
    assert body["app"] == {"id": app["id"], "name": "watched"}
    assert body["probe_interval"] == INTERVAL
    assert [w["period"] for w in body["windows"]] == ["24h", "7d", "30d"]
    day = body["windows"][0]
    assert (day["probes"], day["up"], day["dyno_errors"]) == (8, 6, 1)
    assert day["availability"] == 75.0
    (incident,) = body["incidents"]
    assert incident["codes"] == ["H10", "H12"]
    assert incident["duration"] == 61
    assert incident["started_at"].endswith("Z") and incident["ended_at"].endswith("Z")

    viewer = await stack.user("vera@example.com")
    await stack.join(alice, "acme", viewer, "viewer")
    assert await viewer.ok("GET", "/apps/watched/uptime") == body

    stranger = await stack.user("mallory@example.com")
    answer = await stranger.get("/apps/watched/uptime")
    assert (answer.status, answer.error_id) == (404, "not_found")
    answer = await stack.anonymous().get("/apps/watched/uptime")
    assert answer.status == 401


@pytest.mark.parametrize("bad", ["0", "101", "-1", "ten", "1e3", "%00"])
async def test_a_bad_incident_count_is_a_422_naming_the_rule(
    stack: Stack, uptime_store: UptimeStore, bad: str
) -> None:
    """?incidents= must be 1 to 100: anything else is refused in Heroku's error shape."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "counted")
    answer = await alice.get(f"/apps/counted/uptime?incidents={bad}")
    assert answer.status == 422, answer
    assert answer.error_id == "invalid_params"
    assert "1 to 100" in answer.body["message"]


async def test_the_incident_limit_keeps_the_newest(stack: Stack, uptime_store: UptimeStore) -> None:
    """Three incidents, ?incidents=2: the two newest, newest first; an open one has no end."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "flaky")
    base = time.time() - 600
    for i in range(3):
        await uptime_store.record(
            [ProbeResult(app_id=app["id"], at=base + 100 * i, up=False, code="H10")]
        )
        if i < 2:
            await uptime_store.record(
                [ProbeResult(app_id=app["id"], at=base + 100 * i + 30, up=True, status=200)]
            )
    body = await alice.ok("GET", "/apps/flaky/uptime?incidents=2")
    newest, older = body["incidents"]
    assert newest["ended_at"] is None and older["ended_at"] is not None
    assert newest["started_at"] > older["started_at"]


async def cli(stack: Stack, token: str, *args: str) -> tuple[int, str, str]:
    """`slipway ARGS` as a user runs it, against this stack."""
    env = {
        **os.environ,
        "SLIPWAY_API_URL": stack.url,
        "SLIPWAY_API_KEY": token,
        "SLIPWAY_CONFIG_DIR": str(stack.home / "cli-config"),
    }
    process = await asyncio.create_subprocess_exec(
        SLIPWAY,
        *args,
        env=env,
        cwd=stack.home,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_the_cli_prints_the_windows_and_the_incidents(
    stack: Stack, uptime_store: UptimeStore
) -> None:
    """apps:uptime: a table of the three windows and one of incidents; --json is the API's."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "shown")
    await probed_history(uptime_store, app["id"])
    assert alice.token is not None

    code, out, err = await cli(stack, alice.token, "apps:uptime", "-a", "shown")
    assert code == 0, err
    assert "=== shown uptime" in out
    assert "24h" in out and "75.000%" in out and "30d" in out
    assert "One probe every 30 s" in out
    assert "Incidents" in out and "H10, H12" in out and "1 minute" in out

    code, out, err = await cli(stack, alice.token, "apps:uptime", "-a", "shown", "--json")
    assert code == 0, err
    assert '"availability": 75.0' in out

    code, out, err = await cli(stack, alice.token, "apps:uptime", "-a", "nothere")
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1, err

    quiet = await stack.app(alice, "quiet")
    code, out, err = await cli(stack, alice.token, "apps:uptime", "-a", quiet["name"])
    assert code == 0, err
    assert "no probes" in out and "No incidents in the last 30 days." in out
