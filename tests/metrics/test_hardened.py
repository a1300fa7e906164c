"""Consumer lag under the hardened NATS configuration: read with the service's own user."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from slipway.libs.metrics import socket_path
from slipway.libs.natsserver import NatsServer
from slipway.services.gateway.app import create_service
from tests.gateway.conftest import gateway_settings, run_in_background, stop
from tests.metrics.scrape import label_values, samples

pytestmark = pytest.mark.integration


@pytest.fixture
def hardened_nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats", hardened=True)
    server.start()
    yield server
    server.stop()


async def test_the_gateway_reads_its_own_consumers_lag_as_its_own_user(
    hardened_nats: NatsServer, slipway_home: Path
) -> None:
    """No JetStream admin rights are needed: each durable's pending count is in the scrape."""
    users = hardened_nats.users
    gateway = create_service(
        gateway_settings(
            hardened_nats.url, slipway_home, nats_user="gateway", nats_password=users["gateway"]
        )
    )
    task = await run_in_background(gateway)
    try:
        with capture_logs() as logs:
            found = await samples(socket_path(slipway_home, "gateway"))
        assert not [e for e in logs if e["event"] == "metrics.refresh_failed"], logs
        durables = {consumer.durable for consumer in gateway.bus.consumers()}
        assert durables
        assert label_values(found, "slipway_consumer_pending", "consumer") == durables
    finally:
        await stop(gateway, task)
