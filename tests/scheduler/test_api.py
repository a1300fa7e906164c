"""The whole loop through the real gateway: a release → dynos; ps, restart, stop; admin hosts."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from slipway.contracts.gateway import RELEASE_CREATE, CreateRelease
from slipway.libs.service import ServiceApp
from slipway.services.scheduler.app import create_service
from slipway.services.scheduler.settings import SchedulerSettings
from tests.conftest import assert_eventually, new_scope, remove_scope_objects
from tests.gateway.conftest import (  # noqa: F401
    Stack,
    gateway_service,
    keyring_service,
    slipway_home,
    stack,
)
from tests.scheduler.conftest import WEB

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
async def scheduler(stack: Stack) -> AsyncIterator[ServiceApp]:  # noqa: F811
    """The scheduler on the stack's bus, with the main engine as its one host."""
    scope = new_scope()
    settings = SchedulerSettings(
        nats_url=stack.nats.url,
        home=str(stack.home),
        scope=scope.name,
        poll_interval=0.25,
        stop_grace=3.0,
        deregister_delay=0.2,
        boot_timeout=15.0,
        shutdown_grace=5.0,
    )
    service = create_service(settings)
    task = asyncio.create_task(service.run(install_signals=False))
    await asyncio.wait_for(service.started.wait(), 30)
    try:
        yield service
    finally:
        service.stop()
        await asyncio.wait_for(task, 30)
        await asyncio.to_thread(remove_scope_objects, scope)


async def test_a_release_runs_and_ps_restart_stop_work_through_the_api(
    stack: Stack,  # noqa: F811
    scheduler: ServiceApp,
    sched_image: str,
) -> None:
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, f"ps-{uuid.uuid4().hex[:6]}")
    # A config var: the dyno starts only if the scheduler could decrypt it via the keyring.
    await alice.ok("PATCH", f"/apps/{app['name']}/config-vars", {"GREETING": "hello"})
    await stack.bus.send(
        RELEASE_CREATE,
        CreateRelease(
            app_id=app["id"],
            image_ref=sched_image,
            image_digest="sha256:" + "0" * 64,
            process_types={"web": WEB},
        ),
    )
    path = f"/apps/{app['name']}/dynos"

    async def web_up(previous: str | None = None, restarts: int = 0) -> dict[str, Any]:
        dynos = await alice.ok("GET", path)
        assert [(d["name"], d["state"]) for d in dynos] == [("web.1", "up")], dynos
        assert dynos[0]["restart_count"] >= restarts
        if previous is not None:
            assert dynos[0]["id"] != previous
        return dict(dynos[0])

    first = await assert_eventually(web_up, timeout=60, interval=0.3)
    assert first["release"]["version"] == 3 and first["app"]["name"] == app["name"]
    assert (await alice.ok("GET", f"{path}/web.1"))["id"] == first["id"]
    assert (await alice.get(f"{path}/web.9")).status == 404

    answer = await alice.delete(f"{path}/web")  # ps:restart web
    assert answer.status == 202

    async def restarted() -> None:
        dynos = await alice.ok("GET", path)
        assert dynos and dynos[0]["state"] == "starting", dynos

    await assert_eventually(restarted, timeout=30, interval=0.05)
    await assert_eventually(web_up, timeout=30, interval=0.3)

    answer = await alice.post(f"{path}/web.1/actions/stop")  # ps:stop web.1
    assert answer.status == 202
    await assert_eventually(lambda: web_up(previous=first["id"]), timeout=60, interval=0.3)

    # Hosts are the platform admin's alone.
    assert (await alice.get("/hosts")).status == 403
    hosts = await stack.admin.ok("GET", "/hosts")
    assert [(h["id"], h["state"]) for h in hosts] == [("local", "up")]
    assert hosts[0]["dynos"] == 1
    bad = await stack.admin.post("/hosts", {"id": "nowhere", "endpoint": "unix:///nonexistent"})
    assert bad.status == 422 and bad.error_id, bad
    # A detached one-off (`slipway run --detach`) through the scheduler's ONEOFF_RUN.
    run = await alice.post(f"/apps/{app['name']}/dynos", {"command": "sleep 30", "attach": False})
    assert run.status == 201, run.body
    assert run.body["name"].startswith("run.") and run.body["attach_url"] is None

    async def one_off_running() -> None:
        found = await asyncio.to_thread(
            subprocess.run,
            [
                "docker",
                "ps",
                "-q",
                "--filter",
                f"label=org.slipway.app={app['id']}",
                "--filter",
                "label=org.slipway.process-type=run",
            ],
            capture_output=True,
            text=True,
        )
        assert len(found.stdout.split()) == 1

    await assert_eventually(one_off_running, timeout=30, interval=0.3)
