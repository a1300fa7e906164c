"""Uptime probes (#20 item 4): every routed app, through the router, every `probe_interval`.

network-wirer runs beside HAProxy and knows every route, so it probes from the router's
host: `GET /` on the router's HTTP listener (loopback) with the app's hostname, as a
user's request would arrive. Each request carries `X-Slipway-Probe: <secret>`, a random
value made when this process starts and never written anywhere: HAProxy logs only its
SHA-256 and deletes the header before the dyno (haproxy/config.py), and the access joiner
drops lines with that digest (haproxy/access.py), so a probe makes no `heroku[router]`
line and no router metric, and a customer, never seeing the secret, cannot use it to
hide their own traffic. The dyno does receive the request: its own access log shows
`GET /` with the User-Agent below, once per interval.

Up or down, Heroku-style: a probe is *up* when a dyno answered, whatever its status (a
dyno's 5xx is counted apart, as an error of the app); *down* when the router answered
for it (its pages carry `X-Router-Error`: H10, H12, H13) or nothing answered at all (H99,
the platform's own failure). Apps in maintenance or without web dynos are not probed:
they are not meant to serve, and an incident open for one is closed.

Results go to uptimestore.py. The loop never dies: a failed round is logged and the
next one comes after the interval as usual.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import secrets
import time
from collections.abc import Callable, Sequence

import aiohttp
import structlog

from slipway.services.network_wirer.haproxy.config import ERROR_HEADER, PROBE_HEADER
from slipway.services.network_wirer.routes import AppRoute, hostname_of
from slipway.services.network_wirer.uptimestore import ProbeResult, UptimeStore

log = structlog.get_logger("slipway.network_wirer.uptime")

USER_AGENT = "Slipway-Uptime/1 (the platform's availability probe)"
PLATFORM_CODE = "H99"  # the router did not answer at all: the platform failed, not the app
CONCURRENCY = 32  # probes in flight at once: a round over 10,000 apps at 30 s is ~330/s
PRUNE_EVERY = 3600.0


def new_marker() -> str:
    """A secret for this process's probes: 256 random bits, header-safe."""
    return secrets.token_urlsafe(32)


def marker_digest(marker: str) -> str:
    """What HAProxy logs for a request carrying `marker` (`sha2(256),base64`)."""
    return base64.b64encode(hashlib.sha256(marker.encode()).digest()).decode()


def probed(route: AppRoute) -> bool:
    """Whether the app is meant to serve: not in maintenance, with web dynos (up or crashed)."""
    return not route.maintenance and (bool(route.upstreams) or route.crashed)


def probe_host(listen_host: str) -> str:
    """Where the router's HTTP listener is reached from its own host."""
    if listen_host in ("", "0.0.0.0", "*"):  # noqa: S104 - compared, not bound: every interface
        return "127.0.0.1"
    if listen_host in ("::", "[::]"):
        return "[::1]"
    return (
        f"[{listen_host}]"
        if ":" in listen_host and not listen_host.startswith("[")
        else listen_host
    )


class Prober:
    """Probes every app `routes()` names, every `interval` seconds, and records the results."""

    def __init__(
        self,
        store: UptimeStore,
        routes: Callable[[], Sequence[AppRoute] | None],
        *,
        marker: str,
        base_domain: str,
        router_url: str,
        interval: float,
        timeout: float,
    ) -> None:
        self.store = store
        self.routes = routes
        self.marker = marker
        self.base_domain = base_domain
        self.router_url = router_url.rstrip("/")
        self.interval = interval
        self.timeout = timeout
        self.rounds = 0
        self.last_round_at: float | None = None
        self._round_done = asyncio.Condition()
        self._session: aiohttp.ClientSession | None = None

    async def probe(self, route: AppRoute) -> ProbeResult:
        """One request through the router for `route`'s app: up, or the router's error code."""
        assert self._session is not None
        host = hostname_of(route.app_name, self.base_domain)
        at = time.time()
        headers = {"Host": host, PROBE_HEADER: self.marker, "User-Agent": USER_AGENT}
        try:
            async with self._session.get(
                f"{self.router_url}/", headers=headers, allow_redirects=False
            ) as response:
                # The body is never read: the status and the router's header say it all (each
                # probe has its own connection, closed here, so nothing waits on an app's body).
                code = response.headers.get(ERROR_HEADER, "")
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("uptime.no_answer", app_id=route.app_id, error=repr(exc))
            return ProbeResult(app_id=route.app_id, at=at, up=False, code=PLATFORM_CODE)
        if code:
            return ProbeResult(app_id=route.app_id, at=at, up=False, status=status, code=code[:8])
        return ProbeResult(app_id=route.app_id, at=at, up=True, status=status)

    async def round(self) -> list[ProbeResult]:
        """Probe every app meant to serve once, record the results, close orphaned incidents.

        Nothing at all while the routes are unknown (the gateway or the scheduler has not
        answered yet): an empty list then would close every open incident."""
        known = self.routes()
        if known is None:
            return []
        routes = [r for r in known if probed(r)]
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(route: AppRoute) -> ProbeResult:
            async with gate:
                return await self.probe(route)

        results = list(await asyncio.gather(*(one(r) for r in routes)))
        await self.store.record(results)
        await self.store.end_open({r.app_id for r in routes}, time.time())
        return results

    async def run(self) -> None:
        """Rounds every `interval` seconds until cancelled; a failed round is logged, not fatal."""
        connector = aiohttp.TCPConnector(limit=CONCURRENCY, force_close=True)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        ) as session:
            self._session = session
            pruned = 0.0
            while True:
                started = time.monotonic()
                try:
                    await self.round()
                    if started - pruned >= PRUNE_EVERY or not pruned:
                        await self.store.prune()
                        pruned = started
                except Exception:  # the next round may well work: log it and go on
                    log.exception("uptime.round_failed")
                self.rounds += 1
                self.last_round_at = time.time()
                async with self._round_done:
                    self._round_done.notify_all()
                elapsed = time.monotonic() - started
                await asyncio.sleep(max(self.interval - elapsed, 0.0))

    async def rounds_after(self, count: int) -> None:
        """Wait until `count` more rounds have finished (tests; never a timed assertion)."""
        target = self.rounds + count
        async with self._round_done:
            await self._round_done.wait_for(lambda: self.rounds >= target)


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel the probe loop and wait for it to end."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
