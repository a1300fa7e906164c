"""The network-wirer process: HAProxy's controller, its access lines, app networks.

HAProxy itself is started by the supervisor (`python -m slipway.libs.haproxy`, on a
configuration that answers 503 until this service writes its own). On start, in this
order: the router's CA and default certificate (HAProxy cannot bind HTTPS without one),
the receiver of HAProxy's access lines on its log socket, the Docker hosts, then the
reconcile loop, whose first pass configures HAProxy and routes every app before events
are consumed. Events (dynos, maintenance, renames, domains, destroyed apps) trigger a
reconcile and are acknowledged once it has run. With `router_tls_issuer=acme`, custom
domains get certificates from the ACME directory, renewed 30 days before expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import msgspec
import structlog

from slipway.contracts.base import encode
from slipway.contracts.gateway import (
    APP_DESTROYED,
    APP_FEATURE_CHANGED,
    APP_RENAMED,
    MAINTENANCE_CHANGED,
    AppDestroyed,
    AppFeatureChanged,
    AppRenamed,
    MaintenanceChanged,
)
from slipway.contracts.logs import RouterAccess, router_subject
from slipway.contracts.router import (
    DOMAIN_ADDED,
    DOMAIN_REMOVED,
    ROUTER_CERTS_LIST,
    ROUTER_METRICS_GET,
    UPTIME_GET,
    AppRouterMetrics,
    DomainAdded,
    DomainRemoved,
    GetRouterMetrics,
    GetUptime,
    ListRouterCertificates,
    RouterCertificateList,
    Uptime,
)
from slipway.contracts.scheduler import DYNO_CHANGED, DynoChanged
from slipway.contracts.subjects import Service
from slipway.libs import diskwatch
from slipway.libs.bus import Bus, context
from slipway.libs.haproxy import AccessRecord, HAProxyServer, LogReceiver
from slipway.libs.service import Key, ServiceApp
from slipway.services.network_wirer import certs, inventory, snapshot
from slipway.services.network_wirer.acme import AcmeManager, AcmeSettings
from slipway.services.network_wirer.ca import RouterCA, legacy_caddy_storage
from slipway.services.network_wirer.haproxy.access import AccessJoiner
from slipway.services.network_wirer.haproxy.reconcile import Reconciler
from slipway.services.network_wirer.networks import Isolation, Networks
from slipway.services.network_wirer.pages import load as load_pages
from slipway.services.network_wirer.routermetrics import RouterMetrics
from slipway.services.network_wirer.routes import AppRoute, hostname_of
from slipway.services.network_wirer.settings import WirerSettings
from slipway.services.network_wirer.tls import RouterCertificates
from slipway.services.network_wirer.uptime import Prober, marker_digest, new_marker, probe_host
from slipway.services.network_wirer.uptime import stop as stop_probes
from slipway.services.network_wirer.uptimestore import UptimeStore
from slipway.services.network_wirer.wirer import Wirer

log = structlog.get_logger("slipway.network_wirer")

WIRER = Key("wirer", Wirer)
UPTIME = Key("uptime", UptimeStore)
PROBER = Key("prober", Prober)
ACME = Key("acme", AcmeManager)
ACCESS_BACKLOG = 10_000  # access lines waiting for NATS; beyond, dropped and counted


class AccessPublisher:
    """HAProxy's access records → RouterAccess on each app's live subject, in order.

    The receiver's callback only queues (it runs in the datagram protocol); one task
    publishes. A burst larger than the backlog is dropped and counted, never buffered
    without bound: these lines are also in nobody's storage until the log-shipper's.
    """

    def __init__(
        self, bus: Bus, joiner: AccessJoiner, metrics: RouterMetrics | None = None
    ) -> None:
        self.bus = bus
        self.joiner = joiner
        self.metrics = metrics
        self.dropped = 0
        self._queue: asyncio.Queue[RouterAccess] = asyncio.Queue(ACCESS_BACKLOG)
        self._task: asyncio.Task[None] | None = None

    def on_record(self, record: AccessRecord) -> None:
        access = self.joiner.record(record)
        if access is None:
            return
        if self.metrics is not None:
            self.metrics.observe(access)
        try:
            self._queue.put_nowait(access)
        except asyncio.QueueFull:
            self.dropped += 1

    def start(self) -> None:
        self._task = asyncio.create_task(self._publish(), name="network-wirer:access")

    async def _publish(self) -> None:
        while True:
            access = await self._queue.get()
            try:
                await self.bus.live_publish(router_subject(access.app_id), encode(access))
            except Exception as exc:  # a lost line must not stop the next ones
                log.warning("access.publish_failed", error=repr(exc))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def routes_known(wirer: Wirer) -> list[AppRoute] | None:
    """The routes of the last reconcile, None until both the gateway and the scheduler answered."""
    return wirer.snapshot.routes if wirer.snapshot.complete else None


def custom_domains(routes: Iterable[AppRoute], base_domain: str) -> list[str]:
    """The hosts ACME should serve: every app's hosts but `<app>.<base domain>`."""
    return sorted(
        {
            host
            for route in routes
            for host in route.hosts
            if host != hostname_of(route.app_name, base_domain)
        }
    )


