"""Dyno metrics: CPU and memory from each dyno's cgroup, restarts from the scheduler.

Every `metrics_interval` seconds each running dyno is sampled and the result is
logged as Heroku's runtime-metrics line:

    heroku[web.1]: source=web.1 dyno=heroku.<app>.<container> sample#load_avg_1m=0.02
        sample#memory_total=21.05MB sample#memory_rss=18.20MB sample#memory_cache=2.85MB
        sample#memory_quota=512.00MB sample#restarts=0

The numbers are the kernel's, read the way `docker stats` computes them, without
the Docker socket (whoever holds it is root on the host):

- CPU: the cgroup's CPU time between two readings over the host's CPU time
  between them (/proc/stat: user to softirq), times the online CPUs, in percent;
  the first sample of a dyno reads twice, a second apart, as Docker does;
- memory in use: usage minus inactive file pages (`total_inactive_file` in
  cgroup v1, `inactive_file` in v2), rss and cache from memory.stat;
- the quota: the cgroup's soft limit (v1 `memory.soft_limit_in_bytes`, v2
  `memory.low`), which the scheduler sets to the size's memory while the hard
  limit is twice that (containers.py); a container without one (made before the
  reservation existed) has its hard limit as quota, the host's memory when unlimited.

R14, as Heroku: a sample whose rss (Heroku counts rss and swap, not cache; dynos
have no swap) is over the quota is followed by `Process running mem=600M(117.2%)`
and `Error R14 (Memory quota exceeded)`, so at most once per sample per dyno.
R15 is the scheduler's to say (it sees the kernel's kill); both are counted per
app for `slipway_dyno_memory_errors_total` (memoryerrors.py).

cgroup v1 (`/sys/fs/cgroup/{cpuacct,memory}/docker/<id>/`, cgroupfs driver) and
v2 (`/sys/fs/cgroup/system.slice/docker-<id>.scope/` with systemd, or
`/sys/fs/cgroup/docker/<id>/`). `load_avg_1m` is the CPU in use (in CPUs)
smoothed over a minute, the closest a container's cgroup gives to Linux's
run-queue load. Restarts are the scheduler's (`Dyno.restart_count`). The latest
sample per dyno answers `METRICS_GET`; every sample also goes into the app's
minute bucket (series.py), which answers `METRICS_SERIES_GET`.
"""

from __future__ import annotations

import asyncio
import collections
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from slipway.contracts.log_shipper import DynoSample
from slipway.contracts.scheduler import R14_TEXT
from slipway.libs.waits import wait_for_event
from slipway.services.log_shipper import formats
from slipway.services.log_shipper.dynos import Dyno, DynoRegistry
from slipway.services.log_shipper.history import History, RawLine
from slipway.services.log_shipper.series import Series

log = structlog.get_logger("slipway.log_shipper.metrics")

MB = 1024 * 1024
CGROUP_ROOT = Path("/sys/fs/cgroup")
FIRST_GAP = 1.0  # seconds between the two readings of a dyno's first sample
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Cgroup:
    """Where one container's CPU and memory accounting lives."""

    v2: bool
    cpu: Path  # v1: the cpuacct folder; v2: the container's folder
    memory: Path


@dataclass(frozen=True, slots=True)
class Reading:
    """One look at a container's cgroup and the host's CPU time."""

    cpu_ns: int
    system_ns: int
    online_cpus: int
    usage: int
    stats: dict[str, int]
    limit: int
    reservation: int = 0  # the soft limit, the dyno's quota (0: none set)


def find_cgroup(container_id: str, root: Path = CGROUP_ROOT) -> Cgroup | None:
    """The container's cgroup folders (None: not running, or a layout not known here)."""
    if (root / "cgroup.controllers").exists():  # the unified hierarchy alone: v2
        for folder in (
            root / "system.slice" / f"docker-{container_id}.scope",
            root / "docker" / container_id,
        ):
            if (folder / "cpu.stat").exists():
                return Cgroup(True, folder, folder)
        return None
    for cpu in ("cpuacct", "cpu,cpuacct"):
        folder = root / cpu / "docker" / container_id
        memory = root / "memory" / "docker" / container_id
        if (folder / "cpuacct.usage").exists() and memory.is_dir():
            return Cgroup(False, folder, memory)
    return None


