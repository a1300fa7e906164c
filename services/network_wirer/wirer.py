"""Keep HAProxy's routes equal to the `up` web dynos: on events, periodically, and at start.

A reconcile asks the gateway for every app (names, maintenance, domains) and the
scheduler for every web dyno, computes the routes (routes.py) and hands them to the
`Reconciler` (haproxy/reconcile.py), which changes the running HAProxy through its
runtime API only: no reload unless its pool of backends must grow. Events only
*trigger* a reconcile, so an event replayed late or twice can never put an old state
back, and a missed event is healed by the next periodic pass, which also reads HAProxy
back whole (drift, a restarted HAProxy). A source that does not answer keeps its last
answer: the router goes on routing to the dynos it knew.

After the routes, the certificates (tls.py) and the app networks: neither may hold up
routing, so their failures are logged and retried on the next pass.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from slipway.contracts.gateway import DESIRED_GET, GetDesired
from slipway.contracts.scheduler import DYNOS_LIST, ListDynos
from slipway.libs.bus import Bus
from slipway.libs.errors import SlipwayError
from slipway.libs.haproxy import HAProxyError
from slipway.libs.waits import wait_for_event
from slipway.services.network_wirer.haproxy.access import AccessJoiner
from slipway.services.network_wirer.haproxy.config import Layout
from slipway.services.network_wirer.haproxy.reconcile import Reconciler, write_files
from slipway.services.network_wirer.networks import Networks
from slipway.services.network_wirer.routes import app_routes
from slipway.services.network_wirer.store import Snapshot
from slipway.services.network_wirer.tls import RouterCertificates

log = structlog.get_logger("slipway.network_wirer")

FIRST_POOL = 16  # backends of the first configuration (reconcile.grown_pool's minimum)
SOON = 0.5  # seconds before another pass when work remains (draining servers, certificates)


class Wirer:
    """The reconcile loop and what it drives."""

    def __init__(
        self,
        bus: Bus,
        reconciler: Reconciler,
        *,
        base_domain: str,
        router_host: str,
        interval: float,
        joiner: AccessJoiner | None = None,
        certificates: RouterCertificates | None = None,
        networks: Networks | None = None,
    ) -> None:
        self.bus = bus
        self.reconciler = reconciler
        self.base_domain = base_domain
        self.router_host = router_host
        self.interval = interval
        self.joiner = joiner
        self.certificates = certificates
        self.networks = networks
        self.snapshot = Snapshot()
        self._kick = asyncio.Event()
        self._asked = 0
        self._done = 0
        self._progress = asyncio.Condition()
        self._soon: asyncio.TimerHandle | None = None
        self._configured = False
        self._stopped = False  # the loop ended: nobody waits for a pass that never comes

    async def _fetch(self) -> None:
        try:
            desired = await self.bus.call(DESIRED_GET, GetDesired(), timeout=5.0)
            self.snapshot.apps = desired.apps
        except SlipwayError as exc:
            log.warning("reconcile.gateway_unavailable", error=exc.message)
        try:
            listed = await self.bus.call(DYNOS_LIST, ListDynos(web_only=True), timeout=5.0)
            self.snapshot.dynos = listed.dynos
        except SlipwayError as exc:
            log.warning("reconcile.scheduler_unavailable", error=exc.message)

    async def _configure(self) -> None:
        """Replace HAProxy's starting configuration (libs/haproxy: every request 503) with
        ours, once: it answers 404 for unknown hosts even when no app exists yet."""
        running = await self.reconciler.read()
        self._configured = True
        if running.pool_size > 0:
            return
        options = self.reconciler.options
        write_files(
            Layout(pool_size=FIRST_POOL, hosts={}, servers={}), options, self.reconciler.pages
        )
        await self.reconciler.server.reload()
        await self.reconciler.runtime.close()  # the old worker's session ended with it
        self.snapshot.reloads += 1
        log.info("router.configured", backends=FIRST_POOL)

    async def reconcile(self, *, full: bool = False) -> None:
        """One pass: fetch, route (runtime API), certificates, networks."""
        await self._fetch()
        snap = self.snapshot
        snap.reconciles += 1
        if not snap.complete:
            return
        assert snap.apps is not None
        assert snap.dynos is not None
        routes = app_routes(snap.apps, snap.dynos, self.base_domain, self.router_host)
        if self.joiner is not None:
            self.joiner.update(routes)
        if not self._configured:
            await self._configure()
        outcome = await self.reconciler.reconcile(routes, full=full)
        snap.commands += outcome.commands
        snap.reloads += int(outcome.reloaded)
        snap.routes = routes
        if outcome.commands:
            log.info(
                "router.changed",
                apps=len(routes),
                commands=outcome.commands,
                reloaded=outcome.reloaded,
                draining=len(outcome.draining),
            )
        more = outcome.pending
        if self.certificates is not None:
            try:
                tls = await self.certificates.update(self.reconciler.runtime, routes)
                more = more or tls.remaining > 0
            except (HAProxyError, SlipwayError, OSError) as exc:
                log.warning("tls.failed", error=repr(exc))
        if more:
            self._again_soon()
        if self.networks is not None:
            try:
                await self.networks.sync(app.app_id for app in snap.apps)
            except Exception as exc:  # routing must not wait on Docker or iptables
                log.warning("networks.failed", error=repr(exc))

    def _again_soon(self) -> None:
        """Another pass shortly: servers still draining, certificates still due."""
        if self._soon is None or self._soon.cancelled():
            loop = asyncio.get_running_loop()
            self._soon = loop.call_later(SOON, self._kick.set)

    async def refresh(self) -> None:
        """Ask for a reconcile and wait until one that started after this call has run."""
        self._asked += 1
        target = self._asked
        self._kick.set()
        async with self._progress:
            await self._progress.wait_for(lambda: self._done >= target or self._stopped)

    async def run(self) -> None:
        """Reconcile now, then on every kick and every `interval` seconds, until cancelled.

        A pass that was kicked looks at what changed; the periodic one reads HAProxy back
        whole, so drift of any kind is healed within `interval`."""
        try:
            await self._loop()
        finally:
            self._stopped = True
            async with self._progress:
                self._progress.notify_all()

    async def _loop(self) -> None:
        full = True
        while True:
            target = self._asked
            self._kick.clear()
            self._soon = None
            try:
                await self.reconcile(full=full)
            except (SlipwayError, HAProxyError, OSError) as exc:
                log.warning("reconcile.failed", error=str(exc))
                self._configured = False
                self._again_soon()
            except Exception:
                log.exception("reconcile.crashed")
                self._configured = False
                self._again_soon()
            async with self._progress:
                self._done = target
                self._progress.notify_all()
            full = False
            # Not asyncio.wait_for: on 3.11 it could swallow the cancellation (libs/waits).
            full = not await wait_for_event(self._kick, self.interval)

    async def close(self) -> None:
        if self._soon is not None:
            self._soon.cancel()
        with contextlib.suppress(HAProxyError, OSError):
            await self.reconciler.close()
