"""The log-shipper's metrics: lines taken in by origin, lines dropped by reason.

Read at scrape time from counts the shipper keeps as plain integers (the line path is
the hottest here; a dict increment costs less than a labelled prometheus counter).
Origins: `dyno` (a dyno's output socket), `platform` (builder, API and scheduler lines),
`router` (access records). Reasons: `unknown_app` (lines for an app whose team never
became known, beyond the small waiting room), `drain_overflow` (a drain's full buffer,
Heroku's L10).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from slipway.services.log_shipper.shipper import Shipper

SOURCES = ("dyno", "platform", "router")
REASONS = ("unknown_app", "drain_overflow")


class LineCollector(Collector):
    """`slipway_log_lines_total{source}` and `slipway_log_lines_dropped_total{reason}`."""

    def __init__(self, shipper: Callable[[], Shipper | None]) -> None:
        self.shipper = shipper

    def collect(self) -> Iterable[Metric]:
        taken = CounterMetricFamily(
            "slipway_log_lines", "Log lines taken in, by origin", labels=["source"]
        )
        dropped = CounterMetricFamily(
            "slipway_log_lines_dropped", "Log lines dropped, by reason", labels=["reason"]
        )
        shipper = self.shipper()
        for source in SOURCES:
            taken.add_metric([source], shipper.lines_in[source] if shipper else 0)
        for reason in REASONS:
            if shipper is None:
                count = 0
            elif reason == "drain_overflow":
                count = shipper.drains.lost
            else:
                count = shipper.lines_dropped[reason]
            dropped.add_metric([reason], count)
        return [taken, dropped]
