"""Disk pressure at the gateway: new work is refused above the mark, reads go on at 100 %.

Every service publishes how full the folders it writes are (libs/diskwatch.py,
contracts/disk.py); the gateway keeps the latest reading of each service, instance and
folder. While any of them is at or above `SLIPWAY_DISK_HIGH_WATER` (percent, default 90),
new builds (git push, POST /apps/{app}/builds), sources (POST /sources,
/apps/{app}/sources) and add-ons (POST /apps/{app}/addons) are refused with 507
`insufficient_storage`, naming what is full. Everything else keeps working while it can.

A reading older than three of its service's intervals is *unknown*: it is never taken
as a sign that the disk is fine (a folder last seen above the mark still refuses), and
`unknown()` lists them for the operator's status.

Crossing the mark, up or back down, is published as `slipway.evt.disk.pressure.changed`
and logged as a `slipway[disk]:` line, for the platform alerts.

A write that meets a full disk anyway (SQLite's SQLITE_FULL, ENOSPC, JetStream out of
resources) is answered 507 by `disk_full_errors`, not 500. A read that has to record
something (a log session: its row and its audit entry) keeps it in `DeferredWrites`,
in memory, at most `MAX_DEFERRED` of them, written in order once space returns (tried
every `RETRY_SECONDS`); past the bound the read is refused, so nothing is lost.

Nothing here, nor anywhere in the platform, deletes a volume, a backup or an image to
make room.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from nats.aio.msg import Msg

from slipway.contracts import disk
from slipway.libs.errors import InsufficientStorage, SlipwayError, disk_full
from slipway.libs.service import Key, ServiceApp
from slipway.libs.waits import wait_for_event

log = structlog.get_logger("slipway.gateway.disk")

STALE_AFTER_INTERVALS = 3
MAX_DEFERRED = 1000
RETRY_SECONDS = 2.0

Write = Callable[[], Awaitable[None]]


class DeferredWrites:
    """Writes a read could not make on a full disk, kept in order until space returns,
    with the log sessions they create (served from memory meanwhile)."""

    def __init__(self, limit: int = MAX_DEFERRED) -> None:
        self.limit = limit
        self.writes: list[tuple[Write, str | None]] = []
        self.sessions: dict[str, dict[str, Any]] = {}

    def defer(self, write: Write, *, session: tuple[str, dict[str, Any]] | None = None) -> None:
        """Keep `write` for later; InsufficientStorage past the bound (the read is refused)."""
        if len(self.writes) >= self.limit:
            raise InsufficientStorage(
                "The gateway's disk is full and it already holds"
                f" {self.limit} records waiting for space: free space on the platform's"
                " state folder; nothing is pruned to make room."
            )
        key = None
        if session is not None:
            key, row = session
            self.sessions[key] = row
        self.writes.append((write, key))
        log.warning("disk.write_deferred", waiting=len(self.writes))

    async def flush(self) -> None:
        """Write what waits, oldest first; stop at the first that still finds no room."""
        while self.writes:
            write, key = self.writes[0]
            try:
                await write()
            except Exception as exc:
                if disk_full(exc):
                    return
                # Not a matter of space: retrying cannot help; say what was lost.
                log.error("disk.deferred_write_failed", error=repr(exc))
            self.writes.pop(0)
            if key is not None:
                self.sessions.pop(key, None)
            if not self.writes:
                log.warning("disk.deferred_written")


@dataclass(frozen=True)
class Seen:
    """The latest reading of one folder, with when it was received."""

    service: str
    instance: str
    reading: disk.DiskReading
    interval: float
    received: float

    def stale(self, now: float) -> bool:
        return now - self.received > STALE_AFTER_INTERVALS * self.interval


class DiskPressure:
    """The latest reading of each (service, instance, folder), and the high-water mark."""

    def __init__(self, mark: float) -> None:
        self.mark = mark
        self.seen: dict[tuple[str, str, str], Seen] = {}
        self.crossings: asyncio.Queue[disk.DiskPressureChanged] = asyncio.Queue()
        self.deferred = DeferredWrites()

    def record(self, readings: disk.DiskReadings, now: float | None = None) -> None:
        """Keep `readings` as the latest of their service; queue a crossing of the mark."""
        now = time.time() if now is None else now
        for reading in readings.readings:
            key = (readings.service, readings.instance, reading.path)
            before = self.seen.get(key)
            self.seen[key] = Seen(
                readings.service, readings.instance, reading, readings.interval, now
            )
            was_above = before is not None and before.reading.used_percent >= self.mark
            above = reading.used_percent >= self.mark
            if above != was_above and (above or before is not None):
                event = disk.DiskPressureChanged(
                    service=readings.service,
                    instance=readings.instance,
                    label=reading.label,
                    path=reading.path,
                    used_percent=reading.used_percent,
                    mark=self.mark,
                    above=above,
                )
                # The line now (the operator's log is the alert of last resort); the event
                # when the bus takes it (its store may be on the full disk).
                log.warning("disk.pressure", line=crossing_line(event), above=above)
                self.crossings.put_nowait(event)

    def full(self) -> list[Seen]:
        """Folders at or above the mark, fullest first (stale ones too: not known fine)."""
        found = [s for s in self.seen.values() if s.reading.used_percent >= self.mark]
        return sorted(found, key=lambda s: -s.reading.used_percent)

    def unknown(self, now: float | None = None) -> list[Seen]:
        """Folders whose latest reading is too old to say anything."""
        now = time.time() if now is None else now
        return [s for s in self.seen.values() if s.stale(now)]

    def refuse_new_work(self, what: str) -> None:
        """Raise InsufficientStorage when a folder is above the mark, saying which."""
        found = self.full()
        if not found:
            return
        top = found[0]
        reading = top.reading
        age = time.time() - top.received
        when = f" (last reading {age:.0f} s ago)" if top.stale(time.time()) else ""
        others = f"; {len(found) - 1} more folder(s) above the mark" if len(found) > 1 else ""
        raise InsufficientStorage(
            f"Cannot {what}: {top.service}'s {reading.label} {reading.path} is"
            f" {reading.used_percent:.0f} % full (mark {self.mark:g} %){when}{others}."
            " Free space or raise SLIPWAY_DISK_HIGH_WATER; nothing is pruned to make room."
        )


PRESSURE = web.AppKey("disk_pressure", DiskPressure)
TRACKER = Key("disk_pressure", DiskPressure)


def deferred_writes(request: web.Request) -> DeferredWrites | None:
    """Where a read keeps what it could not write on a full disk (None: not installed)."""
    pressure = request.app.get(PRESSURE)
    return pressure.deferred if pressure is not None else None


def refuse_new_work(request: web.Request, what: str) -> None:
    """In a handler that starts a build, stores a source or creates an add-on: 507 above
    the mark. A gateway without readings (none received yet) lets the work through."""
    pressure = request.app.get(PRESSURE)
    if pressure is not None:
        pressure.refuse_new_work(what)


@web.middleware
async def disk_full_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A write that met a full disk is answered 507 insufficient_storage, not 500."""
    try:
        return await handler(request)
    except (SlipwayError, web.HTTPException):
        raise
    except Exception as exc:
        if not disk_full(exc):
            raise
        log.warning("http.disk_full", error=repr(exc))
        raise InsufficientStorage(
            "The gateway's disk is full: this change could not be written. Free space on"
            " the platform's state folder; reads keep working, and nothing is pruned to"
            " make room."
        ) from exc


