"""Metrics drains: a scrape credential per app for its OpenMetrics endpoint (Slipway's own).

    GET    /apps/{app}/metrics-drains             the app's scrape credentials (never a token)
    POST   /apps/{app}/metrics-drains             a new one: its token is in this answer only
    DELETE /apps/{app}/metrics-drains/{drain}     revoke it
    GET    /apps/{app}/metrics/openmetrics        the app's metrics, for a Prometheus scraper

A scrape credential (`slpm_` + 256 random bits) is stored only as its SHA-256 and opens
exactly one thing: the scrape endpoint of its own app. It is not an API token (the
authentication middleware never finds it among `tokens`), so anywhere else it is a 401;
it goes when it is removed and with its app (ON DELETE CASCADE). An ordinary token whose
user may read the app works on the endpoint too. Adding and removing need the app's
"deploy" permission, as log drains do, and are written to the team's audit chain.

The body is built by prometheus_client from a per-request registry holding one collector
(`AppCollector`): the app's own series only, labelled by the app's *name* and the dyno or
process type, never another app's and nothing of the platform's own. The endpoint answers
OpenMetrics 1.0.0 unless the scraper's Accept asks for Prometheus text (0.0.4) alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.exposition import generate_latest as text_exposition
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_exposition

from slipway.contracts import scheduler as sc
from slipway.contracts.log_shipper import DynoSample
from slipway.contracts.router import ROUTER_METRICS_GET, AppRouterMetrics, GetRouterMetrics
from slipway.libs.errors import NotFound, SlipwayError, Unauthorized
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY
from slipway.services.gateway.http.auth import (
    PRINCIPAL,
    Action,
    actor,
    app_for,
    authenticate,
    bearer,
)
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.gateway.http.routing import Routes, reply
from slipway.services.gateway.http.views import NamedRef, Timestamp, View
from slipway.services.gateway.logs import shippers
from slipway.services.gateway.outbox.changes import change

routes = Routes("metrics-drain")
log = structlog.get_logger("slipway.gateway.metricsdrains")

SCRAPE_PREFIX = "slpm_"  # a public marker: a leaked scrape credential is greppable and told apart
MAX_PER_APP = 20  # enough for every scraper a team runs; a bound on rows a member can add
MIB = 1024 * 1024
CALL_TIMEOUT = 5.0  # under Prometheus's default scrape timeout (10 s)


class MetricsDrainView(View, frozen=True, kw_only=True):
    """Slipway: a scrape credential of an app's OpenMetrics endpoint."""

    id: str
    app: NamedRef
    url: str  # what a scraper fetches
    created_at: Timestamp
    created_by: str  # the email of who added it
    token: str | None = None  # only in the answer that created it


@dataclass(frozen=True)
class _Drain:
    id: str
    app_id: str
    created_by: str
    created_at: str


def new_credential() -> str:
    return SCRAPE_PREFIX + secrets.token_urlsafe(32)


def credential_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def scrape_url(request: web.Request, app: store.App) -> str:
    return f"{request.app[GATEWAY].api_url}/apps/{app.name}/metrics/openmetrics"


def _view(
    request: web.Request, app: store.App, drain: _Drain, token: str | None = None
) -> MetricsDrainView:
    return MetricsDrainView(
        id=drain.id,
        app=NamedRef(id=app.id, name=app.name),
        url=scrape_url(request, app),
        created_at=drain.created_at,
        created_by=drain.created_by,
        token=token,
    )


async def _drains(conn: store.Conn, app_id: str) -> list[_Drain]:
    async with conn.execute(
        "SELECT id, app_id, created_by, created_at FROM metrics_drains"
        " WHERE app_id = ? ORDER BY created_at, id",
        (app_id,),
    ) as cursor:
        rows = await cursor.fetchall()
    return [_Drain(r["id"], r["app_id"], r["created_by"], r["created_at"]) for r in rows]


