"""The log-shipper process: one per Docker host, receiving its dynos' output and serving reads.

Resources, set up in this order and torn down in reverse:

1. `shipper`: the database (writer + reader), the sealing and tail loops, the
   dyno registry (the scheduler's word) and output socket, metrics and drains;
2. `live`: queue-group subscriptions to the router's access records and the
   lines other services send (one log-shipper takes each message).

Events are consumed in two durable consumers: `platform` (shared by every log-shipper:
one of them writes each platform line) and `host-<host_id>` (each log-shipper applies
every drain change, app or team removal and dyno change of its host to its own
database). On SIGTERM the dyno socket closes first, then what is pending is sealed and
stored; a kill -9 loses the lines not sealed yet (at most `batch_seconds`), and the dyno
inits count what they drop until a log-shipper listens again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from slipway.contracts.gateway import (
    APP_CREATED,
    APP_DESTROYED,
    FORMATION_CHANGED,
    LOG_RETENTION_CHANGED,
    RELEASE_CREATED,
    TEAM_SHREDDED,
    AppCreated,
    AppDestroyed,
    FormationChanged,
    LogRetentionChanged,
    ReleaseCreated,
    TeamShredded,
)
from slipway.contracts.log_shipper import (
    DRAIN_ADD,
    DRAIN_CHANGED,
    DRAIN_REMOVE,
    DRAINS_LIST,
    HISTORY_EXPORT,
    HISTORY_READ,
    METRICS_GET,
    METRICS_SERIES_GET,
    AddDrain,
    Drain,
    DrainChanged,
    Drains,
    ExportHistory,
    GetMetrics,
    GetMetricSeries,
    HistoryArchive,
    HistoryPage,
    ListDrains,
    Metrics,
    ReadHistory,
    RemoveDrain,
    SeriesSamples,
)
from slipway.contracts.logs import LINES_ALL, ROUTER_ALL
from slipway.contracts.monitor import ALERT_CHANGED, AlertChanged
from slipway.contracts.scheduler import DYNO_CHANGED, R15_TEXT, DynoChanged
from slipway.contracts.subjects import Service
from slipway.libs import diskwatch
from slipway.libs.bus import context
from slipway.libs.errors import InvalidRequest
from slipway.libs.service import Key, ServiceApp
from slipway.libs.storage import Database
from slipway.services.log_shipper import platform, snapshot, store
from slipway.services.log_shipper.history import RawLine
from slipway.services.log_shipper.linecounts import LineCollector
from slipway.services.log_shipper.memoryerrors import MemoryErrorCollector
from slipway.services.log_shipper.settings import LogShipperSettings
from slipway.services.log_shipper.shipper import Shipper

SHIPPER = Key("shipper", Shipper)


def create_service(settings: LogShipperSettings) -> ServiceApp:
    """The log-shipper as a runnable service."""
    service = ServiceApp(
        Service.LOG_SHIPPER,
        settings=settings,
        description="Slipway's log-shipper: encrypted history, live tails, drains, metrics",
    )
    # Reads are fan-out RPCs: each log-shipper answers for its own host's history.
    service.responder = settings.host_id
    if service.metrics.enabled:
        service.metrics.registry.register(LineCollector(lambda: service.get(SHIPPER)))
        service.metrics.registry.register(MemoryErrorCollector(lambda: service.get(SHIPPER)))

    @service.cleanup_ctx
    async def shipper(service: ServiceApp) -> AsyncIterator[None]:
        db = await Database.open(settings.db_path(), store.MIGRATIONS)
        reader = await Database.open(settings.db_path())
        shipper = Shipper(settings, service.bus, db, reader, await store.next_seq(db))
        service[SHIPPER] = shipper
        await shipper.start()
        try:
            yield
        finally:
            await shipper.stop()
            await reader.close()
            await db.close()

    @service.cleanup_ctx
    async def live(service: ServiceApp) -> AsyncIterator[None]:
        shipper = service[SHIPPER]
        nc = service.bus.nc

        async def on_lines(msg: Msg) -> None:
            await shipper.on_lines(msg.data)

        async def on_access(msg: Msg) -> None:
            await shipper.on_access(msg.data)

        subs: list[Subscription] = [
            await nc.subscribe(LINES_ALL, queue=Service.LOG_SHIPPER, cb=on_lines),
            await nc.subscribe(ROUTER_ALL, queue=Service.LOG_SHIPPER, cb=on_access),
        ]
        await nc.flush()
        try:
            yield
        finally:
            for sub in subs:
                await sub.unsubscribe()

    _reads(service)
    _platform_events(service)
    _host_events(service, f"host-{settings.host_id}")
    service.snapshot_sources = snapshot.sources(settings)
    diskwatch.watch(service, diskwatch.state_folders(settings, "log-shipper"))
    return service


def _reads(service: ServiceApp) -> None:
    @service.rpc(HISTORY_READ)
    async def read_history(request: ReadHistory) -> HistoryPage | None:
        context.require_caller(HISTORY_READ)
        shipper = service[SHIPPER]
        if request.host is not None and request.host != shipper.history.host:
            return None  # paging on through another host's history
        return await shipper.history.read(request)

    @service.rpc(HISTORY_EXPORT)
    async def export_history(request: ExportHistory) -> HistoryArchive:
        return await service[SHIPPER].history.export(request)

    @service.rpc(DRAIN_ADD)
    async def add_drain(request: AddDrain) -> Drain:
        return Drain(drain=await service[SHIPPER].add_drain(request))

    @service.rpc(DRAINS_LIST)
    async def list_drains(request: ListDrains) -> Drains:
        return Drains(drains=await service[SHIPPER].list_drains(request.app_id))

    @service.rpc(DRAIN_REMOVE)
    async def remove_drain(request: RemoveDrain) -> Drain:
        return Drain(drain=await service[SHIPPER].remove_drain(request))

    @service.rpc(METRICS_GET)
    async def metrics(request: GetMetrics) -> Metrics:
        sampler = service[SHIPPER].metrics
        dynos = sampler.for_app(request.app_id) if sampler else []
        return Metrics(app_id=request.app_id, dynos=dynos)

    @service.rpc(METRICS_SERIES_GET)
    async def metric_series(request: GetMetricSeries) -> SeriesSamples:
        context.require_caller(METRICS_SERIES_GET)
        if request.step <= 0 or request.step % 60:
            raise InvalidRequest("step must be a positive multiple of 60 seconds.")
        shipper = service[SHIPPER]
        points = await shipper.series.read(request.app_id, request.since, request.step)
        return SeriesSamples(
            app_id=request.app_id, step=request.step, points=points, host=shipper.history.host
        )


def _platform_events(service: ServiceApp) -> None:
    async def store_lines(event_id: str, app_id: str, team_id: str, lines: list[RawLine]) -> None:
        # Acked only once stored; a redelivery after that finds its id claimed.
        shipper = service[SHIPPER]
        if not lines or await shipper.history.seen(event_id):
            return
        await shipper.remember(app_id, team_id)
        await shipper.history.add(app_id, team_id, lines, message_id=event_id)

    @service.event("platform", DYNO_CHANGED)
    async def dyno_changed(event: DynoChanged) -> None:
        dyno = event.dyno
        lines = platform.dyno_lines(event)
        await store_lines(event.event_id, dyno.app_id, dyno.team_id, lines)

    @service.event("platform", RELEASE_CREATED)
    async def release_created(event: ReleaseCreated) -> None:
        lines = platform.release_lines(event)
        await store_lines(event.event_id, event.app_id, event.team_id, lines)

    @service.event("platform", FORMATION_CHANGED)
    async def formation_changed(event: FormationChanged) -> None:
        lines = platform.formation_lines(event)
        await store_lines(event.event_id, event.app_id, event.team_id, lines)

    @service.event("platform", ALERT_CHANGED)
    async def alert_changed(event: AlertChanged) -> None:
        alert = event.alert
        if alert.scope == "app":  # the platform's are the operator's (the monitor's log)
            lines = platform.alert_lines(event)
            await store_lines(event.event_id, alert.app_id, alert.team_id, lines)


def _host_events(service: ServiceApp, purpose: str) -> None:
    @service.event(purpose, APP_CREATED)
    async def app_created(event: AppCreated) -> None:
        await service[SHIPPER].remember(event.app_id, event.team_id)

    @service.event(purpose, APP_DESTROYED)
    async def app_destroyed(event: AppDestroyed) -> None:
        await service[SHIPPER].drop_app(event.app_id)

    @service.event(purpose, TEAM_SHREDDED)
    async def team_shredded(event: TeamShredded) -> None:
        await service[SHIPPER].drop_team(event.team_id)

    @service.event(purpose, DYNO_CHANGED)
    async def dyno_of_host(event: DynoChanged) -> None:
        # Every log-shipper reads every change; the registry keeps its own host's dynos.
        shipper = service[SHIPPER]
        await shipper.registry.apply(event.dyno)
        if event.dyno.host_id == shipper.settings.host_id and event.reason.startswith(R15_TEXT):
            # Counted by the dyno's own host, as its R14s are (metrics.py).
            shipper.metrics.memory_errors[(event.dyno.app_id, "R15")] += 1

    @service.event(purpose, DRAIN_CHANGED)
    async def drain_changed(event: DrainChanged) -> None:
        await service[SHIPPER].apply_drain(event)

    @service.event(purpose, LOG_RETENTION_CHANGED)
    async def log_retention_changed(event: LogRetentionChanged) -> None:
        await service[SHIPPER].apply_retention(event)
