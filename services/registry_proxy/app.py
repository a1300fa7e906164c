"""The registry-proxy process: Distribution as a child, the proxy in front, credentials, GC.

Resources are set up in this order and torn down in reverse:

1. `core`: the database, the signing key, Distribution (started and answering),
   the outbox relay and the garbage collector (which runs a collection a previous
   run still owed);
2. `http`: the proxy's aiohttp server on `registry_host:registry_port` (HTTPS with
   `registry_tls_cert`/`_key`); the address written into credentials is known once
   it is bound.

On SIGTERM the service stops taking RPCs and events, the proxy stops accepting
connections and lets requests in flight (a layer upload) finish within
`shutdown_grace`, then Distribution is stopped and the outbox relayed one last time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from slipway.contracts.registry import ImagePushed
from slipway.contracts.subjects import Service
from slipway.libs import diskwatch
from slipway.libs.service import ServiceApp
from slipway.services.registry_proxy import handlers, snapshot
from slipway.services.registry_proxy.announcer import Announcer
from slipway.services.registry_proxy.credentials import Issuer, load_key
from slipway.services.registry_proxy.distribution import Distribution
from slipway.services.registry_proxy.gate import PushGate
from slipway.services.registry_proxy.gc import Collector
from slipway.services.registry_proxy.proxy import Proxy
from slipway.services.registry_proxy.settings import RegistryProxySettings
from slipway.services.registry_proxy.state import STATE, RegistryProxy
from slipway.services.registry_proxy.store import Store

log = structlog.get_logger("slipway.registry_proxy")


def _loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host == "localhost" or host.startswith("127.") or host == "::1"


def create_service(settings: RegistryProxySettings) -> ServiceApp:
    """registry-proxy as a runnable service."""
    service = ServiceApp(
        Service.REGISTRY_PROXY,
        settings=settings,
        description="Slipway's registry-proxy: scoped credentials in front of Distribution",
    )

    @service.cleanup_ctx
    async def core(service: ServiceApp) -> AsyncIterator[None]:
        store = await Store.open(settings.db_path())
        distribution = Distribution(settings)
        announcer = Announcer(store, service.bus)
        gate = PushGate(idle_s=settings.registry_push_idle_s, wait_s=settings.registry_gc_wait_s)
        collector = Collector(
            store,
            distribution,
            gate,
            keep=settings.rollback_window,
            grace=settings.registry_unreleased_grace_s,
            delay=settings.registry_gc_delay_s,
        )

        async def record(event: ImagePushed) -> None:
            await store.record_push(event)
            announcer.wake()

        issuer = Issuer(load_key(settings.signing_key_path()))
        proxy = Proxy(issuer, distribution, gate, record)
        service[STATE] = RegistryProxy(
            settings, store, issuer, distribution, gate, announcer, collector, proxy
        )
        try:
            await distribution.start()
            announcer.start()
            await collector.start()
            yield
        finally:
            await collector.stop()
            await distribution.stop()
            await announcer.stop()
            await store.close()

    @service.cleanup_ctx
    async def http(service: ServiceApp) -> AsyncIterator[None]:
        proxy = service[STATE].proxy
        tls = settings.ssl_context()  # a half-set or unreadable pair stops the start here
        await proxy.open()
        runner = web.AppRunner(
            proxy.web_app(), access_log=None, shutdown_timeout=settings.shutdown_grace
        )
        await runner.setup()
        try:
            site = web.TCPSite(
                runner, settings.registry_host, settings.registry_port, ssl_context=tls
            )
            await site.start()
            host, port = runner.addresses[0][:2]
            proxy.registry = settings.advertised(port)
            log.info(
                "registry.listening",
                address=f"{host}:{port}",
                registry=proxy.registry,
                tls=tls is not None,
            )
            if tls is None and not _loopback(proxy.registry):
                # Engines elsewhere would need --insecure-registry, and pulls (credentials
                # included) would cross the network in the clear.
                log.warning("registry.plain_http", registry=proxy.registry, fix="set TLS")
            yield
        finally:
            await runner.cleanup()
            await proxy.close()

    handlers.register(service)
    service.snapshot_sources = snapshot.sources(service, settings)
    diskwatch.watch(service, diskwatch.state_folders(settings, "registry-proxy", "registry"))
    return service
