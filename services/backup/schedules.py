"""Daily capture schedules: when each database's scheduled base backup is due.

A database without a schedule of its own is backed up daily at a stable hour (UTC)
drawn from its id, which spreads a host's captures over the day; `pg:backups:schedule
--at '02:00 Europe/Paris'` moves it to that hour in that zone (daylight saving
included), `pg:backups:unschedule` stops scheduled captures (the WAL archive and manual
captures go on). A capture is due once the day's slot has passed and no completed
backup started since; a failed attempt is tried again after `schedule_retry_seconds`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import zoneinfo
from dataclasses import dataclass

from slipway.contracts import backup as bc
from slipway.services.backup.errors import InvalidRequest
from slipway.services.backup.retention import Retention, describe
from slipway.services.backup.store import Catalog, DatabaseRow, iso


@dataclass(frozen=True)
class Slot:
    """A database's daily capture time."""

    hour: int
    timezone: str
    enabled: bool = True
    default: bool = True


def default_hour(addon_id: str) -> int:
    """The hour (UTC) a database is backed up at until it is given one: stable, spread."""
    return int.from_bytes(hashlib.sha256(addon_id.encode()).digest()[:4], "big") % 24


def _zone(name: str) -> dt.tzinfo:
    return dt.UTC if name.upper() == "UTC" else zoneinfo.ZoneInfo(name)


def _at(day: dt.date, hour: int, zone: dt.tzinfo) -> float:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=zone).timestamp()


def last_slot(now: float, hour: int, timezone: str) -> float:
    """The latest `hour`:00 in `timezone` at or before `now` (a POSIX time)."""
    zone = _zone(timezone)
    today = dt.datetime.fromtimestamp(now, zone).date()
    at = _at(today, hour, zone)
    return at if at <= now else _at(today - dt.timedelta(days=1), hour, zone)


def next_slot(now: float, hour: int, timezone: str) -> float:
    """The first `hour`:00 in `timezone` after `now`."""
    zone = _zone(timezone)
    today = dt.datetime.fromtimestamp(now, zone).date()
    at = _at(today, hour, zone)
    return at if at > now else _at(today + dt.timedelta(days=1), hour, zone)


class Schedules:
    """The schedule table of the catalog, and which databases are due."""

    def __init__(self, catalog: Catalog, retry_seconds: float) -> None:
        self.catalog = catalog
        self.retry_seconds = retry_seconds
        self._failed: dict[str, float] = {}  # addon_id -> when its last scheduled try failed

    async def slot(self, addon_id: str) -> Slot:
        row = await self.catalog.db.fetchone(
            "SELECT hour, timezone, enabled FROM schedules WHERE addon_id=?", (addon_id,)
        )
        if row is None:
            return Slot(hour=default_hour(addon_id), timezone="UTC")
        return Slot(hour=int(row[0]), timezone=str(row[1]), enabled=bool(row[2]), default=False)

    async def _save(self, addon_id: str, hour: int, timezone: str, enabled: bool) -> None:
        async with self.catalog.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO schedules (addon_id, hour, timezone, enabled, updated_at)"
                " VALUES (?,?,?,?,?) ON CONFLICT (addon_id) DO UPDATE SET hour=excluded.hour,"
                " timezone=excluded.timezone, enabled=excluded.enabled,"
                " updated_at=excluded.updated_at",
                (addon_id, hour, timezone, int(enabled), time.time()),
            )

    async def set(self, addon_id: str, hour: int, timezone: str) -> None:
        """Daily at `hour`:00 in `timezone`; InvalidRequest for an hour or zone that is none."""
        if not 0 <= hour <= 23:
            raise InvalidRequest(f"{hour} is not an hour: use 0 to 23")
        try:
            zone = bc.check_timezone(timezone)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        await self._save(addon_id, hour, zone, True)
        self._failed.pop(addon_id, None)

    async def remove(self, addon_id: str) -> None:
        """No scheduled captures for this database (its hour is remembered)."""
        slot = await self.slot(addon_id)
        await self._save(addon_id, slot.hour, slot.timezone, False)

    async def due(self, db: DatabaseRow, now: float) -> bool:
        """Whether the database's scheduled capture for today's slot is still to be taken."""
        slot = await self.slot(db.addon_id)
        if not slot.enabled:
            return False
        since = last_slot(now, slot.hour, slot.timezone)
        if now - self._failed.get(db.addon_id, 0.0) < self.retry_seconds:
            return False
        taken = await self.catalog.db.fetchone(
            "SELECT 1 FROM backups WHERE addon_id=? AND state='completed' AND started_at>=?",
            (db.addon_id, since),
        )
        return taken is None

    def failed(self, addon_id: str, now: float) -> None:
        self._failed[addon_id] = now

    def succeeded(self, addon_id: str) -> None:
        self._failed.pop(addon_id, None)

    async def view(self, db: DatabaseRow, retention: Retention, now: float) -> bc.BackupSchedule:
        """The contract's view: the slot, the next capture, the plan's retention, last expiry."""
        slot = await self.slot(db.addon_id)
        policy = retention.policy(db)
        return bc.BackupSchedule(
            addon_id=db.addon_id,
            addon_name=db.addon_name,
            enabled=slot.enabled and db.state != "destroyed",
            hour=slot.hour,
            timezone=slot.timezone,
            default=slot.default,
            next_at=iso(next_slot(now, slot.hour, slot.timezone)) if slot.enabled else "",
            keep_daily=policy.daily,
            keep_weekly=policy.weekly,
            keep_monthly=policy.monthly,
            last_expiry=describe(await retention.last_expiry(db.addon_id)),
        )
