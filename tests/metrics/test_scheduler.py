"""The scheduler's dynos by state and its restarts, scraped after real dynos ran."""

from __future__ import annotations

import os
import signal

import aiodocker
import pytest

from slipway.libs.metrics import socket_path
from tests.conftest import assert_eventually
from tests.metrics.scrape import samples, value
from tests.scheduler.conftest import Cluster
from tests.scheduler.test_dynos import new_app, settled

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]


async def test_dynos_by_state_and_a_crash_restart(cluster: Cluster) -> None:
    """Two web dynos show as 2 up; one killed is restarted: restarts +1, 2 up again."""
    await cluster.start()
    await cluster.add_hosts(main=True)
    sock = socket_path(cluster.home, "scheduler")
    before = await samples(sock)
    assert value(before, "slipway_dynos", state="up") == 0
    app = new_app()
    await cluster.gateway.release(app, 1, {"web": 2})
    dynos = await settled(cluster, app, {"web": 2}, 1)
    found = await samples(sock)
    assert value(found, "slipway_dynos", state="up") == 2
    assert value(found, "slipway_dynos", state="crashed") == 0
    restarts = value(found, "slipway_dyno_restarts_total")

    docker = aiodocker.Docker(url=cluster.engines()[dynos[0].host_id])
    try:
        info = await docker.containers.container(dynos[0].container_id or "").show()
    finally:
        await docker.close()
    os.kill(info["State"]["Pid"], signal.SIGKILL)  # kill -9 of the dyno's process

    async def restarted() -> None:
        found = await samples(sock)
        assert value(found, "slipway_dyno_restarts_total") == restarts + 1
        assert value(found, "slipway_dynos", state="up") == 2

    await assert_eventually(restarted, timeout=30, interval=0.2)
    assert value(await samples(sock), "slipway_disk_free_bytes", folder="docker") > 0