def system_cpu_ns(proc_stat: str) -> int:
    """The host's CPU time in ns, as Docker counts it: /proc/stat's first 7 `cpu` fields."""
    for line in proc_stat.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            return sum(int(v) for v in parts[1:8]) * 1_000_000_000 // _CLK_TCK
    raise ValueError("no cpu line in /proc/stat")


def host_memory() -> int:
    """MemTotal in bytes: Docker's limit for a container without one."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _stat_file(path: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            found[key] = int(value)
    return found


def read(cgroup: Cgroup) -> Reading:
    """Read the container's counters now (FileNotFoundError: it stopped)."""
    if cgroup.v2:
        cpu_ns = _stat_file(cgroup.cpu / "cpu.stat")["usage_usec"] * 1000
        usage = int((cgroup.memory / "memory.current").read_text())
        raw_limit = (cgroup.memory / "memory.max").read_text().strip()
        limit = 0 if raw_limit == "max" else int(raw_limit)
        reservation = _soft_limit(cgroup.memory / "memory.low")
    else:
        cpu_ns = int((cgroup.cpu / "cpuacct.usage").read_text())
        usage = int((cgroup.memory / "memory.usage_in_bytes").read_text())
        limit = int((cgroup.memory / "memory.limit_in_bytes").read_text())
        reservation = _soft_limit(cgroup.memory / "memory.soft_limit_in_bytes")
    stats = _stat_file(cgroup.memory / "memory.stat")
    total = host_memory()
    if limit == 0 or (total and limit > total):
        limit = total
    if reservation >= limit:  # unset (v1 says "unlimited" with a huge number) or no lower
        reservation = 0
    return Reading(
        cpu_ns=cpu_ns,
        system_ns=system_cpu_ns(Path("/proc/stat").read_text()),
        online_cpus=os.sysconf("SC_NPROCESSORS_ONLN"),
        usage=usage,
        stats=stats,
        limit=limit,
        reservation=reservation,
    )


def _soft_limit(path: Path) -> int:
    """A soft limit in bytes (0: unset, or a kernel without the file)."""
    try:
        raw = path.read_text().strip()
    except FileNotFoundError:
        return 0
    return int(raw) if raw.isdigit() else 0


def cpu_percent(before: Reading, now: Reading) -> float:
    """Percent of one CPU used between two readings (`docker stats`' CPU %)."""
    used = now.cpu_ns - before.cpu_ns
    system = now.system_ns - before.system_ns
    if used <= 0 or system <= 0:
        return 0.0
    return used / system * now.online_cpus * 100.0


def memory(reading: Reading) -> tuple[float, float, float, float]:
    """(in use, rss, cache, quota) in MB; in use as `docker stats` shows it."""
    stats = reading.stats
    if "total_inactive_file" in stats:  # v1
        inactive = stats["total_inactive_file"]
        rss, cache = stats.get("total_rss", 0), stats.get("total_cache", 0)
    else:
        inactive = stats.get("inactive_file", 0)
        rss, cache = stats.get("anon", 0), stats.get("file", 0)
    used = reading.usage - inactive if inactive < reading.usage else reading.usage
    quota = reading.reservation or reading.limit
    return used / MB, rss / MB, cache / MB, quota / MB


def r14_lines(rss: float, quota: float) -> list[str]:
    """Heroku's R14 pair when `rss` (MB) is over `quota` (MB); none otherwise."""
    if quota <= 0 or rss <= quota:
        return []
    return [f"Process running mem={rss:.0f}M({rss / quota * 100:.1f}%)", R14_TEXT]


async def measure(
    container_id: str, before: Reading | None, root: Path = CGROUP_ROOT
) -> tuple[float, Reading] | None:
    """CPU % since `before` (None: over `FIRST_GAP`, as Docker's first sample) and a reading.

    None when the container is not running (no cgroup, or it went away meanwhile).
    """
    cgroup = find_cgroup(container_id, root)
    if cgroup is None:
        return None
    try:
        if before is None:
            before = read(cgroup)
            await asyncio.sleep(FIRST_GAP)
        now = read(cgroup)
    except (FileNotFoundError, ProcessLookupError):
        return None
    return cpu_percent(before, now), now


