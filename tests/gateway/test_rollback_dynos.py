"""A refused rollback leaves the dynos alone: the real gateway, registry-proxy and scheduler.

The app's current release runs a small image kept on the local engine (the builder's
"local" mode, so the scheduler never pulls it) with web=2; its earlier releases ran
registry images, the oldest of them already collected. Rolling back to that one, or
to the release made before the first build, is refused, and the same two containers
keep running.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from slipway.contracts import scheduler as sc
from slipway.contracts import subjects
from slipway.contracts.gateway import RELEASE_CREATE, CreateRelease
from slipway.contracts.scope import Scope
from slipway.libs.bus import Bus
from slipway.services.scheduler.app import create_service
from slipway.services.scheduler.settings import SchedulerSettings
from tests.conftest import assert_eventually, new_scope, remove_scope_objects
from tests.gateway.conftest import Api, Stack
from tests.gateway.test_rollback import Registry, deploy, registry
from tests.registry_proxy.conftest import BusFactory
from tests.scheduler.conftest import WEB, sched_image

pytestmark = [pytest.mark.integration, pytest.mark.docker]

__all__ = ["registry", "sched_image"]  # fixtures this module borrows


@pytest.fixture
async def scheduler(stack: Stack, tmp_path: Path) -> AsyncIterator[Scope]:
    """The real scheduler on the local engine, in a scope of its own; its dynos go after."""
    scope = new_scope()
    settings = SchedulerSettings(
        nats_url=stack.nats.url,
        home=str(stack.home),
        scope=scope.name,
        boot_timeout=20.0,
        stop_grace=2.0,
        poll_interval=0.25,
        reconcile_interval=3.0,
        shutdown_grace=5.0,
    )
    service = create_service(settings)
    task = asyncio.create_task(service.run(install_signals=False))
    try:
        await asyncio.wait_for(service.started.wait(), 30)
        yield scope
    finally:
        service.stop()
        await asyncio.wait_for(task, 30)
        remove_scope_objects(scope)


async def running(bus: Bus, app_id: str) -> dict[str, tuple[int, str | None]]:
    """The app's dynos the scheduler reports up: name → (release, container id)."""
    answer = await bus.call(sc.DYNOS_LIST, sc.ListDynos(app_id=app_id), timeout=10)
    return {d.name: (d.release_version, d.container_id) for d in answer.dynos if d.state == "up"}


async def test_refused_rollbacks_leave_the_running_dynos_alone(
    stack: Stack,
    registry: Registry,
    scheduler: Scope,
    sched_image: str,
    bus_factory: BusFactory,
) -> None:
    """v2 (collected image) and v1 (no image) are refused; web.1 and web.2 of v4 keep running."""
    alice: Api = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    for version, tag in ((2, "a"), (3, "b")):
        auth, image = await registry.push(app["id"], tag)
        await deploy(stack, alice, app, f"{auth.repository}@{image.digest}", version)
    local = CreateRelease(
        app_id=app["id"],
        image_ref=sched_image,
        image_digest=sched_image,
        process_types={"web": WEB},
    )
    await stack.bus.send(RELEASE_CREATE, local)  # v4: the current release, runnable here
    await alice.ok("PATCH", "/apps/hello/formation/web", {"quantity": 2})
    operator = await bus_factory("operator")

    async def two_up() -> dict[str, tuple[int, str | None]]:
        up = await running(operator, app["id"])
        assert sorted(up) == ["web.1", "web.2"], up
        return up

    before = await assert_eventually(two_up, timeout=60)

    async def a_collected() -> None:
        assert await registry.tags(app["id"]) == {"b"}

    await assert_eventually(a_collected, timeout=30)
    for target in ("v2", "v1"):
        answer = await alice.post("/apps/hello/releases", {"release": target})
        assert answer.status == 422, (target, answer.body)
    releases = await alice.ok("GET", "/apps/hello/releases")
    assert [r["version"] for r in releases] == [1, 2, 3, 4]
    formation = await alice.ok("GET", "/apps/hello/formation")
    assert [(f["type"], f["quantity"]) for f in formation] == [("web", 2)]
    # Anything a refusal had wrongly committed is published now and, once the scheduler has
    # handled every event in the stream, acted upon: the same two containers still run.
    await stack.gw.relay.relay_pending()
    await assert_eventually(lambda: scheduler_caught_up(operator), timeout=30)
    assert await two_up() == before


async def scheduler_caught_up(bus: Bus) -> None:
    """The scheduler's event consumer has handled every event published for it so far."""
    consumer = await bus.js.consumer_info(
        subjects.STREAM_EVT, subjects.durable(subjects.Service.SCHEDULER, "desired")
    )
    assert (consumer.num_pending, consumer.num_ack_pending) == (0, 0)
