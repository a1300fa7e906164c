"""Retention: which base backups a database keeps, and expiring the rest without breaking a restore.

The choice is a pure function, `choose`, of the backups, the plan's policy and the time
(restic's `--keep-daily/--keep-weekly/--keep-monthly`, counted in periods that have a
backup, so a database whose captures stopped for a while keeps its history):

- the newest completed backup of each of the last `daily` UTC days that have one, of
  the last `weekly` ISO weeks, of the last `monthly` months;
- always the newest completed backup of a live database, whatever its age;
- a destroyed add-on keeps only its final (newest completed) backup, for `final_days`
  after it was destroyed; then everything of it goes;
- a running capture is never touched; a failed one (its objects are gone already)
  stays listed while it is newer than the oldest kept backup.

What a restore needs decides which WAL stays (`wal_expired`): every piece from the
start of the segment where the oldest kept backup starts, on its timeline, so a
restore of any kept backup, to any time after it, replays without a hole. A timeline
older than every kept backup's goes; a newer one (ahead of them) stays.

Expiry (`Retention.expire`) records itself before it deletes anything: a signed
manifest of kind "expiry" joins the add-on's hash chain naming what goes (the
backups' numbers and object keys, the WAL ranges with their piece counts and the
SHA-256 of the sorted list of every removed key), and in the same transaction the
objects become invisible and the backups' rows go. Then storage deletes them and the
catalog forgets them; a crash in between leaves invisible objects, which the next
start's recovery deletes (`Archive.recover`). Manifests are never deleted: they are
the signed chain, and a download or `pg:backups:open` of a kept backup checks a chain
that is still whole (an object they name may be gone; only the chosen backup's parts
and the WAL after its end must be present, and those are kept).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace

import aiosqlite
import structlog

from slipway.contracts.addons import ADDON_PLANS, AddonPlan
from slipway.libs import pgwire
from slipway.services.backup.archive import Archive
from slipway.services.backup.sealing import Recipients
from slipway.services.backup.store import BackupRow, DatabaseRow, ObjectRow, iso

log = structlog.get_logger("slipway.backup.retention")

DAY = 86400.0
EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
DEFAULT_PLAN = AddonPlan(
    name="", service="postgresql", description="", memory_mb=0, max_connections=0,
    shared_buffers_mb=0, pids_limit=0, storage_gb=0,
)  # fmt: skip


@dataclass(frozen=True)
class Policy:
    """How many periods of backups a database keeps; `day_seconds` shortens days in tests."""

    daily: int
    weekly: int
    monthly: int = 0
    final_days: float = 30.0
    day_seconds: float = DAY

    @classmethod
    def of_plan(cls, plan: str, *, final_days: float = 30.0, day_seconds: float = DAY) -> Policy:
        """The policy a plan declares (contracts/addons.py); an unknown plan gets the defaults."""
        found = ADDON_PLANS.get(plan, DEFAULT_PLAN)
        return cls(
            daily=found.keep_daily,
            weekly=found.keep_weekly,
            monthly=found.keep_monthly,
            final_days=final_days,
            day_seconds=day_seconds,
        )

    def day(self, ts: float) -> int:
        return math.floor(ts / self.day_seconds)

    def week(self, ts: float) -> int:
        # Day 0 (1970-01-01) was a Thursday: ISO weeks begin three days earlier, on Monday.
        return (self.day(ts) + 3) // 7

    def month(self, ts: float) -> int:
        day = self.day(ts)
        try:
            date = dt.date.fromordinal(EPOCH_ORDINAL + day)
        except (ValueError, OverflowError):
            # A shortened day (tests) runs past year 9999: months of 30 days then.
            return day // 30
        return date.year * 12 + date.month - 1


@dataclass(frozen=True)
class Choice:
    """What `choose` decided: every backup is in exactly one of `keep` and `expire`."""

    keep: dict[int, str]  # num -> why ("latest", "daily", "weekly", "monthly", "final", ...)
    expire: list[int]
    kept_completed: list[BackupRow] = field(default_factory=list)


def _ended(row: BackupRow) -> float:
    return row.finished_at or row.started_at


def _newest_per_period(
    completed: Sequence[BackupRow], period: Iterable[int], count: int
) -> list[BackupRow]:
    """The newest backup of each of the `count` most recent periods that have one."""
    newest: dict[int, BackupRow] = {}
    for row, bucket in zip(completed, period, strict=True):
        if bucket not in newest or _ended(row) > _ended(newest[bucket]):
            newest[bucket] = row
    return [newest[b] for b in sorted(newest, reverse=True)[: max(count, 0)]]


def choose(
    backups: Sequence[BackupRow], policy: Policy, *, now: float, destroyed_at: float | None
) -> Choice:
    """Which of one database's backups stay and which expire (pure: no I/O, no clock)."""
    keep: dict[int, str] = {}
    completed = sorted(
        (b for b in backups if b.state == "completed"), key=lambda b: (_ended(b), b.num)
    )
    for row in backups:
        if row.state == "running":
            keep[row.num] = "running"
    if destroyed_at is None:
        if completed:
            keep[completed[-1].num] = "latest"
        periods = (
            ("daily", policy.daily, policy.day),
            ("weekly", policy.weekly, policy.week),
            ("monthly", policy.monthly, policy.month),
        )
        for reason, count, bucket in periods:
            for row in _newest_per_period(completed, [bucket(_ended(b)) for b in completed], count):
                keep.setdefault(row.num, reason)
    elif completed and now < destroyed_at + policy.final_days * policy.day_seconds:
        keep[completed[-1].num] = "final"
    kept = [b for b in completed if b.num in keep]
    oldest = min((b.started_at for b in kept), default=None)
    for row in backups:
        if row.state != "failed" or row.num in keep:
            continue
        # A failure says something about the backups around it: listed while they are
        # (with none kept, while it is recent).
        if oldest is not None:
            listed = row.started_at >= oldest
        else:
            recent = now - row.started_at < max(policy.daily, 1) * policy.day_seconds
            listed = destroyed_at is None and recent
        if listed:
            keep[row.num] = "failed"
    expire = sorted(b.num for b in backups if b.num not in keep)
    return Choice(keep=keep, expire=expire, kept_completed=kept)


