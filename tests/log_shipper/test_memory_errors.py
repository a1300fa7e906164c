"""Heroku's R14 and R15: a dyno over its memory quota is told so, one past twice it is killed.

The real scheduler starts real dynos on the main engine (its test image, from
tests/scheduler/conftest.py), with a test quota of 64 MB in place of the size's
512 MB so the hogs stay small (`dyno_memory_mb`; the hard limit follows at twice
it); the real log-shipper of that host samples their cgroups and stores the lines
the app's log shows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from slipway.contracts import scheduler as sc
from slipway.contracts.log_shipper import LogEntry
from slipway.contracts.scheduler import DynoChanged
from slipway.contracts.scope import Scope
from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer
from slipway.services.gateway.logs.shippers import history
from slipway.services.log_shipper import metrics, platform
from slipway.services.scheduler import containers
from slipway.services.scheduler.containers import DynoSpec
from tests.conftest import assert_eventually, new_scope, remove_scope_objects
from tests.log_shipper.conftest import RunningShipper, ShipperFactory, new_id
from tests.scheduler.conftest import Cluster, StandInGateway, sched_image  # noqa: F401

QUOTA_MB = 64  # the test dynos' quota: their hard limit is 128 MB
# 96 MB written at once (so every page is resident): over the quota, under the hard limit.
OVER_QUOTA = "python3 -c \"import signal; held = b'x' * (96 << 20); signal.pause()\""
# Grows by 64 MB until the kernel kills it at the hard limit (the scheduler tests' hog).
PAST_HARD_LIMIT = "python3 /srv/hog.py memory"
TEAM = "team-test"  # the stand-in gateway's team


def test_container_quota_is_the_reservation_and_the_hard_limit_twice_it() -> None:
    """The size's memory is the soft limit (the quota); `Memory` is twice it; no swap."""
    spec = DynoSpec(
        app_id="a1",
        app_name="shop",
        team_id="t1",
        release=1,
        process_type="worker",
        index=1,
        size="eco",
        image="img",
        command="",
        host_id="h1",
    )
    made = containers.container_config(
        spec,
        argv=["true"],
        port=5000,
        address="127.0.0.1",
        publish=False,
        tmp_size="1m",
        scope=Scope(),
        init="/init",
        log_dir="",
    )["HostConfig"]
    assert made["MemoryReservation"] == 512 << 20
    assert made["Memory"] == made["MemorySwap"] == 1024 << 20


def test_r14_lines_only_over_the_quota() -> None:
    """Heroku's pair, `Process running mem=96M(150.0%)` then R14, only above the quota."""
    assert metrics.r14_lines(96.0, 64.0) == ["Process running mem=96M(150.0%)", sc.R14_TEXT]
    assert metrics.r14_lines(64.0, 64.0) == []
    assert metrics.r14_lines(10.0, 0.0) == []


def test_a_reason_of_several_lines_is_several_heroku_lines() -> None:
    """R15, SIGKILL and the exit status each get their `heroku[worker.1]` line, in order."""
    dyno = sc.Dyno(
        app_id="a1",
        app_name="shop",
        team_id="t1",
        name="worker.1",
        process_type="worker",
        release_version=1,
        state="crashed",
        host_id="h1",
    )
    reason = f"{sc.R15_TEXT}\nStopping process with SIGKILL\nProcess exited with status 137"
    event = DynoChanged(dyno=dyno, previous_state="up", reason=reason)
    texts = [line[3] for line in platform.dyno_lines(event)]
    assert texts == [
        sc.R15_TEXT,
        "Stopping process with SIGKILL",
        "Process exited with status 137",
        "State changed from up to crashed",
    ]


@pytest.fixture
async def cluster(
    nats_server: NatsServer,
    sched_image: str,  # noqa: F811 - a fixture
    slipway_home: Path,
) -> AsyncIterator[Cluster]:
    """The scheduler on the main engine only, sharing the log-shipper's home (its socket)."""
    bus = await Bus.connect(nats_server.url, "gateway")
    await bus.ensure_streams()
    gateway = StandInGateway(bus=bus, image=sched_image)
    await gateway.serve()
    scope = new_scope()
    made = Cluster(
        nats=nats_server, bus=bus, gateway=gateway, hosts=[], scope=scope, home=slipway_home
    )
    try:
        yield made
    finally:
        try:
            await made.stop()
        finally:
            await bus.close()
            remove_scope_objects(scope)


