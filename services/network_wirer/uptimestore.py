"""Uptime probes' results, kept compact: hourly counters and incidents, 30 days.

network-wirer's only database (`$SLIPWAY_HOME/network-wirer/uptime.db`): everything
else it knows is asked of the gateway, the scheduler and HAProxy again at start, but
probes that were made cannot be made again. Per app, one row per hour in which it was
probed (720 rows for 30 days, whatever the probe interval) and one row per incident.
An incident opens at the first probe the app did not answer and closes at the first
one it answered again; rows older than 30 days are pruned, an app's rows go with it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from slipway.contracts.router import Uptime, UptimeIncident, UptimeWindow
from slipway.libs.storage import Database

HOUR = 3600
WINDOWS = (("24h", 24 * HOUR), ("7d", 7 * 24 * HOUR), ("30d", 30 * 24 * HOUR))
KEEP_SECONDS = 30 * 24 * HOUR + HOUR  # the longest window, and the hour it starts in
MAX_INCIDENTS = 100  # what one answer lists at most
MAX_CODES = 8  # distinct codes kept per incident: a flapping app must not grow a row

MIGRATIONS = [
    """
    CREATE TABLE uptime_hours (
        app_id TEXT NOT NULL,
        hour INTEGER NOT NULL,        -- seconds since the epoch, a multiple of 3600
        probes INTEGER NOT NULL,
        up INTEGER NOT NULL,          -- answered by a dyno, whatever its status
        dyno_errors INTEGER NOT NULL, -- of those, a 5xx from the dyno
        PRIMARY KEY (app_id, hour)
    ) WITHOUT ROWID;
    CREATE TABLE uptime_incidents (
        id INTEGER PRIMARY KEY,
        app_id TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,                -- NULL: still down
        codes TEXT NOT NULL           -- JSON list of Heroku codes, first seen first
    );
    CREATE INDEX uptime_incidents_app ON uptime_incidents (app_id, started_at);
    """
]


@dataclass(frozen=True)
class ProbeResult:
    """One probe of one app."""

    app_id: str
    at: float
    up: bool  # a dyno answered
    status: int = 0  # what the probe got (0: no answer at all)
    code: str = ""  # the router's error code when not up

    @property
    def dyno_error(self) -> bool:
        return self.up and self.status >= 500


def hour_of(at: float) -> int:
    return int(at // HOUR) * HOUR


class UptimeStore:
    """The uptime database: results in, availability and incidents out."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    async def open(cls, path: Path) -> UptimeStore:
        return cls(await Database.open(path, MIGRATIONS))

    async def close(self) -> None:
        await self.db.close()

    async def record(self, results: Iterable[ProbeResult]) -> None:
        """Count a round of probes and open or close each app's incident, in one transaction."""
        results = list(results)
        if not results:
            return
        async with self.db.transaction() as conn:
            for r in results:
                await conn.execute(
                    "INSERT INTO uptime_hours (app_id, hour, probes, up, dyno_errors)"
                    " VALUES (?, ?, 1, ?, ?) ON CONFLICT (app_id, hour) DO UPDATE SET"
                    " probes = probes + 1, up = up + excluded.up,"
                    " dyno_errors = dyno_errors + excluded.dyno_errors",
                    (r.app_id, hour_of(r.at), int(r.up), int(r.dyno_error)),
                )
                cursor = await conn.execute(
                    "SELECT id, codes FROM uptime_incidents WHERE app_id = ? AND ended_at IS NULL"
                    " ORDER BY started_at DESC LIMIT 1",
                    (r.app_id,),
                )
                open_row = await cursor.fetchone()
                if r.up:
                    if open_row is not None:
                        await conn.execute(
                            "UPDATE uptime_incidents SET ended_at = ? WHERE id = ?",
                            (r.at, open_row[0]),
                        )
                elif open_row is None:
                    await conn.execute(
                        "INSERT INTO uptime_incidents (app_id, started_at, codes) VALUES (?, ?, ?)",
                        (r.app_id, r.at, json.dumps([r.code])),
                    )
                else:
                    codes = _codes(open_row[1])
                    if r.code not in codes and len(codes) < MAX_CODES:
                        await conn.execute(
                            "UPDATE uptime_incidents SET codes = ? WHERE id = ?",
                            (json.dumps([*codes, r.code]), open_row[0]),
                        )

    async def end_open(self, keep: set[str], at: float) -> None:
        """Close the open incidents of apps no longer probed (scaled to 0, in maintenance,
        gone): nothing will ever answer for them, so they must not stay open forever."""
        rows = await self.db.fetchall(
            "SELECT id, app_id FROM uptime_incidents WHERE ended_at IS NULL"
        )
        ending = [(at, row[0]) for row in rows if row[1] not in keep]
        if ending:
            async with self.db.transaction() as conn:
                await conn.executemany(
                    "UPDATE uptime_incidents SET ended_at = ? WHERE id = ?", ending
                )

    async def forget(self, app_id: str) -> None:
        """Drop a destroyed app's rows."""
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM uptime_hours WHERE app_id = ?", (app_id,))
            await conn.execute("DELETE FROM uptime_incidents WHERE app_id = ?", (app_id,))

    async def prune(self, now: float | None = None) -> None:
        """Drop counters and closed incidents older than the longest window."""
        before = (now if now is not None else time.time()) - KEEP_SECONDS
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM uptime_hours WHERE hour < ?", (hour_of(before),))
            await conn.execute(
                "DELETE FROM uptime_incidents WHERE ended_at IS NOT NULL AND ended_at < ?",
                (before,),
            )

    async def uptime(
        self, app_id: str, *, incidents: int, interval: float, now: float | None = None
    ) -> Uptime:
        """The app's three windows and its newest incidents."""
        now = now if now is not None else time.time()
        hours = await self.db.fetchall(
            "SELECT hour, probes, up, dyno_errors FROM uptime_hours WHERE app_id = ? AND hour >= ?",
            (app_id, hour_of(now - KEEP_SECONDS)),
        )
        windows = []
        for name, seconds in WINDOWS:
            since = hour_of(now - seconds)
            rows = [row for row in hours if row[0] >= since]
            probes = sum(int(row[1]) for row in rows)
            up = sum(int(row[2]) for row in rows)
            windows.append(
                UptimeWindow(
                    name=name,
                    seconds=seconds,
                    probes=probes,
                    up=up,
                    dyno_errors=sum(int(row[3]) for row in rows),
                    availability=_percent(up, probes),
                )
            )
        limit = max(0, min(incidents, MAX_INCIDENTS))
        rows = await self.db.fetchall(
            "SELECT started_at, ended_at, codes FROM uptime_incidents WHERE app_id = ?"
            " ORDER BY started_at DESC, id DESC LIMIT ?",
            (app_id, limit),
        )
        return Uptime(
            app_id=app_id,
            probe_interval=interval,
            windows=windows,
            incidents=[
                UptimeIncident(
                    started_at=float(row[0]),
                    ended_at=None if row[1] is None else float(row[1]),
                    codes=_codes(row[2]),
                )
                for row in rows
            ],
        )


def _percent(up: int, probes: int) -> float | None:
    """Percent up, rounded *down* to 3 decimals: one failed probe in 300,000 is 99.999, never
    100.000 (None: nothing probed)."""
    if not probes:
        return None
    return math.floor(100_000 * up / probes) / 1000


def _codes(text: str) -> list[str]:
    try:
        codes = json.loads(text)
    except ValueError:
        return []
    return [str(c) for c in codes] if isinstance(codes, list) else []
