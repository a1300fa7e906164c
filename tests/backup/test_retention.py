"""Retention: the pure choice of what stays, the WAL a kept backup needs, schedules; then expiry
on the real service (real PostgreSQL, real keyring) and the schedule API and CLI round trip.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from slipway.cli.errors import CliError
from slipway.cli.main import run
from slipway.cli.registry import Context
from slipway.contracts import backup as bc
from slipway.contracts.scope import Scope
from slipway.libs.pgwire import SEGMENT_SIZE
from slipway.libs.storage import Database
from slipway.services.backup import schedules
from slipway.services.backup.app import BACKUPS
from slipway.services.backup.app import create_service as create_backup
from slipway.services.backup.errors import InvalidRequest
from slipway.services.backup.retention import Policy, choose, wal_expired, wal_kept_from
from slipway.services.backup.settings import BackupSettings
from slipway.services.backup.store import MIGRATIONS, BackupRow, Catalog, DatabaseRow, ObjectRow
from tests.addons.test_postgresql import provisioned
from tests.backup.conftest import BackupStack
from tests.backup.test_backups import now_iso, restored, sql, streamed_past
from tests.conftest import assert_eventually
from tests.gateway.conftest import Stack, run_in_background, stop

DAY = 86400.0
# Monday 2026-11-30 00:00 UTC: day and week boundaries fall where the tests say.
MONDAY = dt.datetime(2026, 11, 30, tzinfo=dt.UTC).timestamp()
STANDARD = Policy(daily=7, weekly=4)


def at(days: float, hours: float = 2.0) -> float:
    """`days` after MONDAY, at `hours` o'clock UTC."""
    return MONDAY + days * DAY + hours * 3600


def backup(
    num: int,
    ended: float,
    *,
    state: str = "completed",
    kind: str = "scheduled",
    timeline: int = 1,
    start_lsn: int | None = None,
) -> BackupRow:
    start = num * 4 * SEGMENT_SIZE + 0x28 if start_lsn is None else start_lsn
    return BackupRow(
        addon_id="a1",
        num=num,
        kind=kind,
        state=state,
        started_at=ended - 60,
        finished_at=None if state == "running" else ended,
        size_bytes=0,
        stored_bytes=0,
        start_lsn=start if state == "completed" else 0,
        end_lsn=start + 0x100 if state == "completed" else 0,
        timeline=timeline,
        recipients=[],
        error="",
        verified="",
    )


def piece(start: int, end: int, timeline: int = 1) -> ObjectRow:
    return ObjectRow(
        key=f"a1/wal/{timeline:08X}/{start:016X}",
        addon_id="a1",
        kind="wal",
        backup_num=0,
        part=0,
        timeline=timeline,
        segment="",
        offset=0,
        length=end - start,
        start_lsn=start,
        end_lsn=end,
        size=1,
        sha256="",
        created_at=0.0,
    )


def kept(backups: list[BackupRow], policy: Policy, now: float, **kw: Any) -> list[int]:
    choice = choose(backups, policy, now=now, destroyed_at=kw.get("destroyed_at"))
    assert sorted([*choice.keep, *choice.expire]) == sorted(b.num for b in backups)
    assert not set(choice.keep) & set(choice.expire)
    return sorted(choice.keep)


# ---- the choice ----------------------------------------------------------------------------


def test_daily_keeps_the_newest_backup_of_each_of_the_last_n_days() -> None:
    """Three a day for ten days, mini's two days: the newest of today and of yesterday."""
    rows = [backup(d * 3 + i + 1, at(d, 1 + i * 5)) for d in range(10) for i in range(3)]
    assert kept(rows, Policy(daily=2, weekly=0), at(9, 23)) == [27, 30]


def test_days_are_utc_calendar_days() -> None:
    """23:59 and 00:01 are two days: both kept by two dailies, though two minutes apart."""
    rows = [backup(1, at(0, 12)), backup(2, at(1, 0) - 60), backup(3, at(1, 0) + 60)]
    assert kept(rows, Policy(daily=2, weekly=0), at(1, 1)) == [2, 3]


