"""Each service's metrics, in the Prometheus text format or OpenMetrics, for the operator.

Every ServiceApp owns one `Metrics`: its own `CollectorRegistry` (never the library's
global one: tests run several services in one process), the metrics every service has
(bus calls and errors, commands and events handled, consumer lag, start time, disk use
of its state folder, the `process_*` defaults) and whatever its own code adds.

They are served at `/metrics` on a unix socket, `<home>/<service>/metrics.sock`
(`metrics-<instance>.sock` for a named instance), 0600 in the service's 0700 state folder:
they are the operator's, not the customers'. A loopback TCP port is opt-in
(`SLIPWAY_METRICS_PORT`); another address only when the operator names it
(`SLIPWAY_METRICS_HOST`). `SLIPWAY_METRICS=off` takes the instrumentation off the
request paths (the gateway's middleware, the bus) and serves nothing.

    curl --unix-socket var/gateway/metrics.sock http://x/metrics

Labels are bounded: route templates, contract names, error codes, states, and app ids
where a metric is per app (and then removed with the app). Never a path with ids, a
token, an address or a customer's string.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import itertools
import os
import stat
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import (
    CONTENT_TYPE_PLAIN_0_0_4,
    choose_encoder,
    generate_latest,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from slipway.libs import diskwatch
from slipway.libs.errors import SlipwayError

log = structlog.get_logger("slipway.metrics")

# The kernel's limit on a unix socket's path (sun_path is 108 bytes, NUL included).
MAX_SOCKET_PATH = 107
# Bus and HTTP handling on this platform takes from a fraction of a millisecond (a cached
# lookup) to seconds (a build's RPCs): buckets spread over that range, base unit seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# The `le` labels of those buckets, as the exposition spells them.
_LE = [*(str(float(bound)) for bound in LATENCY_BUCKETS), "+Inf"]
# A scrape must not hang on a slow refresh (NATS restarting): what did not finish in time
# keeps its previous value.
REFRESH_TIMEOUT = 2.0

Refresh = Callable[[], Awaitable[None]]


class UnsafeMetricsFolder(RuntimeError):
    """The folder the metrics socket would live in could let another user reach or swap it."""


def socket_path(home: Path, service: str, instance: str | None = None) -> Path:
    """Where service `service` (instance `instance`, if named) serves its metrics."""
    name = "metrics.sock" if instance is None else f"metrics-{instance}.sock"
    return home / service / name


def check_private_folder(folder: Path) -> None:
    """Refuse a folder that is not a directory of this user's alone (0700 or stricter).

    Someone else's folder, a link or one others may enter would let them replace the
    socket with theirs or connect to it; it is refused, not repaired, as the router's
    socket folders are (libs/haproxy/paths.py).
    """
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeMetricsFolder(f"{folder} is not a directory")
    if info.st_uid != os.geteuid():
        raise UnsafeMetricsFolder(f"{folder} belongs to uid {info.st_uid}, not {os.geteuid()}")
    if info.st_mode & 0o077:
        raise UnsafeMetricsFolder(
            f"{folder} is open to other users (mode {stat.S_IMODE(info.st_mode):o}):"
            f" chmod 700 {folder}"
        )


def bounded_code(code: str) -> str:
    """`code` if it is one of Slipway's error codes, else "other".

    A remote error's code comes off the wire: as a label it must come from a known,
    finite set, whatever a peer sends.
    """
    if code == "ok":
        return code
    known = _known_codes()
    if code not in known:
        # Error classes defined after the first call (imported later) are found again.
        _known_codes.cache_clear()
        known = _known_codes()
    return code if code in known else "other"


@functools.cache
def _known_codes() -> frozenset[str]:
    codes: set[str] = set()
    pending: list[type[SlipwayError]] = [SlipwayError]
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    return frozenset(codes)


class BusMetrics:
    """What the bus counts: RPCs served and made, errors, commands and events handled."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "slipway_bus_requests",
            "RPCs served or made, by direction, contract and outcome (ok or the error code)",
            ["direction", "subject_kind", "verb", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "slipway_bus_request_duration_seconds",
            "Time to serve or make an RPC",
            ["direction", "subject_kind", "verb"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "slipway_bus_errors",
            "Error replies served or received, by error code",
            ["code"],
            registry=registry,
        )
        self.handled = Counter(
            "slipway_bus_messages_handled",
            "Commands and events handled, by subject and outcome (ok, retry, dead_letter)",
            ["kind", "outcome"],
            registry=registry,
        )

    def rpc(self, direction: str, kind: str, verb: str, outcome: str, seconds: float) -> None:
        """Count one RPC served (`direction` "served") or made ("made")."""
        self.requests.labels(direction, kind, verb, outcome).inc()
        self.duration.labels(direction, kind, verb).observe(seconds)
        if outcome != "ok":
            self.errors.labels(outcome).inc()


class _Timings:
    """One (method, route, status)'s count, sum and bucket counts (not cumulative)."""

    __slots__ = ("buckets", "count", "labels", "total")

    def __init__(self, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one: above every bound


class HttpMetrics(Collector):
    """The gateway's requests: counted and timed by method, route template and status.

    Kept as plain numbers and turned into `slipway_http_requests_total` and the
    `slipway_http_request_duration_seconds` histogram at scrape time: this is on every
    request's path, and a labelled client counter and histogram (a lock and a lookup per
    call each) cost several times what an increment here does. The middleware and the
    scrape run in the same event loop, so nothing here needs a lock.
    """

    # The methods a customer may send are unbounded strings: anything else is "other".
    METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

    def __init__(self, registry: CollectorRegistry) -> None:
        # Bounded as the labels are: the API's routes x methods x statuses it answers.
        self._series: dict[tuple[str, str | None, int], _Timings] = {}
        registry.register(self)

    def observe(self, method: str, route: str | None, status: int, seconds: float) -> None:
        """Count one answered request; `route` is the matched template, None when none."""
        series = self._series.get((method, route, status))
        if series is None:
            series = self._new(method, route, status)
        series.count += 1
        series.total += seconds
        series.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def _new(self, method: str, route: str | None, status: int) -> _Timings:
        known = method if method in self.METHODS else "other"
        labels = (known, route or "unmatched", str(status))
        # A hostile method string shares the "other" series and never becomes a key.
        key = (method, route, status) if known != "other" else ("other", route, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Timings(labels)
        return series

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "slipway_http_requests",
            "HTTP requests answered, by method, route template and status",
            labels=["method", "route", "status"],
        )
        duration = HistogramMetricFamily(
            "slipway_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template",
            labels=["method", "route"],
        )
        merged: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
        for series in self._series.values():
            requests.add_metric(list(series.labels), series.count)
            buckets, total = merged.setdefault(
                series.labels[:2], ([0] * len(series.buckets), [0.0])
            )
            for i, n in enumerate(series.buckets):
                buckets[i] += n
            total[0] += series.total
        for (method, route), (buckets, total) in sorted(merged.items()):
            cumulative = list(itertools.accumulate(buckets))
            duration.add_metric(
                [method, route], list(zip(_LE, cumulative, strict=True)), sum_value=total[0]
            )
        return [requests, duration]


HTTP_METRICS = web.AppKey("slipway.metrics.http", HttpMetrics)


def instrument(app: web.Application, metrics: Metrics) -> None:
    """Let `app`'s middleware count its requests in `metrics` (nothing when they are off)."""
    http = metrics.enable_http()
    if http is not None:
        app[HTTP_METRICS] = http


class DiskCollector(Collector):
    """Disk use of each watched folder (state folder, Docker's data root), read at scrape."""

    def __init__(self) -> None:
        self.folders: dict[str, Path] = {}

    def collect(self) -> Iterable[Metric]:
        ratio = GaugeMetricFamily(
            "slipway_disk_used_ratio",
            "Share of the filesystem holding the folder that is used (0 to 1)",
            labels=["folder"],
        )
        free = GaugeMetricFamily(
            "slipway_disk_free_bytes",
            "Bytes still free for unprivileged writers on the filesystem holding the folder",
            labels=["folder"],
        )
        for label, path in sorted(self.folders.items()):
            try:
                # The disk-pressure policy's own measure (df's Use%), so both agree.
                reading = diskwatch.measure(label, path)
            except OSError:
                continue  # gone or unreadable: no sample rather than a wrong one
            ratio.add_metric([label], reading.used_percent / 100)
            free.add_metric([label], reading.free_bytes)
        return [ratio, free]


class Metrics:
    """One service process's registry, its standard metrics and its scrape endpoint."""

    def __init__(self, service: str, *, enabled: bool = True) -> None:
        self.service = service
        self.enabled = enabled
        self.registry = CollectorRegistry()
        self._refreshes: list[Refresh] = []
        self.disks = DiskCollector()
        self.bus: BusMetrics | None = None
        self.http: HttpMetrics | None = None
        self.lag_of: Any = None  # the Bus whose durable consumers are read at each scrape
        if not enabled:
            return
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        # The GC collector holds no state of its own: the default one is shared safely.
        self.registry.register(GC_COLLECTOR)
        self.registry.register(self.disks)
        self.bus = BusMetrics(self.registry)
        start = Gauge(
            "slipway_service_start_time_seconds",
            "When this service process started, in seconds since the epoch",
            ["service"],
            registry=self.registry,
        )
        start.labels(service).set(time.time())
        self._lag = Gauge(
            "slipway_consumer_pending",
            "Messages waiting for this service's durable consumer: not yet delivered or unacked",
            ["stream", "consumer"],
            registry=self.registry,
        )
        self._refreshes.append(self._refresh_lag)

    def enable_http(self) -> HttpMetrics | None:
        """The HTTP request metrics (the gateway's), made once; None when metrics are off."""
        if self.enabled and self.http is None:
            self.http = HttpMetrics(self.registry)
        return self.http

    def on_scrape(self, refresh: Refresh) -> None:
        """Run `refresh` before each scrape (values that need I/O: consumer lag, catalogs)."""
        self._refreshes.append(refresh)

    async def _refresh_lag(self) -> None:
        # num_pending + num_ack_pending of the service's own durables: each service may
        # read the info of its own durables (its start checks them with it), nothing more.
        bus = self.lag_of
        if bus is None:
            return
        for consumer in bus.consumers():
            info = await bus.js.consumer_info(consumer.stream, consumer.durable)
            pending = (info.num_pending or 0) + (info.num_ack_pending or 0)
            self._lag.labels(consumer.stream, consumer.durable).set(pending)

    def watch_docker_root(self, docker_url: str | None) -> None:
        """Report Docker's data root too, asked of the engine at the first scrape."""
        asked = False

        async def find() -> None:
            nonlocal asked
            if not asked:
                asked = True  # once: an engine that cannot say now will not say later
                root = await diskwatch.docker_root(docker_url)
                if root is not None:
                    self.watch_disk("docker", root)

        self._refreshes.append(find)

    def watch_disk(self, label: str, folder: Path) -> None:
        """Report the disk use of `folder`'s filesystem under `folder=label`."""
        self.disks.folders[label] = folder

    async def refresh(self) -> None:
        """Bring the values that are read, not counted, up to date (bounded in time)."""
        for refresh in self._refreshes:
            try:
                async with asyncio.timeout(REFRESH_TIMEOUT):
                    await refresh()
            except Exception as exc:  # a stale value beats a failed scrape
                log.warning("metrics.refresh_failed", error=repr(exc))

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition and its content type: OpenMetrics when `accept` asks for it,
        else the Prometheus text format (the library's own negotiation)."""
        try:
            encode, content_type = choose_encoder(accept or "")
        except ValueError:  # a malformed version or escaping: the plain default
            encode, content_type = generate_latest, CONTENT_TYPE_PLAIN_0_0_4
        return encode(self.registry), content_type

    async def handle(self, request: web.Request) -> web.Response:
        """GET /metrics."""
        await self.refresh()
        body, content_type = self.render(request.headers.get("Accept"))
        response = web.Response(body=body)
        # Set whole: aiohttp's content_type= would drop the version and charset parameters.
        response.headers["Content-Type"] = content_type
        return response


@dataclass
class MetricsServer:
    """The `/metrics` endpoint on a private unix socket, and a TCP port if asked for."""

    metrics: Metrics
    socket: Path | None
    port: int = 0
    host: str = "127.0.0.1"
    _runner: web.AppRunner | None = None

    async def start(self) -> list[str]:
        """Start serving; where it listens (a failure to serve is logged, never fatal)."""
        app = web.Application()
        app.router.add_get("/metrics", self.metrics.handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        where: list[str] = []
        if self.socket is not None:
            try:
                await self._serve_socket(runner, self.socket)
                where.append(str(self.socket))
            except (OSError, UnsafeMetricsFolder) as exc:
                # The service's work matters more than its metrics: it runs on, and says why.
                log.error("metrics.socket_refused", path=str(self.socket), error=str(exc))
        if self.port:
            try:
                await web.TCPSite(runner, self.host, self.port).start()
            except OSError as exc:  # the port is taken, or the address is not this host's
                log.error("metrics.port_refused", port=self.port, error=str(exc))
            where.extend(f"http://{h}:{p}/metrics" for h, p in _tcp_addresses(runner))
        return where

    async def _serve_socket(self, runner: web.AppRunner, path: Path) -> None:
        if len(str(path).encode()) > MAX_SOCKET_PATH:
            raise UnsafeMetricsFolder(f"{path} is longer than the kernel's {MAX_SOCKET_PATH}")
        _clear_socket_place(path)
        site = web.UnixSite(runner, str(path))
        await site.start()
        # The folder is private already; the socket's own mode says the same to whoever
        # loosens the folder later.
        path.chmod(0o600)  # noqa: ASYNC240 - one metadata call at start, not I/O to wait on

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _clear_socket_place(path: Path) -> None:
    """Make the socket's private folder; remove a socket a previous run left, nothing else."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private_folder(path.parent)
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise UnsafeMetricsFolder(f"{path} exists and is not a socket")
    path.unlink()


def _tcp_addresses(runner: web.AppRunner) -> Iterator[tuple[str, int]]:
    for address in runner.addresses:
        if isinstance(address, tuple):
            yield str(address[0]), int(address[1])
