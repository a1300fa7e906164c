"""Disk use of the platform's state folders, and crossings of the high-water mark.

Every service measures the folders it writes (its state folder; Docker's data root for
those that run containers) every `SLIPWAY_DISK_INTERVAL` seconds (libs/diskwatch.py)
and publishes its readings on `slipway.live.disk.<service>` (core NATS: a reading is
worth something only while it is fresh). The gateway keeps the latest of each and
refuses new builds, sources and add-ons while one is above `SLIPWAY_DISK_HIGH_WATER`.

When a folder crosses the mark (up or back down) the gateway publishes
`slipway.evt.disk.pressure.changed` (`DiskPressureChanged`). The monitor hears the same
readings and raises its alert earlier (`SLIPWAY_MONITOR_DISK_ALERT`, 85 %).
"""

from __future__ import annotations

from slipway.contracts import subjects
from slipway.contracts.base import Event, EventSpec, LiveSpec, Message, only
from slipway.contracts.subjects import Service


class DiskReading(Message, tag="disk.reading.v1", frozen=True, kw_only=True):
    """One folder's file system, as `df` would show it."""

    label: str  # what the folder is, for a human: "state folder", "Docker's data root"
    path: str
    total_bytes: int
    free_bytes: int  # available to unprivileged writers (statvfs f_bavail)
    used_percent: float  # df's Use%: used / (used + available)
    # Which file system holds the folder ("<host name>:<device>"): folders sharing one fill
    # up together and make one alert. "" from a service that does not say.
    filesystem: str = ""


class DiskReadings(Message, tag="disk.readings.v1", frozen=True, kw_only=True):
    """Everything one service instance measured in one pass."""

    service: str
    instance: str
    interval: float  # seconds until the next pass: a reading older than 3 is unknown
    readings: list[DiskReading] = []
    at: float = 0.0


class DiskPressureChanged(Event, tag="disk.pressure.changed.v1", frozen=True, kw_only=True):
    """A folder went above the high-water mark (`above`), or back below it."""

    service: str
    instance: str
    label: str
    path: str
    used_percent: float
    mark: float
    above: bool


_ALL = only(*Service)

READINGS = LiveSpec("disk", writers=_ALL, readers=only(Service.GATEWAY, Service.MONITOR))
DISK_PRESSURE_CHANGED: EventSpec[DiskPressureChanged] = EventSpec(
    subjects.evt("disk", "pressure.changed"), DiskPressureChanged, only(Service.GATEWAY)
)


def readings_subject(service: str) -> str:
    """Where one service publishes its readings."""
    return READINGS.subject(service)