def test_days_without_a_backup_are_not_counted() -> None:
    """A database paused for a month keeps the two dailies it had before (restic's rule)."""
    rows = [backup(1, at(0)), backup(2, at(1)), backup(3, at(2))]
    assert kept(rows, Policy(daily=2, weekly=0), at(40)) == [2, 3]


def test_weekly_keeps_the_newest_of_each_iso_week() -> None:
    """Standard on daily backups over five weeks: 7 dailies plus the Sunday of 3 weeks before."""
    rows = [backup(d + 1, at(d)) for d in range(35)]  # day 0 is a Monday
    found = kept(rows, STANDARD, at(34, 12))
    dailies = list(range(29, 36))
    sundays = [14, 21, 28]  # days 13, 20, 27: the last day of weeks 2, 3 and 4
    assert found == sorted({*dailies, *sundays})


def test_iso_weeks_begin_on_monday() -> None:
    """Sunday and the Monday after are in two weeks; Monday and Sunday of one week are one."""
    policy = Policy(daily=0, weekly=2)
    sunday, monday = backup(1, at(6)), backup(2, at(7))
    assert kept([sunday, monday], policy, at(7, 5)) == [1, 2]
    first, last = backup(1, at(0)), backup(2, at(6))
    assert kept([first, last], policy, at(6, 5)) == [2]


def test_monthly_keeps_the_newest_of_each_calendar_month() -> None:
    """Premium's months: the last backup of November and of October stay, September's goes."""
    month_ends = [
        dt.datetime(2026, 9, 30, 2, tzinfo=dt.UTC).timestamp(),
        dt.datetime(2026, 10, 1, 2, tzinfo=dt.UTC).timestamp(),
        dt.datetime(2026, 10, 31, 2, tzinfo=dt.UTC).timestamp(),
        dt.datetime(2026, 11, 2, 2, tzinfo=dt.UTC).timestamp(),
    ]
    rows = [backup(i + 1, t) for i, t in enumerate(month_ends)]
    assert kept(rows, Policy(daily=1, weekly=0, monthly=2), at(10)) == [3, 4]


def test_the_latest_completed_backup_of_a_live_database_always_stays() -> None:
    """No period keeps anything (all zero): the newest backup stays all the same."""
    rows = [backup(1, at(0)), backup(2, at(1))]
    assert kept(rows, Policy(daily=0, weekly=0), at(400)) == [2]


def test_a_running_capture_is_never_expired() -> None:
    """A capture under way is kept whatever the periods say; the dailies are chosen without it."""
    rows = [backup(1, at(0)), backup(2, at(1)), backup(3, at(1, 5), state="running")]
    choice = choose(rows, Policy(daily=1, weekly=0), now=at(1, 6), destroyed_at=None)
    assert choice.keep == {2: "latest", 3: "running"}
    assert choice.expire == [1]
    assert [b.num for b in choice.kept_completed] == [2]


def test_failed_backups_stay_listed_while_newer_than_the_oldest_kept() -> None:
    """A failure between kept backups stays; one older than every kept backup goes."""
    rows = [
        backup(1, at(0), state="failed"),
        backup(2, at(1)),
        backup(3, at(2)),
        backup(4, at(2, 5), state="failed"),
        backup(5, at(3)),
    ]
    assert kept(rows, Policy(daily=2, weekly=0), at(3, 5)) == [3, 4, 5]


def test_only_failures_are_kept_while_recent() -> None:
    """A live database that never completed a backup: its recent failures stay, old ones go."""
    rows = [backup(1, at(0), state="failed"), backup(2, at(5), state="failed")]
    assert kept(rows, Policy(daily=2, weekly=0), at(5, 5)) == [2]


def test_a_destroyed_add_on_keeps_its_final_backup_for_the_fixed_period() -> None:
    """Destroyed on day 10: only the final backup stays, until day 40; then nothing."""
    rows = [backup(n, at(n)) for n in range(1, 10)]
    rows.append(backup(10, at(10), kind="final"))
    assert kept(rows, STANDARD, at(11), destroyed_at=at(10, 3)) == [10]
    assert kept(rows, STANDARD, at(40, 2), destroyed_at=at(10, 3)) == [10]
    assert kept(rows, STANDARD, at(40, 4), destroyed_at=at(10, 3)) == []


