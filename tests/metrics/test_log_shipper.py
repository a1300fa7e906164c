"""The log-shipper's lines in and dropped, scraped after real lines reached it over NATS."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from slipway.contracts.base import encode
from slipway.contracts.logs import LogLine, LogLines, lines_subject
from slipway.libs.bus import Bus
from slipway.libs.metrics import socket_path
from slipway.services.log_shipper.shipper import MAX_ORPHAN_LINES
from tests.conftest import assert_eventually
from tests.log_shipper.conftest import ShipperFactory
from tests.metrics.scrape import samples, value

pytestmark = pytest.mark.integration

BATCH = 1000


async def test_lines_in_and_lines_dropped_for_an_unknown_app(
    shipper_settings: ShipperFactory,
    start_shipper: Callable[..., Any],
    gateway_bus: Bus,
    slipway_home: Path,
) -> None:
    """Lines for an app whose team never becomes known: all counted in, and past the waiting
    room (MAX_ORPHAN_LINES) counted dropped as `unknown_app`, exactly."""
    await start_shipper(shipper_settings())
    sock = socket_path(slipway_home, "log-shipper")
    app_id = uuid.uuid4().hex
    batches = MAX_ORPHAN_LINES // BATCH + 1  # the last batch finds the room full
    for b in range(batches):
        lines = [
            LogLine(app_id=app_id, timestamp=1.0, source="app", dyno="api", text=f"{b}-{i}")
            for i in range(BATCH)
        ]
        await gateway_bus.live_publish(lines_subject(app_id), encode(LogLines(lines=lines)))

    async def counted() -> None:
        found = await samples(sock)
        assert value(found, "slipway_log_lines_total", source="platform") == batches * BATCH
        dropped = value(found, "slipway_log_lines_dropped_total", reason="unknown_app")
        assert dropped == batches * BATCH - MAX_ORPHAN_LINES
        assert value(found, "slipway_log_lines_dropped_total", reason="drain_overflow") == 0

    await assert_eventually(counted, timeout=30)