@routes.get(
    "/apps/{app}/metrics-drains",
    summary="List the app's metrics drains (scrape credentials; never their tokens)",
    response=list[MetricsDrainView],
    extension=True,
)
async def list_drains(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read its metrics drains")
    drains = await _drains(request.app[GATEWAY].reader, app.id)
    return reply([_view(request, app, d) for d in drains])


@routes.post(
    "/apps/{app}/metrics-drains",
    summary="Add a metrics drain: a token that can only scrape this app's OpenMetrics"
    " endpoint, shown once",
    response=MetricsDrainView,
    status=201,
    extension=True,
)
async def add_drain(request: web.Request) -> web.Response:
    app = await app_for(request, Action.DEPLOY, "add metrics drains")
    token = new_credential()
    who = actor(request)
    async with change(request.app[GATEWAY], who) as tx:
        if len(await _drains(tx.conn, app.id)) >= MAX_PER_APP:
            raise InvalidParams(
                f"This app has {MAX_PER_APP} metrics drains already: remove one first"
                " (`slipway metrics:drains -a APP`)."
            )
        drain = _Drain(store.new_uuid(), app.id, who.email, store.timestamp())
        await tx.conn.execute(
            "INSERT INTO metrics_drains (id, app_id, token_hash, created_by, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (drain.id, app.id, credential_hash(token), drain.created_by, drain.created_at),
        )
        tx.audit(
            app.team_id,
            "metrics-drain.add",
            app_name=app.name,
            app_id=app.id,
            details={"metrics_drain_id": drain.id},
        )
    return reply(_view(request, app, drain, token), 201)


@routes.delete(
    "/apps/{app}/metrics-drains/{drain}",
    summary="Remove a metrics drain: its token stops working at once",
    response=MetricsDrainView,
    extension=True,
)
async def remove_drain(request: web.Request) -> web.Response:
    app = await app_for(request, Action.DEPLOY, "remove metrics drains")
    wanted = request.match_info["drain"]
    async with change(request.app[GATEWAY], actor(request)) as tx:
        found = [d for d in await _drains(tx.conn, app.id) if d.id == wanted]
        if not found:
            raise NotFound("Couldn't find that metrics drain.")
        await tx.conn.execute("DELETE FROM metrics_drains WHERE id = ?", (wanted,))
        tx.audit(
            app.team_id,
            "metrics-drain.remove",
            app_name=app.name,
            app_id=app.id,
            details={"metrics_drain_id": wanted},
        )
    return reply(_view(request, app, found[0]))


# ---- the scrape endpoint -------------------------------------------------------------------


async def scrape_app(request: web.Request) -> store.App:
    """The app the request may scrape: its own credential's, or one the caller's token reads.

    Every refusal of a scrape credential is the same 401, whether it is unknown, removed
    or another app's: a scraper learns nothing about other apps from it.
    """
    token = bearer(request.headers.get("Authorization"))
    gw = request.app[GATEWAY]
    if not token.startswith(SCRAPE_PREFIX):
        request[PRINCIPAL] = await authenticate(request, time.time())
        return await app_for(request, Action.READ, "read its metrics")
    async with gw.reader.execute(
        "SELECT app_id FROM metrics_drains WHERE token_hash = ?", (credential_hash(token),)
    ) as cursor:
        row = await cursor.fetchone()
    app = await store.get_app(gw.reader, request.match_info["app"])
    if row is None or app is None or app.id != row["app_id"]:
        raise Unauthorized("Invalid credentials provided.")
    return app


@dataclass
class Readings:
    """What the collector exposes: fetched before the registry is read."""

    app: str
    router: AppRouterMetrics | None = None
    samples: list[DynoSample] = field(default_factory=list)
    dynos: list[sc.Dyno] | None = None
    sources: dict[str, bool] = field(default_factory=dict)


def _process_type(dyno: str) -> str:
    return dyno.split(".", 1)[0]


class AppCollector:
    """One app's series, from the readings of one scrape (prometheus_client's Collector)."""

    def __init__(self, readings: Readings) -> None:
        self.readings = readings

    def collect(self) -> Iterator[Metric]:
        r = self.readings
        yield from self._router(r.app, r.router)
        yield from self._samples(r.app, r.samples)
        if r.dynos is not None:
            states = GaugeMetricFamily(
                "slipway_app_dynos",
                "Dynos of the app by process type and state, as the scheduler has them",
                labels=["app", "process_type", "state"],
            )
            counted = Counter((d.process_type, str(d.state)) for d in r.dynos)
            for (process_type, state), count in sorted(counted.items()):
                states.add_metric([r.app, process_type, state], count)
            yield states
        up = GaugeMetricFamily(
            "slipway_app_scrape_source_up",
            "1 if the platform part behind these series answered this scrape, else 0",
            labels=["app", "source"],
        )
        for source, answered in sorted(r.sources.items()):
            up.add_metric([r.app, source], 1 if answered else 0)
        yield up

    @staticmethod
    def _router(app: str, router: AppRouterMetrics | None) -> Iterator[Metric]:
        if router is None or not router.enabled:
            return
        responses = CounterMetricFamily(
            "slipway_app_router_responses",
            "Requests the router answered for the app, by status class",
            labels=["app", "status_class"],
        )
        for status_class, count in sorted(router.responses.items()):
            responses.add_metric([app, status_class], count)
        yield responses
        # A histogram with no observation yet has no buckets: it is left out until then.
        if router.bucket_counts and len(router.bucket_counts) == len(router.bucket_bounds) + 1:
            seconds = HistogramMetricFamily(
                "slipway_app_router_response_seconds",
                "Time from the router's connect to the app's answer (connect + service)",
                labels=["app"],
            )
            bounds = [repr(float(b)) for b in router.bucket_bounds] + ["+Inf"]
            seconds.add_metric(
                [app], list(zip(bounds, router.bucket_counts, strict=True)), router.seconds_sum
            )
            yield seconds

    @staticmethod
    def _samples(app: str, samples: list[DynoSample]) -> Iterator[Metric]:
        labels = ["app", "dyno", "process_type"]
        memory = GaugeMetricFamily(
            "slipway_app_dyno_memory_bytes", "Memory in use (rss + cache)", labels=labels
        )
        quota = GaugeMetricFamily(
            "slipway_app_dyno_memory_quota_bytes", "The dyno's memory quota", labels=labels
        )
        load = GaugeMetricFamily(
            "slipway_app_dyno_load_1m", "CPU load averaged over one minute", labels=labels
        )
        cpu = GaugeMetricFamily(
            "slipway_app_dyno_cpu_ratio", "CPU in use, as a fraction of one CPU", labels=labels
        )
        restarts = CounterMetricFamily(
            "slipway_app_dyno_restarts", "Times the dyno was restarted", labels=labels
        )
        for s in samples:
            values = [app, s.dyno, _process_type(s.dyno)]
            memory.add_metric(values, s.memory_total_mb * MIB)
            quota.add_metric(values, s.memory_quota_mb * MIB)
            load.add_metric(values, s.load_avg_1m)
            cpu.add_metric(values, s.cpu_percent / 100)
            restarts.add_metric(values, s.restarts)
        yield from (memory, quota, load, cpu, restarts)


async def read(request: web.Request, app: store.App) -> Readings:
    """Ask each part of the platform for its share, at once; one that fails is marked, not
    fatal, so a silent part costs a scrape one timeout, not the sum of them."""
    gw = request.app[GATEWAY]
    readings = Readings(app=app.name)

    async def router() -> None:
        readings.router = await gw.bus.call(
            ROUTER_METRICS_GET, GetRouterMetrics(app_id=app.id), timeout=CALL_TIMEOUT
        )

    async def samples() -> None:
        expected = await gw.shipper_hosts.expected()
        readings.samples = await shippers.metrics(gw.bus, app.id, expect=expected)

    async def dynos() -> None:
        answer = await gw.bus.call(sc.DYNOS_LIST, sc.ListDynos(app_id=app.id), timeout=CALL_TIMEOUT)
        # The scheduler filters by app already; the check keeps another app's row out anyway.
        readings.dynos = [d for d in answer.dynos if d.app_id == app.id]

    async def marked(source: str, part: Callable[[], Awaitable[None]]) -> None:
        try:
            await part()
        except SlipwayError as exc:
            log.warning("metricsdrains.unanswered", source=source, app_id=app.id, error=repr(exc))
            readings.sources[source] = False
        else:
            readings.sources[source] = True

    await asyncio.gather(
        marked("router", router), marked("dyno_samples", samples), marked("scheduler", dynos)
    )
    return readings


def exposition(readings: Readings, accept: str) -> tuple[bytes, str]:
    """The body and its content type: OpenMetrics unless only Prometheus text is accepted."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AppCollector(readings))
    wanted = accept.lower()
    if "text/plain" in wanted and "application/openmetrics-text" not in wanted:
        return text_exposition(registry), CONTENT_TYPE_PLAIN_0_0_4
    # The openmetrics module carries no annotations; it returns bytes, as the text one does.
    body: bytes = openmetrics_exposition(registry)  # type: ignore[no-untyped-call]
    return body, OPENMETRICS


@routes.get(
    "/apps/{app}/metrics/openmetrics",
    summary="The app's metrics for a Prometheus scraper (OpenMetrics text; Prometheus text"
    " 0.0.4 on request), with a metrics-drain token or a token that can read the app",
    own_auth=True,  # a metrics drain's scrape token, or an API token that reads the app
    extension=True,
)
async def scrape(request: web.Request) -> web.Response:
    app = await scrape_app(request)
    body, content_type = exposition(await read(request, app), request.headers.get("Accept", ""))
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    response.headers["Cache-Control"] = "no-store"
    return response
