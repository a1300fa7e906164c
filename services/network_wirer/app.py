"""The network-wirer process: access-log listener, Caddy admin client, networks, reconcile loop.

On start, in this order: listen for Caddy's access log on a unix socket (its address
goes into the router's configuration), open the admin client and the Docker hosts, run the
reconcile loop, whose first pass loads every route before events are consumed.
Events (dynos, maintenance, renames, domains, destroyed apps) trigger a reconcile
and are acknowledged once it has run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from slipway.contracts.base import encode
from slipway.contracts.gateway import (
    APP_DESTROYED,
    APP_RENAMED,
    MAINTENANCE_CHANGED,
    AppDestroyed,
    AppRenamed,
    MaintenanceChanged,
)
from slipway.contracts.logs import RouterAccess, router_subject
from slipway.contracts.router import DOMAIN_ADDED, DOMAIN_REMOVED, DomainAdded, DomainRemoved
from slipway.contracts.scheduler import DYNO_CHANGED, DynoChanged
from slipway.contracts.subjects import Service
from slipway.libs.service import Key, ServiceApp
from slipway.services.network_wirer import certs, snapshot
from slipway.services.network_wirer.access import AccessListener
from slipway.services.network_wirer.caddy import CaddyAdmin
from slipway.services.network_wirer.networks import Isolation, Networks
from slipway.services.network_wirer.settings import WirerSettings
from slipway.services.network_wirer.wirer import Wirer

WIRER = Key("wirer", Wirer)


def create_service(settings: WirerSettings) -> ServiceApp:
    """network-wirer as a runnable service."""
    service = ServiceApp(
        Service.NETWORK_WIRER,
        settings=settings,
        description="Slipway's network-wirer: app networks, router routes, access lines",
    )

    @service.cleanup_ctx
    async def wirer(service: ServiceApp) -> AsyncIterator[None]:
        bus = service.bus

        async def publish(access: RouterAccess) -> None:
            await bus.live_publish(router_subject(access.app_id), encode(access))

        access = AccessListener(publish, settings.access_socket)
        address = await access.start()
        admin = CaddyAdmin(settings.address.admin_socket)
        networks = None
        if settings.manage_networks:
            ports = [settings.router_http_port, settings.router_https_port]
            isolation = Isolation(ports, settings.scoped) if settings.isolation else None
            networks = Networks(
                settings.docker_urls, isolation, settings.scoped, settings.app_network_pool
            )
        wirer = Wirer(
            bus,
            admin,
            settings.router_options(address),
            base_domain=settings.base_domain,
            interval=settings.reconcile_interval,
            access=access,
            networks=networks,
        )
        service[WIRER] = wirer
        loop = asyncio.create_task(wirer.run(), name="network-wirer:reconcile")
        await wirer.refresh()  # the first full pass, before any event is taken
        try:
            yield
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
            await access.close()
            await admin.close()
            if networks is not None:
                await networks.close()

    certs.install(service, settings.storage_dir)

    @service.event("routes", DYNO_CHANGED)
    async def dyno_changed(event: DynoChanged) -> None:
        if event.dyno.process_type == "web":
            await service[WIRER].refresh()

    @service.event("routes", MAINTENANCE_CHANGED)
    async def maintenance_changed(event: MaintenanceChanged) -> None:
        await service[WIRER].refresh()

    @service.event("routes", APP_RENAMED)
    async def app_renamed(event: AppRenamed) -> None:
        await service[WIRER].refresh()

    @service.event("routes", DOMAIN_ADDED)
    async def domain_added(event: DomainAdded) -> None:
        await service[WIRER].refresh()

    @service.event("routes", DOMAIN_REMOVED)
    async def domain_removed(event: DomainRemoved) -> None:
        await service[WIRER].refresh()

    @service.event("routes", APP_DESTROYED)
    async def app_destroyed(event: AppDestroyed) -> None:
        wirer = service[WIRER]
        await wirer.refresh()
        if wirer.networks is not None:
            await wirer.networks.remove(event.app_id)

    service.snapshot_sources = snapshot.sources(settings)
    return service
