"""Health paths: a config value the platform requests must stay a path on the dyno.

`SLIPWAY_HEALTH_PATH=@169.254.169.254/` glued after `http://address:port` would
make the scheduler fetch the cloud metadata address. The API refuses such a
value (real gateway, NATS and keyring); a value already stored (planted) reaches
the real scheduler runtime starting a real dyno on the local Docker engine, with
a real HTTP listener on loopback standing in for the target: it must receive
nothing, and the app's log says the value was ignored.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest
from aiohttp import web

from slipway.contracts.scheduler import DYNO_CHANGED, DynoChanged, HostInfo
from slipway.libs.bus import Bus
from slipway.services.log_shipper.platform import dyno_lines
from slipway.services.scheduler import health
from slipway.services.scheduler.containers import DynoSpec
from slipway.services.scheduler.hosts import Engine, connect
from slipway.services.scheduler.runtime import HEALTH_PATH_IGNORED, Runtime
from slipway.services.scheduler.settings import SchedulerSettings
from slipway.services.scheduler.store import HostRow, SchedulerStore
from tests.gateway import conftest as gateway_fixtures
from tests.gateway.conftest import Stack, stream_messages
from tests.scheduler import conftest as scheduler_fixtures
from tests.scheduler.conftest import remove_scope_networks

slipway_home = gateway_fixtures.slipway_home
keyring_service = gateway_fixtures.keyring_service
gateway_service = gateway_fixtures.gateway_service
stack = gateway_fixtures.stack
sched_image = scheduler_fixtures.sched_image

HOSTILE = [
    "@169.254.169.254/",
    "//169.254.169.254/",
    "http://169.254.169.254/",
    "metadata.internal/",
]


@pytest.mark.integration
@pytest.mark.parametrize("value", HOSTILE)
async def test_a_health_path_naming_a_host_is_refused_at_the_api(stack: Stack, value: str) -> None:
    """PATCH config-vars with a health path that is not a path answers 422 saying what is."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")

    answer = await alice.patch("/apps/hello/config-vars", {"SLIPWAY_HEALTH_PATH": value})

    assert answer.status == 422, answer.body
    assert answer.error_id == "invalid_params"
    assert "must be an absolute path on the app, such as /health" in answer.body["message"]
    assert value not in answer.body["message"]  # a config value is never echoed
    assert await alice.ok("GET", "/apps/hello/config-vars") == {}


@pytest.mark.integration
async def test_a_real_health_path_is_accepted(stack: Stack) -> None:
    """An absolute path with a query is a valid health path."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")

    answer = await alice.patch("/apps/hello/config-vars", {"SLIPWAY_HEALTH_PATH": "/up?full=1"})

    assert answer.status == 200, answer.body


@pytest.mark.parametrize("value", HOSTILE)
def test_the_health_check_builds_no_url_from_a_value_that_is_not_a_path(value: str) -> None:
    """The scheduler's health check makes no URL at all of `@host`, `//host` or a URL."""
    assert health.health_url("127.0.0.1", 5000, value) is None


def test_a_valid_path_never_changes_the_host() -> None:
    """`/@169.254.169.254/` stays a path on the dyno's own address and port."""
    url = health.health_url("127.0.0.1", 5000, "/@169.254.169.254/")

    assert url is not None
    assert (url.host, url.port, url.path) == ("127.0.0.1", 5000, "/@169.254.169.254/")


@dataclass
class Target:
    """A real HTTP listener on loopback standing in for the metadata address."""

    port: int = 0
    requests: list[str] = field(default_factory=list)


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    found = Target()

    async def record(request: web.Request) -> web.Response:
        found.requests.append(request.path_qs)
        return web.Response(text="ami-id\n")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.port = runner.addresses[0][1]
    yield found
    await runner.cleanup()


@dataclass
class Scheduler:
    runtime: Runtime
    bus: Bus
    scope: str


@pytest.fixture
async def scheduler(
    bus_factory: Callable[[str], Awaitable[Bus]], tmp_path: Path
) -> AsyncIterator[Scheduler]:
    """The scheduler's real runtime over the local Docker engine, with a unique scope."""
    scope = f"hp{uuid.uuid4().hex[:8]}"
    settings = SchedulerSettings(
        nats_url="", home=str(tmp_path / "sched"), scope=scope, boot_timeout=30.0, stop_grace=1.0
    )
    store = await SchedulerStore.open(tmp_path / "scheduler.db")
    bus = await bus_factory("scheduler")
    runtime = Runtime(settings, store, bus)
    row = HostRow(
        info=HostInfo(
            id="main", endpoint="unix:///var/run/docker.sock", address="127.0.0.1", memory_mb=4096
        )
    )
    runtime.engines["main"] = Engine(row, connect(row, 5.0))
    runtime.start()
    try:
        yield Scheduler(runtime, bus, scope)
    finally:
        for tracked in list(runtime.dynos.values()):
            await runtime.stop(tracked, "Test over", drain=False)
        await runtime.close()
        await runtime.engines["main"].docker.close()
        await store.close()
        remove_scope_networks(scope)


@pytest.mark.integration
@pytest.mark.docker
@pytest.mark.slow
async def test_a_planted_health_path_is_never_fetched(
    scheduler: Scheduler,
    target: Target,
    sched_image: str,
    bus_factory: Callable[[str], Awaitable[Bus]],
) -> None:
    """A stored `@host` health path: the dyno comes up on its port, the target sees nothing."""
    spec = DynoSpec(
        app_id=uuid.uuid4().hex,
        app_name="planted",
        team_id="team-test",
        release=1,
        process_type="web",
        index=1,
        size="standard-1x",
        image=sched_image,
        command="python3 /srv/app.py",
        host_id="main",
    )
    # What the runtime reads from the app's stored config when the dyno starts.
    planted = {"SLIPWAY_HEALTH_PATH": f"@127.0.0.1:{target.port}/latest/meta-data/"}

    tracked = await scheduler.runtime.create(spec, planted)
    outcome = await scheduler.runtime.await_health(tracked)

    assert outcome.ok, outcome.reason
    assert target.requests == []
    # The app's log: the log-shipper's lines for the dyno events the runtime published.
    reader = await bus_factory("operator")
    payloads = await stream_messages(reader, DYNO_CHANGED.subject)
    events = [msgspec.json.decode(data, type=DynoChanged) for data in payloads]
    lines = [(source, dyno, text) for e in events for _, source, dyno, text, _ in dyno_lines(e)]
    assert ("heroku", "web.1", HEALTH_PATH_IGNORED) in lines
