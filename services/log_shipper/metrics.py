"""Dyno metrics: CPU, memory and restarts of every running dyno, from Docker's stats API.

Every `metrics_interval` seconds each running dyno is sampled (one-shot stats,
which Docker answers with the current and the previous sample, so CPU is a
rate) and the result is logged as Heroku's runtime-metrics line:

    heroku[web.1]: source=web.1 dyno=heroku.<app>.<container> sample#load_avg_1m=0.02
        sample#memory_total=21.05MB sample#memory_rss=18.20MB sample#memory_cache=2.85MB
        sample#memory_quota=512.00MB sample#restarts=0

`load_avg_1m` is the CPU in use (in CPUs) smoothed over a minute, the closest a
container's cgroup gives to Linux's run-queue load. Restarts are the larger of
Docker's RestartCount and the scheduler's `Dyno.restart_count` (DYNO_CHANGED).
The latest sample per dyno answers `METRICS_GET`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import Any

import aiodocker
import structlog

from slipway.contracts.log_shipper import DynoSample
from slipway.services.log_shipper import formats
from slipway.services.log_shipper.dynos import Dyno, DynoRegistry
from slipway.services.log_shipper.history import History

log = structlog.get_logger("slipway.log_shipper.metrics")

MB = 1024 * 1024


def cpu_percent(stats: dict[str, Any]) -> float:
    """Percent of one CPU used between Docker's previous and current sample."""
    cpu, pre = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    used = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (pre.get("cpu_usage") or {}).get(
        "total_usage", 0
    )
    system = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    per_cpu = (cpu.get("cpu_usage") or {}).get("percpu_usage") or []
    cpus = cpu.get("online_cpus") or len(per_cpu) or 1
    if used <= 0 or system <= 0:
        return 0.0
    return float(used) / float(system) * cpus * 100.0


def memory(stats: dict[str, Any]) -> tuple[float, float, float, float]:
    """(total, rss, cache, quota) in MB; cgroup v1 and v2 name the parts differently."""
    mem = stats.get("memory_stats") or {}
    detail = mem.get("stats") or {}
    usage = float(mem.get("usage", 0))
    cache = float(detail.get("cache", detail.get("inactive_file", 0)))
    rss = float(detail.get("rss", detail.get("anon", max(usage - cache, 0))))
    quota = float(mem.get("limit", 0))
    return max(usage - cache, 0) / MB, rss / MB, cache / MB, quota / MB


class Metrics:
    """Samples running dynos periodically; keeps the latest sample of each."""

    def __init__(
        self, docker: aiodocker.Docker, registry: DynoRegistry, history: History, interval: float
    ) -> None:
        self.docker = docker
        self.registry = registry
        self.history = history
        self.interval = interval
        self.latest: dict[str, tuple[str, DynoSample]] = {}  # container id -> (app id, sample)
        self.scheduler_restarts: dict[tuple[str, str], int] = {}
        self._load: dict[str, float] = {}

    def for_app(self, app_id: str) -> list[DynoSample]:
        """The latest sample of each dyno of an app, by dyno name."""
        samples = [s for app, s in self.latest.values() if app == app_id]
        return sorted(samples, key=lambda s: s.dyno)

    async def run(self, stopping: asyncio.Event) -> None:
        """Sample every `interval` seconds until `stopping`."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.interval)
            if stopping.is_set():
                return
            dynos = list(self.registry.running.values())
            await asyncio.gather(*(self.sample(d) for d in dynos), return_exceptions=True)
            gone = self.latest.keys() - {d.container_id for d in dynos}
            for container_id in gone:
                self.latest.pop(container_id, None)

    async def sample(self, dyno: Dyno) -> DynoSample | None:
        """Sample one dyno, remember it and log its metrics line."""
        try:
            container = self.docker.containers.container(dyno.container_id)
            stats = (await container.stats(stream=False))[0]
            info = await container.show()
        except aiodocker.DockerError as exc:
            log.info("metrics.unavailable", container=dyno.container_id[:12], error=str(exc))
            return None
        if not (info.get("State") or {}).get("Running"):
            return None
        cpu = cpu_percent(stats)
        decay = math.exp(-self.interval / 60.0)
        load = self._load.get(dyno.container_id, cpu / 100.0) * decay + cpu / 100.0 * (1 - decay)
        self._load[dyno.container_id] = load
        total, rss, cache, quota = memory(stats)
        restarts = max(
            int(info.get("RestartCount") or 0),
            self.scheduler_restarts.get((dyno.app_id, dyno.dyno), 0),
        )
        sample = DynoSample(
            dyno=dyno.dyno,
            container_id=dyno.container_id,
            at=time.time(),
            cpu_percent=round(cpu, 2),
            load_avg_1m=round(load, 2),
            memory_total_mb=round(total, 2),
            memory_rss_mb=round(rss, 2),
            memory_cache_mb=round(cache, 2),
            memory_quota_mb=round(quota, 2),
            restarts=restarts,
        )
        self.latest[dyno.container_id] = (dyno.app_id, sample)
        text = formats.memory_line(
            {
                "source": dyno.dyno,
                "dyno": f"heroku.{dyno.app_id}.{dyno.container_id[:12]}",
                "sample#load_avg_1m": f"{sample.load_avg_1m:.2f}",
                "sample#memory_total": f"{total:.2f}MB",
                "sample#memory_rss": f"{rss:.2f}MB",
                "sample#memory_cache": f"{cache:.2f}MB",
                "sample#memory_quota": f"{quota:.2f}MB",
                "sample#restarts": str(restarts),
            }
        )
        self.history.add(dyno.app_id, dyno.team_id, [(sample.at, "heroku", dyno.dyno, text, False)])
        return sample
