"""How full the disks a service writes are: measured every few seconds, told to the gateway.

A service names the folders it writes (its state folder; Docker's data root for the
builder and the scheduler, which run containers) and calls `watch(app, folders)`;
a loop then measures each one (`statvfs`, as `df` does) every `SLIPWAY_DISK_INTERVAL`
seconds and publishes the readings on the service's `slipway.live.disk.<service>`
subject (contracts/disk.py). The gateway keeps the latest and refuses new builds,
sources and add-ons above the high-water mark.

Docker's data root is asked of the engine once (`docker info`, DockerRootDir); if it
is not readable from this process (another user, another machine), one log line says
so and it is left out rather than reported as fine.

Nothing here ever deletes anything to make room: a full disk is the operator's to fix.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from slipway.contracts import disk
from slipway.contracts.base import encode
from slipway.libs.waits import wait_for_event

if TYPE_CHECKING:
    from slipway.libs.service import ServiceApp
    from slipway.libs.service.settings import Settings

log = structlog.get_logger("slipway.diskwatch")

# A core-NATS publish (Bus.live_publish): subject, payload.
Publish = Callable[[str, bytes], Awaitable[None]]

STATE_FOLDER = "state folder"
DOCKER_ROOT = "Docker's data root"


def measure(label: str, path: Path | str) -> disk.DiskReading:
    """One folder's file system now; OSError when it cannot be read."""
    st = os.statvfs(path)
    device = os.stat(path).st_dev
    total = st.f_blocks * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    available = st.f_bavail * st.f_frsize
    # df's Use%: the blocks reserved for root count as neither used nor available.
    seen = used + available
    percent = 100.0 * used / seen if seen else 0.0
    return disk.DiskReading(
        label=label,
        path=str(path),
        total_bytes=total,
        free_bytes=available,
        used_percent=round(percent, 2),
        filesystem=f"{socket.gethostname()}:{device}",
    )


async def docker_root(docker_url: str | None = None) -> Path | None:
    """Docker's data root as the engine reports it, if this process can read it."""
    argv = ["docker"] + (["-H", docker_url] if docker_url else [])
    argv += ["info", "--format", "{{.DockerRootDir}}"]
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        out, _ = await process.communicate()
    except OSError as exc:
        log.warning("diskwatch.docker_root_unknown", reason=repr(exc))
        return None
    root = out.decode().strip()
    if process.returncode != 0 or not root:
        log.warning("diskwatch.docker_root_unknown", reason="docker info gave no DockerRootDir")
        return None
    try:
        os.statvfs(root)
    except OSError as exc:
        log.warning("diskwatch.docker_root_skipped", path=root, reason=repr(exc))
        return None
    return Path(root)


class DiskWatcher:
    """Measures `folders` (label → path) every `interval` seconds and publishes them."""

    def __init__(
        self,
        publish: Publish,
        service: str,
        instance: str,
        folders: list[tuple[str, Path]],
        *,
        interval: float,
    ) -> None:
        self.publish = publish
        self.service = service
        self.instance = instance
        self.folders = list(folders)
        self.interval = interval
        self.last: disk.DiskReadings | None = None
        self._stop = asyncio.Event()

    def readings(self) -> disk.DiskReadings:
        """Every folder measured now; one that cannot be read is left out, and logged."""
        found: list[disk.DiskReading] = []
        for label, path in self.folders:
            try:
                found.append(measure(label, path))
            except OSError as exc:
                log.warning("diskwatch.unreadable", folder=str(path), error=repr(exc))
        return disk.DiskReadings(
            service=self.service,
            instance=self.instance,
            interval=self.interval,
            readings=found,
            at=time.time(),
        )

    async def run(self) -> None:
        """Measure and publish until stopped; a failed pass is logged and the loop goes on."""
        while True:
            try:
                self.last = self.readings()
                await self.publish(disk.readings_subject(self.service), encode(self.last))
            except Exception as exc:  # a loop never dies silently: log and keep going
                log.warning("diskwatch.pass_failed", error=repr(exc))
            if await wait_for_event(self._stop, self.interval):
                return

    def stop(self) -> None:
        self._stop.set()


def state_folders(settings: Settings, *names: str) -> list[tuple[str, Path]]:
    """The state folders `names` under the platform's home, labelled for a human."""
    return [(STATE_FOLDER, settings.home_path / name) for name in names]


def watch(app: ServiceApp, folders: Iterable[tuple[str, Path]], *, docker: bool = False) -> None:
    """Run a DiskWatcher for the lifetime of `app` (a ServiceApp); with `docker`, Docker's
    data root is measured too."""
    wanted = list(folders)

    @app.cleanup_ctx
    async def disk_watcher(app: ServiceApp) -> AsyncIterator[None]:
        if docker:
            root = await docker_root(getattr(app.settings, "docker_url", None))
            if root is not None:
                wanted.append((DOCKER_ROOT, root))
        for label, path in list(wanted):
            if not path.exists():  # not on this machine (a bus store elsewhere, say)
                log.info("diskwatch.folder_skipped", folder=str(path), label=label)
                wanted.remove((label, path))
        bus = app.bus
        watcher = DiskWatcher(
            bus.live_publish,
            str(app.service),
            bus.instance,
            wanted,
            interval=app.settings.disk_interval,
        )
        task = asyncio.create_task(watcher.run())
        try:
            yield
        finally:
            watcher.stop()
            await asyncio.gather(task, return_exceptions=True)
