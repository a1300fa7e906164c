"""Keep Caddy's routes equal to the `up` web dynos: on events, periodically, and at start.

A reconcile asks the gateway for every app (names, maintenance, domains) and the
scheduler for every web dyno, computes the whole configuration (routes.py) and
loads it when it differs from what Caddy runs. Events only *trigger* a reconcile,
so an event replayed late or twice can never put an old state back, and a missed
event is healed by the next periodic pass. A source that does not answer keeps
its last answer: the router goes on routing to the dynos it knew.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from slipway.contracts.gateway import DESIRED_GET, GetDesired
from slipway.contracts.scheduler import DYNOS_LIST, ListDynos
from slipway.libs.bus import Bus
from slipway.libs.errors import SlipwayError
from slipway.services.network_wirer.access import AccessListener
from slipway.services.network_wirer.caddy import CaddyAdmin
from slipway.services.network_wirer.networks import Networks
from slipway.services.network_wirer.pages import load as load_pages
from slipway.services.network_wirer.routes import RouterOptions, app_routes, caddy_config
from slipway.services.network_wirer.store import Snapshot

log = structlog.get_logger("slipway.network_wirer")


class Wirer:
    """The reconcile loop and what it drives."""

    def __init__(
        self,
        bus: Bus,
        admin: CaddyAdmin,
        options: RouterOptions,
        *,
        base_domain: str,
        interval: float,
        access: AccessListener | None = None,
        networks: Networks | None = None,
    ) -> None:
        self.bus = bus
        self.admin = admin
        self.options = options
        self.base_domain = base_domain
        self.interval = interval
        self.access = access
        self.networks = networks
        self.snapshot = Snapshot()
        self._kick = asyncio.Event()
        self._asked = 0
        self._done = 0
        self._progress = asyncio.Condition()

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

    async def reconcile(self) -> None:
        """One full pass: fetch, compute, load into Caddy if different, wire networks."""
        await self._fetch()
        snap = self.snapshot
        snap.reconciles += 1
        if not snap.complete:
            return
        assert snap.apps is not None
        assert snap.dynos is not None
        routes = app_routes(snap.apps, snap.dynos, self.base_domain, self.options.router_host)
        if self.access is not None:
            self.access.joiner.update(routes)
        config = caddy_config(routes, self.options, load_pages())
        running: Any = await self.admin.config()
        if running != config:
            await self.admin.load(config)
            snap.loads += 1
            log.info("router.loaded", apps=len(routes), upstreams=_count(routes))
        snap.routes = routes
        if self.networks is not None:
            try:
                await self.networks.ensure(app.app_id for app in snap.apps)
            except Exception as exc:  # routing must not wait on Docker or iptables
                log.warning("networks.failed", error=repr(exc))

    async def refresh(self) -> None:
        """Ask for a reconcile and wait until one that started after this call has run."""
        self._asked += 1
        target = self._asked
        self._kick.set()
        async with self._progress:
            await self._progress.wait_for(lambda: self._done >= target)

    async def run(self) -> None:
        """Reconcile now, then on every kick and every `interval` seconds, until cancelled."""
        while True:
            target = self._asked
            self._kick.clear()
            try:
                await self.reconcile()
            except SlipwayError as exc:
                log.warning("reconcile.failed", error=exc.message)
            except Exception:
                log.exception("reconcile.crashed")
            async with self._progress:
                self._done = target
                self._progress.notify_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.interval)


def _count(routes: list[Any]) -> int:
    return sum(len(r.upstreams) for r in routes)
