"""A leader lease in NATS KV, and the file lock that fences the store it guards.

One instance of a leased service (contracts/leases.py) leads; the others wait here:

    lease = await Lease.bind(bus.js, Service.GATEWAY, holder)
    if await lease.acquire(until=stopping):        # standing by until the key is free
        async with fence(state / "leader.lock", until=stopping):
            keeper = asyncio.create_task(lease.keep(on_lost=stop))
            ...                                     # the single-writer work
        await lease.release()

Acquiring is `create` on the service's key (only when it is absent); keeping it is an
`update` that names the revision we wrote last, every ttl / 5 seconds; the bucket's max
age, the ttl, removes a key nobody renews, so a dead leader's key is gone ttl seconds
after its last renewal at the latest, and a standby polling every `poll` seconds takes it.

A leader that cannot renew for `ttl - margin` seconds (measured from when it *sent* its
last successful renewal, which the server stamped later) gives the lease up before the
server could hand it to anyone else, and says so through `on_lost`. Clocks never cross
machines: both sides measure elapsed time on their own clock.

The lease decides who should lead; the fence makes sure two never write at once. A paused
leader (a stopped container, a long GC) can wake up after its key expired and write before
it notices. Every instance of a service shares its state folder (compose mounts one volume
into each replica), and the leader holds an exclusive `flock` on a file there for as long
as it has the store open: a successor that won the lease waits for it, and the kernel
releases it the moment the old process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from slipway.contracts.base import now
from slipway.contracts.leases import LeaseHolder
from slipway.contracts.subjects import KV_LEASES, Service

log = structlog.get_logger("slipway.lease")

# What a lost, unreachable or leaderless bus raises while we bind, campaign or renew
# (no answer, no stream response while the bucket elects its leader after a node's loss,
# "temporarily unavailable"): retried, until the lease's own deadline says otherwise. A
# refused write at the wrong revision is not among them: that is an answer.
_BUS_ERRORS: tuple[type[BaseException], ...] = (nats.errors.Error, asyncio.TimeoutError)
_RENEW_ERRORS: tuple[type[BaseException], ...] = (*_BUS_ERRORS, TimeoutError)
_decode = msgspec.json.Decoder(LeaseHolder)


class LeaseLost(Exception):
    """The lease could not be renewed in time, or someone else holds it now."""


def holder_for(service: Service, instance: str) -> LeaseHolder:
    """What this process writes into its service's lease."""
    return LeaseHolder(
        service=str(service), instance=instance, host=socket.gethostname(), pid=os.getpid()
    )


