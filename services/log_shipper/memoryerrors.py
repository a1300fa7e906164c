"""The log-shipper's count of memory quota errors: `slipway_dyno_memory_errors_total`.

One series per app and code (`R14`: a sample over the quota, `R15`: the kernel killed
the dyno past its hard limit), counted on the dyno's host since the log-shipper started
(metrics.py keeps the counts), so an alert evaluator can read a rate without parsing
app logs. Read at scrape time, like linecounts.py: the sampler keeps plain integers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from slipway.services.log_shipper.shipper import Shipper


class MemoryErrorCollector(Collector):
    """`slipway_dyno_memory_errors_total{app_id,code}` from the sampler's counts."""

    def __init__(self, shipper: Callable[[], Shipper | None]) -> None:
        self.shipper = shipper

    def collect(self) -> Iterable[Metric]:
        errors = CounterMetricFamily(
            "slipway_dyno_memory_errors",
            "Heroku R14 (over quota) and R15 (killed past the hard limit) errors, by app",
            labels=["app_id", "code"],
        )
        shipper = self.shipper()
        counts = dict(shipper.metrics.memory_errors) if shipper is not None else {}
        for (app_id, code), count in sorted(counts.items()):
            errors.add_metric([app_id, code], count)
        return [errors]
