"""Rolling deploys, failed releases, the release phase, and one app's abuse not reaching another."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import msgspec
import pytest

from slipway.contracts import scheduler as sc
from slipway.libs.bus import Bus
from tests.conftest import assert_eventually
from tests.scheduler.conftest import NEVER_BIND, WEB, Cluster
from tests.scheduler.test_dynos import get, new_app, settled

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]


async def deploy_events(bus: Bus, app_id: str) -> list[sc.DeployFinished]:
    """Every DEPLOY_FINISHED of the app so far, from the EVT stream."""
    sub = await bus.js.pull_subscribe(sc.DEPLOY_FINISHED.subject, durable=None)
    found: list[sc.DeployFinished] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(100, timeout=0.5)
            except TimeoutError:
                break
            for msg in msgs:
                event = msgspec.json.decode(msg.data, type=sc.DeployFinished)
                if event.app_id == app_id:
                    found.append(event)
    finally:
        await sub.unsubscribe()
    return found


async def test_a_deploy_under_load_loses_no_request(cluster: Cluster) -> None:
    """Requests go to the up web dynos only (as the router would); none fails during v1 → v2."""
    await cluster.start()
    await cluster.add_hosts(main=False)
    app = new_app()
    await cluster.gateway.release(app, 1, {"web": 2})
    await settled(cluster, app, {"web": 2}, 1)
    answers: list[str] = []
    failures: list[str] = []
    done = asyncio.Event()

    async def load() -> None:
        async with aiohttp.ClientSession() as session:
            while not done.is_set():
                # The router's picture: up web dynos, refreshed before every request.
                up = [d for d in await cluster.dynos(app) if d.state == "up"]
                if not up:
                    failures.append("no up dyno")
                    continue
                dyno = random.choice(up)
                try:
                    answers.append(await get(session, dyno))
                except (aiohttp.ClientError, AssertionError) as exc:
                    failures.append(f"{dyno.name} v{dyno.release_version}: {exc!r}")

    task = asyncio.create_task(load())
    await cluster.gateway.release(app, 2, {"web": 2})
    await settled(cluster, app, {"web": 2}, 2)
    await assert_eventually(lambda: _seen(answers, "v2", 20), timeout=30)
    done.set()
    await task
    assert failures == []
    assert any(a.endswith("v1") for a in answers) and any(a.endswith("v2") for a in answers)
    events = await deploy_events(cluster.bus, app)
    assert [(e.release_version, e.status) for e in events] == [(1, "succeeded"), (2, "succeeded")]


def _seen(answers: list[str], suffix: str, count: int) -> None:
    assert sum(1 for a in answers if a.endswith(suffix)) >= count


async def test_a_broken_release_leaves_the_old_one_serving(cluster: Cluster) -> None:
    await cluster.start(boot_timeout=3.0)
    await cluster.add_hosts(main=False)
    app = new_app()
    await cluster.gateway.release(app, 1, {"web": 2})
    before = await settled(cluster, app, {"web": 2}, 1)
    await cluster.gateway.release(app, 2, {"web": 2}, {"web": NEVER_BIND})

    async def failed() -> None:
        events = await deploy_events(cluster.bus, app)
        assert [(e.release_version, e.status) for e in events][-1] == (2, "failed"), events
        assert "R10" in events[-1].reason

    await assert_eventually(failed, timeout=30, interval=0.3)
    after = await settled(cluster, app, {"web": 2}, 1)
    assert {d.container_id for d in after} == {d.container_id for d in before}
    async with aiohttp.ClientSession() as session:
        for dyno in after:
            assert await get(session, dyno) == f"{dyno.name} v1"
    # Scaling still works while v2 stays failed: the new dyno is a v1 dyno.
    await cluster.gateway.scale(app, {"web": 3})
    await settled(cluster, app, {"web": 3}, 1)


async def test_a_failed_release_phase_stops_the_deploy(cluster: Cluster) -> None:
    await cluster.start()
    await cluster.add_hosts(main=False)
    app = new_app()
    await cluster.gateway.release(app, 1, {"web": 1}, {"web": WEB, "release": "true"})
    (v1,) = await settled(cluster, app, {"web": 1}, 1)
    await cluster.gateway.release(app, 2, {"web": 1}, {"web": WEB, "release": "exit 7"})

    async def failed() -> None:
        events = await deploy_events(cluster.bus, app)
        assert [(e.release_version, e.status, e.phase) for e in events] == [
            (1, "succeeded", "done"),
            (2, "failed", "release"),
        ]
        assert "status 7" in events[-1].reason

    await assert_eventually(failed, timeout=30, interval=0.3)
    (still,) = await settled(cluster, app, {"web": 1}, 1)
    assert still.container_id == v1.container_id  # no v2 dyno ever started
    found = await cluster.containers(app)
    assert sum(len(cs) for cs in found.values()) == 1  # and the release one-off is gone


async def test_a_fork_bomb_and_a_memory_hog_do_not_disturb_another_app(cluster: Cluster) -> None:
    await cluster.start()
    await cluster.add_hosts(main=False)
    # Both apps on one host, so they share its kernel, CPU and memory.
    await cluster.bus.call(sc.HOSTS_DRAIN, sc.HostRef(id="x1"))
    calm, noisy = new_app(), new_app()
    await cluster.gateway.release(calm, 1, {"web": 1})
    (victim,) = await settled(cluster, calm, {"web": 1}, 1)
    bombs = {"forker": "python3 /srv/hog.py fork", "hog": "python3 /srv/hog.py memory"}
    await cluster.gateway.release(noisy, 1, {"forker": 1, "hog": 1}, bombs)

    async def bombing() -> None:
        dynos = await cluster.dynos(noisy)
        assert {d.process_type for d in dynos} == {"forker", "hog"}
        hog = next(d for d in dynos if d.process_type == "hog")
        assert hog.restart_count >= 2  # killed by its memory limit, more than once

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        answered = 0
        while True:
            assert await get(session, victim) == "web.1 v1"
            answered += 1
            try:
                await bombing()
            except AssertionError:
                await asyncio.sleep(0.1)
                continue
            break
        # The fork bomb is still at its pids limit: the calm app keeps answering.
        for _ in range(20):
            assert await get(session, victim) == "web.1 v1"
    assert answered > 0
