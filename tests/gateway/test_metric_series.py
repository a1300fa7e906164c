"""GET /apps/{app}/metrics/series: every step of the period, merged from the log-shippers."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from slipway.contracts.base import encode
from slipway.contracts.log_shipper import RESPONSE_BASE, SeriesPoint
from slipway.contracts.logs import RouterAccess, router_subject
from slipway.libs.bus import Bus
from slipway.services.gateway.logs.series import grid, merge
from tests.conftest import assert_eventually
from tests.gateway.conftest import Stack
from tests.log_shipper.conftest import (  # noqa: F401 - fixtures
    Dynos,
    ShipperFactory,
    dynos,
    gateway_bus,
    managed,
    shipper_settings,
    start_shipper,
)

pytestmark = [pytest.mark.integration]

FIELDS = {
    "at",
    "cpu_percent",
    "memory_mb",
    "memory_quota_mb",
    "requests",
    "status_2xx",
    "status_3xx",
    "status_4xx",
    "status_5xx",
    "p50_ms",
    "p95_ms",
}


def test_steps_nobody_measured_are_null_and_quiet_steps_count_zero() -> None:
    """CPU null where no dyno was sampled; requests null before the app existed, 0 after."""
    starts = grid(1_800_000_030.0, 60, 4)
    assert starts == [1_799_999_820, 1_799_999_880, 1_799_999_940, 1_800_000_000]
    host_a = [SeriesPoint(at=starts[3], cpu_percent=30.0, memory_mb=100.0, memory_quota_mb=512.0)]
    host_b = [
        SeriesPoint(at=starts[3], cpu_percent=12.5, memory_mb=50.0, memory_quota_mb=512.0),
        SeriesPoint(at=starts[2], requests=2, status_2xx=1, status_5xx=1, response_ms=[0, 2]),
    ]
    points = merge([host_a, host_b], starts, 60, born=starts[1] + 10)
    before, quiet, busy, sampled = points
    assert before.requests is None and before.cpu_percent is None and before.p95_ms is None
    assert (quiet.requests, quiet.status_2xx, quiet.cpu_percent, quiet.p50_ms) == (0, 0, None, None)
    assert (busy.requests, busy.status_2xx, busy.status_5xx) == (2, 1, 1)
    assert busy.cpu_percent is None  # requests came, but no dyno sample: not a 0 % CPU
    assert (sampled.cpu_percent, sampled.memory_mb, sampled.memory_quota_mb) == (42.5, 150, 1024)


async def series(api: Any, app: str, period: str) -> dict[str, Any]:
    body: dict[str, Any] = await api.ok("GET", f"/apps/{app}/metrics/series?period={period}")
    return body


@pytest.mark.parametrize(("period", "step", "count"), [("1h", 60, 60), ("24h", 300, 288)])
async def test_a_period_answers_every_step_oldest_first(
    stack: Stack,
    shipper_settings: ShipperFactory,  # noqa: F811 - a fixture
    start_shipper: Any,  # noqa: F811 - a fixture
    period: str,
    step: int,
    count: int,
) -> None:
    """1h: 60 points of 60 s; 24h: 288 of 300 s; the last holds now; before the app, nulls."""
    await start_shipper(shipper_settings())
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "charted")
    before = time.time()
    body = await series(alice, "charted", period)
    after = time.time()
    assert (body["period"], body["step"]) == (period, step)
    points = body["points"]
    assert len(points) == count
    assert all(set(p) == FIELDS for p in points)
    starts = [p["at"] for p in points]
    assert all(b - a == step for a, b in itertools.pairwise(starts))
    assert starts[-1] % step == 0 and starts[-1] <= after and before < starts[-1] + step
    assert all(p["cpu_percent"] is None and p["p95_ms"] is None for p in points)
    # Created within the last step (or the one before, across a boundary): quiet, not unknown.
    assert points[-1]["requests"] == 0
    assert points[0]["requests"] is None


async def test_a_viewer_may_read_and_another_team_may_not(
    stack: Stack,
    shipper_settings: ShipperFactory,  # noqa: F811 - a fixture
    start_shipper: Any,  # noqa: F811 - a fixture
) -> None:
    """The team's viewer reads the series; a user of another team gets 404, as for the app."""
    await start_shipper(shipper_settings())
    alice = await stack.user("alice@example.com")
    vera = await stack.user("vera@example.com")
    mallory = await stack.user("mallory@example.com")
    await alice.ok("POST", "/teams", {"name": "acme"}, 201)
    await stack.join(alice, "acme", vera, "viewer")
    await stack.app(alice, "shared", team="acme")
    assert len((await series(vera, "shared", "1h"))["points"]) == 60
    answer = await mallory.get("/apps/shared/metrics/series?period=1h")
    assert answer.status == 404 and answer.error_id == "not_found", answer.body


