"""An app's metrics over the last hour or day, for charts: GET /apps/{app}/metrics/series.

    GET /apps/{app}/metrics/series?period=1h    60 points of 60 s, oldest first
    GET /apps/{app}/metrics/series?period=24h   288 points of 300 s

Each log-shipper keeps per-minute aggregates of the apps it saw (its dynos' samples,
the router records its queue group handed it) and answers `METRICS_SERIES_GET` with
its steps; the gateway adds them up. CPU and memory add across hosts (each host sums
its own dynos), counts add, and response-time histograms add bucket by bucket, so the
percentiles read from the sum are those of every request, whichever shipper took it.
Every step of the period is answered: where nobody measured anything the values are
null, except that the request counts are 0 once the app existed (a quiet app, not a
gap). A log-shipper that does not answer leaves its part out; the read does not fail.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field

from aiohttp import web

from slipway.contracts.log_shipper import (
    GetMetricSeries,
    SeriesPoint,
    add_counts,
    percentile_ms,
)
from slipway.services.gateway.core.state import GATEWAY
from slipway.services.gateway.http.auth import Action, app_for
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.gateway.http.routing import Routes, reply
from slipway.services.gateway.http.views import MetricPoint, MetricSeries
from slipway.services.gateway.logs import shippers

routes = Routes("metric-series")

PERIODS = {"1h": (60, 60), "24h": (300, 288)}  # period -> (step seconds, points)


@dataclass
class _Sum:
    """One step, added up over the log-shippers that measured anything in it."""

    cpu: float | None = None
    memory_mb: float | None = None
    quota_mb: float | None = None
    counts: list[int] = field(default_factory=lambda: [0] * 5)  # requests, 2xx..5xx
    response_ms: list[int] = field(default_factory=list)

    def add(self, point: SeriesPoint) -> None:
        self.cpu = _plus(self.cpu, point.cpu_percent)
        self.memory_mb = _plus(self.memory_mb, point.memory_mb)
        self.quota_mb = _plus(self.quota_mb, point.memory_quota_mb)
        more = (
            point.requests,
            point.status_2xx,
            point.status_3xx,
            point.status_4xx,
            point.status_5xx,
        )
        self.counts = [a + b for a, b in zip(self.counts, more, strict=True)]
        self.response_ms = add_counts(self.response_ms, point.response_ms)


def _plus(a: float | None, b: float | None) -> float | None:
    if b is None:
        return a
    return b if a is None else a + b


def grid(now: float, step: int, count: int) -> list[int]:
    """The starts of the `count` steps ending with the one holding `now`, oldest first."""
    last = int(now // step) * step
    return [last - (count - 1 - i) * step for i in range(count)]


def merge(
    answers: list[list[SeriesPoint]], starts: list[int], step: int, born: float
) -> list[MetricPoint]:
    """Every shipper's steps added into one point per start (`born`: the app's creation)."""
    sums: dict[int, _Sum] = {at: _Sum() for at in starts}
    for points in answers:
        for point in points:
            found = sums.get(point.at)
            if found is not None:  # a step outside the grid (a clock apart): not ours to show
                found.add(point)
    merged: list[MetricPoint] = []
    for at in starts:
        s = sums[at]
        existed = at + step > born or s.counts[0] > 0
        counts: list[int | None] = list(s.counts) if existed else [None] * 5
        merged.append(
            MetricPoint(
                at=at,
                cpu_percent=_round(s.cpu),
                memory_mb=_round(s.memory_mb),
                memory_quota_mb=_round(s.quota_mb),
                requests=counts[0],
                status_2xx=counts[1],
                status_3xx=counts[2],
                status_4xx=counts[3],
                status_5xx=counts[4],
                p50_ms=percentile_ms(s.response_ms, 0.50),
                p95_ms=percentile_ms(s.response_ms, 0.95),
            )
        )
    return merged


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _created(text: str) -> float:
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:  # not expected from our own rows: then the app is as old as any step
        return 0.0


@routes.get(
    "/apps/{app}/metrics/series",
    summary="The app's CPU, memory, requests, status classes and response times over"
    " ?period=1h (60 points of 60 s) or 24h (288 points of 300 s)",
    response=MetricSeries,
    extension=True,
)
async def metric_series(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read its metrics")
    period = request.query.get("period", "1h")
    if period not in PERIODS:
        raise InvalidParams(f"period must be 1h or 24h, not {period[:20]!r}.")
    step, count = PERIODS[period]
    starts = grid(time.time(), step, count)
    gw = request.app[GATEWAY]
    ask = GetMetricSeries(app_id=app.id, since=starts[0], step=step)
    answers = await shippers.metric_series(gw.bus, ask, expect=await gw.shipper_hosts.expected())
    points = merge(answers, starts, step, _created(app.created_at))
    return reply(MetricSeries(period=period, step=step, points=points))
