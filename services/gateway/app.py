"""The gateway process: a ServiceApp (NATS, commands, graceful stop) serving an aiohttp API.

Resources are set up in this order and torn down in reverse:

1. `state`: the database (writer + reader), the outbox relay and the checkpoint
   signer, started so that rows a crash left behind are relayed and signed;
2. `http`: the aiohttp AppRunner + TCPSite, then the first-start bootstrap.

On SIGTERM the ServiceApp stops taking commands and waits for handlers; then
the HTTP site stops accepting connections and lets requests in flight finish
(`shutdown_grace`), the relay makes a last pass, and the database closes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from slipway.contracts.addons import (
    ADDON_CHANGED,
    ADDON_CREDENTIALS_GET,
    AddonChanged,
    AddonCredentials,
    GetAddonCredentials,
)
from slipway.contracts.builder import BUILD_FINISHED, BuildFinished
from slipway.contracts.gateway import (
    CONFIG_SEALED_GET,
    DESIRED_GET,
    RELEASE_CREATE,
    CreateRelease,
    DesiredState,
    GetDesired,
    GetSealedConfig,
    SealedConfig,
)
from slipway.contracts.scheduler import DEPLOY_FINISHED, DeployFinished
from slipway.contracts.subjects import Service
from slipway.libs import diskwatch
from slipway.libs.metrics import instrument
from slipway.libs.service import Key, ServiceApp
from slipway.libs.storage import Database, InlineReader
from slipway.services.gateway.addons import (
    addoncreds,
    addonlists,
    addonrecovery,
    addons,
    backupkeys,
    backups,
    backupschedule,
    backupverify,
)
from slipway.services.gateway.api import (
    account,
    alerts,
    apps,
    catalog,
    collaborators,
    config,
    domains,
    dynos,
    formation,
    hosts,
    logsettings,
    masterkey,
    metricsdrains,
    notoffered,
    releases,
    snapshots,
    sni,
    teams,
    tokens,
    uptime,
    webhooks,
)
from slipway.services.gateway.audit import audit
from slipway.services.gateway.audit.checkpoints import Checkpointer
from slipway.services.gateway.core import snapshot
from slipway.services.gateway.core.bootstrap import bootstrap
from slipway.services.gateway.core.schema import MIGRATIONS
from slipway.services.gateway.core.settings import GatewaySettings
from slipway.services.gateway.core.state import GATEWAY, Gateway
from slipway.services.gateway.git import buildoutput, builds, git, passthrough, pushes, sources
from slipway.services.gateway.http import (
    diskpressure,
    leadership,
    middleware,
    openapi,
    ranges,
    ratelimit,
)
from slipway.services.gateway.http.auth import PRINCIPALS, PrincipalCache
from slipway.services.gateway.http.routing import Endpoint, install
from slipway.services.gateway.logs import logs, series
from slipway.services.gateway.oneoff import oneoff, rendezvous
from slipway.services.gateway.outbox import internal
from slipway.services.gateway.outbox.outbox import OutboxRelay
from slipway.services.gateway.web import pages, sessions

# git's routes match any first path segment: they come last.
RESOURCES = (
    *(account, sessions, tokens, teams, apps, config, releases, formation, audit, openapi),
    leadership,
    oneoff,
    logs,
    series,
    uptime,
    alerts,
    metricsdrains,
    logsettings,
    domains,
    dynos,
    hosts,
    masterkey,
    snapshots,
    addons,
    addoncreds,
    addonlists,
    collaborators,
    catalog,
    sni,
    notoffered,
    webhooks,
    backups,
    backupkeys,
    backupschedule,
    backupverify,
    pages,  # `/` and `/dashboard/...`: before git, whose routes match any first segment
    *(sources, builds, buildoutput, git),
)
ENDPOINTS: list[Endpoint] = [e for module in RESOURCES for e in module.routes.endpoints]

STATE = Key("gateway", Gateway)
WEB = Key("web", web.Application)  # the served aiohttp app (tests enumerate its router)


def build_web_app(gw: Gateway) -> web.Application:
    """The aiohttp application serving the API, bound to the gateway's state."""
    public = {e.handler for e in ENDPOINTS if e.public or e.own_auth}
    app = web.Application(
        client_max_size=gw.settings.max_body_bytes,
        middlewares=[
            middleware.context,
            diskpressure.disk_full_errors,  # a full disk answers 507, not 500
            ratelimit.rate_limit,  # git and source blobs count too
            passthrough.passthrough,  # git and source blobs: their own checks
            # A Prometheus scraper's Accept names its exposition formats, not the API's.
            middleware.version({e.handler for e in ENDPOINTS if e.page} | {metricsdrains.scrape}),
            middleware.body_limit(gw.settings.max_body_bytes),
            middleware.authentication(public),
            ranges.middleware(
                e.handler for e in ENDPOINTS if e.method == "GET" and ranges.is_list(e.response)
            ),
        ],
    )
    app[GATEWAY] = gw
    app[PRINCIPALS] = PrincipalCache()
    ratelimit.install(
        app, gw.settings.api_rate_limit, frozenset(e.handler for e in ENDPOINTS if e.page)
    )
    app[pushes.STATE] = pushes.PushState(gw)
    app[openapi.DOCUMENT] = openapi.document(ENDPOINTS)
    install(app, ENDPOINTS)
    return app


