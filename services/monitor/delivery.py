"""One webhook delivery attempt, and the loop that makes them until each delivery is settled.

An attempt POSTs the event as JSON with Heroku's headers:

    Heroku-Webhook-Hmac-SHA256   base64(HMAC-SHA256(secret, raw body))
    Heroku-Webhook-Id            the delivery's id (the same on every attempt: dedupe by it)
    Heroku-Webhook-Sent-At       when this attempt was sent (ISO 8601, UTC)
    Authorization                the webhook's `authorization`, when it has one
    User-Agent                   Slipway-Webhooks

It succeeds on a 2xx answer within `webhook_timeout` seconds (10), of which at most 64 KiB
is read. Anything else fails the attempt: another status (a 3xx too: no redirect is
followed, it could point anywhere, the platform included), a timeout, a refused or
unreachable address. The URL passes the egress guard (libs/egress.py) on every attempt,
resolved once and connected to at the checked address only, so a name whose DNS changed
to a private address after the webhook was created is refused then.

Retries (`sync` webhooks; a `notify` webhook gets one attempt, as on Heroku): the n-th
failure waits `webhook_backoff * 2**(n-1)` seconds (15 s by default), capped at
`webhook_backoff_max` (1 h), with +-25 % jitter, and the delivery fails for good after
`webhook_max_attempts` (10) attempts, about two hours after the event. The state of
each delivery is in the database, so a restart resumes where it was; a delivery being
attempted when the monitor stopped is attempted again (receivers dedupe by
`Heroku-Webhook-Id`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import hmac
import random
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
import structlog

from slipway.libs import egress
from slipway.libs.storage import Database
from slipway.services.monitor import webhookstore as store

log = structlog.get_logger("slipway.monitor.webhooks")

USER_AGENT = "Slipway-Webhooks"
MAX_ANSWER = 64 * 1024
_BATCH = 32
_CONCURRENCY = 8
# A sealed target the keyring could not open (it is restarting): tried again this much later,
# without counting an attempt against the receiver.
_KEYRING_RETRY = 5.0


@dataclass(frozen=True, slots=True)
class Target:
    """A webhook's destination in plaintext: held in memory only."""

    url: str
    secret: str
    authorization: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    code: int | None = None
    error_class: str | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class Policy:
    """How deliveries are made and retried (from the webhook settings)."""

    egress: egress.EgressPolicy
    schemes: tuple[str, ...]
    tls: ssl.SSLContext
    timeout: float
    backoff: float
    backoff_max: float
    max_attempts: int


def signature(secret: str, body: bytes) -> str:
    """Heroku's `Heroku-Webhook-Hmac-SHA256`: base64 of the body's HMAC-SHA256 under `secret`."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def backoff_delay(policy: Policy, failures: int) -> float:
    """Seconds before the next attempt after `failures` failed ones (jittered)."""
    base = min(policy.backoff * 2 ** max(failures - 1, 0), policy.backoff_max)
    return float(base * (0.75 + random.random() / 2))  # noqa: S311 - jitter, not a secret


async def attempt(
    target: Target, body: bytes, delivery_id: str, policy: Policy, sent_at: float
) -> Outcome:
    """POST `body` to the target once, through the egress guard; never raises."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Heroku-Webhook-Hmac-SHA256": signature(target.secret, body),
        "Heroku-Webhook-Id": delivery_id,
        "Heroku-Webhook-Sent-At": iso(sent_at),
    }
    if target.authorization:
        headers["Authorization"] = target.authorization
    try:
        async with asyncio.timeout(policy.timeout):
            destination = await egress.resolve_checked(
                target.url, policy.egress, schemes=policy.schemes, allow_userinfo=False
            )
            tls = policy.tls if destination.scheme == "https" else None
            async with (
                egress.pinned_session(destination, ssl_context=tls) as session,
                session.post(
                    destination.url, data=body, headers=headers, allow_redirects=False
                ) as answer,
            ):
                # Read a bounded part: a receiver that streams forever cannot hold us.
                await answer.content.read(MAX_ANSWER)
                if 200 <= answer.status < 300:
                    return Outcome(ok=True, code=answer.status)
                why = "a redirect, not followed" if 300 <= answer.status < 400 else "not 2xx"
                return Outcome(ok=False, code=answer.status, message=f"HTTP {answer.status}: {why}")
    except TimeoutError:
        return Outcome(
            ok=False, error_class="Timeout", message=f"no answer within {policy.timeout:g} s"
        )
    except egress.EgressRefused as exc:
        return Outcome(ok=False, error_class="EgressRefused", message=exc.message)
    except egress.FetchFailed as exc:
        return Outcome(ok=False, error_class="FetchFailed", message=exc.message)
    except (aiohttp.ClientError, OSError) as exc:
        return Outcome(ok=False, error_class=type(exc).__name__, message=str(exc)[:300])


