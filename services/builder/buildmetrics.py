"""The builder's metrics: builds started, builds finished by outcome, and how long they took."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

# Builds take from seconds (a cached static site) to the builder's time limit (tens of
# minutes): buckets over that range, in seconds.
BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
OUTCOMES = ("succeeded", "failed")


class BuildMetrics:
    """`slipway_builds_started_total`, `slipway_builds_finished_total{outcome}` and
    `slipway_build_duration_seconds{outcome}`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.started = Counter(
            "slipway_builds_started", "Builds this builder started", registry=registry
        )
        self.finished = Counter(
            "slipway_builds_finished",
            "Builds this builder finished, by outcome (cancelled builds count as failed)",
            ["outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "slipway_build_duration_seconds",
            "Time from a build's start to its outcome",
            ["outcome"],
            buckets=BUCKETS,
            registry=registry,
        )
        for outcome in OUTCOMES:  # present at 0 from the start, so a rate() sees the first
            self.finished.labels(outcome)
            self.duration.labels(outcome)

    def finish(self, status: str, seconds: float) -> None:
        """Count one build that ended with `status`."""
        outcome = status if status in OUTCOMES else "failed"
        self.finished.labels(outcome).inc()
        self.duration.labels(outcome).observe(seconds)
