"""A metrics drain's scrape token is rate limited as any API caller is, and only it.

The real gateway (real NATS and keyring) allowing `LIMIT` requests an hour per caller;
the platform's parts answer as in tests/gateway/test_metrics_drain.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from slipway.services.gateway.app import create_service
from tests.gateway import conftest as gateway_fixtures
from tests.gateway import test_metrics_drain as drains
from tests.gateway.conftest import Stack, gateway_settings, run_in_background, stop

pytestmark = pytest.mark.integration

LIMIT = 5

slipway_home = gateway_fixtures.slipway_home
keyring_service = gateway_fixtures.keyring_service
stack = gateway_fixtures.stack
platform = drains.platform


@pytest.fixture
async def gateway_service(
    nats_server: NatsServer, slipway_home: Path, keyring_service: ServiceApp
) -> AsyncIterator[ServiceApp]:
    """The real gateway allowing `LIMIT` requests an hour per caller."""
    service = create_service(gateway_settings(nats_server.url, slipway_home, api_rate_limit=LIMIT))
    task = await run_in_background(service)
    yield service
    await stop(service, task)


async def test_a_scraper_past_its_limit_gets_herokus_429_and_the_owner_does_not(
    stack: Stack, platform: drains.Platform
) -> None:
    """The scrape token's own bucket empties; alice's token, which made it, still works."""
    alice, _, _ = await drains.two_apps(stack, platform)
    drain = await drains.add_drain(alice, "shop")
    statuses = [(await drains.scrape(stack, "shop", drain["token"]))[0] for _ in range(LIMIT + 1)]
    assert statuses == [200] * LIMIT + [429]
    status, _, body = await drains.scrape(stack, "shop", drain["token"])
    assert status == 429 and '"rate_limit"' in body
    assert (await alice.get("/apps/shop")).status == 200
