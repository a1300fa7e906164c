"""Reads every log-shipper answers, gathered and merged: history, sealed archive, metrics, series.

There is one log-shipper per Docker host and each holds only what it took in: the
lines of the dynos it followed, plus whichever platform, router and build lines its
queue group handed it. So no single log-shipper can answer "the last 100 lines of
this app". The gateway asks them all at once (`Bus.gather` on the fan-out RPCs) and
merges the answers by `(timestamp, host, seq)`.

Who should answer: the hosts of the scheduler's registry that are not down (a log-
shipper answers as its `SLIPWAY_HOST_ID`, which is its host's id there), looked up at
most every `HOSTS_TTL` seconds. A host that stays silent until the deadline does not
fail the read: the lines of the others are returned with a notice naming it. When the
registry cannot be read (no scheduler running), whoever answers within a short settle
window counts.

Paging goes on per host: `before_seq` numbers are per host, so a host that had more
lines is asked again, alone (`ReadHistory.host`), until it has given its share.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from slipway.contracts.base import Message, Rpc
from slipway.contracts.log_shipper import (
    HISTORY_EXPORT,
    HISTORY_READ,
    METRICS_GET,
    METRICS_SERIES_GET,
    DynoSample,
    ExportHistory,
    GetMetrics,
    GetMetricSeries,
    HistoryPage,
    LogEntry,
    ReadHistory,
    SealedBatch,
    SeriesPoint,
)
from slipway.contracts.logs import LogSource
from slipway.contracts.scheduler import HOSTS_LIST, ListHosts
from slipway.libs.bus import Bus, Gathered
from slipway.libs.errors import SlipwayError, Unavailable

log = structlog.get_logger("slipway.gateway.shippers")

ReqT = TypeVar("ReqT", bound=Message)
RepT = TypeVar("RepT", bound=Message)

HOSTS_TTL = 10.0  # seconds the expected set of log-shippers is reused
GATHER_TIMEOUT = 10.0  # how long a read waits for a silent log-shipper


class ShipperHosts:
    """The log-shippers a read waits for: the registry's hosts that are not down."""

    def __init__(self, bus: Bus, ttl: float = HOSTS_TTL) -> None:
        self.bus = bus
        self.ttl = ttl
        self._found: set[str] | None = None
        self._at = -ttl

    async def expected(self) -> set[str] | None:
        """Host ids, or None when the registry cannot say (empty, or no scheduler)."""
        if time.monotonic() - self._at < self.ttl:
            return self._found
        try:
            hosts = (await self.bus.call(HOSTS_LIST, ListHosts(), timeout=1.0)).hosts
        except SlipwayError as exc:
            log.warning("shippers.registry_unavailable", error=str(exc))
            found = None
        else:
            found = {h.id for h in hosts if h.state != "down"} or None
        self._found, self._at = found, time.monotonic()
        return found


@dataclass
class History:
    """Lines oldest first, and what the reader should be told about them."""

    lines: list[LogEntry] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


def _silent(found: Gathered[Any], what: str) -> list[str]:
    notices = [
        f"The log-shipper of host {host} did not answer: its {what} is missing here."
        for host in sorted(found.missing)
    ]
    notices += [
        f"The log-shipper of host {host or '?'} failed: {error} (its {what} is missing here)."
        for host, error in sorted(found.errors.items())
    ]
    return notices


async def _gather(
    bus: Bus,
    rpc: Rpc[ReqT, RepT],
    request: ReqT,
    expect: set[str] | None,
    timeout: float,
    what: str,
) -> Gathered[RepT]:
    """Gather; while nobody at all serves `rpc` (log-shippers restarting), try again."""
    deadline = time.monotonic() + timeout
    pause = 0.05
    while True:
        left = max(deadline - time.monotonic(), 0.001)
        found = await bus.gather(rpc, request, expect=expect, timeout=left)
        if found.replies or found.errors or found.missing:
            return found
        if time.monotonic() + pause >= deadline:
            raise Unavailable(f"No log-shipper answered for the {what}.")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)


