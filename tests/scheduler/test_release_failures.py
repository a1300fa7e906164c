"""A deploy or restart that cannot start its dynos is an error the user sees (#17 item 7).

Each case runs the real scheduler on real engines: the old dynos keep serving (the same
containers answer), the deploy is published `failed` with the reason (the gateway marks
the release failed), and a `heroku[api]` line reaches the app's log subject.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiodocker
import aiohttp
import msgspec
import pytest

from slipway.contracts import scheduler as sc
from slipway.contracts.logs import LogLine, LogLines, lines_subject
from slipway.contracts.registry import CREDENTIALS_ISSUE, Credentials, IssueCredentials
from slipway.libs.bus import Bus
from slipway.libs.errors import Conflict
from tests.conftest import assert_eventually
from tests.scheduler.conftest import CRASH, NEVER_BIND, WEB, Cluster
from tests.scheduler.test_deploys import deploy_events
from tests.scheduler.test_dynos import get, new_app, settled

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]

# Not an encrypted record at all: decryption fails before any key is asked for.
UNDECRYPTABLE = b"\x00not a sealed config"


class Lines:
    """Every platform line sent for one app while the test runs."""

    def __init__(self) -> None:
        self.seen: list[LogLine] = []
        self._task: asyncio.Task[None] | None = None

    async def follow(self, bus: Bus, app_id: str) -> None:
        chunks = await bus.live_subscribe(lines_subject(app_id))

        async def read() -> None:
            async for data in chunks:
                self.seen.extend(msgspec.json.decode(data, type=LogLines).lines)

        self._task = asyncio.create_task(read())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def texts(self) -> list[str]:
        return [f"{line.source}[{line.dyno}]: {line.text}" for line in self.seen]


@pytest.fixture
async def lines() -> AsyncIterator[Lines]:
    following = Lines()
    try:
        yield following
    finally:
        await following.close()


async def started_at(cluster: Cluster, dynos: list[sc.Dyno]) -> dict[str, str]:
    """Dyno name → when its container's process last started, from its engine."""
    found: dict[str, str] = {}
    for dyno in dynos:
        docker = aiodocker.Docker(url=cluster.engines()[dyno.host_id])
        try:
            assert dyno.container_id is not None
            info = await docker.containers.container(dyno.container_id).show()
            found[dyno.name] = info["State"]["StartedAt"]
        finally:
            await docker.close()
    return found


async def dyno_changes(bus: Bus, app_id: str) -> list[tuple[str, str, str]]:
    """(dyno, state, reason) of every DYNO_CHANGED of the app so far, in order."""
    sub = await bus.js.pull_subscribe(sc.DYNO_CHANGED.subject, durable=None)
    found: list[tuple[str, str, str]] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(100, timeout=0.5)
            except TimeoutError:
                break
            for msg in msgs:
                event = msgspec.json.decode(msg.data, type=sc.DynoChanged)
                if event.dyno.app_id == app_id:
                    found.append((event.dyno.name, event.dyno.state, event.reason))
    finally:
        await sub.unsubscribe()
    return found


async def serving_v1(cluster: Cluster, app: str, lines: Lines) -> list[sc.Dyno]:
    """The app runs web=2 of v1, and its platform lines are followed."""
    await lines.follow(cluster.bus, app)
    await cluster.gateway.release(app, 1, {"web": 2})
    return await settled(cluster, app, {"web": 2}, 1)


async def failed_with(cluster: Cluster, app: str, lines: Lines, words: str) -> sc.DeployFinished:
    """Wait for v2's `failed` deploy event naming `words`, and its heroku[api] line."""

    async def failed() -> sc.DeployFinished:
        events = await deploy_events(cluster.bus, app)
        assert [(e.release_version, e.status) for e in events][-1] == (2, "failed"), events
        assert words in events[-1].reason, events[-1]
        wanted = f"heroku[api]: Release v2 failed: {events[-1].reason}; v1 keeps serving"
        assert wanted in lines.texts(), lines.texts()
        return events[-1]

    return await assert_eventually(failed, timeout=60, interval=0.3)


async def still_serving(cluster: Cluster, app: str, before: list[sc.Dyno]) -> None:
    """The same v1 containers are up and answer, and no v2 container is left."""
    after = await settled(cluster, app, {"web": 2}, 1)
    assert {d.container_id for d in after} == {d.container_id for d in before}
    async with aiohttp.ClientSession() as session:
        for dyno in after:
            assert await get(session, dyno) == f"{dyno.name} v1"


async def test_a_release_whose_image_cannot_be_pulled_fails_and_v1_keeps_serving(
    cluster: Cluster, lines: Lines
) -> None:
    """An image the registry does not have: the pull fails, the release fails, v1 serves."""

    async def credentials(request: IssueCredentials) -> Credentials:
        # A registry nobody listens on: the engine's pull is refused, as for a lost image.
        return Credentials(
            registry="127.0.0.1:9",
            repository=f"127.0.0.1:9/apps/{request.app_id}",
            username="u",
            password="p",
            expires_at=0.0,
        )

    await cluster.bus.serve(CREDENTIALS_ISSUE, credentials)
    await cluster.start()
    await cluster.add_hosts(main=False)
    app = new_app()
    before = await serving_v1(cluster, app, lines)
    gone = f"127.0.0.1:9/apps/{app}@sha256:{'0' * 64}"
    await cluster.gateway.release(app, 2, {"web": 2}, image=gone)
    await failed_with(cluster, app, lines, "could not create its container")
    await still_serving(cluster, app, before)


