"""Log-shipper's read API (history pages, drains, metrics) and its live tail subject.

Log-shipper is the only service that holds the LOGS data-key grant, so it is
the one that decrypts history: the gateway asks `HISTORY_READ` for the last
lines of an app (after checking the caller's role on it) and listens on
`tail_subject(app_id)` for new ones. There is one log-shipper per Docker host and
each holds only what it took in, so the reads (`HISTORY_READ`, `HISTORY_EXPORT`,
`METRICS_GET`, `METRICS_SERIES_GET`) are fan-out RPCs: every log-shipper answers as
its host id and the gateway merges the answers (`Bus.gather`). Every log-shipper publishes what it
ingests there in small batches, each line numbered per shipper (`host`, `seq`),
so a reader that fetched history first can drop the live lines it already has.

Drains are log-shipper's records: `DRAIN_ADD` stores one and publishes
`DRAIN_CHANGED`, which every log-shipper (one per Docker host) applies to its
own database. The drain URL may carry credentials, so the event and the
database hold it sealed (envelope, purpose LOGS), never in plaintext.
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec

from slipway.contracts import subjects
from slipway.contracts.base import Event, EventSpec, LiveSpec, Message, Rpc, only
from slipway.contracts.logs import LogSource
from slipway.contracts.subjects import Service

DrainKind = Literal["syslog", "https"]


class LogEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One stored line: `<timestamp> <source>[<dyno>]: <text>`, numbered by its shipper."""

    host: str  # the log-shipper (Docker host) that took the line in
    seq: int  # increasing per host, across restarts
    timestamp: float
    source: LogSource
    dyno: str
    text: str
    stderr: bool = False


class TailBatch(Message, tag="logshipper.tail.v1", frozen=True, kw_only=True):
    """New lines of one app, as one log-shipper ingested them, in its order."""

    app_id: str
    host: str
    lines: list[LogEntry]


class ReadHistory(Message, tag="logshipper.history.read.v1", frozen=True, kw_only=True):
    """The last `lines` lines of an app, oldest first, optionally of one dyno or source.

    Every log-shipper answers for the lines it holds; with `host`, only that one does
    (paging on through one host's history: `before_seq` numbers are per host).
    """

    app_id: str
    team_id: str
    lines: int = 100
    dyno: str | None = None  # "web.1", or a process type ("web") for all its dynos
    source: LogSource | None = None
    before_seq: int | None = None  # paging backwards: only lines numbered below this
    host: str | None = None


class HistoryPage(Message, tag="logshipper.history.v1", frozen=True, kw_only=True):
    """Lines oldest first; `sealed` when stored history is sealed to the team's own key."""

    app_id: str
    lines: list[LogEntry]
    sealed: bool = False
    notice: str = ""
    more: bool = False  # older lines exist: ask again with before_seq = lines[0].seq
    host: str = ""  # the log-shipper (Docker host) that answered


class ExportHistory(Message, tag="logshipper.history.export.v2", frozen=True, kw_only=True):
    """Stored batches sealed to the team's own key, oldest first, numbered after a cursor.

    Every log-shipper answers for its own batches, after its own entry in `after`
    (host → last seq already exported; a host not named starts from the beginning).
    """

    app_id: str
    team_id: str
    after: dict[str, int] = msgspec.field(default_factory=dict)


class SealedBatch(msgspec.Struct, frozen=True, kw_only=True):
    """One batch as its owner opens it: `sealedbox.open_sealed(private_key, box, binding)`.

    The binding is Binding(team, app, "logs", id); the plaintext is
    zlib(msgpack(list[LogEntry])).
    """

    id: str
    team_id: str
    app_id: str
    host: str
    first_seq: int
    last_seq: int
    first_ts: float
    last_ts: float
    lines: int
    fingerprint: str  # of the public key the box is sealed to
    box: bytes


class HistoryArchive(Message, tag="logshipper.history.archive.v1", frozen=True, kw_only=True):
    batches: list[SealedBatch]
    more: bool = False  # ask again with after[host] = batches[-1].last_seq
    host: str = ""


class DrainInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A log drain in Heroku's shape (`token` is what the drain receives as the host)."""

    id: str
    app_id: str
    url: str
    token: str
    created_at: float
    updated_at: float
    # How shipping goes on the answering log-shipper: "pending", "ok", "refused: <why>"
    # (the egress guard), "failing: <why>"; empty from older log-shippers.
    status: str = ""


class AddDrain(Message, tag="logshipper.drain.add.v1", frozen=True, kw_only=True):
    app_id: str
    team_id: str
    url: str


class ListDrains(Message, tag="logshipper.drains.list.v1", frozen=True, kw_only=True):
    app_id: str
    team_id: str


class RemoveDrain(Message, tag="logshipper.drain.remove.v1", frozen=True, kw_only=True):
    app_id: str
    team_id: str
    ident: str  # the drain's id, token or URL


class Drain(Message, tag="logshipper.drain.v1", frozen=True, kw_only=True):
    drain: DrainInfo


class Drains(Message, tag="logshipper.drains.v1", frozen=True, kw_only=True):
    drains: list[DrainInfo]


class DrainChanged(Event, tag="logshipper.drain.changed.v1", frozen=True, kw_only=True):
    """A drain was added or removed; the URL travels sealed (envelope, purpose LOGS)."""

    drain_id: str
    app_id: str
    team_id: str
    token: str
    sealed_url: bytes = b""
    removed: bool = False
    created_at: float = 0.0


class GetMetrics(Message, tag="logshipper.metrics.get.v1", frozen=True, kw_only=True):
    app_id: str


class DynoSample(msgspec.Struct, frozen=True, kw_only=True):
    """The latest resource sample of one dyno, from the Docker stats API."""

    dyno: str
    container_id: str
    at: float
    cpu_percent: float  # of one CPU
    load_avg_1m: float
    memory_total_mb: float
    memory_rss_mb: float
    memory_cache_mb: float
    memory_quota_mb: float
    restarts: int = 0


class Metrics(Message, tag="logshipper.metrics.v1", frozen=True, kw_only=True):
    app_id: str
    dynos: list[DynoSample]  # those running on the answering log-shipper's host


# ---- metric series ------------------------------------------------------------------------
#
# Response times travel as a histogram with fixed, log-scale buckets, the same on every
# log-shipper, so the gateway adds the counts of several shippers and reads percentiles
# from the sum: exactly what one shipper seeing every request would have answered.
# Bucket 0 holds times up to 1 ms; bucket i (1 ≤ i < RESPONSE_BUCKETS) holds times above
# RESPONSE_BASE**(i-1) ms, up to RESPONSE_BASE**i ms (about 9% wide); the last bucket
# also holds everything slower. A different layout would be a new tag, never a new meaning.

RESPONSE_BASE = 2.0 ** (1 / 8)
RESPONSE_BUCKETS = 150  # the last bucket's bound is about 400 s: beyond any router timeout


def response_bucket(ms: float) -> int:
    """The histogram bucket of a response time in ms."""
    if not ms > 1.0:  # also NaN: a nonsense time counts as the fastest, never as an error
        return 0
    index = math.ceil(math.log(ms, RESPONSE_BASE) - 1e-9)
    return min(max(index, 1), RESPONSE_BUCKETS - 1)


def bucket_bound_ms(index: int) -> float:
    """The upper bound, in ms, of a histogram bucket."""
    return RESPONSE_BASE**index


