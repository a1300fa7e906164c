"""The uptime store on its own (a real SQLite file): windows, incidents, pruning, forgetting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from slipway.services.network_wirer.uptimestore import (
    HOUR,
    MAX_CODES,
    ProbeResult,
    UptimeStore,
    hour_of,
)

NOW = 1_800_000_000.0  # a fixed "now": windows are computed from it, never the clock
DAY = 24 * HOUR


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[UptimeStore]:
    opened = await UptimeStore.open(tmp_path / "uptime.db")
    yield opened
    await opened.close()


def up(at: float, status: int = 200, app: str = "a") -> ProbeResult:
    return ProbeResult(app_id=app, at=at, up=True, status=status)


def down(at: float, code: str = "H10", app: str = "a") -> ProbeResult:
    return ProbeResult(app_id=app, at=at, up=False, status=503, code=code)


async def test_each_window_counts_only_its_own_hours(store: UptimeStore) -> None:
    """A failure 3 days ago lowers 7 d and 30 d, not 24 h; 40 days ago counts nowhere."""
    await store.record([up(NOW - 60), up(NOW - 120)])
    await store.record([down(NOW - 3 * DAY), up(NOW - 3 * DAY + 30)])
    await store.record([down(NOW - 40 * DAY)])
    answer = await store.uptime("a", incidents=10, interval=30, now=NOW)
    windows = {w.name: (w.probes, w.up, w.availability) for w in answer.windows}
    assert windows == {"24h": (2, 2, 100.0), "7d": (4, 3, 75.0), "30d": (4, 3, 75.0)}


async def test_a_dyno_5xx_is_up_and_counted_apart(store: UptimeStore) -> None:
    """The dyno answered: up, no incident, one dyno error."""
    await store.record([up(NOW - 10, status=500), up(NOW - 5)])
    answer = await store.uptime("a", incidents=10, interval=30, now=NOW)
    assert (answer.windows[0].up, answer.windows[0].dyno_errors) == (2, 1)
    assert answer.incidents == []


async def test_codes_are_kept_once_each_in_order_and_bounded(store: UptimeStore) -> None:
    """A flapping outage keeps each code once, first first, at most MAX_CODES of them."""
    for i, code in enumerate(["H10", "H12", "H10", *(f"H{20 + n}" for n in range(20))]):
        await store.record([down(NOW - 100 + i, code)])
    (incident,) = (await store.uptime("a", incidents=10, interval=30, now=NOW)).incidents
    assert incident.codes[:2] == ["H10", "H12"]
    assert len(incident.codes) == MAX_CODES
    assert incident.ended_at is None


async def test_apps_no_longer_probed_get_their_incident_closed(store: UptimeStore) -> None:
    """Scaled to 0 while down: the incident ends then; another app's stays open."""
    await store.record([down(NOW - 50, app="a"), down(NOW - 50, app="b")])
    await store.end_open({"b"}, NOW)
    a = await store.uptime("a", incidents=10, interval=30, now=NOW)
    b = await store.uptime("b", incidents=10, interval=30, now=NOW)
    assert a.incidents[0].ended_at == NOW
    assert b.incidents[0].ended_at is None


async def test_prune_drops_what_is_older_than_thirty_days_and_keeps_open_incidents(
    store: UptimeStore,
) -> None:
    """Hours and ended incidents past 30 days go; an incident still open stays."""
    await store.record([down(NOW - 45 * DAY), up(NOW - 44 * DAY)])
    await store.record([down(NOW - 40 * DAY, app="still")])
    await store.record([up(NOW - 60)])
    await store.prune(NOW)
    rows = await store.db.fetchall("SELECT app_id, hour FROM uptime_hours ORDER BY hour")
    assert [(r[0], r[1]) for r in rows] == [("a", hour_of(NOW - 60))]
    assert (await store.uptime("a", incidents=10, interval=30, now=NOW)).incidents == []
    assert len((await store.uptime("still", incidents=10, interval=30, now=NOW)).incidents) == 1


async def test_forget_removes_one_app_only(store: UptimeStore) -> None:
    """A destroyed app's rows go; its neighbour's stay."""
    await store.record([down(NOW - 10, app="gone"), up(NOW - 10, app="kept")])
    await store.forget("gone")
    gone = await store.uptime("gone", incidents=10, interval=30, now=NOW)
    kept = await store.uptime("kept", incidents=10, interval=30, now=NOW)
    assert [w.probes for w in gone.windows] == [0, 0, 0] and gone.incidents == []
    assert kept.windows[0].probes == 1


async def test_availability_is_rounded_down(store: UptimeStore) -> None:
    """One failed probe in 300,000 is 99.999 %, not a rounded-up 100 %."""
    await store.record([down(NOW - 30)])
    await store.db.conn.execute(
        "UPDATE uptime_hours SET probes = 300000, up = 299999 WHERE app_id = 'a'"
    )
    await store.db.conn.commit()
    answer = await store.uptime("a", incidents=1, interval=30, now=NOW)
    assert answer.windows[0].availability == 99.999
