"""JetStream on a full disk: what nats-server does, pinned so a change is noticed.

Found while reproducing issue #20's disk scenario: once a stream's write meets ENOSPC,
nats-server (2.15) logs "JetStream failed to store a msg ... no space left on device",
answers nothing (the publisher times out: 503 `unavailable` after `retry_for`), and that
stream keeps failing the same way after the space is freed, until nats-server restarts
(other streams are unaffected). The high-water mark refuses new work long before the
disk is full, but the recovery after a full disk needs a nats-server restart today:
this test is expected to fail until the platform does that (or nats-server recovers).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway.contracts import disk
from slipway.libs.bus import Bus
from slipway.libs.errors import InsufficientStorage, Unavailable
from slipway.libs.natsserver import NatsServer
from tests.disk.loopfs import LoopFs, available

pytestmark = [
    pytest.mark.alone,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(available() is not None, reason=available() or ""),
]


@pytest.fixture
def loopfs(tmp_path: Path) -> Iterator[LoopFs]:
    with LoopFs(tmp_path, megabytes=32) as fs:
        yield fs


def crossing() -> disk.DiskPressureChanged:
    return disk.DiskPressureChanged(
        service="builder",
        instance="a",
        label="state folder",
        path="/srv",
        used_percent=100,
        mark=90,
        above=True,
    )


@pytest.mark.xfail(
    strict=True,
    reason="nats-server keeps a stream's ENOSPC write error until it restarts (see module)",
)
async def test_a_stream_that_met_a_full_disk_stores_again_once_freed(loopfs: LoopFs) -> None:
    """Filled until a publish fails, freed: the same stream stores again without a restart."""
    server = NatsServer(loopfs.mount / "nats")
    server.start()
    try:
        bus = await Bus.connect(server.url, "operator")
        try:
            await bus.ensure_streams()
            loopfs.fill_up()

            async def publish_until_refused() -> None:
                for _ in range(20):  # the first few may fit in a block already allocated
                    await bus.publish(disk.DISK_PRESSURE_CHANGED, crossing(), retry_for=1.0)

            with pytest.raises((InsufficientStorage, Unavailable)):
                await publish_until_refused()
            loopfs.free()
            assert await bus.publish(disk.DISK_PRESSURE_CHANGED, crossing(), retry_for=5.0)
        finally:
            await bus.close()
    finally:
        loopfs.free()
        server.stop()