def test_shortened_days_scale_every_period() -> None:
    """With 10-second days (tests), backups 10 s apart are a day apart, 70 s a week."""
    policy = Policy(daily=2, weekly=0, day_seconds=10.0)
    rows = [backup(n, 1_000_000 + n * 10.0) for n in range(1, 6)]
    assert kept(rows, policy, 1_000_100) == [4, 5]
    weekly = Policy(daily=0, weekly=1, day_seconds=10.0)
    assert kept(rows, weekly, 1_000_100) == [5]


def test_plans_declare_their_retention() -> None:
    """Mini keeps two days, standard seven days and four weeks, premium also twelve months."""
    mini, standard = Policy.of_plan("postgresql:mini"), Policy.of_plan("postgresql:standard")
    premium = Policy.of_plan("postgresql:premium")
    assert (mini.daily, mini.weekly, mini.monthly) == (2, 0, 0)
    assert (standard.daily, standard.weekly, standard.monthly) == (7, 4, 0)
    assert (premium.daily, premium.weekly, premium.monthly) == (7, 12, 12)
    assert Policy.of_plan("postgresql:unknown").daily == 7


# ---- the WAL a kept backup needs -----------------------------------------------------------


def test_wal_stays_from_the_segment_the_oldest_kept_backup_starts_in() -> None:
    """Backups 2 and 4 kept, 3 expired: WAL between 2 and 4 stays, before 2's segment goes."""
    rows = [backup(n, at(n)) for n in (2, 4)]
    start2 = rows[0].start_lsn
    first = start2 - start2 % SEGMENT_SIZE
    pieces = [
        piece(first - 2 * SEGMENT_SIZE, first - SEGMENT_SIZE),
        piece(first - SEGMENT_SIZE, first),  # ends where 2's segment begins: not needed
        piece(first, start2),  # same segment as 2's start: staged whole, so it stays
        piece(start2, start2 + SEGMENT_SIZE),  # between 2 and 4 (where 3 was)
        piece(rows[1].start_lsn, rows[1].start_lsn + 100),
    ]
    assert wal_kept_from(rows) == {1: first}
    gone = wal_expired(pieces, rows, destroyed=False)
    assert gone == pieces[:2]


def test_no_kept_backup_keeps_all_wal_of_a_live_database_and_none_of_a_destroyed_one() -> None:
    """Nothing to anchor on: a live database's first backup may be under way."""
    pieces = [piece(0, 100), piece(100, 200)]
    assert wal_expired(pieces, [], destroyed=False) == []
    assert wal_expired(pieces, [], destroyed=True) == pieces


def test_older_timelines_go_and_newer_ones_stay() -> None:
    """Kept backups on timeline 2: timeline 1's WAL goes; timeline 3's (ahead) stays."""
    rows = [backup(5, at(5), timeline=2)]
    old, new = piece(0, 100, timeline=1), piece(0, 100, timeline=3)
    assert wal_expired([old, new], rows, destroyed=False) == [old]


# ---- schedules -----------------------------------------------------------------------------


def test_schedule_slots_follow_the_zone_and_its_daylight_saving() -> None:
    """02:00 in New York is 07:00 UTC in winter and 06:00 UTC in summer."""
    winter = dt.datetime(2026, 12, 3, 12, tzinfo=dt.UTC).timestamp()
    summer = dt.datetime(2026, 7, 3, 12, tzinfo=dt.UTC).timestamp()
    ny = "America/New_York"
    assert schedules.last_slot(winter, 2, ny) == winter - 5 * 3600
    assert schedules.last_slot(summer, 2, ny) == summer - 6 * 3600
    assert schedules.next_slot(winter, 2, ny) == winter + 19 * 3600
    # Before today's slot, the last one was yesterday's.
    assert schedules.last_slot(winter, 13, "UTC") == winter - 23 * 3600