def percentile_ms(counts: list[int], fraction: float) -> float | None:
    """The `fraction` percentile of a histogram, as its bucket's upper bound (None: empty).

    The bound, not a guess inside the bucket: "p95 ≤ x ms", off by at most a bucket's width.
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = max(math.ceil(fraction * total), 1)
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return round(bucket_bound_ms(index), 1)
    return round(bucket_bound_ms(len(counts) - 1), 1)


def add_counts(into: list[int], more: list[int]) -> list[int]:
    """Two histograms added bucket by bucket (either may be shorter: trailing zeros dropped)."""
    into = into + [0] * max(len(more) - len(into), 0)  # a new list: neither input changes
    for index, count in enumerate(more):
        into[index] += count
    return into


class GetMetricSeries(Message, tag="logshipper.metrics.series.get.v1", frozen=True, kw_only=True):
    """The app's per-step aggregates from `since` (unix s, a step's start) until now."""

    app_id: str
    since: int
    step: int  # seconds, a multiple of 60 (shippers keep one bucket per minute)


class SeriesPoint(msgspec.Struct, frozen=True, kw_only=True):
    """One step of one log-shipper's view of an app: only numbers, never paths or addresses.

    CPU and memory are the mean over the step's measured minutes of the sum over this
    host's dynos (None: no dyno of the app was sampled here then); the request counts are
    those of the router records this shipper took (its queue group hands each to one).
    """

    at: int  # the step's start, unix s
    cpu_percent: float | None = None  # of one CPU, summed over dynos
    memory_mb: float | None = None  # rss + cache (Heroku's memory_total), summed over dynos
    memory_quota_mb: float | None = None
    requests: int = 0
    status_2xx: int = 0
    status_3xx: int = 0
    status_4xx: int = 0
    status_5xx: int = 0
    response_ms: list[int] = msgspec.field(default_factory=list)  # counts per bucket, above


class SeriesSamples(Message, tag="logshipper.metrics.series.v1", frozen=True, kw_only=True):
    """One log-shipper's steps holding anything, oldest first (empty steps are left out)."""

    app_id: str
    step: int
    points: list[SeriesPoint]
    host: str = ""


TAIL = LiveSpec("tail", writers=only(Service.LOG_SHIPPER), readers=only(Service.GATEWAY))


def tail_subject(app_id: str) -> str:
    """Where every log-shipper publishes the new lines of one app (core NATS, not stored)."""
    return TAIL.subject(app_id)


HISTORY_READ: Rpc[ReadHistory, HistoryPage] = Rpc(
    Service.LOG_SHIPPER,
    "history.read",
    subjects.rpc(Service.LOG_SHIPPER, "history.read"),
    ReadHistory,
    HistoryPage,
    fanout=True,
    callers=only(Service.GATEWAY),
)
HISTORY_EXPORT: Rpc[ExportHistory, HistoryArchive] = Rpc(
    Service.LOG_SHIPPER,
    "history.export",
    subjects.rpc(Service.LOG_SHIPPER, "history.export"),
    ExportHistory,
    HistoryArchive,
    fanout=True,
    callers=only(Service.GATEWAY),
)
DRAIN_ADD: Rpc[AddDrain, Drain] = Rpc(
    Service.LOG_SHIPPER,
    "drain.add",
    subjects.rpc(Service.LOG_SHIPPER, "drain.add"),
    AddDrain,
    Drain,
    callers=only(Service.GATEWAY),
)
DRAINS_LIST: Rpc[ListDrains, Drains] = Rpc(
    Service.LOG_SHIPPER,
    "drains.list",
    subjects.rpc(Service.LOG_SHIPPER, "drains.list"),
    ListDrains,
    Drains,
    callers=only(Service.GATEWAY),
)
DRAIN_REMOVE: Rpc[RemoveDrain, Drain] = Rpc(
    Service.LOG_SHIPPER,
    "drain.remove",
    subjects.rpc(Service.LOG_SHIPPER, "drain.remove"),
    RemoveDrain,
    Drain,
    callers=only(Service.GATEWAY),
)
METRICS_GET: Rpc[GetMetrics, Metrics] = Rpc(
    Service.LOG_SHIPPER,
    "metrics.get",
    subjects.rpc(Service.LOG_SHIPPER, "metrics.get"),
    GetMetrics,
    Metrics,
    fanout=True,
    callers=only(Service.GATEWAY),
)
METRICS_SERIES_GET: Rpc[GetMetricSeries, SeriesSamples] = Rpc(
    Service.LOG_SHIPPER,
    "metrics.series.get",
    subjects.rpc(Service.LOG_SHIPPER, "metrics.series.get"),
    GetMetricSeries,
    SeriesSamples,
    fanout=True,
    callers=only(Service.GATEWAY, Service.MONITOR),
)
DRAIN_CHANGED: EventSpec[DrainChanged] = EventSpec(
    subjects.evt("logshipper", "drain.changed"), DrainChanged, publishers=only(Service.LOG_SHIPPER)
)
