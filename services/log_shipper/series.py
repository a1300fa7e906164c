"""Per-app metric series: one bucket per app and minute, kept a day, answering METRICS_SERIES_GET.

Two feeds fill a minute's bucket:

- each dyno sample (metrics.py): CPU % and memory (rss + cache, as Heroku's
  `memory_total`) and quota, summed per dyno (container) so the minute's value is
  the sum over the app's dynos of each dyno's mean over its samples in that minute;
- each router access record (shipper.py `on_access`; the queue group hands each
  record to one log-shipper): the request count, counts by status class and a
  histogram of connect + service time in the fixed log-scale buckets of
  contracts/log_shipper.py, so the gateway can add several shippers' histograms.

Only numbers are kept: no path, host, request id, address or dyno name reaches a bucket.

Buckets live in memory while they may still change (the current minute and the
`LATE_MINUTES` before it); `flush` writes them to the `series` table (every
`FLUSH_EVERY` seconds and on stop: a kill -9 loses at most that much), and
drops those too old to change any more. A new process reopens the stored minutes
that may still change; their dynos' sums count until its own first sample of
that minute replaces them (stored sums carry no dyno id to join them with). A
record for a minute already dropped (minutes late), for a minute ahead of this
host's clock, or of a destroyed app is counted in no bucket (a log line says how many).
Rows older than `KEEP_SECONDS` are deleted on each flush.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

import msgspec
import structlog

from slipway.contracts.log_shipper import (
    SeriesPoint,
    add_counts,
    response_bucket,
)
from slipway.libs.storage import Database
from slipway.libs.waits import wait_for_event

log = structlog.get_logger("slipway.log_shipper.series")

MINUTE = 60
KEEP_SECONDS = 24 * 3600 + 10 * MINUTE  # a day, and the step a 24 h chart starts inside
FLUSH_EVERY = 10.0  # seconds between writes of the buckets still changing
LATE_MINUTES = 2  # how many minutes back a record may still land in its bucket
MAX_BUCKETS = 50_000  # held in memory: apps x (LATE_MINUTES + 1); beyond, new apps wait
MAX_GONE = 10_000  # destroyed apps remembered, to keep their late records out


class DynoMinute(msgspec.Struct, array_like=True):
    """One dyno's samples in one minute: sums and how many, for the mean."""

    samples: int = 0
    cpu: float = 0.0
    memory_mb: float = 0.0
    quota_mb: float = 0.0