def test_parse_at_takes_herokus_syntax() -> None:
    """'02:00 UTC', '2:00 Europe/Paris', '23:00'; minutes, bad hours and zones are refused."""
    assert bc.parse_at("02:00 UTC") == (2, "UTC")
    assert bc.parse_at("2:00 Europe/Paris") == (2, "Europe/Paris")
    assert bc.parse_at("23:00") == (23, "UTC")
    for bad in ("02:30 UTC", "24:00 UTC", "02:00 Mars/Base", "", "two UTC", "1 2 3"):
        with pytest.raises(ValueError, match="use "):
            bc.parse_at(bad)


def test_the_default_hour_is_stable_and_spread() -> None:
    """The same add-on always gets the same hour; many add-ons get many hours."""
    assert schedules.default_hour("addon-1") == schedules.default_hour("addon-1")
    assert len({schedules.default_hour(f"addon-{n}") for n in range(200)}) == 24


# ---- expiry on the real service ------------------------------------------------------------

EVERY_CAPTURE_ITS_OWN_DAY = Policy(daily=2, weekly=0, day_seconds=0.001)


def stored_keys(storage: Path, addon_id: str) -> set[str]:
    return {
        p.relative_to(storage).as_posix() for p in (storage / addon_id).rglob("*") if p.is_file()
    }


def manifests_of(storage: Path, addon_id: str) -> list[dict[str, Any]]:
    found = sorted((storage / addon_id / "manifests").iterdir())
    return [json.loads(p.read_bytes())["manifest"] for p in found]


@pytest.mark.docker
@pytest.mark.integration
@pytest.mark.slow
async def test_expiry_removes_old_backups_and_wal_yet_a_restore_between_kept_ones_works(
    backup_stack: BackupStack,
) -> None:
    """Four backups, two kept: b001/b002 and the WAL before b003 go; PITR after b003 still works."""
    stack = backup_stack.addons.stack
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "ret")
    addon = await provisioned(alice, "ret")
    path = f"/apps/ret/addons/{addon['name']}"
    await sql(backup_stack.addons, alice, app, "CREATE TABLE t (n int); INSERT INTO t VALUES (1)")
    for n in (2, 3):
        await alice.ok("POST", f"{path}/backups", status=201)
        await sql(backup_stack.addons, alice, app, f"INSERT INTO t VALUES ({n})")  # noqa: S608
    third = await alice.ok("POST", f"{path}/backups", status=201)
    await sql(backup_stack.addons, alice, app, "INSERT INTO t VALUES (4)")
    await asyncio.sleep(1.5)  # a gap in time around T, wider than clock granularity
    target = now_iso()
    await asyncio.sleep(1.5)
    await sql(backup_stack.addons, alice, app, "INSERT INTO t VALUES (5)")
    await alice.ok("POST", f"{path}/backups", status=201)
    await streamed_past(alice, "ret", addon["name"], now_iso())
    storage = backup_stack.storage / addon["id"]
    before = stored_keys(backup_stack.storage, addon["id"])

    service = backup_stack.backup[BACKUPS]
    db = await service.catalog.database(addon["id"])
    assert db is not None
    expired = await service.retention.expire(db, now=time.time(), policy=EVERY_CAPTURE_ITS_OWN_DAY)

    assert expired is not None
    assert expired.backups == [1, 2]
    assert expired.wal_pieces > 0, expired
    listed = await alice.ok("GET", f"{path}/backups")
    assert [b["id"] for b in listed] == ["b004", "b003"]
    gone = before - stored_keys(backup_stack.storage, addon["id"])
    assert len(gone) == expired.base_objects + expired.wal_pieces
    for key in gone:  # old backups' parts and WAL only: never a manifest
        _, kind, rest = key.split("/", 2)
        assert kind == "wal" or (kind == "base" and rest[:6] in ("000001", "000002")), key
    assert not list((storage / "base" / "000001").glob("*"))
    for num in (3, 4):
        assert (storage / "base" / f"{num:06d}" / "00000").is_file()
    wal = await alice.ok("GET", f"{path}/wal")
    assert wal["earliest_restore_at"] == third["finished_at"]
    # The chain is whole (manifests stay) and ends with the signed record of the expiry.
    chain = manifests_of(backup_stack.storage, addon["id"])
    assert [m["seq"] for m in chain] == list(range(1, len(chain) + 1))
    record = chain[-1]
    assert record["kind"] == "expiry"
    assert record["expired_backups"] == [1, 2]
    assert record["removed_count"] == len(gone)
    assert record["removed_sha256"] == hashlib.sha256("\n".join(sorted(gone)).encode()).hexdigest()
    # Everything a download of b003 lists is still there; what went is counted.
    objects = await alice.ok("GET", f"{path}/backups/b003/objects")
    assert all((backup_stack.storage / o["key"]).is_file() for o in objects)
    last = await service.retention.last_expiry(addon["id"])
    assert last is not None and last[1:3] == (2, expired.wal_pieces)

    created = await alice.ok(
        "POST",
        "/apps/ret/addons",
        {
            "plan": "postgresql:mini",
            "name": "ret-restored",
            "config": {"restore_from": addon["name"], "to_time": target},
        },
        status=202,
    )
    found = await restored(alice, "ret", created["name"])
    var = found["config_vars"][0]
    rows = await sql(backup_stack.addons, alice, app, "SELECT n FROM t ORDER BY n", var)
    assert rows.split() == ["1", "2", "3", "4"]


