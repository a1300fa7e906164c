"""The runner every service uses: settings, logging, bus, handlers, health, graceful stop.

    app = ServiceApp(Service.KEYRING, settings=load_settings(KeyringSettings))

    @app.rpc(keyring.DATAKEY_GENERATE)
    async def generate(req: GenerateDataKey) -> DataKey: ...

    @app.cleanup_ctx
    async def database(app: ServiceApp) -> AsyncIterator[None]:
        app[DB] = await Database.open(...)
        yield
        await app[DB].close()

    if __name__ == "__main__":
        run_service(app)

On SIGTERM or SIGINT the service stops taking work (RPC subscriptions drained,
consumers stop fetching), lets in-flight handlers finish (up to `shutdown_grace`
seconds), tears down its resources in reverse order, drains NATS and exits 0.

A leased service (contracts/leases.py: gateway, keyring, scheduler) may run as several
instances; each stands by until it holds its service's lease (libs/lease.py) and only
then sets up its resources and takes work. While standing by it runs only what
`standby_ctx` registered (the gateway answers its port with 503s, so a load balancer
checking it sends requests to the leader). A leader that loses its lease stops at once
and exits with EXIT_LEASE_LOST, to come back as a standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Generic, TypeVar

import structlog

from slipway.contracts.base import CommandSpec, EventSpec, Message, Rpc
from slipway.contracts.leases import LEASED
from slipway.contracts.subjects import Service
from slipway.libs import logcontext
from slipway.libs.bus import Bus, Route, route
from slipway.libs.lease import Lease, fence, holder_for
from slipway.libs.metrics import Metrics, MetricsServer, socket_path
from slipway.libs.service.discovery import Discovery
from slipway.libs.service.logging import configure_logging
from slipway.libs.service.private import private_umask
from slipway.libs.service.settings import Settings
from slipway.libs.service.snapshots import SourcesFactory, serve_snapshots

log = structlog.get_logger("slipway.service")

T = TypeVar("T")
ReqT = TypeVar("ReqT", bound=Message)
RepT = TypeVar("RepT", bound=Message)
CleanupCtx = Callable[["ServiceApp"], AsyncIterator[None]]

# The exit status of a leader that lost its lease (EX_TEMPFAIL): restart it, as a standby.
EXIT_LEASE_LOST = 75
# The file in a leased service's state folder its leader holds locked (libs/lease.py).
LEADER_LOCK = "leader.lock"


class Key(Generic[T]):
    """A typed key for state kept on the app (like aiohttp's `web.AppKey`)."""

    def __init__(self, name: str, kind: type[T]) -> None:
        self.name = name
        self.kind = kind

    def __repr__(self) -> str:
        return f"Key({self.name!r})"


class ServiceApp:
    """One service: its handlers, its resources and its lifecycle."""

    def __init__(
        self,
        service: Service,
        *,
        settings: Settings | None = None,
        version: str = "0.1.0",
        description: str = "",
        leased: bool | None = None,
    ) -> None:
        self.service = service
        # One active instance, elected by lease (None: as contracts/leases.py declares).
        self.leased = service in LEASED if leased is None else leased
        self.settings = settings or Settings()
        self.version = version
        self.description = description
        self._rpcs: list[tuple[Rpc[Any, Any], Callable[[Any], Awaitable[Any]]]] = []
        self._command_routes: list[Route[Any]] = []
        self._event_routes: dict[str, list[Route[Any]]] = {}
        self._cleanup: list[CleanupCtx] = []
        self._standby: list[CleanupCtx] = []
        self.lease: Lease | None = None  # held while leading
        self.exit_code = 0
        # Under run_service, a leader that lost its lease and has not stopped within its
        # grace is ended outright: a successor is waiting behind its store's lock.
        self.hard_exit_on_lease_loss = False
        self._state: dict[Key[Any], Any] = {}
        self.command_options: dict[str, Any] = {}
        self.stopping = asyncio.Event()
        self.started = asyncio.Event()
        self._bus: Bus | None = None
        # The name this instance answers fan-out RPCs as (log-shipper: its Docker host).
        self.responder: str | None = None
        # What this service exports for platform snapshots (libs/service/snapshots.py);
        # None: it holds nothing worth one, and serves no snapshot RPCs.
        self.snapshot_sources: SourcesFactory | None = None
        # This process's own registry (libs/metrics.py): handlers and resources add to it.
        self.metrics = Metrics(service, enabled=self.settings.metrics == "on")

    # ---- registration --------------------------------------------------------------------

    def rpc(
        self, spec: Rpc[ReqT, RepT]
    ) -> Callable[
        [Callable[[ReqT], Awaitable[RepT | None]]], Callable[[ReqT], Awaitable[RepT | None]]
    ]:
        """Register the handler answering `spec` (None: silent, for fan-out RPCs only)."""

        def register(
            fn: Callable[[ReqT], Awaitable[RepT | None]],
        ) -> Callable[[ReqT], Awaitable[RepT | None]]:
            self._rpcs.append((spec, fn))
            return fn

        return register

    def command(self, spec: CommandSpec[Any]) -> Callable[[T], T]:
        """Register the handler of a command kind (taken from the CMD work queue)."""

        def register(fn: T) -> T:
            self._command_routes.append(route(spec, fn))  # type: ignore[arg-type]
            return fn

        return register

    def event(self, purpose: str, spec: EventSpec[Any]) -> Callable[[T], T]:
        """Register an event handler in the durable consumer named for `purpose`."""

        def register(fn: T) -> T:
            self._event_routes.setdefault(purpose, []).append(route(spec, fn))  # type: ignore[arg-type]
            return fn

        return register

    def cleanup_ctx(self, fn: CleanupCtx) -> CleanupCtx:
        """Register a resource: code before `yield` sets it up, after tears it down."""
        self._cleanup.append(fn)
        return fn

    def standby_ctx(self, fn: CleanupCtx) -> CleanupCtx:
        """Register what a leased service runs while it stands by, torn down before it leads."""
        self._standby.append(fn)
        return fn

    def __getitem__(self, key: Key[T]) -> T:
        return self._state[key]  # type: ignore[no-any-return]

    def __setitem__(self, key: Key[T], value: T) -> None:
        self._state[key] = value

    def get(self, key: Key[T], default: T | None = None) -> T | None:
        """The state under `key`, or `default` before a resource has set it."""
        return self._state.get(key, default)

    @property
    def bus(self) -> Bus:
        if self._bus is None:
            raise RuntimeError(f"{self.service} is not connected yet")
        return self._bus

    # ---- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the service to stop gracefully (what SIGTERM does)."""
        self.stopping.set()

    async def run(self, *, install_signals: bool = True) -> None:
        """Run until stopped, then shut down gracefully."""
        settings = self.settings
        if install_signals:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stop)
        bus = await Bus.connect(
            settings.nats_url,
            self.service,
            instance=settings.instance,
            user=settings.nats_user,
            password=settings.nats_password,
        )
        self._bus = bus
        logcontext.bind(instance=bus.instance)
        try:
            await bus.ensure_streams()
            async with AsyncExitStack() as resources:
                await resources.enter_async_context(self._serve_metrics(bus))
                if self.leased and not await resources.enter_async_context(self._lead(bus)):
                    return  # stopped while standing by
                for fn in self._cleanup:
                    await resources.enter_async_context(asynccontextmanager(fn)(self))
                await self._serve(bus)
                discovery = Discovery(
                    bus, name=self.service, version=self.version, description=self.description
                )
                await discovery.start()
                log.info("service.started", nats=settings.nats_url)
                self.started.set()
                await self.stopping.wait()
                log.info("service.stopping")
                await bus.stop_taking_work()
                if not await bus.wait_idle(settings.shutdown_grace):
                    log.warning("service.stopped_with_work_in_flight")
                await discovery.stop()
        finally:
            await bus.close()
            log.info("service.stopped")

    @asynccontextmanager
    async def _lead(self, bus: Bus) -> AsyncIterator[bool]:
        """Stand by until this instance holds the lease and its store's lock; keep both.

        Yields False if asked to stop first. On the way out the lock is let go and the
        lease released, so a standby takes over at once rather than after the ttl.
        """
        holder = holder_for(self.service, bus.instance)
        lease = await Lease.bind_when_ready(bus.js, self.service, holder, until=self.stopping)
        if lease is None:
            yield False
            return
        async with AsyncExitStack() as standby:
            for fn in self._standby:
                await standby.enter_async_context(asynccontextmanager(fn)(self))
            won = await lease.acquire(until=self.stopping)
        if not won:
            yield False
            return
        # Renewed from now on: the previous leader may hold the lock a while yet.
        keeper = asyncio.create_task(lease.keep(self._lease_lost), name="lease-keeper")
        try:
            lock = self.settings.home_path / self.service / LEADER_LOCK
            async with fence(lock, until=self.stopping) as fenced:
                if fenced:
                    self.lease = lease
                    log.info("service.leading", lease_ttl=lease.ttl)
                yield fenced
        finally:
            self.lease = None
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await lease.release()

    def _lease_lost(self, why: str) -> None:
        log.error("service.lease_lost", reason=why)
        self.exit_code = EXIT_LEASE_LOST
        self.stop()
        if self.hard_exit_on_lease_loss:
            deadline = self.settings.shutdown_grace + 5.0
            timer = threading.Timer(deadline, os._exit, args=(EXIT_LEASE_LOST,))
            timer.daemon = True
            timer.start()

    @asynccontextmanager
    async def _serve_metrics(self, bus: Bus) -> AsyncIterator[None]:
        """Instrument the bus and serve /metrics, first up and last down."""
        settings = self.settings
        if not self.metrics.enabled:
            yield
            return
        bus.metrics = self.metrics.bus
        self.metrics.lag_of = bus
        self.metrics.watch_disk(self.service, settings.home_path / self.service)
        if hasattr(settings, "docker_url"):  # a service that runs containers
            self.metrics.watch_docker_root(settings.docker_url)
        server = MetricsServer(
            self.metrics,
            socket_path(settings.home_path, self.service, settings.instance),
            port=settings.metrics_port,
            host=settings.metrics_host,
        )
        where = await server.start()
        log.info("metrics.serving", at=where)
        try:
            yield
        finally:
            await server.stop()

    async def _serve(self, bus: Bus) -> None:
        if self.snapshot_sources is not None:
            serve_snapshots(self, self.snapshot_sources)
        for spec, handler in self._rpcs:
            await bus.serve(spec, handler, responder=self.responder)
        if self._command_routes:
            await bus.consume_commands(self._command_routes, **self.command_options)
        for purpose, routes in self._event_routes.items():
            await bus.consume_events(purpose, routes)


def run_service(app: ServiceApp) -> None:
    """The `__main__` of a service: configure logging, run, exit 0 after a graceful stop
    (EXIT_LEASE_LOST after a leader lost its lease)."""
    private_umask()  # before any file is made: state under SLIPWAY_HOME is owner-only
    configure_logging(app.service, fmt=app.settings.log_format, level=app.settings.log_level)
    app.hard_exit_on_lease_loss = True
    asyncio.run(app.run())
    sys.exit(app.exit_code)