class Minute(msgspec.Struct):
    """One app's minute: per-dyno sample sums and the router's counts."""

    dynos: dict[str, DynoMinute] = msgspec.field(default_factory=dict)  # by container id
    # Sampling passes that sampled at least one of the app's dynos in this minute: the
    # minute's value is the sum over dynos divided by passes, so during a rolling deploy
    # an old and a new container, each there half the minute, count as one dyno, not two.
    passes: int = 0
    # The dynos' sums as stored before this process started (their ids are not stored, so
    # they cannot be joined with new samples: used only while no new sample came in).
    carried: list[DynoMinute] = msgspec.field(default_factory=list)
    carried_passes: int = 0
    requests: int = 0
    status: list[int] = msgspec.field(default_factory=lambda: [0, 0, 0, 0])  # 2xx..5xx
    response_ms: list[int] = msgspec.field(default_factory=list)

    def add_sample(self, dyno: str, cpu: float, memory_mb: float, quota_mb: float) -> None:
        kept = self.dynos.setdefault(dyno, DynoMinute())
        kept.samples += 1
        kept.cpu += cpu
        kept.memory_mb += memory_mb
        kept.quota_mb += quota_mb

    def add_request(self, status: int, total_ms: float) -> None:
        self.requests += 1
        if 200 <= status < 600:
            self.status[status // 100 - 2] += 1
        bucket = response_bucket(total_ms)
        if bucket >= len(self.response_ms):
            self.response_ms.extend([0] * (bucket + 1 - len(self.response_ms)))
        self.response_ms[bucket] += 1

    def measured(self) -> tuple[list[DynoMinute], int]:
        """The dynos' sums that count and their passes: new ones, else those carried over."""
        fresh = [d for d in self.dynos.values() if d.samples]
        if fresh:
            return fresh, self.passes
        return [d for d in self.carried if d.samples], self.carried_passes

    def resources(self) -> tuple[float, float, float] | None:
        """(CPU %, memory MB, quota MB): the app's total averaged over the minute's passes.

        A dyno there for every pass counts its mean; one there for half of them, half of
        it. No dyno has more samples than there were passes, which also covers rows
        stored before passes were counted.
        """
        measured, passes = self.measured()
        if not measured:
            return None
        passes = max(passes, *(d.samples for d in measured))
        return (
            sum(d.cpu for d in measured) / passes,
            sum(d.memory_mb for d in measured) / passes,
            sum(d.quota_mb for d in measured) / passes,
        )


class StoredMinute(msgspec.Struct, array_like=True):
    """A minute as the `series` table holds it: the dynos' sums without their ids."""

    dynos: list[DynoMinute]
    requests: int
    status: list[int]
    response_ms: list[int]
    passes: int = 0  # last, with a default: rows written before it still decode


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(StoredMinute)


def encode_minute(minute: Minute) -> bytes:
    """A minute for the `series` table: numbers only (a dyno's id is left behind)."""
    dynos, passes = minute.measured()
    return _ENCODER.encode(
        StoredMinute(
            dynos=dynos,
            passes=passes,
            requests=minute.requests,
            status=minute.status,
            response_ms=minute.response_ms,
        )
    )


def decode_minute(data: bytes) -> Minute:
    stored = _DECODER.decode(data)
    return Minute(
        carried=stored.dynos,
        carried_passes=stored.passes,
        requests=stored.requests,
        status=stored.status,
        response_ms=stored.response_ms,
    )


def minute_of(at: float) -> int:
    """The start (unix s) of the minute holding `at`."""
    return int(at // MINUTE) * MINUTE


@dataclass
class _Step:
    """A step being assembled from minutes."""

    minutes_measured: int = 0
    cpu: float = 0.0
    memory_mb: float = 0.0
    quota_mb: float = 0.0
    requests: int = 0
    status: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    response_ms: list[int] = field(default_factory=list)

    def add(self, minute: Minute) -> None:
        measured = minute.resources()
        if measured is not None:
            self.minutes_measured += 1
            self.cpu += measured[0]
            self.memory_mb += measured[1]
            self.quota_mb += measured[2]
        self.requests += minute.requests
        self.status = [a + b for a, b in zip(self.status, minute.status, strict=True)]
        self.response_ms = add_counts(self.response_ms, minute.response_ms)

    def point(self, at: int) -> SeriesPoint:
        n = self.minutes_measured
        return SeriesPoint(
            at=at,
            cpu_percent=round(self.cpu / n, 2) if n else None,
            memory_mb=round(self.memory_mb / n, 2) if n else None,
            memory_quota_mb=round(self.quota_mb / n, 2) if n else None,
            requests=self.requests,
            status_2xx=self.status[0],
            status_3xx=self.status[1],
            status_4xx=self.status[2],
            status_5xx=self.status[3],
            response_ms=self.response_ms,
        )


def steps(minutes: list[tuple[int, Minute]], since: int, step: int) -> list[SeriesPoint]:
    """Minutes (start, bucket) folded into steps of `step` s from `since`, oldest first.

    CPU and memory of a step are the mean of its measured minutes (a minute no dyno was
    sampled in does not pull the mean down); counts and histograms add up.
    """
    folded: dict[int, _Step] = {}
    for start, minute in minutes:
        if start < since:
            continue
        at = since + (start - since) // step * step
        folded.setdefault(at, _Step()).add(minute)
    return [folded[at].point(at) for at in sorted(folded)]


class Series:
    """One log-shipper's minute buckets of every app: in memory while open, then stored."""

    def __init__(self, db: Database, reader: Database, flush_every: float = FLUSH_EVERY) -> None:
        self.db = db
        self.reader = reader
        self.flush_every = flush_every
        self.open: dict[tuple[str, int], Minute] = {}  # (app id, minute) -> bucket
        self._dirty: set[tuple[str, int]] = set()
        # Apps destroyed while this process runs: a record still on its way must not
        # bring a row back (ordered, so the oldest leave first past MAX_GONE).
        self._gone: dict[str, None] = {}
        self._skipped: dict[str, int] = {}  # why -> records counted in no bucket

    async def load(self) -> None:
        """Reopen the minutes stored by the previous process that may still change."""
        rows = await self.reader.fetchall(
            "SELECT app_id, minute, data FROM series WHERE minute >= ?",
            (minute_of(time.time()) - LATE_MINUTES * MINUTE,),
        )
        for r in rows:
            self.open[(str(r["app_id"]), int(r["minute"]))] = decode_minute(bytes(r["data"]))

    def _bucket(self, app_id: str, at: float) -> Minute | None:
        if not math.isfinite(at):
            self._skip("no time")
            return None
        minute = minute_of(at)
        key = (app_id, minute)
        found = self.open.get(key)
        if found is not None:
            return found
        now = minute_of(time.time())
        if minute < now - LATE_MINUTES * MINUTE:
            self._skip("late")
            return None
        if minute > now + MINUTE:  # a clock far ahead: its bucket would sit in memory for long
            self._skip("future")
            return None
        if app_id in self._gone:
            self._skip("app destroyed")
            return None
        if len(self.open) >= MAX_BUCKETS:
            self._skip("too many open buckets")
            return None
        found = self.open[key] = Minute()
        return found

    def _skip(self, why: str) -> None:
        self._skipped[why] = self._skipped.get(why, 0) + 1

    def sample(
        self, app_id: str, container_id: str, at: float, cpu: float, memory_mb: float, quota: float
    ) -> None:
        """A dyno's sample at `at`: CPU % of one CPU, memory in use (rss + cache), quota (MB)."""
        bucket = self._bucket(app_id, at)
        if bucket is not None:
            bucket.add_sample(container_id, cpu, memory_mb, quota)
            self._dirty.add((app_id, minute_of(at)))

    def passed(self, app_ids: set[str], at: float) -> None:
        """A sampling pass at `at` sampled dynos of these apps (after their `sample` calls)."""
        for app_id in app_ids:
            bucket = self._bucket(app_id, at)
            if bucket is not None:
                bucket.passes += 1

    def request(self, app_id: str, at: float, status: int, total_ms: float) -> None:
        """One request through the router: its status and its connect + service time."""
        bucket = self._bucket(app_id, at)
        if bucket is not None:
            bucket.add_request(status, total_ms)
            self._dirty.add((app_id, minute_of(at)))

    def forget(self, app_id: str) -> None:
        """The app is gone: drop its open buckets (store.drop_app deletes its rows)."""
        for key in [k for k in self.open if k[0] == app_id]:
            self.open.pop(key, None)
            self._dirty.discard(key)
        self._gone[app_id] = None
        while len(self._gone) > MAX_GONE:
            del self._gone[next(iter(self._gone))]

    async def flush(self) -> None:
        """Store the buckets changed since the last flush; drop closed ones; prune old rows."""
        dirty, self._dirty = self._dirty, set()
        rows = [(app, minute, encode_minute(self.open[(app, minute)])) for app, minute in dirty]
        oldest_open = minute_of(time.time()) - LATE_MINUTES * MINUTE
        try:
            async with self.db.transaction() as conn:
                # Checked in the transaction: drop_app's own comes before or after it whole.
                rows = [row for row in rows if row[0] not in self._gone]
                await conn.executemany(
                    "INSERT INTO series (app_id, minute, data) VALUES (?, ?, ?)"
                    " ON CONFLICT (app_id, minute) DO UPDATE SET data = excluded.data",
                    rows,
                )
                await conn.execute(
                    "DELETE FROM series WHERE minute < ?", (time.time() - KEEP_SECONDS,)
                )
        except BaseException:
            self._dirty |= dirty  # not stored: written by the next flush
            raise
        # Only once stored: a bucket still dirty (changed meanwhile) stays for the next flush.
        for key in [k for k in self.open if k[1] < oldest_open and k not in self._dirty]:
            del self.open[key]
        if self._skipped:
            log.info("series.records_skipped", **self._skipped)
            self._skipped = {}

    async def read(self, app_id: str, since: int, step: int) -> list[SeriesPoint]:
        """The app's steps from `since` that hold anything, oldest first."""
        rows = await self.reader.fetchall(
            "SELECT minute, data FROM series WHERE app_id = ? AND minute >= ? ORDER BY minute",
            (app_id, since),
        )
        minutes = {int(r["minute"]): decode_minute(bytes(r["data"])) for r in rows}
        # What is open is newer than what was stored of the same minute.
        for (app, minute), bucket in self.open.items():
            if app == app_id and minute >= since:
                minutes[minute] = bucket
        return steps(sorted(minutes.items(), key=lambda m: m[0]), since, step)

    async def run(self, stopping: asyncio.Event) -> None:
        """Flush every `flush_every` seconds, and once more when `stopping` is set."""
        while True:
            await wait_for_event(stopping, self.flush_every)
            try:
                await self.flush()
            except Exception as exc:  # a full disk must not stop the loop: the next one retries
                log.warning("series.flush_failed", error=repr(exc))
            if stopping.is_set():
                return