def create_service(settings: WirerSettings) -> ServiceApp:
    """network-wirer as a runnable service."""
    service = ServiceApp(
        Service.NETWORK_WIRER,
        settings=settings,
        description="Slipway's network-wirer: app networks, router routes, access lines",
    )
    state = settings.state_dir("network-wirer")
    router_metrics = RouterMetrics(service.metrics.registry) if service.metrics.enabled else None
    ca = RouterCA.load_or_create(state, caddy_storage=legacy_caddy_storage(settings.home_path))
    marker = new_marker()  # this process's uptime probes: in memory only (uptime.py)

    @service.cleanup_ctx
    async def wirer(service: ServiceApp) -> AsyncIterator[None]:
        options = settings.haproxy_options()
        server = HAProxyServer(options.data_dir, options.ports, own_session=False)
        certificates = RouterCertificates(
            ca,
            options,
            settings.base_domain,
            acme_serves_domains=settings.router_tls_issuer == "acme",
            valid=settings.router_cert_valid,
        )
        certificates.ensure_default()  # before HAProxy first loads our configuration
        joiner = AccessJoiner(probe_digest=marker_digest(marker))
        publisher = AccessPublisher(service.bus, joiner, router_metrics)
        receiver = LogReceiver(options.paths.log_socket, publisher.on_record)
        await receiver.start()
        publisher.start()
        networks = None
        if settings.manage_networks:
            ports = [settings.router_http_port, settings.router_https_port]
            isolation = Isolation(ports, settings.scoped) if settings.isolation else None
            networks = Networks(
                settings.docker_urls,
                isolation,
                settings.scoped,
                settings.app_network_pool,
                settings.app_subnet_prefix,
            )
        reconciler = Reconciler(server, options, load_pages())
        wirer = Wirer(
            service.bus,
            reconciler,
            base_domain=settings.base_domain,
            router_host=settings.router_host_id,
            interval=settings.reconcile_interval,
            joiner=joiner,
            certificates=certificates,
            networks=networks,
        )
        service[WIRER] = wirer
        tasks = [asyncio.create_task(wirer.run(), name="network-wirer:reconcile")]
        await wirer.refresh()  # the first full pass, before any event is taken
        if settings.router_tls_issuer == "acme":
            manager = service[ACME] = _acme_manager(settings, state, reconciler)
            tasks.append(asyncio.create_task(_acme(settings, manager, wirer)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await wirer.close()
            await publisher.close()
            await receiver.close()
            if networks is not None:
                await networks.close()

    @service.cleanup_ctx
    async def uptime(service: ServiceApp) -> AsyncIterator[None]:
        store = await UptimeStore.open(state / snapshot.UPTIME_DB)
        service[UPTIME] = store
        task = None
        if settings.probe_interval > 0 and settings.router_http_port > 0:
            host = probe_host(settings.router_listen_host)
            prober = Prober(
                store,
                lambda: routes_known(service[WIRER]),
                marker=marker,
                base_domain=settings.base_domain,
                router_url=f"http://{host}:{settings.router_http_port}",
                interval=settings.probe_interval,
                # The router answers H12 itself after its upstream timeout: wait for that.
                timeout=settings.router_upstream_timeout + settings.router_connect_timeout + 5,
            )
            service[PROBER] = prober
            task = asyncio.create_task(prober.run(), name="network-wirer:uptime")
        try:
            yield
        finally:
            if task is not None:
                await stop_probes(task)
            await store.close()

    @service.rpc(UPTIME_GET)
    async def uptime_get(request: GetUptime) -> Uptime:
        answer = await service[UPTIME].uptime(
            request.app_id, incidents=request.incidents, interval=settings.probe_interval
        )
        prober = service.get(PROBER)
        last = prober.last_round_at if prober is not None else None
        return msgspec.structs.replace(answer, last_probe_at=last)

    @service.rpc(ROUTER_METRICS_GET)
    async def router_metrics_get(request: GetRouterMetrics) -> AppRouterMetrics:
        if router_metrics is None:
            return AppRouterMetrics(app_id=request.app_id, enabled=False)
        return router_metrics.snapshot(request.app_id)

    @service.rpc(ROUTER_CERTS_LIST)
    async def certs_list(request: ListRouterCertificates) -> RouterCertificateList:
        context.require_caller(ROUTER_CERTS_LIST)
        wirer = service[WIRER]
        manager = service.get(ACME)
        found = inventory.served(
            wirer.snapshot.routes,
            wirer.certificates,
            manager.expiry if manager is not None else None,
        )
        limit = min(max(request.limit, 1), inventory.MAX_LIMIT)
        return RouterCertificateList(
            router_id=settings.router_id, certificates=found[:limit], total=len(found)
        )

    certs.install(service, ca)
    routes = f"routes-{settings.router_id}"  # ConsumerSpec.durable_purpose, per router

    @service.event(routes, DYNO_CHANGED)
    async def dyno_changed(event: DynoChanged) -> None:
        wirer = service[WIRER]
        if event.dyno.process_type == "web":
            await wirer.refresh()
        elif wirer.networks is not None and event.dyno.state == "starting":
            # Its app's network may be new: firewalled now, not at the next periodic pass
            # (a known app's bridge is in the chain already; a brand-new app's is not).
            await wirer.networks.sync_isolation()

    @service.event(routes, MAINTENANCE_CHANGED)
    async def maintenance_changed(event: MaintenanceChanged) -> None:
        await service[WIRER].refresh()

    @service.event(routes, APP_FEATURE_CHANGED)
    async def feature_changed(event: AppFeatureChanged) -> None:
        await service[WIRER].refresh()

    @service.event(routes, APP_RENAMED)
    async def app_renamed(event: AppRenamed) -> None:
        await service[WIRER].refresh()

    @service.event(routes, DOMAIN_ADDED)
    async def domain_added(event: DomainAdded) -> None:
        await service[WIRER].refresh()

    @service.event(routes, DOMAIN_REMOVED)
    async def domain_removed(event: DomainRemoved) -> None:
        await service[WIRER].refresh()

    @service.event(routes, APP_DESTROYED)
    async def app_destroyed(event: AppDestroyed) -> None:
        wirer = service[WIRER]
        await wirer.refresh()
        if wirer.networks is not None:
            await wirer.networks.remove(event.app_id)
        if router_metrics is not None:
            router_metrics.forget(event.app_id)  # after the refresh: no more records for it
        await service[UPTIME].forget(event.app_id)

    service.snapshot_sources = snapshot.sources(settings)
    diskwatch.watch(service, diskwatch.state_folders(settings, "network-wirer", "haproxy"))
    return service


def _acme_manager(settings: WirerSettings, state: Path, reconciler: Reconciler) -> AcmeManager:
    bundle = Path(settings.router_acme_ca_bundle) if settings.router_acme_ca_bundle else None
    return AcmeManager(
        AcmeSettings(
            directory_url=settings.router_acme_directory,
            state_dir=state,
            email=settings.router_acme_email or None,
            ca_bundle=bundle,
        ),
        reconciler,
    )


async def _acme(settings: WirerSettings, manager: AcmeManager, wirer: Wirer) -> None:
    """Certificates for custom domains from the ACME directory, renewed as they come due."""
    await manager.reinstall()
    await manager.run(lambda: custom_domains(wirer.snapshot.routes, settings.base_domain))