async def test_a_release_whose_config_cannot_be_decrypted_fails_and_v1_keeps_serving(
    cluster: Cluster, lines: Lines
) -> None:
    """No dyno of v2 starts without its config; v2 fails at once instead of waiting forever."""
    cluster.gateway.sealed["cfg-2"] = UNDECRYPTABLE
    await cluster.start()
    await cluster.add_hosts(main=False)
    app = new_app()
    before = await serving_v1(cluster, app, lines)
    await cluster.gateway.release(app, 2, {"web": 2}, config_version="cfg-2")
    await failed_with(cluster, app, lines, "its config cannot be decrypted")
    await still_serving(cluster, app, before)


@pytest.mark.parametrize(
    ("command", "words"),
    [(CRASH, "Process exited with status 3"), (NEVER_BIND, "Error R10 (Boot timeout)")],
    ids=["crashes-at-boot", "never-binds-port"],
)
async def test_a_release_whose_dyno_does_not_boot_fails_and_v1_keeps_serving(
    cluster: Cluster, lines: Lines, command: str, words: str
) -> None:
    """A new dyno that exits at boot, or never binds $PORT (R10): v2 fails, v1 serves."""
    await cluster.start(boot_timeout=3.0)
    await cluster.add_hosts(main=False)
    app = new_app()
    before = await serving_v1(cluster, app, lines)
    await cluster.gateway.release(app, 2, {"web": 2}, {"web": command})
    await failed_with(cluster, app, lines, words)
    await still_serving(cluster, app, before)


async def test_a_restart_whose_config_cannot_be_decrypted_is_refused_and_stops_nothing(
    cluster: Cluster, lines: Lines
) -> None:
    """ps:restart reads the config before it stops a dyno: refused, both dynos untouched."""
    await cluster.start()
    await cluster.add_hosts(main=False)
    app = new_app()
    await lines.follow(cluster.bus, app)
    await cluster.gateway.release(app, 1, {"web": 2}, config_version="cfg-1")
    before = await settled(cluster, app, {"web": 2}, 1)
    started = await started_at(cluster, before)
    cluster.gateway.sealed["cfg-1"] = UNDECRYPTABLE  # e.g. its key was destroyed since

    with pytest.raises(Conflict) as refused:
        await cluster.bus.call(sc.DYNOS_RESTART, sc.RestartDynos(app_id=app), timeout=10)
    assert "Cannot restart the dynos: its config cannot be decrypted" in refused.value.message
    assert "left as they are" in refused.value.message
    assert "heroku[api]: Restart of the dynos failed: its config cannot be decrypted;" in " ".join(
        lines.texts()
    )
    after = await settled(cluster, app, {"web": 2}, 1)
    assert [d.container_id for d in after] == [d.container_id for d in before]
    assert await started_at(cluster, after) == started  # never stopped, never started again
    async with aiohttp.ClientSession() as session:
        for dyno in after:
            assert await get(session, dyno) == f"{dyno.name} v1"


async def test_a_restart_goes_one_dyno_at_a_time_and_keeps_the_formation(
    cluster: Cluster,
) -> None:
    """ps:restart web: web.2 stops only once web.1 is up again; web=2 stays web=2."""
    await cluster.start()
    await cluster.add_hosts(main=False)
    app = new_app()
    await cluster.gateway.release(app, 1, {"web": 2}, config_version="cfg-1")
    before = await settled(cluster, app, {"web": 2}, 1)
    started = await started_at(cluster, before)
    answer = await cluster.bus.call(
        sc.DYNOS_RESTART, sc.RestartDynos(app_id=app, target="web"), timeout=10
    )
    assert sorted(d.name for d in answer.dynos) == ["web.1", "web.2"]

    async def restarted() -> list[sc.Dyno]:
        dynos = await settled(cluster, app, {"web": 2}, 1, timeout=5)
        now = await started_at(cluster, dynos)
        assert all(now[name] != started[name] for name in started), (now, started)
        return dynos

    after = await assert_eventually(restarted, timeout=60, interval=0.3)
    # The same containers, started again: a restart is not a new release.
    assert {d.container_id for d in after} == {d.container_id for d in before}
    changes = await dyno_changes(cluster.bus, app)
    restarting = [c for c in changes if c[2] == "Restarting"]
    assert [name for name, _, _ in restarting] == ["web.1", "web.2"]
    web1_up = max(i for i, c in enumerate(changes) if c[:2] == ("web.1", "up"))
    assert web1_up < changes.index(restarting[1])


async def test_adopted_dynos_keep_their_command(cluster: Cluster) -> None:
    """After the scheduler restarts, `ps` still shows each adopted dyno's command."""
    await cluster.start()
    await cluster.add_hosts(main=False)
    app = new_app()
    await cluster.gateway.release(app, 1, {"web": 2})
    before = await settled(cluster, app, {"web": 2}, 1)
    assert {d.command for d in before} == {WEB}
    await cluster.crash()
    await cluster.start()
    after = await settled(cluster, app, {"web": 2}, 1)
    assert {d.container_id for d in after} == {d.container_id for d in before}
    assert [d.command for d in after] == [WEB, WEB]