async def read_history(
    bus: Bus,
    request: ReadHistory,
    *,
    expect: set[str] | None = None,
    timeout: float = GATHER_TIMEOUT,
) -> History:
    """The last `request.lines` matching lines over every log-shipper, oldest first."""
    first = await _gather(bus, HISTORY_READ, request, expect, timeout, "history")
    result = History(notices=_silent(first, "history"))
    pages = await asyncio.gather(
        *(
            _host_pages(bus, request, host, page, timeout)
            for host, page in sorted(first.replies.items())
        )
    )
    for page_lines, notices in pages:
        result.lines += page_lines
        result.notices += notices
    for page in first.replies.values():
        if page.notice and page.notice not in result.notices:
            result.notices.append(page.notice)
    # One host's lines are in its order already; several hosts interleave by time.
    if len({e.host for e in result.lines}) > 1:
        result.lines.sort(key=lambda e: (e.timestamp, e.host, e.seq))
    result.lines = result.lines[-request.lines :] if request.lines > 0 else []
    return result


async def _host_pages(
    bus: Bus, request: ReadHistory, host: str, page: HistoryPage, timeout: float
) -> tuple[list[LogEntry], list[str]]:
    """One host's lines: its first page, then older pages from it alone while it has more."""
    pages = [page.lines]
    left = request.lines - len(page.lines)
    while page.more and page.lines and left > 0:
        ask = ReadHistory(
            app_id=request.app_id,
            team_id=request.team_id,
            lines=left,
            dyno=request.dyno,
            source=request.source,
            before_seq=page.lines[0].seq,
            host=host,
        )
        found = await bus.gather(HISTORY_READ, ask, expect={host}, timeout=timeout)
        if host not in found.replies:
            return [e for p in reversed(pages) for e in p], _silent(found, "older history")
        page = found.replies[host]
        pages.append(page.lines)
        left -= len(page.lines)
    return [e for p in reversed(pages) for e in p], []


async def history(
    bus: Bus,
    app_id: str,
    team_id: str,
    lines: int,
    *,
    dyno: str | None = None,
    source: LogSource | None = None,
    expect: set[str] | None = None,
) -> list[LogEntry]:
    """The last `lines` lines of an app, oldest first (tests and tools holding a bus)."""
    request = ReadHistory(app_id=app_id, team_id=team_id, lines=lines, dyno=dyno, source=source)
    return (await read_history(bus, request, expect=expect)).lines


@dataclass
class Archive:
    """Sealed batches of every host, oldest first, and the cursor to ask for the rest."""

    batches: list[SealedBatch]
    after: dict[str, int]
    more: bool
    notices: list[str]


async def export(bus: Bus, request: ExportHistory, *, expect: set[str] | None = None) -> Archive:
    """One page of every host's batches sealed to the team's key, after `request.after`."""
    found = await _gather(bus, HISTORY_EXPORT, request, expect, 30.0, "log archive")
    after = dict(request.after)
    batches: list[SealedBatch] = []
    for host, archive in found.replies.items():
        batches += archive.batches
        if archive.batches:
            after[host] = archive.batches[-1].last_seq
    batches.sort(key=lambda b: (b.first_ts, b.host, b.first_seq))
    more = any(a.more for a in found.replies.values())
    # A host that did not answer keeps its cursor: exporting again later picks its batches up.
    return Archive(batches=batches, after=after, more=more, notices=_silent(found, "archive"))


async def metrics(bus: Bus, app_id: str, *, expect: set[str] | None = None) -> list[DynoSample]:
    """The latest sample of every dyno of the app, from the log-shipper of its host."""
    found = await bus.gather(METRICS_GET, GetMetrics(app_id=app_id), expect=expect, timeout=5.0)
    samples = [s for reply in found.replies.values() for s in reply.dynos]
    return sorted(samples, key=lambda s: s.dyno)


async def metric_series(
    bus: Bus, request: GetMetricSeries, *, expect: set[str] | None = None
) -> list[list[SeriesPoint]]:
    """Every log-shipper's steps of the app (a silent one's part is left out, logged)."""
    found = await _gather(bus, METRICS_SERIES_GET, request, expect, 5.0, "metric series")
    for notice in _silent(found, "share of the metric series"):
        log.warning("shippers.series_incomplete", notice=notice)
    return [samples.points for samples in found.replies.values()]
