"""Dynos on real engines: scaling, spread, hardening, crashes, restarts, lost hosts."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter

import aiohttp
import pytest

from slipway.contracts import dynoinit
from slipway.contracts import scheduler as sc
from tests.conftest import assert_eventually
from tests.scheduler.conftest import CRASH, WEB, Cluster

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]


def new_app() -> str:
    return uuid.uuid4().hex[:12]


async def settled(
    cluster: Cluster, app_id: str, want: dict[str, int], release: int, timeout: float = 60
) -> list[sc.Dyno]:
    """Wait until the app runs exactly `want` up dynos of `release`, one container each."""

    async def check() -> list[sc.Dyno]:
        dynos = await cluster.dynos(app_id)
        assert all(d.state == "up" and d.release_version == release for d in dynos), dynos
        assert Counter(d.process_type for d in dynos) == Counter(want), dynos
        assert sorted(d.name for d in dynos) == sorted(
            f"{t}.{i}" for t, n in want.items() for i in range(1, n + 1)
        )
        found = await cluster.containers(app_id)
        ids = sorted(c["Id"] for cs in found.values() for c in cs)  # type: ignore[type-var]
        assert ids == sorted(d.container_id for d in dynos), (ids, dynos)  # type: ignore[type-var]
        return dynos

    return await assert_eventually(check, timeout=timeout, interval=0.2)


async def get(session: aiohttp.ClientSession, dyno: sc.Dyno) -> str:
    assert dyno.address and dyno.port
    async with session.get(f"http://{dyno.address}:{dyno.port}/") as answer:
        assert answer.status == 200
        return await answer.text()


async def test_scale_up_spreads_over_hosts_and_down_keeps_the_spread(cluster: Cluster) -> None:
    await cluster.start()
    await cluster.add_hosts()
    app = new_app()
    await cluster.gateway.release(app, 1, {"web": 3})
    dynos = await settled(cluster, app, {"web": 3}, 1)
    assert sorted(d.host_id for d in dynos) == ["main", "x0", "x1"]
    async with aiohttp.ClientSession() as session:
        for dyno in dynos:
            assert await get(session, dyno) == f"{dyno.name} v1"
    await cluster.gateway.scale(app, {"web": 5})
    dynos = await settled(cluster, app, {"web": 5}, 1)
    assert sorted(Counter(d.host_id for d in dynos).values()) == [1, 2, 2]
    await cluster.gateway.scale(app, {"web": 1})
    dynos = await settled(cluster, app, {"web": 1}, 1)
    assert [d.name for d in dynos] == ["web.1"]


async def test_every_dyno_container_is_hardened(cluster: Cluster) -> None:
    """CapDrop ALL, no-new-privileges, read-only root, non-root, limits, no socket, own ports."""
    await cluster.start()
    await cluster.add_hosts()
    app = new_app()
    await cluster.gateway.release(app, 1, {"web": 3, "worker": 1}, {"web": WEB, "worker": WEB})
    dynos = await settled(cluster, app, {"web": 3, "worker": 1}, 1)
    addresses = {
        "main": "127.0.0.1",
        "x0": cluster.hosts[0].address,
        "x1": cluster.hosts[1].address,
    }
    import aiodocker

    for dyno in dynos:
        docker = aiodocker.Docker(url=cluster.engines()[dyno.host_id])
        try:
            info = await docker.containers.container(dyno.container_id or "").show()
        finally:
            await docker.close()
        host = info["HostConfig"]
        assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
        assert host["SecurityOpt"] == ["no-new-privileges"]
        assert host["ReadonlyRootfs"] is True and "/tmp" in host["Tmpfs"]
        assert info["Config"]["User"] == "10000:10000"
        assert host["MemoryReservation"] == 512 * 1024 * 1024  # the quota; hard cap twice it
        assert host["Memory"] == 1024 * 1024 * 1024 == host["MemorySwap"]
        assert host["PidsLimit"] == 512 and host["CpuShares"] == 1024
        assert host["LogConfig"]["Type"] == "none"  # output is relayed by the init, never on disk
        assert host["Privileged"] is False
        assert host["NetworkMode"] == cluster.scope.network(app)
        assert host["PidMode"] == "" and host["IpcMode"] in ("private", "shareable", "")
        # Only the init and the host's log folder, both read-only.
        mounts = {m["Destination"]: m for m in info["Mounts"]}
        assert set(mounts) == {dynoinit.INIT_PATH, dynoinit.LOG_DIR}
        assert not any(m["RW"] for m in mounts.values())
        assert all("docker.sock" not in str(m) for m in info["Mounts"])
        assert info["Config"]["Entrypoint"] == [dynoinit.INIT_PATH, "--"]
        bindings = info["NetworkSettings"]["Ports"] or {}
        published = [b for bs in bindings.values() if bs for b in bs]
        if dyno.process_type == "web":
            assert published and {b["HostIp"] for b in published} == {addresses[dyno.host_id]}
            assert dyno.address == addresses[dyno.host_id]
        else:
            assert not published
        labels = info["Config"]["Labels"]
        assert labels[sc.LABEL_APP] == app and labels[sc.LABEL_DYNO] == dyno.name
        assert labels[sc.LABEL_RELEASE] == "1" and labels[sc.LABEL_TYPE] == dyno.process_type
        assert f"-v1-{dyno.name}-" in info["Name"]


async def test_a_killed_process_is_restarted_with_backoff(cluster: Cluster) -> None:
    await cluster.start()
    await cluster.add_hosts(main=True)
    app = new_app()
    await cluster.gateway.release(app, 1, {"web": 1})
    (dyno,) = await settled(cluster, app, {"web": 1}, 1)
    asked = time.time()
    (listed,) = await settled(cluster, app, {"web": 1}, 1)
    assert listed.updated_at == dyno.updated_at < asked  # when it came up, not when asked
    import aiodocker

    docker = aiodocker.Docker(url=cluster.engines()[dyno.host_id])
    try:
        info = await docker.containers.container(dyno.container_id or "").show()
    finally:
        await docker.close()
    os.kill(info["State"]["Pid"], signal.SIGKILL)  # kill -9 of the dyno's process

    async def restarted() -> sc.Dyno:
        (again,) = await settled(cluster, app, {"web": 1}, 1)
        assert again.restart_count == 1
        return again

    again = await assert_eventually(restarted, timeout=30, interval=0.2)
    assert again.container_id == dyno.container_id
    assert again.updated_at > dyno.updated_at  # it went down and came up again since
    async with aiohttp.ClientSession() as session:
        assert await get(session, again) == "web.1 v1"


async def test_a_crash_looping_app_is_bounded(cluster: Cluster) -> None:
    """Backoff 0.5 s doubling to 4 s: once capped, restarts come one per cap, not in bursts."""
    await cluster.start(backoff_base=0.5, backoff_cap=4.0)
    await cluster.add_hosts(main=False)
    app = new_app()
    await cluster.gateway.release(app, 1, {"worker": 1}, {"worker": CRASH})

    async def restarted_four_times() -> sc.Dyno:
        dynos = await cluster.dynos(app)
        assert len(dynos) == 1 and dynos[0].restart_count >= 4, dynos
        return dynos[0]

    first = await assert_eventually(restarted_four_times, timeout=60, interval=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def three_more() -> sc.Dyno:
        (dyno,) = await cluster.dynos(app)
        assert dyno.restart_count >= first.restart_count + 3, dyno
        return dyno

    later = await assert_eventually(three_more, timeout=60, interval=0.2)
    elapsed = loop.time() - started
    # Past the fourth restart every wait is the 4 s cap: three restarts take at least two
    # full waits (the window may open just before one ends), never a burst.
    assert elapsed >= 2 * 4.0, (elapsed, later.restart_count - first.restart_count)


async def test_a_lost_host_s_dynos_run_elsewhere_within_30_s(cluster: Cluster) -> None:
    await cluster.start()
    await cluster.add_hosts(main=False)
    app = new_app()
    await cluster.gateway.release(app, 1, {"web": 2})
    dynos = await settled(cluster, app, {"web": 2}, 1)
    assert sorted(d.host_id for d in dynos) == ["x0", "x1"]
    await cluster.bus.call(
        sc.HOSTS_ADD,
        sc.AddHost(id="main", endpoint="unix:///var/run/docker.sock", memory_mb=8192),
        timeout=10,
    )
    victim = cluster.hosts[0]
    await asyncio.to_thread(victim.stop_engine)
    moved = await settled(cluster, app, {"web": 2}, 1, timeout=30)  # the requirement itself
    assert "x0" not in {d.host_id for d in moved}
    async with aiohttp.ClientSession() as session:
        for dyno in moved:
            assert await get(session, dyno) == f"{dyno.name} v1"
    # The engine comes back: its stale container is removed, nothing is duplicated.
    await asyncio.to_thread(victim.start_engine)

    async def x0_clean() -> None:
        found = await cluster.containers(app)
        assert found["x0"] == []
        hosts = (await cluster.bus.call(sc.HOSTS_LIST, sc.ListHosts())).hosts
        assert {h.id: h.state for h in hosts}["x0"] == "up"

    await assert_eventually(x0_clean, timeout=60, interval=0.3)
    await settled(cluster, app, {"web": 2}, 1)


async def test_a_restarted_scheduler_leaves_no_orphans_and_no_duplicates(cluster: Cluster) -> None:
    await cluster.start()
    await cluster.add_hosts()
    app = new_app()
    await cluster.gateway.release(app, 1, {"web": 3})
    before = await settled(cluster, app, {"web": 3}, 1)
    # Killed mid-scale: some dynos being created, none finished.
    await cluster.gateway.scale(app, {"web": 6})
    await assert_eventually(lambda: _more_than(cluster, app, 3), timeout=30, interval=0.05)
    await cluster.crash()
    # While it is down the formation changes, and an unknown app's container appears.
    cluster.gateway.apps[app] = cluster.gateway.apps[app]
    await cluster.start()
    after = await settled(cluster, app, {"web": 6}, 1)
    kept = {d.container_id for d in before} & {d.container_id for d in after}
    assert kept == {d.container_id for d in before}  # the running ones were adopted
    await cluster.crash()
    await cluster.gateway.scale(app, {"web": 2})
    await cluster.start()
    await settled(cluster, app, {"web": 2}, 1)


async def _more_than(cluster: Cluster, app: str, count: int) -> None:
    found = await cluster.containers(app)
    assert sum(len(cs) for cs in found.values()) > count
