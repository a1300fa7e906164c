"""The scheduler's metrics: its dynos by state and their crash restarts, read at scrape time.

Counted from the runtime's own table when Prometheus asks, rather than kept up to date
by hand at every state change: the table is the truth, and a gauge set in one place
and forgotten in another would drift from it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import get_args

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from slipway.contracts.scheduler import DynoState
from slipway.services.scheduler.runtime import Runtime

STATES: tuple[str, ...] = get_args(DynoState)


class DynoCollector(Collector):
    """`slipway_dynos{state}` and `slipway_dyno_restarts_total` from the live runtime."""

    def __init__(self, runtime: Callable[[], Runtime | None]) -> None:
        self.runtime = runtime

    def collect(self) -> Iterable[Metric]:
        dynos = GaugeMetricFamily(
            "slipway_dynos", "Dynos this scheduler tracks, by state", labels=["state"]
        )
        restarts = CounterMetricFamily(
            "slipway_dyno_restarts", "Crashed dynos restarted by this scheduler process"
        )
        rt = self.runtime()
        counts: Counter[str] = Counter(t.state for t in rt.dynos.values()) if rt else Counter()
        for state in STATES:  # every state, zeros included: a query sees it go to 0
            dynos.add_metric([state], counts[state])
        restarts.add_metric([], rt.restarts if rt is not None else 0)
        return [dynos, restarts]
