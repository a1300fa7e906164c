"""libs/diskwatch: what a service reports of the folders it writes, on a real file system."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from slipway.contracts import disk
from slipway.libs.bus import Bus
from slipway.libs.diskwatch import DiskWatcher, docker_root, measure
from slipway.libs.natsserver import NatsServer
from tests.disk.loopfs import LoopFs, available

pytestmark = [
    pytest.mark.alone,
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=available() or ""),
]


@pytest.fixture
def loopfs(tmp_path: Path) -> Iterator[LoopFs]:
    with LoopFs(tmp_path, megabytes=64) as fs:
        yield fs


def df(path: Path) -> tuple[int, int, int]:
    """df's own size and available bytes, and Use%, of the file system holding `path`."""
    out = subprocess.run(
        ["df", "-B1", "--output=size,avail,pcent", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    size, avail, pcent = out.splitlines()[1].split()
    return int(size), int(avail), int(pcent.rstrip("%"))


def test_reading_matches_df_at_a_known_fill(loopfs: LoopFs) -> None:
    """A folder on a file system filled to ~70 % reads as df shows it, in bytes and percent."""
    folder = loopfs.mount / "state"
    folder.mkdir()
    loopfs.fill_to(70)
    reading = measure("state folder", folder)
    size, avail, percent = df(folder)
    assert (reading.total_bytes, reading.free_bytes) == (size, avail)
    # df rounds its percentage up; ours keeps two decimals.
    assert percent - 1 <= reading.used_percent <= percent
    assert 68 <= reading.used_percent <= 72
    assert reading.path == str(folder)


def test_reading_at_zero_bytes_left_is_100(loopfs: LoopFs) -> None:
    """Filled until ENOSPC, the reading is 100 % with nothing free."""
    loopfs.fill_up()
    reading = measure("state folder", loopfs.mount)
    assert reading.used_percent == 100.0
    assert reading.free_bytes == 0


async def test_watcher_publishes_its_readings(
    loopfs: LoopFs, nats_server: NatsServer, unique: str
) -> None:
    """The watcher's pass reaches a subscriber of `slipway.live.disk.<service>` decoded."""
    loopfs.fill_to(50)
    bus = await Bus.connect(nats_server.url, "operator")
    try:
        chunks = await bus.live_subscribe(disk.readings_subject("builder"))
        watcher = DiskWatcher(
            bus.live_publish,
            "builder",
            unique,
            [("state folder", loopfs.mount), ("gone", loopfs.mount / "missing")],
            interval=0.1,
        )
        watcher_task = asyncio.create_task(watcher.run())
        try:
            data = await anext(chunks)
        finally:
            watcher.stop()
            await watcher_task
    finally:
        await bus.close()
    got = msgspec.json.decode(data, type=disk.DiskReadings)
    assert (got.service, got.instance, got.interval) == ("builder", unique, 0.1)
    # The folder that cannot be read is left out, not reported as fine.
    assert [r.path for r in got.readings] == [str(loopfs.mount)]
    assert 48 <= got.readings[0].used_percent <= 52


async def test_docker_root_is_read_from_the_engine() -> None:
    """DockerRootDir from `docker info` is a folder this process can measure."""
    root = await docker_root()
    if root is None:
        pytest.skip("no Docker engine readable from here")
    assert measure("Docker's data root", root).total_bytes > 0