def create_service(settings: GatewaySettings) -> ServiceApp:
    """The gateway as a runnable service."""
    service = ServiceApp(Service.GATEWAY, settings=settings, description="Slipway's customer API")

    @service.standby_ctx
    async def standing_by(service: ServiceApp) -> AsyncIterator[None]:
        async for _ in leadership.serve_standby(service, settings):
            yield

    @service.cleanup_ctx
    async def state(service: ServiceApp) -> AsyncIterator[None]:
        path = settings.db_path()
        db = await Database.open(path, MIGRATIONS, inline_writes=True)
        reader = await Database.open(path)
        gw = Gateway(
            settings=settings,
            bus=service.bus,
            db=db,
            reader=reader.conn,
            relay=OutboxRelay(db, reader.conn, service.bus, interval=settings.sweep_interval),
            checkpointer=Checkpointer(
                db, reader.conn, service.bus, interval=settings.sweep_interval
            ),
        )
        gw.lookups = InlineReader(path, reader.conn)
        service[STATE] = gw
        if settings.outbox_relay:
            gw.relay.start()
        gw.checkpointer.start()
        try:
            yield
        finally:
            await gw.relay.stop()
            await gw.checkpointer.stop()
            gw.lookups.close()
            await reader.close()
            await db.close()

    @service.cleanup_ctx
    async def http(service: ServiceApp) -> AsyncIterator[None]:
        gw = service[STATE]
        service[WEB] = build_web_app(gw)
        service[WEB][diskpressure.PRESSURE] = service[diskpressure.TRACKER]
        instrument(service[WEB], service.metrics)  # slipway_http_* in the context middleware
        runner = web.AppRunner(
            service[WEB], access_log=None, shutdown_timeout=settings.shutdown_grace
        )
        await runner.setup()
        site = web.TCPSite(runner, settings.api_host, settings.api_port)
        await site.start()
        host, port = runner.addresses[0][:2]
        gw.api_url = settings.api_url or f"http://{host}:{port}"
        await bootstrap(gw)
        try:
            yield
        finally:
            await runner.cleanup()

    @service.command(RELEASE_CREATE)
    async def create_release(cmd: CreateRelease) -> None:
        await releases.create_from_build(service[STATE], cmd)

    @service.rpc(CONFIG_SEALED_GET)
    async def sealed_config(request: GetSealedConfig) -> SealedConfig:
        return await internal.sealed_config(service[STATE], request)

    @service.rpc(DESIRED_GET)
    async def desired(request: GetDesired) -> DesiredState:
        return await internal.desired(service[STATE], request)

    @service.cleanup_ctx
    async def git_pushes(service: ServiceApp) -> AsyncIterator[None]:
        sweeper = sources.SourceSweeper(service[STATE])
        sweeper.start()
        try:
            async with pushes.channel(service[WEB][pushes.STATE]):
                yield
        finally:
            await sweeper.stop()

    @service.event("builds", BUILD_FINISHED)
    async def build_finished(event: BuildFinished) -> None:
        await builds.finished(service[STATE], event)

    @service.event("deploys", DEPLOY_FINISHED)
    async def deploy_finished(event: DeployFinished) -> None:
        await releases.deploy_finished(service[STATE], event)

    backupverify.install(service, lambda: service[STATE])
    addonrecovery.install(service, lambda: service[STATE])
    rendezvous.install(service, lambda: service[STATE])

    @service.event("addons", ADDON_CHANGED)
    async def addon_changed(event: AddonChanged) -> None:
        await addons.changed(service[STATE], event)

    @service.rpc(ADDON_CREDENTIALS_GET)
    async def addon_credentials(request: GetAddonCredentials) -> AddonCredentials:
        return await addons.credentials(service[STATE], request)

    diskpressure.install(service)
    diskwatch.watch(
        service,
        [
            (diskwatch.STATE_FOLDER, settings.home_path / Service.GATEWAY),
            ("bus store (JetStream)", settings.home_path / "nats"),
        ],
    )
    service.snapshot_sources = snapshot.sources(settings)
    return service
