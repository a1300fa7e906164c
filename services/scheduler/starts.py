"""Dynos that could not start on a host: counted, moved after a few tries, shown meanwhile.

A start can fail on one host for reasons of that host (its engine cannot reach the
registry, lacks the dyno init, refuses the create). Retried there forever, the dyno
stays missing and the user is told nothing (issue #18, item 4). So:

- Every failed start of an app's dyno on a host counts against (app, host); a start
  that gets a container running there resets the count.
- After `move_after` consecutive failures the host is avoided for that app's new
  dynos for `cooloff` seconds: placement puts them on another host
  (`DesiredFormation.avoid`), at once.
- Until it runs, the dyno is listed (`ps`, `DYNOS_LIST`) as `crashed`, without a
  container. Each failure is a `DYNO_CHANGED` whose reason becomes its
  `heroku[web.4]` line: what failed, on which host, what happens next; starting it
  on another host is one more line saying where it goes.
- When no other host can take it, placement puts it back on an avoided host and the
  attempts wait `backoff_base * 2^n` (at most `backoff_cap`), as crash restarts do.
- A new release's dyno (a replacement in a rolling deploy) its host refuses moves at
  once (`StartWatch.moved`): its predecessor keeps serving, so waiting for that host
  buys nothing; the release fails only when no other host is up.

The user reads the host's id and the step that failed, never the engine's error: that
names the platform's addresses and paths, and goes to the scheduler's own log only.
All of this is kept in memory: a restarted scheduler counts from zero again.
`StartTrouble` is the bookkeeping (no I/O, tested alone); `StartWatch` tells the bus.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiodocker
import msgspec
import structlog

from slipway.contracts import scheduler as sc
from slipway.libs.bus import Bus
from slipway.services.scheduler import model
from slipway.services.scheduler.containers import DynoSpec
from slipway.services.scheduler.health import backoff

log = structlog.get_logger("slipway.scheduler.starts")


class StartRefused(Exception):
    """A dyno's container could not be made or started on its host; `step` says which part."""

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(detail)
        self.step = step
        self.message = detail


# What the user is told for each step (the engine's own words stay in the operator's log).
PULL = "its image could not be pulled there"
CREATE = "the engine refused its container"
START = "its container could not be started there"


def step_of(exc: BaseException) -> str:
    """The user's words for a failed start, from the exception `Runtime.create` raised."""
    if isinstance(exc, StartRefused):
        return exc.step
    if isinstance(exc, aiodocker.DockerError):
        return CREATE
    return START


@dataclass
class Unstarted:
    """A dyno the formation wants that has no container: why, and when to try again."""

    spec: DynoSpec  # of the last attempt: its host is where it failed
    why: str  # the step that failed (PULL, CREATE, START)
    reason: str  # the whole line last said
    attempts: int  # consecutive failed attempts on any host: the backoff's exponent
    next_attempt: float  # monotonic
    changed_at: float  # wall clock: the dyno's updated_at

    def contract(self) -> sc.Dyno:
        """The dyno as `ps` lists it: crashed, on the host it last failed on, no container."""
        s = self.spec
        return sc.Dyno(
            app_id=s.app_id,
            app_name=s.app_name,
            team_id=s.team_id,
            name=s.name,
            process_type=s.process_type,
            release_version=s.release,
            state="crashed",
            host_id=s.host_id,
            size=s.size,
            command=s.command,
            updated_at=self.changed_at,
        )


@dataclass
class _Count:
    failures: int = 0  # consecutive, on this host, for this app
    avoid_until: float = 0.0  # monotonic