# Opens a webhook's sealed target (the keyring may be down: then it raises).
OpenTarget = Callable[[str, str], Awaitable[Target | None]]


class DeliveryLoop:
    """Attempts due deliveries, a few at a time, and records every outcome."""

    def __init__(self, db: Database, policy: Policy, open_target: OpenTarget) -> None:
        self.db = db
        self.policy = policy
        self.open_target = open_target
        self._wake = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(_CONCURRENCY)

    def wake(self) -> None:
        """New deliveries were recorded: look now rather than at the next due time."""
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Until `stopping`: start every due delivery not already under way, then wait."""
        failures = 0
        while not stopping.is_set():
            self._wake.clear()
            try:
                await self._start_due()
                wait = await self._until_next()
                failures = 0
            except Exception as exc:  # a loop never dies silently: it logs and backs off
                failures += 1
                wait = min(0.5 * 2**failures, 30.0)
                log.warning("webhooks.loop_failed", error=repr(exc), retry_in=wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def stop(self) -> None:
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _until_next(self) -> float:
        upcoming = await store.next_due(self.db)
        if upcoming is None:
            return 60.0
        return min(max(upcoming - time.time(), 0.05), 60.0)

    async def _start_due(self) -> None:
        for row in await store.due(self.db, time.time(), _BATCH + len(self._in_flight)):
            if row.id in self._in_flight or len(self._in_flight) >= _BATCH:
                continue
            task = asyncio.create_task(self._deliver(row), name=f"webhook:{row.id[:8]}")
            self._in_flight[row.id] = task
            task.add_done_callback(functools.partial(self._done, row.id))

    def _done(self, delivery_id: str, _task: asyncio.Task[None]) -> None:
        self._in_flight.pop(delivery_id, None)
        self._wake.set()

    async def _deliver(self, row: store.DeliveryRow) -> None:
        async with self._slots:
            try:
                await self._deliver_once(row)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # recorded nowhere else: say so, try again later
                log.warning("webhooks.delivery_crashed", delivery=row.id, error=repr(exc))
                async with self.db.transaction() as conn:
                    await store.postpone(conn, row.id, time.time() + _KEYRING_RETRY)

    async def _deliver_once(self, row: store.DeliveryRow) -> None:
        event = await store.event(self.db, row.event_id)
        try:
            target = await self.open_target(row.app_id, row.webhook_id)
        except Exception as exc:
            if getattr(exc, "retryable", True):
                # The keyring is not answering: not the receiver's fault, no attempt counted.
                log.warning("webhooks.target_unopened", delivery=row.id, error=repr(exc))
                async with self.db.transaction() as conn:
                    await store.postpone(conn, row.id, time.time() + _KEYRING_RETRY)
                return
            # Shredded keys or an altered row: no later attempt can open it either.
            await self._record(row, Outcome(ok=False, error_class="Unsealable"), time.time(), "")
            return
        if event is None or target is None:
            return  # removed meanwhile: its rows went with it
        sent_at = time.time()
        attempt_id = str(uuid.uuid4())
        body = render(event, row, attempt_id, sent_at)
        outcome = await attempt(target, body, row.id, self.policy, sent_at)
        await self._record(row, outcome, sent_at, attempt_id)

    async def _record(
        self, row: store.DeliveryRow, outcome: Outcome, sent_at: float, attempt_id: str
    ) -> None:
        """An attempt's outcome: succeeded, retried later, or failed for good."""
        failures = row.num_attempts + 1
        unsealable = outcome.error_class == "Unsealable"
        if outcome.ok:
            status, next_at = "succeeded", None
        elif unsealable or row.level == "notify" or failures >= self.policy.max_attempts:
            status, next_at = "failed", None
        else:
            status, next_at = "retrying", time.time() + backoff_delay(self.policy, failures)
        done = time.time()
        record = {
            "id": attempt_id or str(uuid.uuid4()),
            "code": outcome.code,
            "error_class": outcome.error_class,
            "status": "succeeded" if outcome.ok else "failed",
            "message": outcome.message,
            "created_at": sent_at,
            "updated_at": done,
        }
        async with self.db.transaction() as conn:
            await store.record_attempt(
                conn, row.id, status=status, next_attempt_at=next_at, attempt=record
            )
        log.info(
            "webhooks.attempt",
            delivery=row.id,
            webhook=row.webhook_id,
            status=status,
            code=outcome.code,
            error_class=outcome.error_class,
            attempts=failures,
        )


def render(event: store.EventRow, row: store.DeliveryRow, attempt_id: str, sent_at: float) -> bytes:
    """The body of one attempt: the event, when it was sent and which delivery it is."""
    body: dict[str, Any] = dict(event.payload)
    body["published_at"] = iso(sent_at)
    body["webhook_metadata"] = {
        "attempt": {"id": attempt_id},
        "delivery": {"id": row.id},
        "event": {"id": event.id, "include": event.include},
        "webhook": {"id": row.webhook_id},
    }
    return msgspec.json.encode(body)
