"""Handlers that act for a customer refuse callers not declared for them, on any server.

nats-server refuses undeclared callers under the hardened configuration; these run the
real services on an open server (as development does) to show the handlers hold too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from slipway.contracts import scheduler as sc
from slipway.contracts.builder import BUILD_OUTPUT_GET, CACHE_PURGE, GetBuildOutput, PurgeCache
from slipway.contracts.log_shipper import HISTORY_READ, ReadHistory
from slipway.contracts.oneoff import ONEOFF_RUN, RunOneOff
from slipway.libs.bus import Bus
from slipway.libs.errors import Forbidden, SlipwayError
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from slipway.services.scheduler.app import create_service as create_scheduler
from slipway.services.scheduler.settings import SchedulerSettings
from tests.builder.conftest import builder_stack
from tests.gateway.conftest import (  # noqa: F401 - fixtures
    keyring_service,
    run_in_background,
    slipway_home,
    stop,
)
from tests.log_shipper.conftest import (  # noqa: F401 - fixtures
    ShipperFactory,
    managed,
    shipper_settings,
    start_shipper,
)

pytestmark = pytest.mark.integration

ONE_OFF = RunOneOff(
    app_id="a1", app_name="a", team_id="t1", release_version=1, image="i", command="bash"
)


@pytest.fixture
async def scheduler(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[ServiceApp]:
    """The real scheduler with no Docker host registered."""
    settings = SchedulerSettings(
        nats_url=nats_server.url, home=str(tmp_path / "home"), local_engine="", shutdown_grace=5.0
    )
    service = create_scheduler(settings)
    task = await run_in_background(service)
    yield service
    await stop(service, task)


async def test_the_scheduler_refuses_a_one_off_from_an_undeclared_caller(
    scheduler: ServiceApp, bus_factory: Any
) -> None:
    """A one-off dyno asked for by the builder is refused, naming who may ask."""
    builder: Bus = await bus_factory("builder")
    refused = r"builder may not call scheduler oneoff\.run: only gateway"
    with pytest.raises(Forbidden, match=refused):
        await builder.call(ONEOFF_RUN, ONE_OFF)


async def test_the_scheduler_refuses_a_host_add_from_an_undeclared_caller(
    scheduler: ServiceApp, bus_factory: Any
) -> None:
    """Adding a Docker host as the log-shipper is refused; the gateway gets past the check."""
    shipper: Bus = await bus_factory("log-shipper")
    add = sc.AddHost(id="h9", endpoint="unix:///nonexistent.sock")
    with pytest.raises(Forbidden, match=r"log-shipper may not call scheduler hosts\.add"):
        await shipper.call(sc.HOSTS_ADD, add)
    gateway: Bus = await bus_factory("gateway")
    with pytest.raises(SlipwayError) as declared:
        await gateway.call(sc.HOSTS_ADD, add, timeout=15)
    assert not isinstance(declared.value, Forbidden)  # refused for its endpoint, not its caller


@pytest.mark.docker
async def test_the_log_shipper_refuses_a_history_read_from_an_undeclared_caller(
    shipper_settings: ShipperFactory,  # noqa: F811 - a fixture
    start_shipper: Any,  # noqa: F811 - a fixture
    bus_factory: Any,
) -> None:
    """An app's log history asked for by the scheduler is refused by every log-shipper."""
    await start_shipper(shipper_settings())
    scheduler_bus: Bus = await bus_factory("scheduler")
    found = await scheduler_bus.gather(
        HISTORY_READ, ReadHistory(app_id="a1", team_id="t1"), expect={"h1"}
    )
    assert not found.replies
    assert isinstance(found.errors["h1"], Forbidden)
    assert "scheduler may not call log-shipper history.read" in str(found.errors["h1"])


@pytest.mark.docker
@pytest.mark.slow
async def test_the_builder_refuses_output_and_cache_purges_from_undeclared_callers(
    nats_server: NatsServer, tmp_path: Path, bus_factory: Any
) -> None:
    """Build output and cache purges asked for by the scheduler are refused."""
    async with builder_stack(nats_server, tmp_path / "home"):
        scheduler_bus: Bus = await bus_factory("scheduler")
        asked = await scheduler_bus.gather(BUILD_OUTPUT_GET, GetBuildOutput(build_id="b1"))
        (refusal,) = asked.errors.values()
        assert not asked.replies
        assert isinstance(refusal, Forbidden)
        assert "scheduler may not call builder output.get" in refusal.message
        purged = await scheduler_bus.gather(CACHE_PURGE, PurgeCache(app_id="a1", team_id="t1"))
        (refusal,) = purged.errors.values()
        assert not purged.replies
        assert isinstance(refusal, Forbidden)
        assert "scheduler may not call builder cache.purge" in refusal.message