class StartTrouble:
    """Failed starts per (app, host) and per (app, dyno): the pure part of this module."""

    def __init__(
        self, *, move_after: int, cooloff: float, backoff_base: float, backoff_cap: float
    ) -> None:
        self.move_after = max(move_after, 1)
        self.cooloff = cooloff
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._hosts: dict[tuple[str, str], _Count] = {}
        self._dynos: dict[tuple[str, str], Unstarted] = {}

    def avoided(self, app_id: str, now: float) -> frozenset[str]:
        """The hosts the app's new dynos should not go to right now."""
        return frozenset(
            host
            for (app, host), count in self._hosts.items()
            if app == app_id and count.avoid_until > now
        )

    def failed(
        self, spec: DynoSpec, why: str, now: float, *, elsewhere: bool, wall: float | None = None
    ) -> Unstarted:
        """Count a failed start of `spec` on its host; `elsewhere`: another up host could
        take it. The record says what the user is told and when to try again."""
        app, host = spec.app_id, spec.host_id
        count = self._hosts.setdefault((app, host), _Count())
        was_avoided = count.avoid_until > now
        count.failures += 1
        before = self._dynos.get((app, spec.name))
        attempts = (before.attempts if before is not None else 0) + 1
        delay = backoff(attempts - 1, self.backoff_base, self.backoff_cap)
        head = f"Could not start on host {host}: {why}"
        if was_avoided or count.failures >= self.move_after:
            tries = count.failures
            count.failures = 0
            count.avoid_until = now + self.cooloff
            if elsewhere and not was_avoided:
                text = f"{head} ({tries} attempts); moving it to another host"
                delay = 0.0
            else:
                text = f"{head}; no other host can take it, next attempt in {delay:g} s"
        else:
            text = f"{head} (attempt {count.failures} of {self.move_after} there)"
            text += f"; next attempt in {delay:g} s"
        record = Unstarted(
            spec=spec,
            why=why,
            reason=text,
            attempts=attempts,
            next_attempt=now + delay,
            changed_at=time.time() if wall is None else wall,
        )
        self._dynos[app, spec.name] = record
        return record

    def avoid(self, app_id: str, host_id: str, now: float) -> None:
        """Avoid `host_id` for the app's new dynos from now on, for the cool-off."""
        count = self._hosts.setdefault((app_id, host_id), _Count())
        count.failures = 0
        count.avoid_until = now + self.cooloff

    def wait(self, app_id: str, name: str, host_id: str, now: float) -> float:
        """Seconds before starting dyno `name` on `host_id` may be tried (0: now).

        A dyno that failed is tried again after its backoff on a host that refused it,
        and at once on another one (that is the move).
        """
        record = self._dynos.get((app_id, name))
        if record is None:
            return 0.0
        count = self._hosts.get((app_id, host_id))
        refused_here = host_id == record.spec.host_id or (
            count is not None and count.avoid_until > now
        )
        return max(record.next_attempt - now, 0.0) if refused_here else 0.0

    def moving(self, app_id: str, name: str, host_id: str) -> str | None:
        """The line to say when a dyno that failed on another host starts on `host_id`."""
        record = self._dynos.get((app_id, name))
        if record is None or record.spec.host_id == host_id:
            return None
        old = record.spec.host_id
        return f"Starting on host {host_id} (could not start on host {old}: {record.why})"

    def started(self, spec: DynoSpec) -> Unstarted | None:
        """A container of `spec` runs: its host's count for the app is reset, the record goes."""
        count = self._hosts.get((spec.app_id, spec.host_id))
        if count is not None:
            count.failures = 0
        return self._dynos.pop((spec.app_id, spec.name), None)

    def unstarted(self, app_id: str | None = None) -> list[Unstarted]:
        """The dynos without a container, of one app (None: every app)."""
        return [r for (app, _), r in self._dynos.items() if app_id in (None, app)]

    def keep(self, app_id: str, wanted: set[str]) -> list[Unstarted]:
        """Drop the app's records of dynos not in `wanted`; the dropped ones are returned."""
        dropped = [
            r for (app, name), r in self._dynos.items() if app == app_id and name not in wanted
        ]
        for record in dropped:
            del self._dynos[app_id, record.spec.name]
        return dropped

    def forget_app(self, app_id: str) -> None:
        """The app wants no dyno any more: its hosts' counts go too."""
        for key in [k for k in self._hosts if k[0] == app_id]:
            del self._hosts[key]
        for key in [k for k in self._dynos if k[0] == app_id]:
            del self._dynos[key]


def names(formation: model.DesiredFormation) -> set[str]:
    """The dyno names a formation wants: web.1 … web.N for each process type."""
    return {
        f"{kind}.{index}"
        for kind, spec in formation.processes.items()
        for index in range(1, spec.quantity + 1)
    }