class Lease:
    """`service`'s lease in the `KV_LEASES` bucket, as seen by one candidate instance."""

    def __init__(
        self,
        kv: KeyValue,
        service: Service,
        holder: LeaseHolder,
        *,
        ttl: float,
        poll: float = 0.5,
    ) -> None:
        if ttl <= 1.0:
            raise ValueError(f"a lease ttl must exceed one second, not {ttl}")
        self.kv = kv
        self.key = str(service)
        self.holder = holder
        self.ttl = ttl
        self.poll = poll
        self.renew_every = ttl / 5
        # Given up this long after the last renewal was sent: before the server, which
        # stamped it later, could expire it.
        self.give_up_after = ttl - min(1.0, ttl / 5)
        self.revision: int | None = None
        self._renewed_at = 0.0  # monotonic time the last successful write was sent

    @classmethod
    async def bind(
        cls, js: JetStreamContext, service: Service, holder: LeaseHolder, *, poll: float = 0.5
    ) -> Lease:
        """The lease of `service`, its ttl read from the bucket the provisioner made."""
        kv = await js.key_value(KV_LEASES)
        info = await js.stream_info(f"KV_{KV_LEASES}")
        ttl = info.config.max_age
        if not ttl:
            raise RuntimeError(f"the {KV_LEASES} bucket has no max age: leases would never expire")
        return cls(kv, service, holder, ttl=ttl, poll=poll)

    @classmethod
    async def bind_when_ready(
        cls,
        js: JetStreamContext,
        service: Service,
        holder: LeaseHolder,
        *,
        until: asyncio.Event,
        poll: float = 0.5,
    ) -> Lease | None:
        """`bind`, retried while the bus cannot answer (None if `until` is set first).

        A service starting while the cluster elects leaders, or before the provisioner
        made the bucket, waits rather than dies and restarts.
        """
        delay = poll
        while not until.is_set():
            try:
                return await cls.bind(js, service, holder, poll=poll)
            except _BUS_ERRORS as exc:
                log.warning("lease.bucket_unavailable", service=str(service), error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), delay)
            delay = min(delay * 2, 5.0)
        return None

    @property
    def held(self) -> bool:
        return self.revision is not None

    async def current(self) -> LeaseHolder | None:
        """Who holds the lease now, as far as the bucket says (None: nobody)."""
        entry = await self._entry()
        return entry[0] if entry is not None else None

    async def _entry(self) -> tuple[LeaseHolder, int] | None:
        try:
            entry = await self.kv.get(self.key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        if entry.value is None or entry.revision is None:
            return None
        try:
            return _decode.decode(entry.value), entry.revision
        except msgspec.DecodeError:
            return None

    async def acquire(self, *, until: asyncio.Event) -> bool:
        """Stand by until the lease is ours (True) or `until` is set (False)."""
        waited_for: str | None = None
        while not until.is_set():
            sent = time.monotonic()
            try:
                self.revision = await self.kv.create(self.key, self._value())
            except nats.js.errors.KeyWrongLastSequenceError:
                holder = await self._current_quietly()
                name = holder.instance if holder else "?"
                if name != waited_for:
                    log.info("lease.standing_by", service=self.key, leader=name)
                    waited_for = name
            except _BUS_ERRORS as exc:
                log.warning("lease.campaign_failed", service=self.key, error=repr(exc))
            else:
                self._renewed_at = sent
                log.info("lease.acquired", service=self.key, revision=self.revision)
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), self.poll)
        return False

    async def renew(self) -> None:
        """Rewrite the lease at the revision we hold; LeaseLost if it is no longer ours."""
        if self.revision is None:
            raise LeaseLost(f"the {self.key} lease is not held")
        sent = time.monotonic()
        try:
            self.revision = await self.kv.update(self.key, self._value(), last=self.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            entry = await self._entry()
            if entry is None and time.monotonic() < self._renewed_at + self.give_up_after:
                # Gone while it could not have expired: the server restarted (the bucket
                # is in memory) or an operator removed it. Nobody else could hold it
                # meanwhile; writing it again fails if somebody does now.
                try:
                    self.revision = await self.kv.create(self.key, self._value())
                except nats.js.errors.KeyWrongLastSequenceError:
                    self.revision = None
                    raise LeaseLost(f"the {self.key} lease was taken over") from None
                log.warning("lease.rewritten", service=self.key, revision=self.revision)
            elif entry is None or entry[0] != self.holder:
                self.revision = None
                raise LeaseLost(f"the {self.key} lease was taken over or lapsed") from None
            else:
                # A renewal cut short by a timeout may have been stored all the same: the
                # key's last value is still ours, so nobody else wrote it since.
                self.revision = await self.kv.update(self.key, self._value(), last=entry[1])
        self._renewed_at = sent

    async def keep(self, on_lost: Callable[[str], None]) -> None:
        """Renew until cancelled; when that fails for too long, call `on_lost(why)` once.

        Past its deadline (a stalled event loop wakes up late) it still tries once: a
        renewal the server accepts at our revision proves the key never expired nor
        changed hands, so the lease was ours all along.
        """
        while True:
            await asyncio.sleep(self.renew_every)
            deadline = self._renewed_at + self.give_up_after
            try:
                async with asyncio.timeout(max(self.renew_every, deadline - time.monotonic())):
                    await self.renew()
            except LeaseLost as exc:
                self._lost(on_lost, str(exc))
                return
            except _RENEW_ERRORS as exc:
                if time.monotonic() < deadline:
                    log.warning("lease.renew_failed", service=self.key, error=repr(exc))
                    continue
                self._lost(on_lost, f"the {self.key} lease could not be renewed in time")
                return

    async def release(self) -> None:
        """Give the lease up now, so a standby need not wait for it to expire."""
        revision, self.revision = self.revision, None
        if revision is None:
            return
        try:
            # Only the revision we wrote: never a successor's lease.
            await self.kv.delete(self.key, last=revision)
        except _BUS_ERRORS as exc:
            log.warning("lease.release_failed", service=self.key, error=repr(exc))
        else:
            log.info("lease.released", service=self.key)

    def _lost(self, on_lost: Callable[[str], None], why: str) -> None:
        self.revision = None
        log.error("lease.lost", service=self.key, reason=why)
        on_lost(why)

    def _value(self) -> bytes:
        holder = self.holder
        if not holder.since:
            holder = self.holder = msgspec.structs.replace(holder, since=now())
        return msgspec.json.encode(holder)

    async def _current_quietly(self) -> LeaseHolder | None:
        try:
            return await self.current()
        except _BUS_ERRORS:
            return None


@contextlib.asynccontextmanager
async def fence(path: Path, *, until: asyncio.Event, poll: float = 0.1) -> AsyncIterator[bool]:
    """Hold an exclusive `flock` on `path` while inside; yields False if `until` came first.

    Polled rather than blocking, so that a stop request is never stuck behind a lock the
    previous leader still holds.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    log.info("lease.fence_waiting", path=str(path))
                    told = True
            if until.is_set():
                yield False
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), poll)
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