class Metrics:
    """Samples running dynos periodically; keeps the latest sample of each."""

    def __init__(
        self,
        registry: DynoRegistry,
        history: History,
        interval: float,
        cgroup_root: Path = CGROUP_ROOT,
        series: Series | None = None,
    ) -> None:
        self.registry = registry
        self.series = series
        self.history = history
        self.interval = interval
        self.cgroup_root = cgroup_root
        self.latest: dict[str, tuple[str, DynoSample]] = {}  # container id -> (app id, sample)
        self._load: dict[str, float] = {}
        self._previous: dict[str, Reading] = {}
        # (app id, "R14" or "R15") -> occurrences on this host since start, for the alerts.
        self.memory_errors: collections.Counter[tuple[str, str]] = collections.Counter()

    def forget(self, app_id: str) -> None:
        """The app was destroyed: its error counts leave the metrics (no series per dead app)."""
        for key in [k for k in self.memory_errors if k[0] == app_id]:
            del self.memory_errors[key]

    def for_app(self, app_id: str) -> list[DynoSample]:
        """The latest sample of each dyno of an app, by dyno name."""
        samples = [s for app, s in self.latest.values() if app == app_id]
        return sorted(samples, key=lambda s: s.dyno)

    async def run(self, stopping: asyncio.Event) -> None:
        """Sample every `interval` seconds until `stopping`."""
        while not stopping.is_set():
            await wait_for_event(stopping, self.interval)
            if stopping.is_set():
                return
            dynos = self.registry.running
            tick = time.time()  # one time for the pass: its samples and its count share a minute
            taken = await asyncio.gather(
                *(self.sample(d, tick) for d in dynos), return_exceptions=True
            )
            if self.series is not None:
                apps = {
                    d.app_id for d, t in zip(dynos, taken, strict=True) if isinstance(t, DynoSample)
                }
                self.series.passed(apps, tick)
            sampled = {d.container_id for d in dynos}
            for container_id in self.latest.keys() - sampled:
                self.latest.pop(container_id, None)
            for container_id in self._previous.keys() - sampled:
                self._previous.pop(container_id, None)
                self._load.pop(container_id, None)

    async def measure(self, container_id: str) -> tuple[float, Reading] | None:
        """CPU % since this dyno's previous reading, and the new reading (None: not running)."""
        measured = await measure(container_id, self._previous.get(container_id), self.cgroup_root)
        if measured is None:
            self._previous.pop(container_id, None)
        else:
            self._previous[container_id] = measured[1]
        return measured

    async def sample(self, dyno: Dyno, tick: float | None = None) -> DynoSample | None:
        """Sample one dyno, remember it and log its metrics line (None: not running).

        `tick` is the time of the sampling pass, under which the app's series counts it.
        """
        measured = await self.measure(dyno.container_id)
        if measured is None:
            return None
        cpu, reading = measured
        decay = math.exp(-self.interval / 60.0)
        load = self._load.get(dyno.container_id, cpu / 100.0) * decay + cpu / 100.0 * (1 - decay)
        self._load[dyno.container_id] = load
        total, rss, cache, quota = memory(reading)
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
            restarts=dyno.restarts,
        )
        self.latest[dyno.container_id] = (dyno.app_id, sample)
        if self.series is not None:
            # Heroku's memory_total is rss + cache (+ swap, none here), not `docker stats`' use.
            at = sample.at if tick is None else tick
            self.series.sample(dyno.app_id, dyno.container_id, at, cpu, rss + cache, quota)
        text = formats.memory_line(
            {
                "source": dyno.dyno,
                "dyno": f"heroku.{dyno.app_id}.{dyno.container_id[:12]}",
                "sample#load_avg_1m": f"{sample.load_avg_1m:.2f}",
                "sample#memory_total": f"{total:.2f}MB",
                "sample#memory_rss": f"{rss:.2f}MB",
                "sample#memory_cache": f"{cache:.2f}MB",
                "sample#memory_quota": f"{quota:.2f}MB",
                "sample#restarts": str(dyno.restarts),
            }
        )
        lines: list[RawLine] = [(sample.at, "heroku", dyno.dyno, text, False)]
        over = r14_lines(rss, quota)
        if over:
            self.memory_errors[(dyno.app_id, "R14")] += 1
            lines += [(sample.at, "heroku", dyno.dyno, line, False) for line in over]
        self.history.add(dyno.app_id, dyno.team_id, lines)
        return sample
