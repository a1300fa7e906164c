"""`slipway metrics --period`: the app's series as a compact table, against the real stack."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from slipway.contracts.base import encode
from slipway.contracts.logs import RouterAccess, router_subject
from slipway.libs.bus import Bus
from tests.conftest import assert_eventually
from tests.gateway.conftest import Stack
from tests.log_shipper.conftest import ShipperFactory, slipway

pytestmark = pytest.mark.integration


async def test_metrics_with_a_period_prints_a_row_per_step_of_the_app(
    stack: Stack,
    shipper_settings: ShipperFactory,
    start_shipper: Any,
    bus_factory: Any,
    tmp_path: Path,
) -> None:
    """Rows start with the app; a request the router took shows in its 2xx/3xx/4xx/5xx cell."""
    await start_shipper(shipper_settings())
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "clichart")
    wirer: Bus = await bus_factory("network-wirer")
    record = RouterAccess(
        app_id=app["id"],
        timestamp=time.time(),
        method="GET",
        path="/",
        host="clichart.localhost",
        request_id="r",
        fwd="127.0.0.1",
        dyno="web.1",
        connect_ms=1,
        service_ms=12,
        status=404,
        bytes=1,
    )
    await wirer.live_publish(router_subject(app["id"]), encode(record))

    async def printed() -> list[str]:
        result = await slipway(alice, tmp_path, "metrics", "-a", "clichart", "--period", "1h")
        assert result.code == 0, result
        assert " 0/0/1/0 " in result.out, result.out
        return result.out.splitlines()

    lines = await assert_eventually(printed, timeout=20, interval=0.3)
    assert lines[0] == "clichart over the last 1h, one row per 1 min:"
    titles = "UTC CPU Memory MB Requests 2xx/3xx/4xx/5xx p50 ms p95 ms"
    assert lines[1].split() == titles.split()
    # The app is minutes old: one or two steps, not the 60 of the hour.
    assert 1 <= len(lines) - 3 <= 2, lines


async def test_metrics_refuses_an_unknown_period(stack: Stack, tmp_path: Path) -> None:
    """--period 7d: a usage error, non-zero, without asking the API."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "clipicky")
    result = await slipway(alice, tmp_path, "metrics", "-a", "clipicky", "--period", "7d")
    assert result.code != 0
    assert "1h" in result.err and "24h" in result.err