@pytest.mark.docker
@pytest.mark.integration
@pytest.mark.slow
async def test_the_daily_capture_runs_once_its_hour_has_passed(backup_stack: BackupStack) -> None:
    """A schedule at an hour that passed: one scheduled backup, then none until tomorrow."""
    stack = backup_stack.addons.stack
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "daily")
    addon = await provisioned(alice, "daily")
    path = f"/apps/daily/addons/{addon['name']}"
    passed = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    await alice.ok("PUT", f"{path}/backup-schedule", {"at": f"{passed.hour:02d}:00 UTC"})

    async def streaming() -> None:
        wal = await alice.ok("GET", f"{path}/wal")
        assert wal["streaming"] is True, wal

    await assert_eventually(streaming, timeout=60, interval=0.5)
    service = backup_stack.backup[BACKUPS]

    await service.scheduled_captures()
    await service.scheduled_captures()

    listed = await alice.ok("GET", f"{path}/backups")
    assert [(b["id"], b["kind"], b["state"]) for b in listed] == [
        ("b001", "scheduled", "completed")
    ]
    await alice.ok("DELETE", f"{path}/backup-schedule")
    assert (await alice.ok("GET", f"{path}/backup-schedule"))["enabled"] is False


# ---- schedules through the API and the CLI -------------------------------------------------


