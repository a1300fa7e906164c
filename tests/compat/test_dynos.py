"""Dynos as Heroku's clients list, restart and stop them, with the real scheduler and Docker.

The release runs the scheduler tests' small HTTP app image (kept on the local
engine, so nothing is pulled); each answer is checked against Heroku's `dyno`, and
restarts by name (the CLI) and by id (heroku-go) must really restart the container
(Docker's start time changes) and a stop must replace it (the dyno comes back with a
new id).
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from typing import Any

import pytest

from slipway.contracts import scheduler as sc
from slipway.contracts.gateway import RELEASE_CREATE, CreateRelease
from slipway.libs.service import ServiceApp
from tests.compat.conftest import cli, clients
from tests.compat.test_platform_api import fit_list, fits, refused
from tests.conftest import assert_eventually
from tests.gateway.conftest import Stack
from tests.scheduler.conftest import WEB, sched_image
from tests.scheduler.test_api import scheduler

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]

__all__ = ["sched_image", "scheduler"]  # fixtures this module borrows


async def started_at(stack: Stack, app_id: str) -> str:
    """When Docker last started the app's one container (a restart changes it)."""
    answer = await stack.bus.call(sc.DYNOS_LIST, sc.ListDynos(app_id=app_id), timeout=10)
    [container] = [d.container_id for d in answer.dynos]
    assert container is not None
    inspected = await asyncio.to_thread(
        subprocess.run,
        ["docker", "inspect", "-f", "{{.State.StartedAt}}", container],
        capture_output=True,
        text=True,
        check=True,
    )
    return inspected.stdout.strip()


async def test_dynos_list_info_restart_and_stop(
    stack: Stack, scheduler: ServiceApp, sched_image: str
) -> None:
    """List and info fit `dyno`; restart (one, by id, all) and stop answer 202 `{}` and act."""
    alice = await stack.user("alice@example.com")
    bob = await stack.user("bob@example.com")
    name = f"ps-{uuid.uuid4().hex[:6]}"
    app = await stack.app(alice, name)
    await stack.bus.send(
        RELEASE_CREATE,
        CreateRelease(
            app_id=app["id"],
            image_ref=sched_image,
            image_digest="sha256:" + "0" * 64,
            process_types={"web": WEB},
        ),
    )
    path = f"/apps/{name}/dynos"
    client = cli(alice)

    async def web_up(previous: str | None = None) -> dict[str, Any]:
        dynos = fit_list(await client.get(path), "dyno")
        assert [(d["name"], d["state"]) for d in dynos] == [("web.1", "up")], dynos
        dyno = dynos[0]
        assert dyno["id"] != previous
        return dict(dyno)

    first = await assert_eventually(web_up, timeout=60, interval=0.3)

    def same(dyno: dict[str, Any]) -> tuple[Any, ...]:
        # Its times move as the scheduler watches it; what it is does not.
        return tuple(dyno[k] for k in ("id", "name", "type", "command", "release", "app"))

    for each in clients(alice):
        assert [same(d) for d in fit_list(await each.get(path), "dyno")] == [same(first)]
        for ident in ("web.1", first["id"]):
            assert same(fits(await each.get(f"{path}/{ident}"), "dyno")) == same(first)
    refused(await client.get(f"{path}/web.9"), 404, "not_found")

    async def restarted_since(before: str) -> None:
        await web_up()
        assert await started_at(stack, app["id"]) != before

    # heroku-go restarts by id, the CLI by name; both are Heroku's "empty" answer.
    before = await started_at(stack, app["id"])
    go = next(c for c in clients(alice) if c.name == "heroku-go")
    restarted = await go.request("DELETE", f"{path}/{first['id']}")
    assert (restarted.status, restarted.body) == (202, {}), restarted.body
    await assert_eventually(lambda: restarted_since(before), timeout=60, interval=0.3)
    stopped = await client.request("POST", f"{path}/web.1/actions/stop")
    assert (stopped.status, stopped.body) == (202, {}), stopped.body
    await assert_eventually(lambda: web_up(first["id"]), timeout=60, interval=0.3)
    before = await started_at(stack, app["id"])
    every = await client.request("DELETE", path)
    assert (every.status, every.body) == (202, {}), every.body
    await assert_eventually(lambda: restarted_since(before), timeout=60, interval=0.3)
    # Heroku's formation restart and stop: the process type's dynos.
    before = await started_at(stack, app["id"])
    by_type = await go.request("DELETE", f"/apps/{name}/formations/web")
    assert (by_type.status, by_type.body) == (202, {}), by_type.body
    await assert_eventually(lambda: restarted_since(before), timeout=60, interval=0.3)
    current = await web_up()
    stopped = await go.request("POST", f"/apps/{name}/formations/web/actions/stop")
    assert (stopped.status, stopped.body) == (202, {}), stopped.body
    await assert_eventually(lambda: web_up(current["id"]), timeout=60, interval=0.3)

    refused(await client.request("DELETE", f"{path}/{uuid.uuid4()}"), 404, "not_found")
    for method, target in (("GET", path), ("DELETE", path), ("POST", f"{path}/web.1/actions/stop")):
        refused(await cli(bob).request(method, target), 404, "not_found")
