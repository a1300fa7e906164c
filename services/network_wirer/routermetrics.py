"""The router's metrics per app, from the access records network-wirer already joins.

`slipway_router_responses_total{app_id,status_class}` and `slipway_router_response_seconds
{app_id}`: the app's *id* only (bounded by the number of apps, and no customer string),
the status as its class (2xx ... 5xx), never a path or a host. An app's series are
removed when the app is destroyed, so the label set does not grow with apps long gone.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from slipway.contracts.logs import RouterAccess
from slipway.contracts.router import AppRouterMetrics

# Time from the router's connect to the dyno's answer: milliseconds (a static page) to
# the router's 30 s timeout (H12).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


class RouterMetrics:
    """Counts and times each app's requests through the router."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.responses = Counter(
            "slipway_router_responses",
            "Requests the router answered for an app, by status class",
            ["app_id", "status_class"],
            registry=registry,
        )
        self.seconds = Histogram(
            "slipway_router_response_seconds",
            "Time from the router's connect to the app's answer (connect + service)",
            ["app_id"],
            buckets=BUCKETS,
            registry=registry,
        )
        self._classes: dict[str, set[str]] = {}

    def observe(self, access: RouterAccess) -> None:
        """Count one access record of an app the router knows."""
        status_class = _CLASSES.get(access.status // 100, "other")
        self.responses.labels(access.app_id, status_class).inc()
        self.seconds.labels(access.app_id).observe((access.connect_ms + access.service_ms) / 1000)
        self._classes.setdefault(access.app_id, set()).add(status_class)

    def forget(self, app_id: str) -> None:
        """Remove a destroyed app's series."""
        classes = self._classes.pop(app_id, None)
        if classes is None:
            return  # it never had a request
        for status_class in classes:
            self.responses.remove(app_id, status_class)
        self.seconds.remove(app_id)

    def snapshot(self, app_id: str) -> AppRouterMetrics:
        """The app's counters as numbers, for the gateway's per-app scrape endpoint."""
        responses: dict[str, int] = {}
        bounds: list[float] = []
        counts: list[int] = []
        total = 0.0
        # collect() is the library's own reading of the series: no private fields.
        for family in (*self.responses.collect(), *self.seconds.collect()):
            for sample in family.samples:
                if sample.labels.get("app_id") != app_id:
                    continue
                if sample.name == "slipway_router_responses_total":
                    responses[sample.labels["status_class"]] = int(sample.value)
                elif sample.name == "slipway_router_response_seconds_bucket":
                    if sample.labels["le"] != "+Inf":
                        bounds.append(float(sample.labels["le"]))
                    counts.append(int(sample.value))
                elif sample.name == "slipway_router_response_seconds_sum":
                    total = sample.value
        return AppRouterMetrics(
            app_id=app_id,
            responses=responses,
            bucket_bounds=bounds,
            bucket_counts=counts,
            seconds_sum=total,
        )