def slipway(env: dict[str, str], cwd: Path, *argv: str) -> tuple[int, str, str]:
    """`slipway ARGV` in this process, as `main` runs it: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        code = run(list(argv), Context(env=env, cwd=cwd, stdout=out, stderr=err))
    except CliError as exc:
        err.write(exc.message + "\n")
        code = exc.exit_code
    return code, out.getvalue(), err.getvalue()


@pytest.mark.integration
async def test_schedule_unschedule_and_list_through_the_api_and_the_cli(
    stack: Stack, scope: Scope, tmp_path: Path
) -> None:
    """Default hour, `--at` in a zone, the app's list, unschedule; viewers cannot change it."""
    settings = BackupSettings(
        nats_url=stack.nats.url,
        home=str(stack.home),
        scope=scope.name,
        schedule_check_seconds=3600.0,
        shutdown_grace=5.0,
    )
    service = create_backup(settings)
    task = await run_in_background(service)
    try:
        alice = await stack.user("alice@example.com")
        vera = await stack.user("vera@example.com")
        app = await stack.app(alice, "sched")
        await stack.join(alice, app["team"]["name"], vera, "viewer")
        created = await alice.ok(
            "POST", "/apps/sched/addons", {"plan": "postgresql:standard"}, status=202
        )
        path = f"/apps/sched/addons/{created['name']}/backup-schedule"

        async def known() -> dict[str, Any]:
            found: dict[str, Any] = await alice.ok("GET", path)
            return found

        first = await assert_eventually(known)
        assert first["enabled"] is True and first["default"] is True
        assert (first["hour"], first["timezone"]) == (schedules.default_hour(created["id"]), "UTC")
        assert first["retention"] == {"daily": 7, "weekly": 4, "monthly": 0}
        assert first["next_at"]

        env = {
            **os.environ,
            "SLIPWAY_API_URL": stack.url,
            "SLIPWAY_API_KEY": alice.token or "",
            "SLIPWAY_APP": "sched",
        }
        at = ("--at", "03:00 Europe/Paris")
        code, out, err = await asyncio.to_thread(
            slipway, env, tmp_path, "pg:backups:schedule", created["name"], *at
        )
        assert code == 0, err
        assert "daily at 03:00 Europe/Paris; keeps 7 daily, 4 weekly" in out
        code, out, err = await asyncio.to_thread(slipway, env, tmp_path, "pg:backups:schedules")
        assert code == 0, err
        assert f"{created['name']}: daily at 03:00 Europe/Paris" in out
        shown = await alice.ok("GET", path)
        assert (shown["hour"], shown["timezone"], shown["default"]) == (3, "Europe/Paris", False)
        listed = await alice.ok("GET", "/apps/sched/backup-schedules")
        assert [s["at"] for s in listed] == ["03:00 Europe/Paris"]

        bad = await asyncio.to_thread(
            slipway, env, tmp_path, "pg:backups:schedule", created["name"], "--at", "02:30 UTC"
        )
        assert bad[0] != 0 and "whole hour" in bad[2]
        refused = await alice.request("PUT", path, {"at": "02:00 Mars/Base"})
        assert refused.status == 422, refused.body
        viewer = await vera.request("PUT", path, {"at": "02:00 UTC"})
        assert viewer.status == 403, viewer.body
        assert (await vera.ok("GET", path))["at"] == "03:00 Europe/Paris"

        code, out, err = await asyncio.to_thread(
            slipway, env, tmp_path, "pg:backups:unschedule", created["name"]
        )
        assert code == 0, err
        assert "not scheduled" in out
        off = await alice.ok("GET", path)
        assert off["enabled"] is False and off["next_at"] is None

        async def audited() -> None:
            log = await alice.ok("GET", "/apps/sched/audit")
            actions = {e["action"] for e in log["entries"]}
            assert {"backup.schedule", "backup.unschedule"} <= actions, actions

        await assert_eventually(audited)
    finally:
        await stop(service, task)


async def test_a_scheduled_capture_is_due_once_per_slot(tmp_path: Path) -> None:
    """Due once the day's hour has passed and until a backup completes; never when unscheduled."""
    db = await Database.open(tmp_path / "catalog.db", MIGRATIONS)
    try:
        catalog = Catalog(db)
        found = schedules.Schedules(catalog, retry_seconds=600.0)
        row = DatabaseRow(
            addon_id="a1", addon_name="pg-1", app_id="app", team_id="team",
            plan="postgresql:mini", database="d", host_id="local", state="provisioned",
        )  # fmt: skip
        now = time.time()
        hour = dt.datetime.fromtimestamp(now - 3600, dt.UTC).hour  # an hour ago: passed
        await found.set("a1", hour, "UTC")
        assert await found.due(row, now)
        num = await catalog.start_backup("a1", "scheduled")
        async with db.transaction() as conn:
            await catalog.complete_backup(
                conn, addon_id="a1", num=num, size_bytes=1, stored_bytes=1,
                start_lsn=1, end_lsn=2, timeline=1, recipients=[],
            )  # fmt: skip
        assert not await found.due(row, now)
        # Tomorrow's slot wants a new one; a failed try waits for the retry interval.
        assert await found.due(row, now + DAY)
        found.failed("a1", now + DAY)
        assert not await found.due(row, now + DAY + 60)
        assert await found.due(row, now + DAY + 601)
        await found.remove("a1")
        assert not await found.due(row, now + DAY + 601)
        with pytest.raises(InvalidRequest, match="time zone"):
            await found.set("a1", 2, "Mars/Base")
    finally:
        await db.close()
