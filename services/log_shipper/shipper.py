"""One host's log-shipper, assembled: history, tail, drains, dyno output, metrics and loops.

Router access records feed both the app's history (a `heroku[router]` line) and its
metric series (counts and response times, series.py).

The handlers in app.py call into `Shipper`; nothing here knows about the
service runner. Drain URLs are kept sealed in the database and in
`DRAIN_CHANGED` events (envelope, purpose LOGS, bound to the drain's id) and
opened into memory only, by every log-shipper, to ship.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import uuid
from collections.abc import Coroutine
from typing import Any

import structlog

from slipway.contracts.base import decoder
from slipway.contracts.gateway import DESIRED_GET, GetDesired, LogRetentionChanged
from slipway.contracts.keyring import Purpose
from slipway.contracts.log_shipper import (
    DRAIN_CHANGED,
    AddDrain,
    DrainChanged,
    DrainInfo,
    RemoveDrain,
)
from slipway.contracts.logs import LogLines, RouterAccess
from slipway.libs.bus import Bus
from slipway.libs.crypto import Binding, envelope
from slipway.libs.errors import Conflict, InvalidRequest, NotFound
from slipway.libs.storage import Database
from slipway.services.log_shipper import formats, platform, store
from slipway.services.log_shipper.drains import Drains, DrainTarget, check_url
from slipway.services.log_shipper.dynos import Dyno, DynoRegistry
from slipway.services.log_shipper.history import History, RawLine
from slipway.services.log_shipper.metrics import Metrics
from slipway.services.log_shipper.receiver import DynoOutput
from slipway.services.log_shipper.series import Series
from slipway.services.log_shipper.settings import LogShipperSettings
from slipway.services.log_shipper.tail import TailFanout

log = structlog.get_logger("slipway.log_shipper")

MAX_DRAINS_PER_APP = 20
MAX_ORPHAN_LINES = 10_000  # lines held, in memory, for apps whose team is not known yet
ASK_GATEWAY_EVERY = 5.0
RECONNECT_CHECK = 1.0  # how often a reconnect to NATS is looked for (then the dynos are listed)
SYNC_BACKOFF_MAX = 30.0
_LINES = decoder(LogLines)
_ACCESS = decoder(RouterAccess)


class Shipper:
    """Everything one log-shipper runs, with the operations its handlers need."""

    def __init__(
        self, settings: LogShipperSettings, bus: Bus, db: Database, reader: Database, seq: int
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.db = db
        self.history = History(db, reader, bus, settings, seq)
        self.tail = TailFanout(bus, settings.host_id, settings.tail_interval)
        self.drains = Drains(settings, notify=self._drain_notice)
        self.history.listeners += [self.tail.offer, self.drains.offer]
        self.registry = DynoRegistry(settings.host_id, db, settings.identify_wait)
        self.receiver = DynoOutput(
            settings.socket_folder(), self.registry, self.history, self._dyno_lines
        )
        self.series = Series(db, reader, settings.series_flush_interval)
        self.metrics = Metrics(
            self.registry, self.history, settings.metrics_interval, series=self.series
        )
        self.halt = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._teams: dict[str, str] = {}
        self._orphans: dict[str, list[RawLine]] = {}
        self._asked: dict[str, float] = {}
        # Lines taken in by origin and dropped by reason, read by the metrics (linecounts.py).
        self.lines_in: collections.Counter[str] = collections.Counter()
        self.lines_dropped: collections.Counter[str] = collections.Counter()

    async def start(self) -> None:
        """Start the loops: sealing, tail, dyno registry and socket, metrics, sweeps, drains."""
        self._spawn(self.history.run(self.halt), "history")
        self._spawn(self.tail.run(self.halt), "tail")
        await self.registry.load()
        self._spawn(self._keep_registry(), "registry")
        await self.receiver.start()
        await self.series.load()
        self._spawn(self.series.run(self.halt), "series")
        if self.settings.metrics_interval > 0:
            self._spawn(self.metrics.run(self.halt), "metrics")
        self._spawn(self._sweep(), "sweep")
        self._spawn(self._load_drains(), "drains")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(work, name=f"log-shipper:{name}"))

    async def stop(self) -> None:
        """Stop reading first, then seal what is pending, then stop shipping."""
        await self.receiver.stop()
        self.halt.set()
        for task in self._tasks:
            if task.get_name().endswith(("registry", "sweep", "drains")):
                task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.drains.stop()

    async def _keep_registry(self) -> None:
        """The scheduler's listing at start and after each reconnect (events keep it current)."""
        synced_at = -1
        delay = 0.5
        while True:
            reconnects = int(self.bus.nc.stats.get("reconnects", 0))
            if reconnects != synced_at:
                try:
                    running = await self.registry.sync(self.bus)
                except Exception as exc:  # the scheduler is not up yet: events still arrive
                    log.warning("dynos.list_failed", error=repr(exc))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, SYNC_BACKOFF_MAX)
                    continue
                log.info("dynos.listed", running=running)
                synced_at, delay = reconnects, 0.5
            await asyncio.sleep(RECONNECT_CHECK)

    def _dyno_lines(self, dyno: Dyno, lines: list[RawLine]) -> None:
        """Lines a dyno's init sent: its team comes from its labels, not from a lookup."""
        self.lines_in["dyno"] += len(lines)
        self.history.add(dyno.app_id, dyno.team_id, lines)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval)
            removed = await store.sweep(
                self.db,
                default_retention=self.settings.retention_days * 86400.0,
                max_bytes=self.settings.max_bytes_per_app,
            )
            if removed:
                log.info("history.swept", batches=removed)

    # ---- lines other services send --------------------------------------------------

    async def on_lines(self, data: bytes) -> None:
        """LogLines from the router, builder or platform, on `lines_subject`."""
        message = _LINES.decode(data)
        self.lines_in["platform"] += len(message.lines)
        by_app: dict[str, list[RawLine]] = {}
        for line in message.lines:
            by_app.setdefault(line.app_id, []).append(platform.from_log_line(line))
        for app_id, lines in by_app.items():
            await self.add(app_id, lines)

    async def on_access(self, data: bytes) -> None:
        """One router access record, as Heroku's `heroku[router]` line."""
        access = _ACCESS.decode(data)
        self.lines_in["router"] += 1
        self.series.request(
            access.app_id, access.timestamp, access.status, access.connect_ms + access.service_ms
        )
        line: RawLine = (access.timestamp, "heroku", "router", formats.router_text(access), False)
        await self.add(access.app_id, [line])

    async def add(self, app_id: str, lines: list[RawLine], team_id: str | None = None) -> None:
        """Take lines of an app in, finding its team if the caller does not know it."""
        team = team_id or await self.team_of(app_id)
        if team is None:
            # The app's first event may still be on its way: hold a few lines for it.
            waiting = self._orphans.setdefault(app_id, [])
            room = MAX_ORPHAN_LINES - sum(len(v) for v in self._orphans.values())
            if room < len(lines):
                log.warning("lines.unknown_app_dropped", app_id=app_id, lines=len(lines) - room)
                self.lines_dropped["unknown_app"] += len(lines) - max(room, 0)
            waiting.extend(lines[: max(room, 0)])
            return
        self.history.add(app_id, team, lines)

    async def team_of(self, app_id: str) -> str | None:
        """The app's team: remembered, else from the database, else asked of the gateway."""
        team = self._teams.get(app_id) or await store.team_of(self.db, app_id)
        if team is None and time.monotonic() >= self._asked.get(app_id, 0.0):
            # Asked at most every few seconds per app: a gateway away must not stall lines.
            self._asked[app_id] = time.monotonic() + ASK_GATEWAY_EVERY
            try:
                desired = await self.bus.call(DESIRED_GET, GetDesired(app_id=app_id), timeout=2.0)
            except Exception as exc:  # the gateway is away: these lines cannot be placed
                log.warning("lines.team_unknown", app_id=app_id, error=repr(exc))
                return None
            team = next((a.team_id for a in desired.apps if a.app_id == app_id), None)
        if team is not None:
            await self.remember(app_id, team)
        return team

    async def remember(self, app_id: str, team_id: str) -> None:
        """Record the app's team; lines held while it was unknown are taken in now."""
        if self._teams.get(app_id) != team_id:
            self._teams[app_id] = team_id
            await store.remember_app(self.db, app_id, team_id)
        waiting = self._orphans.pop(app_id, None)
        if waiting:
            self.history.add(app_id, team_id, waiting)

    # ---- drains -------------------------------------------------------------------------

    async def add_drain(self, request: AddDrain) -> DrainInfo:
        """Check, seal and record a drain; every log-shipper learns it from DRAIN_CHANGED."""
        url = check_url(request.url)
        mine = [w for w in self.drains.workers.values() if w.target.app_id == request.app_id]
        if any(w.target.url == url for w in mine):
            raise Conflict("This app already drains to that URL.")
        if len(mine) >= MAX_DRAINS_PER_APP:
            raise InvalidRequest(f"An app has at most {MAX_DRAINS_PER_APP} drains.")
        drain_id = str(uuid.uuid4())
        sealed = await envelope.encrypt(
            self.bus, request.team_id, Purpose.LOGS, _drain_place(request, drain_id), url.encode()
        )
        event = DrainChanged(
            drain_id=drain_id,
            app_id=request.app_id,
            team_id=request.team_id,
            token=f"d.{uuid.uuid4()}",
            sealed_url=sealed,
            created_at=time.time(),
        )
        await self.apply_drain(event, url)
        await self.bus.publish(DRAIN_CHANGED, event)
        return _info(event, url)

    async def remove_drain(self, request: RemoveDrain) -> DrainInfo:
        """Remove a drain named by id, token or URL."""
        for info in await self.list_drains(request.app_id):
            if request.ident in (info.id, info.token, info.url):
                event = DrainChanged(
                    drain_id=info.id,
                    app_id=info.app_id,
                    team_id=request.team_id,
                    token=info.token,
                    removed=True,
                )
                await self.apply_drain(event, info.url)
                await self.bus.publish(DRAIN_CHANGED, event)
                return info
        raise NotFound("Couldn't find that log drain.")

    async def list_drains(self, app_id: str) -> list[DrainInfo]:
        """The app's drains, their URLs opened from memory (or the keyring)."""
        found: list[DrainInfo] = []
        for row in await store.drains(self.db, app_id):
            worker = self.drains.workers.get(row.id)
            url = worker.target.url if worker else await self._open_url(row)
            found.append(
                DrainInfo(
                    id=row.id,
                    app_id=row.app_id,
                    url=url,
                    token=row.token,
                    created_at=row.created_at,
                    updated_at=row.updated_at,
                    status=worker.status if worker else "pending",
                )
            )
        return found

    async def _drain_notice(self, app_id: str, text: str) -> None:
        """A drain's refusal, as a `heroku[logplex]` line in the app's own log."""
        await self.add(app_id, [(time.time(), "heroku", "logplex", text, False)])

    async def apply_drain(self, event: DrainChanged, url: str | None = None) -> None:
        """Record a drain change in this host's database and start or stop shipping."""
        if event.removed:
            async with self.db.transaction() as conn:
                await store.delete_drain(conn, event.drain_id)
            await self.drains.remove(event.drain_id)
            return
        row = store.DrainRow(
            id=event.drain_id,
            app_id=event.app_id,
            team_id=event.team_id,
            token=event.token,
            sealed_url=event.sealed_url,
            created_at=event.created_at,
            updated_at=event.created_at,
        )
        async with self.db.transaction() as conn:
            await store.put_drain(conn, row)
        await self.remember(event.app_id, event.team_id)
        plain = url if url is not None else await self._open_url(row)
        self.drains.add(DrainTarget(event.drain_id, event.app_id, event.token, plain))

    async def _open_url(self, row: store.DrainRow) -> str:
        place = Binding(team=row.team_id, app=row.app_id, kind="drain", record=row.id)
        plain = await envelope.decrypt(self.bus, row.team_id, Purpose.LOGS, place, row.sealed_url)
        return plain.decode()

    async def _load_drains(self) -> None:
        # At start the keyring may still be starting: retry until every drain is open.
        pending = await store.drains(self.db)
        delay = 0.5
        while pending:
            row = pending[0]
            try:
                url = await self._open_url(row)
            except Exception as exc:  # the keyring is not up yet
                log.warning("drains.load_failed", drain=row.id, error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            self.drains.add(DrainTarget(row.id, row.app_id, row.token, url))
            pending.pop(0)

    # ---- apps and teams going away ------------------------------------------------------

    async def drop_app(self, app_id: str) -> None:
        """The app was destroyed: forget its history and drains on this host."""
        await self.drains.remove_app(app_id)
        self.history.forget(app_id)
        self.series.forget(app_id)
        self.metrics.forget(app_id)
        async with self.db.transaction() as conn:
            await store.drop_app(conn, app_id)
        self._teams.pop(app_id, None)
        self._orphans.pop(app_id, None)

    async def drop_team(self, team_id: str) -> None:
        """The team's key was shredded: its batches can never open again; delete them."""
        for app_id, team in list(self._teams.items()):
            if team == team_id:
                await self.drains.remove_app(app_id)
                self.history.forget(app_id)
                self.series.forget(app_id)
                self._teams.pop(app_id, None)
        async with self.db.transaction() as conn:
            await store.drop_team(conn, team_id)

    # ---- retention --------------------------------------------------------------------------

    async def apply_retention(self, event: LogRetentionChanged) -> None:
        """The app's retention changed in the gateway: the next sweep keeps history that long."""
        days = event.retention_days
        seconds = None if days is None else days * 86400.0
        await store.apply_retention(self.db, event.app_id, event.team_id, seconds, event.revision)
        await self.remember(event.app_id, event.team_id)


def _drain_place(request: AddDrain, drain_id: str) -> Binding:
    return Binding(team=request.team_id, app=request.app_id, kind="drain", record=drain_id)


def _info(event: DrainChanged, url: str) -> DrainInfo:
    return DrainInfo(
        id=event.drain_id,
        app_id=event.app_id,
        url=url,
        token=event.token,
        created_at=event.created_at,
        updated_at=event.created_at,
        status="pending",
    )