async def start_both(
    cluster: Cluster,
    start_shipper: Callable[..., Any],
    shipper_settings: ShipperFactory,
) -> RunningShipper:
    """The log-shipper of host `main` sampling every second, then the scheduler."""
    settings = shipper_settings(host_id="main", metrics_interval=1.0)
    shipper: RunningShipper = await start_shipper(settings)
    await cluster.start(dyno_memory_mb=QUOTA_MB)
    await cluster.add_hosts()
    return shipper


async def app_log(cluster: Cluster, app_id: str) -> list[LogEntry]:
    return await history(cluster.bus, app_id, TEAM, 500)


def counted(shipper: RunningShipper, app_id: str, code: str) -> float:
    """The app's `slipway_dyno_memory_errors_total` as Prometheus scrapes it."""
    text = generate_latest(shipper.service.metrics.registry).decode()
    prefix = f'slipway_dyno_memory_errors_total{{app_id="{app_id}",code="{code}"}} '
    found = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(found[0].removeprefix(prefix)) if found else 0.0


@pytest.mark.docker
@pytest.mark.integration
@pytest.mark.slow
async def test_a_dyno_over_its_quota_logs_r14_and_keeps_running(
    cluster: Cluster,
    start_shipper: Callable[..., Any],
    shipper_settings: ShipperFactory,
) -> None:
    """96 MB in an eco dyno of quota 64 MB: R14 beside its sample line; it is not killed."""
    shipper = await start_both(cluster, start_shipper, shipper_settings)
    app = new_id()
    await cluster.gateway.release(app, 1, {"worker": 1}, {"worker": OVER_QUOTA}, size="eco")

    async def r14_said() -> list[LogEntry]:
        lines = await app_log(cluster, app)
        texts = [e.text for e in lines if e.source == "heroku" and e.dyno == "worker.1"]
        assert sc.R14_TEXT in texts, texts
        return lines

    lines = await assert_eventually(r14_said, timeout=90, interval=0.5)
    heroku = [e.text for e in lines if e.source == "heroku" and e.dyno == "worker.1"]
    at = heroku.index(sc.R14_TEXT)
    # Heroku's order: the sample line (quota: the size's, here the test's), the usage, R14.
    assert f"sample#memory_quota={QUOTA_MB:.2f}MB" in heroku[at - 2]
    mem = heroku[at - 1]
    assert mem.startswith("Process running mem=") and mem.endswith("%)"), mem
    assert 64 < float(mem.removeprefix("Process running mem=").split("M", 1)[0]) < 128
    assert sc.R15_TEXT not in heroku
    dynos = await cluster.dynos(app)
    assert [(d.state, d.restart_count) for d in dynos] == [("up", 0)]
    assert counted(shipper, app, "R14") >= 1
    assert counted(shipper, app, "R15") == 0


@pytest.mark.docker
@pytest.mark.integration
@pytest.mark.slow
async def test_a_dyno_past_twice_its_quota_logs_r15_and_is_restarted(
    cluster: Cluster,
    start_shipper: Callable[..., Any],
    shipper_settings: ShipperFactory,
) -> None:
    """A hog killed by the kernel at 128 MB: R15, SIGKILL, status 137, then a restart."""
    shipper = await start_both(cluster, start_shipper, shipper_settings)
    app = new_id()
    await cluster.gateway.release(app, 1, {"worker": 1}, {"worker": PAST_HARD_LIMIT}, size="eco")

    async def restarted() -> list[LogEntry]:
        lines = await app_log(cluster, app)
        texts = [e.text for e in lines if e.source == "heroku" and e.dyno == "worker.1"]
        assert sc.R15_TEXT in texts, texts
        # The record's restart count moves before the "Restarting" line reaches the
        # app's log (two paths), so wait for both.
        assert "Restarting" in texts[texts.index(sc.R15_TEXT) :], texts
        (dyno,) = await cluster.dynos(app)
        assert dyno.restart_count >= 1, dyno
        return lines

    lines = await assert_eventually(restarted, timeout=90, interval=0.5)
    heroku = [e.text for e in lines if e.source == "heroku" and e.dyno == "worker.1"]
    at = heroku.index(sc.R15_TEXT)
    assert heroku[at + 1 : at + 3] == [
        "Stopping process with SIGKILL",
        "Process exited with status 137",
    ]
    assert heroku[at + 3].startswith("State changed from ") and heroku[at + 3].endswith(
        " to crashed"
    )
    assert "Restarting" in heroku[at + 3 :]
    await assert_eventually(lambda: _at_least(counted(shipper, app, "R15"), 1), timeout=10)


def _at_least(value: float, least: float) -> None:
    assert value >= least, value
