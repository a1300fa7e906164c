"""Platform lines: dyno state changes, releases, scaling, router requests and metrics samples."""

from __future__ import annotations

from typing import Any

import pytest

from slipway.contracts.base import encode
from slipway.contracts.gateway import (
    FORMATION_CHANGED,
    RELEASE_CREATED,
    FormationChanged,
    ProcessFormation,
    ReleaseCreated,
)
from slipway.contracts.logs import RouterAccess, router_subject
from slipway.contracts.scheduler import DYNO_CHANGED, Dyno, DynoChanged
from slipway.libs.bus import Bus
from slipway.services.gateway.logs.logs import text_line
from slipway.services.gateway.logs.shippers import history, metrics
from tests.conftest import assert_eventually
from tests.log_shipper.conftest import Dynos, ShipperFactory, new_id

pytestmark = [pytest.mark.integration]


def dyno(app_id: str, team_id: str, state: Any, restarts: int = 0) -> Dyno:
    return Dyno(
        app_id=app_id,
        app_name="hello",
        team_id=team_id,
        name="web.1",
        process_type="web",
        release_version=5,
        state=state,
        host_id="h1",
        restart_count=restarts,
    )


async def test_events_and_router_records_become_heroku_lines(
    shipper_settings: ShipperFactory, start_shipper: Any, bus_factory: Any, gateway_bus: Bus
) -> None:
    """State changes, crashes, releases, scaling and requests read as Heroku prints them."""
    await start_shipper(shipper_settings())
    bus: Bus = await bus_factory("scheduler")
    app_id, team_id = new_id(), new_id()
    changes = [
        DynoChanged(dyno=dyno(app_id, team_id, "up"), previous_state="starting"),
        DynoChanged(
            dyno=dyno(app_id, team_id, "crashed", 1),
            previous_state="up",
            reason="Process exited with status 1",
        ),
    ]
    for change in changes:
        await bus.publish(DYNO_CHANGED, change)
    await bus.publish(DYNO_CHANGED, changes[0])  # delivered twice: stored once
    release = ReleaseCreated(
        app_id=app_id,
        app_name="hello",
        team_id=team_id,
        release_id=new_id(),
        version=5,
        description="",
        actor="alice@example.com",
    )
    await bus.publish(RELEASE_CREATED, release)
    scaled = FormationChanged(
        app_id=app_id,
        app_name="hello",
        team_id=team_id,
        release_version=5,
        formation=[ProcessFormation(type="web", quantity=2, size="standard-1x")],
        actor="alice@example.com",
    )
    await bus.publish(FORMATION_CHANGED, scaled)
    access = RouterAccess(
        app_id=app_id,
        timestamp=release.occurred_at + 1,
        method="GET",
        path="/",
        host="hello.localhost",
        request_id="r-1",
        fwd="127.0.0.1",
        dyno="web.1",
        connect_ms=1,
        service_ms=5,
        status=200,
        bytes=123,
    )
    await bus.live_publish(router_subject(app_id), encode(access))

    async def all_there() -> list[str]:
        lines = [
            text_line(e).split(" ", 1)[1] for e in await history(gateway_bus, app_id, team_id, 50)
        ]
        assert len(lines) == 6, lines
        return lines

    lines = await assert_eventually(all_there, timeout=20)
    assert set(lines) == {
        "heroku[web.1]: State changed from starting to up",
        "heroku[web.1]: Process exited with status 1",
        "heroku[web.1]: State changed from up to crashed",
        "app[api]: Release v5 created by user alice@example.com",
        "app[api]: Scaled to web@2:standard-1x by user alice@example.com",
        'heroku[router]: at=info method=GET path="/" host=hello.localhost request_id=r-1'
        ' fwd="127.0.0.1" dyno=web.1 connect=1ms service=5ms status=200 bytes=123'
        " protocol=http",
    }
    assert lines.index("heroku[web.1]: Process exited with status 1") < lines.index(
        "heroku[web.1]: State changed from up to crashed"
    )


@pytest.mark.docker
async def test_dyno_metrics_are_sampled_logged_and_served(
    dynos: Dynos, shipper_settings: ShipperFactory, start_shipper: Any, bus_factory: Any
) -> None:
    """A running dyno gets `heroku[web.1]: source=web.1 ... sample#memory_total=` lines."""
    await start_shipper(shipper_settings(metrics_interval=0.5))
    bus: Bus = await bus_factory("gateway")
    app_id, team_id = new_id(), new_id()
    await dynos.run(app_id, team_id, "web.1", "import signal\nx = 'a' * 10_000_000\nsignal.pause()")

    async def sampled() -> str:
        lines = [text_line(e) for e in await history(bus, app_id, team_id, 50)]
        found = [line for line in lines if "sample#memory_total=" in line]
        assert found, lines
        return found[-1]

    line = await assert_eventually(sampled, timeout=30)
    assert " heroku[web.1]: source=web.1 dyno=heroku." in line
    for field in ("sample#load_avg_1m=", "sample#memory_rss=", "sample#memory_quota=", "restarts="):
        assert field in line
    samples = await metrics(bus, app_id)
    assert [s.dyno for s in samples] == ["web.1"]
    assert samples[0].memory_total_mb > 5  # the 10 MB string the dyno holds
