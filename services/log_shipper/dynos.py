"""Which containers are this host's dynos: the scheduler's word, never Docker's.

The scheduler alone creates dynos and alone may publish `DYNO_CHANGED`; every
log-shipper reads all of them in its own `host-<id>` consumer and keeps those
placed on its host (container id -> app, team, dyno name, release, process
type, state, restarts). One `DYNOS_LIST` at start and after each reconnect to
NATS catches up on what a gap could have hidden. What it learnt is stored, so
a restarted log-shipper knows its dynos before the scheduler answers.

The receiver (receiver.py) asks `identify` for the container a connection came
from (the kernel names it). A container the scheduler has not announced yet
waits a few seconds, unread, for its `DYNO_CHANGED` (the scheduler starts a
container and publishes from its outbox, so the init may connect first); then
it is refused and remembered for a while, so a stranger reconnecting costs no
wait. No Docker client is held: whoever holds the Docker socket is root on the host.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass

import structlog

from slipway.contracts import scheduler as sc
from slipway.libs.bus import Bus
from slipway.libs.storage import Database
from slipway.services.log_shipper import store

log = structlog.get_logger("slipway.log_shipper.dynos")

IDENTIFY_WAIT = 5.0  # seconds an unannounced container waits for the scheduler's word
MAX_WAITING = 64  # connections waiting at once; more are refused at once
STRANGERS_KEPT = 1024  # containers refused lately, answered at once
STRANGER_TTL = 60.0
DOWN_KEPT = 600.0  # a dyno gone down stays known this long: its init flushes, then exits


@dataclass(frozen=True, slots=True)
class Dyno:
    """One dyno of this host, as the scheduler announced it."""

    container_id: str
    app_id: str
    team_id: str
    dyno: str
    release: int = 0
    process_type: str = ""
    state: str = "starting"
    restarts: int = 0
    updated_at: float = 0.0

    def row(self) -> tuple[str, str, str, str, int, str, str, int, float]:
        """The dyno as `store.put_dyno` takes it."""
        return (
            self.container_id,
            self.app_id,
            self.team_id,
            self.dyno,
            self.release,
            self.process_type,
            self.state,
            self.restarts,
            self.updated_at,
        )


def dyno_of(announced: sc.Dyno, host_id: str) -> Dyno | None:
    """The scheduler's dyno as this host's registry keeps it; None if not on `host_id`."""
    if announced.host_id != host_id or not announced.container_id or not announced.team_id:
        return None
    return Dyno(
        container_id=announced.container_id,
        app_id=announced.app_id,
        team_id=announced.team_id,
        dyno=announced.name,
        release=announced.release_version,
        process_type=announced.process_type,
        state=announced.state,
        restarts=announced.restart_count,
        updated_at=announced.updated_at,
    )


class DynoRegistry:
    """This host's dynos, from the scheduler's events and listing; a bounded wait for a new one."""

    def __init__(self, host_id: str, db: Database, wait: float = IDENTIFY_WAIT) -> None:
        self.host_id = host_id
        self.db = db
        self.wait = wait
        self._known: dict[str, Dyno] = {}
        self._arrived: dict[str, tuple[asyncio.Event, list[int]]] = {}  # id -> (event, [waiters])
        self._waiting = 0
        self._strangers: OrderedDict[str, float] = OrderedDict()
        self.waited = 0  # connections that had to wait for the scheduler's word (tests read it)

    async def load(self) -> None:
        """What this host's log-shipper learnt before it restarted."""
        for row in await store.dynos(self.db):
            self._known[row[0]] = Dyno(*row)

    @property
    def running(self) -> list[Dyno]:
        """The dynos not down: the ones metrics are sampled for."""
        return [d for d in self._known.values() if d.state != "down"]

    def get(self, container_id: str) -> Dyno | None:
        """The dyno with this container id, if announced."""
        return self._known.get(container_id)

    async def apply(self, announced: sc.Dyno) -> None:
        """Take in the scheduler's word on one dyno (an older word than the one held is ignored)."""
        dyno = dyno_of(announced, self.host_id)
        if dyno is None:
            return
        held = self._known.get(dyno.container_id)
        if held is not None and held.updated_at > dyno.updated_at:
            return
        self._known[dyno.container_id] = dyno
        self._strangers.pop(dyno.container_id, None)
        arrived = self._arrived.get(dyno.container_id)
        if arrived is not None:
            arrived[0].set()
        await store.put_dyno(self.db, dyno.row())
        if dyno.state == "down":
            await self.prune()  # the ones down long enough before this one

    async def sync(self, bus: Bus) -> int:
        """Ask the scheduler for every dyno and take in this host's; how many there are."""
        listing = await bus.call(sc.DYNOS_LIST, sc.ListDynos(), timeout=10.0)
        for announced in listing.dynos:
            await self.apply(announced)
        await self.prune()
        return len(self.running)

    async def prune(self) -> None:
        """Forget dynos down for a while: their containers are gone or going."""
        horizon = time.time() - DOWN_KEPT
        gone = [
            d.container_id
            for d in self._known.values()
            if d.state == "down" and d.updated_at < horizon
        ]
        for container_id in gone:
            del self._known[container_id]
        if gone:
            await store.forget_dynos(self.db, gone)

    async def identify(self, container_id: str) -> Dyno | None:
        """The dyno with this container id, waiting a little for its announcement; None: none."""
        known = self._known.get(container_id)
        if known is not None:
            return known
        seen = self._strangers.get(container_id)
        if seen is not None and time.monotonic() - seen < STRANGER_TTL:
            return None
        if self._waiting >= MAX_WAITING:
            return None
        self._waiting += 1
        self.waited += 1
        arrived, waiters = self._arrived.setdefault(container_id, (asyncio.Event(), [0]))
        waiters[0] += 1
        try:
            await asyncio.wait_for(arrived.wait(), self.wait)
        except TimeoutError:
            self._remember_stranger(container_id)
            return None
        finally:
            self._waiting -= 1
            waiters[0] -= 1
            if waiters[0] == 0:
                self._arrived.pop(container_id, None)
        return self._known.get(container_id)

    def _remember_stranger(self, container_id: str) -> None:
        self._strangers[container_id] = time.monotonic()
        self._strangers.move_to_end(container_id)
        while len(self._strangers) > STRANGERS_KEPT:
            self._strangers.popitem(last=False)