@pytest.mark.parametrize("period", ["7d", "", "1H", "1h;drop", "x" * 500])
async def test_an_unknown_period_is_refused_with_422(stack: Stack, period: str) -> None:
    """Anything but 1h or 24h: 422 in Heroku's error shape, naming what is accepted."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "picky")
    answer = await alice.get(f"/apps/picky/metrics/series?period={period}")
    assert answer.status == 422, answer.body
    assert answer.body["id"] == "invalid_params"
    assert "1h or 24h" in answer.body["message"]
    assert len(answer.body["message"]) < 200  # the hostile value is not echoed in full


@pytest.mark.docker
async def test_router_records_and_dyno_samples_show_up_in_the_series(
    stack: Stack,
    shipper_settings: ShipperFactory,  # noqa: F811 - a fixture
    start_shipper: Any,  # noqa: F811 - a fixture
    dynos: Dynos,  # noqa: F811 - a fixture
    bus_factory: Any,
) -> None:
    """A real dyno's CPU and memory and the router's requests, as network-wirer sends them."""
    await start_shipper(shipper_settings(metrics_interval=0.5, series_flush_interval=0.5))
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "measured")
    team_id = app["team"]["id"] if app.get("team") else "personal"
    await dynos.run(
        app["id"], team_id, "web.1", "import signal\nx = 'a' * 20_000_000\nsignal.pause()"
    )
    wirer: Bus = await bus_factory("network-wirer")
    times = [(200, 1, 9)] * 17 + [(302, 1, 20), (404, 0, 3), (503, 0, 30_000)]
    for status, connect, service in times:
        record = RouterAccess(
            app_id=app["id"],
            timestamp=time.time(),
            method="GET",
            path="/",
            host="measured.localhost",
            request_id="r",
            fwd="127.0.0.1",
            dyno="web.1",
            connect_ms=connect,
            service_ms=service,
            status=status,
            bytes=1,
        )
        await wirer.live_publish(router_subject(app["id"]), encode(record))

    async def charted() -> list[dict[str, Any]]:
        points: list[dict[str, Any]] = (await series(alice, "measured", "1h"))["points"]
        recent = [p for p in points if p["requests"]]
        assert sum(p["requests"] for p in recent) == 20, recent
        assert any(p["memory_mb"] for p in points), points[-3:]
        return points

    points = await assert_eventually(charted, timeout=60)
    counted = {k: sum(p[k] or 0 for p in points) for k in FIELDS - {"at"}}
    assert (counted["status_2xx"], counted["status_3xx"]) == (17, 1)
    assert (counted["status_4xx"], counted["status_5xx"]) == (1, 1)
    sampled = [p for p in points if p["memory_mb"] is not None]
    # The dyno holds a 20 MB string: its rss + cache is above that, under its quota.
    assert all(20 < p["memory_mb"] < p["memory_quota_mb"] for p in sampled), sampled
    assert all(p["cpu_percent"] is not None and p["cpu_percent"] >= 0 for p in sampled)
    busiest = max(points, key=lambda p: p["requests"] or 0)
    if busiest["requests"] == 20:  # all in one minute (else they straddle a minute's end)
        # Sorted: 3, 10 (x17), 21, 30000 ms: the 10th is 10 ms, the 19th (p95) 21 ms.
        assert 10 <= busiest["p50_ms"] < 10 * RESPONSE_BASE
        assert 21 <= busiest["p95_ms"] < 21 * RESPONSE_BASE
