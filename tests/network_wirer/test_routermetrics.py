"""RouterMetrics.snapshot: one app's router series as numbers, for its metrics drain."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from slipway.contracts.logs import RouterAccess
from slipway.services.network_wirer.routermetrics import BUCKETS, RouterMetrics


def access(app_id: str, status: int, service_ms: int) -> RouterAccess:
    return RouterAccess(
        app_id=app_id,
        timestamp=0.0,
        method="GET",
        path="/",
        host="h",
        request_id="r",
        fwd="127.0.0.1",
        dyno="web.1",
        connect_ms=1,
        service_ms=service_ms,
        status=status,
        bytes=0,
    )


def test_a_snapshot_holds_the_apps_counts_and_cumulative_buckets_only() -> None:
    """Status classes, the histogram as Prometheus keeps it, its sum; never another app's."""
    metrics = RouterMetrics(CollectorRegistry())
    for status, ms in ((200, 2), (201, 99), (502, 4000)):
        metrics.observe(access("a", status, ms))
    metrics.observe(access("b", 404, 1))

    shot = metrics.snapshot("a")
    assert shot.responses == {"2xx": 2, "5xx": 1}
    assert shot.bucket_bounds == [float(b) for b in BUCKETS]
    assert len(shot.bucket_counts) == len(BUCKETS) + 1  # and +Inf: every answer
    assert shot.bucket_counts[0] == 1 and shot.bucket_counts[-1] == 3
    assert shot.bucket_counts == sorted(shot.bucket_counts)
    assert abs(shot.seconds_sum - (0.003 + 0.1 + 4.001)) < 1e-9
    assert metrics.snapshot("b").responses == {"4xx": 1}


def test_an_app_without_requests_or_forgotten_has_an_empty_snapshot() -> None:
    """No series yet, or removed with the app: nothing, not zeros of someone else."""
    metrics = RouterMetrics(CollectorRegistry())
    assert metrics.snapshot("new").responses == {}
    metrics.observe(access("gone", 200, 1))
    metrics.forget("gone")
    shot = metrics.snapshot("gone")
    assert (shot.responses, shot.bucket_counts, shot.seconds_sum) == ({}, [], 0.0)
