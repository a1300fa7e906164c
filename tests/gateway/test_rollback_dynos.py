"""A refused rollback leaves the dynos alone: the real gateway, registry-proxy and scheduler.

The app's current release runs a small image kept on the local engine (the builder's
"local" mode, so the scheduler never pulls it) with web=2; its earlier releases ran
registry images, the oldest of them already collected. Rolling back to that one, or
to the release made before the first build, is refused, and the same two containers
keep running.

Then the formation end to end: web=2 stays 2 through a config change, a deploy, a
rollback and a restart; a deploy whose dynos crash at boot and a restart whose config
no longer decrypts each leave the same two dynos serving and tell the user (#17 item 7).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from slipway.contracts import scheduler as sc
from slipway.contracts import subjects
from slipway.contracts.gateway import RELEASE_CREATE, CreateRelease
from slipway.contracts.logs import LogLines, lines_subject
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


# ---- formation and failures end to end (#17 item 7) ------------------------------------------


def flip_config_tags(db_path: Path, app_id: str) -> None:
    """Alter the last byte (the AEAD tag) of every sealed config of the app, as a corrupted
    disk or an attacker would: well-formed, but it no longer decrypts."""
    db = sqlite3.connect(db_path, timeout=10, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        rows = db.execute(
            "SELECT id, ciphertext FROM config_versions WHERE app_id = ?", (app_id,)
        ).fetchall()
        for ident, sealed in rows:
            altered = bytes(sealed[:-1]) + bytes([sealed[-1] ^ 1])
            db.execute("UPDATE config_versions SET ciphertext = ? WHERE id = ?", (altered, ident))
        db.execute("COMMIT")
    finally:
        db.close()


async def slipway(stack: Stack, token: str, home: Path, *args: str) -> tuple[int, str, str]:
    """Run the `slipway` command as a user would, logged in with `token`."""
    env = {
        **os.environ,
        "HOME": str(home),
        "SLIPWAY_CONFIG_DIR": str(home / "config"),
        "SLIPWAY_API_URL": stack.url,
        "SLIPWAY_API_KEY": token,
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "slipway"),
        *args,
        env=env,
        cwd=home,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_web_2_survives_every_release_and_a_release_that_cannot_start_keeps_it_serving(
    stack: Stack, scheduler: Scope, sched_image: str, tmp_path: Path
) -> None:
    """web=2 through config:set, deploy, rollback and restart; a crashing deploy fails (its
    release `failed`, not current, a heroku[api] line) and a restart whose config cannot be
    decrypted exits non-zero: both leave the same two dynos serving."""
    alice: Api = await stack.user("alice@example.com")
    assert alice.token is not None
    app = await stack.app(alice, "hello")
    home = tmp_path / "cli"
    home.mkdir()
    lines = await stack.bus.live_subscribe(lines_subject(app["id"]))
    said: list[str] = []

    async def release(version: int, web: str) -> None:
        command = CreateRelease(
            app_id=app["id"],
            image_ref=sched_image,
            image_digest=sched_image,
            process_types={"web": web},
        )
        await stack.bus.send(RELEASE_CREATE, command)

        async def made() -> None:
            releases = await alice.ok("GET", "/apps/hello/releases")
            assert releases[-1]["version"] == version

        await assert_eventually(made)

    async def serving(version: int) -> dict[str, tuple[int, str | None]]:
        async def two_up() -> dict[str, tuple[int, str | None]]:
            up = await running(stack.bus, app["id"])
            assert sorted(up) == ["web.1", "web.2"], up
            assert {release for release, _ in up.values()} == {version}, up
            return up

        up = await assert_eventually(two_up, timeout=60, interval=0.3)
        formation = await alice.ok("GET", "/apps/hello/formation")
        assert [(f["type"], f["quantity"]) for f in formation] == [("web", 2)]
        current = await alice.ok("GET", "/apps/hello/releases")
        assert [r["version"] for r in current if r["current"]] == [version]
        return up

    await release(2, WEB)
    await alice.ok("PATCH", "/apps/hello/formation/web", {"quantity": 2})
    await serving(2)
    await alice.ok("PATCH", "/apps/hello/config-vars", {"GREETING": "hi"})  # v3
    await serving(3)
    await release(4, WEB)
    await serving(4)
    await alice.ok("POST", "/apps/hello/releases", {"release": "v3"}, status=201)  # v5
    before = await serving(5)
    code, _, err = await slipway(stack, alice.token, home, "ps:restart", "-a", "hello")
    assert code == 0, err
    assert await serving(5) == before  # the same containers, started again

    await release(6, "sleep 0.3; exit 3")  # every new dyno crashes at boot

    async def v6_failed() -> None:
        info = await alice.ok("GET", "/apps/hello/releases/v6")
        assert (info["status"], info["current"]) == ("failed", False)

    await assert_eventually(v6_failed, timeout=60, interval=0.3)
    assert await serving(5) == before
    code, out, err = await slipway(stack, alice.token, home, "releases", "-a", "hello")
    assert code == 0, err
    assert "Current: v5" in out and "(failed)" in out, out

    async def told() -> None:
        while not any("Release v6 failed" in text for text in said):
            line = msgspec.json.decode(await anext(lines), type=LogLines).lines[0]
            said.append(f"{line.source}[{line.dyno}]: {line.text}")

    await asyncio.wait_for(told(), 30)
    assert (
        "heroku[api]: Release v6 failed: web.1: Process exited with status 3; v5 keeps serving"
        in said
    )

    await asyncio.to_thread(flip_config_tags, stack.home / "gateway" / "gateway.db", app["id"])
    code, out, err = await slipway(stack, alice.token, home, "ps:restart", "-a", "hello")
    assert code != 0
    (message,) = err.strip().splitlines()
    assert "its config cannot be decrypted" in message and "left as they are" in message, err
    assert await serving(5) == before