_readings = msgspec.json.Decoder(disk.DiskReadings)


def install(service: ServiceApp) -> None:
    """Keep the readings every service publishes; publish crossings of the mark."""
    pressure = service[TRACKER] = DiskPressure(service.settings.disk_high_water)

    @service.cleanup_ctx
    async def disk_readings(service: ServiceApp) -> AsyncIterator[None]:
        bus = service.bus

        async def on_readings(msg: Msg) -> None:
            try:
                pressure.record(_readings.decode(msg.data))
            except msgspec.DecodeError as exc:
                log.warning("disk.bad_readings", error=str(exc))

        subscription = await bus.nc.subscribe(disk.READINGS.filter, cb=on_readings)
        announcer = asyncio.create_task(_announce(service, pressure))
        retrier = asyncio.create_task(_retry_deferred(service, pressure.deferred))
        try:
            yield
        finally:
            announcer.cancel()
            retrier.cancel()
            await asyncio.gather(retrier, announcer, return_exceptions=True)
            await pressure.deferred.flush()  # a last try before the database closes
            if pressure.deferred.writes:
                log.error("disk.deferred_lost_at_stop", writes=len(pressure.deferred.writes))
            await subscription.unsubscribe()


async def _retry_deferred(service: ServiceApp, deferred: DeferredWrites) -> None:
    """Write deferred records once there is room (a loop that never dies silently)."""
    while not await wait_for_event(service.stopping, RETRY_SECONDS):
        if not deferred.writes:
            continue
        try:
            await deferred.flush()
        except Exception as exc:
            log.warning("disk.deferred_retry_failed", error=repr(exc))


def crossing_line(event: disk.DiskPressureChanged) -> str:
    """The platform line of one crossing, as the alerts will show it."""
    way = "above" if event.above else "back below"
    return (
        f"slipway[disk]: {event.service}'s {event.label} {event.path} is"
        f" {event.used_percent:.0f} % full, {way} the mark ({event.mark:g} %)"
    )


async def _announce(service: ServiceApp, pressure: DiskPressure) -> None:
    """Each crossing as an event for the alerts (the log line was written on arrival)."""
    while True:
        event = await pressure.crossings.get()
        try:
            await service.bus.publish(disk.DISK_PRESSURE_CHANGED, event, retry_for=5.0)
        except SlipwayError as exc:
            # The bus's own store may be on the full disk: the log line still tells.
            log.warning("disk.pressure_event_unpublished", error=repr(exc))