def hold_back(
    trouble: StartTrouble, app_id: str, planned: model.Plan, now: float
) -> tuple[model.Plan, float | None]:
    """`planned` without the fresh starts still in their backoff on a host that refused
    them, and in how many seconds the first of those is due (None: none held back)."""
    kept: list[model.Start] = []
    due: list[float] = []
    for start in planned.starts:
        fresh = not start.replaces or start.reason is model.StartReason.HOST_DOWN
        dyno = start.dyno
        wait = trouble.wait(app_id, dyno.name, dyno.host_id, now) if fresh else 0.0
        if wait > 0:
            due.append(wait)
        else:
            kept.append(start)
    if not due:
        return planned, None
    return msgspec.structs.replace(planned, starts=tuple(kept)), min(due)


class StartWatch:
    """What the executor calls around each fresh start: the bookkeeping, told on the bus."""

    def __init__(
        self,
        trouble: StartTrouble,
        bus: Bus,
        say: Callable[[str, str, str], Awaitable[None]],
        elsewhere: Callable[[DynoSpec], bool],
        kick: Callable[[str], None],
    ) -> None:
        self.trouble = trouble
        self.bus = bus
        self._say = say
        self._elsewhere = elsewhere
        self._kick = kick

    async def starting(self, spec: DynoSpec) -> None:
        """Say where a dyno that failed elsewhere goes now."""
        text = self.trouble.moving(spec.app_id, spec.name, spec.host_id)
        if text is not None:
            await self._say(spec.app_id, spec.name, text)

    def started(self, spec: DynoSpec) -> None:
        self.trouble.started(spec)

    async def failed(self, spec: DynoSpec, exc: BaseException) -> None:
        """Count the failure, publish the dyno `crashed` with the reason, plan again in time."""
        before = self.trouble.unstarted(spec.app_id)
        previous: sc.DynoState = (
            "crashed" if any(r.spec.name == spec.name for r in before) else "starting"
        )
        now = time.monotonic()
        record = self.trouble.failed(spec, step_of(exc), now, elsewhere=self._elsewhere(spec))
        detail = getattr(exc, "message", None) or repr(exc)
        log.warning(
            "dyno.start_failed",
            app=spec.app_name,
            dyno=spec.name,
            host=spec.host_id,
            error=detail,
            attempts=record.attempts,
        )
        await self.publish(record, previous, record.reason)
        self._kick_at(spec.app_id, record.next_attempt - now)

    async def moved(self, spec: DynoSpec, exc: BaseException) -> bool:
        """A new release's dyno its host refused: with another host up, that host is
        avoided for the app at once and the dyno planned again (True; the old dyno keeps
        serving meanwhile, so no retry there is worth a wait); with none, False, and the
        release fails as any refused replacement does."""
        if not self._elsewhere(spec):
            return False
        why = step_of(exc)
        self.trouble.avoid(spec.app_id, spec.host_id, time.monotonic())
        detail = getattr(exc, "message", None) or repr(exc)
        log.warning(
            "dyno.replacement_refused",
            app=spec.app_name,
            dyno=spec.name,
            v=spec.release,
            host=spec.host_id,
            error=detail,
        )
        text = f"Could not start v{spec.release} on host {spec.host_id}: {why}"
        await self._say(spec.app_id, spec.name, f"{text}; starting it on another host")
        self._kick_at(spec.app_id, 0.0)
        return True

    async def publish(self, record: Unstarted, previous: sc.DynoState, reason: str) -> None:
        event = sc.DynoChanged(dyno=record.contract(), previous_state=previous, reason=reason)
        try:
            await self.bus.publish(sc.DYNO_CHANGED, event, retry_for=5.0)
        except Exception as exc:  # DYNOS_LIST still shows it; the line is what is lost
            log.warning("dyno.publish_failed", error=repr(exc))

    async def dropped(self, records: list[Unstarted]) -> None:
        """Dynos no longer wanted that never ran: published `down`, as a stopped dyno is."""
        for record in records:
            down = sc.DynoChanged(
                dyno=msgspec.structs.replace(
                    record.contract(), state="down", updated_at=time.time()
                ),
                previous_state="crashed",
                reason="Scaled down",
            )
            try:
                await self.bus.publish(sc.DYNO_CHANGED, down, retry_for=5.0)
            except Exception as exc:
                log.warning("dyno.publish_failed", error=repr(exc))

    def _kick_at(self, app_id: str, delay: float) -> None:
        asyncio.get_running_loop().call_later(max(delay, 0.0), self._kick, app_id)