def wal_kept_from(kept: Sequence[BackupRow]) -> dict[int, int]:
    """Per timeline of a kept backup, the LSN from which its WAL must stay."""
    found: dict[int, int] = {}
    for row in kept:
        start = pgwire.segment_start(row.start_lsn)
        found[row.timeline] = min(found.get(row.timeline, start), start)
    return found


def wal_expired(
    pieces: Sequence[ObjectRow], kept: Sequence[BackupRow], *, destroyed: bool
) -> list[ObjectRow]:
    """The WAL pieces no kept backup's restore can replay (pure)."""
    if not kept:
        # Nothing to replay them onto; a live database's first backup may be on its way.
        return list(pieces) if destroyed else []
    keep_from = wal_kept_from(kept)
    newest_timeline = max(keep_from)
    gone = []
    for piece in pieces:
        start = keep_from.get(piece.timeline)
        if start is None:
            if piece.timeline < newest_timeline:
                gone.append(piece)
        elif piece.end_lsn <= start:
            gone.append(piece)
    return gone


@dataclass(frozen=True)
class Expired:
    """What one expiry removed."""

    addon_id: str
    backups: list[int]
    base_objects: int
    wal_pieces: int
    stored_bytes: int
    manifest_seq: int = 0


class Retention:
    """Expiry over the backup service's databases."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.catalog = archive.catalog
        settings = archive.settings
        self.final_days = settings.retention_final_days
        self.day_seconds = settings.retention_day_seconds

    def policy(self, db: DatabaseRow) -> Policy:
        return Policy.of_plan(db.plan, final_days=self.final_days, day_seconds=self.day_seconds)

    async def run(self, now: float | None = None, busy: Collection[str] = ()) -> list[Expired]:
        """Expire every database's backups that its plan no longer keeps; what went.

        A database in `busy` (being verified: its restore reads a chosen backup's objects)
        waits for the next run.
        """
        now = time.time() if now is None else now
        done = []
        rows = await self.catalog.db.fetchall(
            "SELECT addon_id FROM backups UNION SELECT addon_id FROM objects WHERE kind='wal'"
        )
        for row in rows:
            db = await self.catalog.database(str(row[0]))
            if db is None or db.addon_id in busy:
                continue
            try:
                expired = await self.expire(db, now=now)
            except Exception as exc:  # one database's failure must not stop the others
                log.warning("expiry failed", addon=db.addon_name, error=str(exc))
                continue
            if expired is not None:
                done.append(expired)
        return done

    async def expire(
        self, db: DatabaseRow, *, now: float, policy: Policy | None = None
    ) -> Expired | None:
        """Expire one database's backups (and the WAL only they needed); None if nothing went."""
        policy = policy or self.policy(db)
        destroyed_at = await self._destroyed_at(db)
        async with self.archive.lock(db.addon_id):
            # Chosen under the lock no capture publishes under: a backup finishing now is
            # newer than all chosen here, so it can only add to what must stay.
            backups = await self.catalog.backups(db.addon_id)
            choice = choose(backups, policy, now=now, destroyed_at=destroyed_at)
            pieces = await self._wal_pieces(db.addon_id)
        gone_wal = wal_expired(pieces, choice.kept_completed, destroyed=destroyed_at is not None)
        if not choice.expire and not gone_wal:
            return None
        base = await self._base_objects(db.addon_id, choice.expire)
        removed = sorted([o.key for o in base] + [o.key for o in gone_wal])
        expired = Expired(
            addon_id=db.addon_id,
            backups=choice.expire,
            base_objects=len(base),
            wal_pieces=len(gone_wal),
            stored_bytes=sum(o.size for o in base) + sum(o.size for o in gone_wal),
        )
        seq = await self._record(db, expired, base, gone_wal, removed, choice, now)
        for key in removed:
            await self.archive.storage.delete(key)
        await self.catalog.forget_objects(removed)
        log.info(
            "backups expired",
            addon=db.addon_name,
            backups=[f"b{n:03d}" for n in choice.expire],
            base_objects=expired.base_objects,
            wal_pieces=expired.wal_pieces,
            stored_bytes=expired.stored_bytes,
            kept=[f"b{n:03d}:{why}" for n, why in sorted(choice.keep.items())],
            manifest=seq,
        )
        return replace(expired, manifest_seq=seq)

    async def _record(
        self,
        db: DatabaseRow,
        expired: Expired,
        base: list[ObjectRow],
        gone_wal: list[ObjectRow],
        removed: list[str],
        choice: Choice,
        now: float,
    ) -> int:
        """The signed expiry manifest, committed with the catalog's side of the expiry."""
        ranges: dict[int, list[ObjectRow]] = {}
        for piece in gone_wal:
            ranges.setdefault(piece.timeline, []).append(piece)
        fields = {
            "expired_backups": choice.expire,
            "removed": [o.key for o in base],
            "wal_removed": [
                {
                    "timeline": timeline,
                    "through_lsn": pgwire.format_lsn(max(p.end_lsn for p in found)),
                    "pieces": len(found),
                }
                for timeline, found in sorted(ranges.items())
            ],
            "removed_count": len(removed),
            "removed_sha256": hashlib.sha256("\n".join(removed).encode()).hexdigest(),
            "kept_backups": sorted(choice.keep),
        }

        async def commit(conn: aiosqlite.Connection) -> None:
            # Invisible first: a crash before storage deletes them leaves orphans the next
            # start removes, never a listed object that is gone.
            await conn.executemany(
                "UPDATE objects SET manifest_seq=NULL WHERE key=?", [(k,) for k in removed]
            )
            await conn.executemany(
                "DELETE FROM backups WHERE addon_id=? AND num=?",
                [(db.addon_id, n) for n in choice.expire],
            )
            cur = await conn.execute(
                "SELECT MAX(seq) FROM manifests WHERE addon_id=?", (db.addon_id,)
            )
            seq = (await cur.fetchone() or (0,))[0]
            await conn.execute(
                "INSERT INTO expiries (addon_id, at, manifest_seq, backups, base_objects,"
                " wal_pieces, stored_bytes) VALUES (?,?,?,?,?,?,?)",
                (
                    db.addon_id,
                    now,
                    int(seq or 0),
                    json.dumps(choice.expire),
                    expired.base_objects,
                    expired.wal_pieces,
                    expired.stored_bytes,
                ),
            )

        return await self.archive.publish_manifest(
            db,
            kind="expiry",
            objects=[],
            recipients=Recipients(publics=(), fingerprints=()),
            fields=fields,
            progress=commit,
        )

    async def _destroyed_at(self, db: DatabaseRow) -> float | None:
        if db.state != "destroyed":
            return None
        row = await self.catalog.db.fetchone(
            "SELECT destroyed_at FROM databases WHERE addon_id=?", (db.addon_id,)
        )
        # No time recorded (never expected): its final backup is kept, never expired early.
        return float(row[0]) if row and row[0] is not None else time.time()

    async def _wal_pieces(self, addon_id: str) -> list[ObjectRow]:
        rows = await self.catalog.db.fetchall(
            "SELECT DISTINCT timeline FROM objects WHERE addon_id=? AND kind='wal'", (addon_id,)
        )
        found: list[ObjectRow] = []
        for row in rows:
            found.extend(await self.catalog.wal_objects(addon_id, int(row[0]), -1))
        return found

    async def _base_objects(self, addon_id: str, nums: list[int]) -> list[ObjectRow]:
        found: list[ObjectRow] = []
        for num in nums:
            found.extend(await self.catalog.base_objects(addon_id, num))
        return found

    async def last_expiry(self, addon_id: str) -> tuple[float, int, int, int] | None:
        """When the database's backups last expired and how much: (at, backups, wal, bytes)."""
        row = await self.catalog.db.fetchone(
            "SELECT at, backups, wal_pieces, stored_bytes FROM expiries WHERE addon_id=?"
            " ORDER BY at DESC LIMIT 1",
            (addon_id,),
        )
        if row is None:
            return None
        return float(row[0]), len(json.loads(row[1])), int(row[2]), int(row[3])


def describe(last: tuple[float, int, int, int] | None) -> str:
    """One line for the schedule view: the last expiry, or that none happened."""
    if last is None:
        return ""
    at, backups, wal, size = last
    return f"{iso(at)}: {backups} backups, {wal} WAL pieces, {size} bytes"
