"""Drains: every app line also goes to the app's syslog (TCP + TLS) and HTTPS endpoints.

    syslog+tls://host:port   RFC 5424 messages, RFC 6587 octet-counting framing
    https://host/path        POSTs of up to `drain_batch_lines` frames, Content-Type
                             application/logplex-1, with Heroku's Logplex-* headers

Each drain has its own task and its own bounded buffer. Taking a line in is a
deque append: a drain that is down, slow or refusing fills its buffer and then
drops its oldest lines (and says so with Heroku's `Error L10` line once it is
back); it never slows the app or another drain. Failures are retried with
exponential backoff (plus jitter) up to `drain_backoff_max` seconds.

Plain `syslog://` (no TLS) and `http://` are refused: log lines hold patient
data and never leave the platform in the clear.

Every connection passes the egress guard (libs/egress.py): the drain's host is
resolved once per connection, every address checked (no loopback, private,
link-local or platform address unless `egress_allow` names it), and the
connection goes to a checked address while TLS verifies the host name. HTTPS
drains follow no redirect: a 3xx is a failure. A refused drain keeps its lines
buffered and is re-checked with backoff (DNS may change back); its status says
why, in `slipway drains`, and one platform line in the app's log says so too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import structlog

from slipway.contracts.log_shipper import LogEntry
from slipway.libs import egress
from slipway.libs.errors import InvalidRequest
from slipway.services.log_shipper import formats
from slipway.services.log_shipper.settings import LogShipperSettings

log = structlog.get_logger("slipway.log_shipper.drains")

SCHEMES = ("syslog+tls", "https")
_CONNECT_TIMEOUT = 10.0

# Called with (app_id, text) when a drain's state changes in a way the app's owner must see.
Notify = Callable[[str, str], Awaitable[None]]


class DrainFailed(Exception):
    """The drain's end answered, but not with success; the message is for the customer."""


@dataclass(frozen=True, slots=True)
class DrainTarget:
    """One drain, with its URL in plaintext (held in memory only)."""

    id: str
    app_id: str
    token: str
    url: str


def check_url(url: str) -> str:
    """The URL if Slipway can drain to it; InvalidRequest saying why not otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme not in SCHEMES:
        raise InvalidRequest(
            f"Drain URLs must start with syslog+tls:// or https://, not {parts.scheme or 'nothing'}"
            "://: logs never leave the platform unencrypted."
        )
    if not parts.hostname:
        raise InvalidRequest("The drain URL names no host.")
    if parts.scheme == "syslog+tls" and not parts.port:
        raise InvalidRequest("A syslog+tls:// drain URL needs a port (syslog+tls://host:6514).")
    return url.strip()


def ssl_context(ca_file: str) -> ssl.SSLContext:
    """The system's trust store, plus `ca_file` when given (a private CA, a test's cert)."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


class DrainWorker:
    """Ships one drain's buffer, reconnecting with backoff; never blocks its producers."""

    def __init__(
        self,
        target: DrainTarget,
        settings: LogShipperSettings,
        tls: ssl.SSLContext,
        notify: Notify | None = None,
    ) -> None:
        self.target = target
        self.settings = settings
        self.tls = tls
        self.notify = notify
        self.policy = egress.policy_for(settings.egress_allow, settings.egress_deny)
        # What `slipway drains` shows: "pending", "ok", "refused: ..." or "failing: ...".
        self.status = "pending"
        self.buffer: collections.deque[LogEntry] = collections.deque(
            maxlen=settings.drain_buffer_lines
        )
        self.dropped = 0
        self.sent = 0
        self.failures = 0
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def offer(self, entries: Sequence[LogEntry]) -> None:
        """Queue lines; beyond the bound the oldest are dropped (and counted)."""
        room = self.buffer.maxlen or 0
        overflow = len(self.buffer) + len(entries) - room
        if overflow > 0:
            self.dropped += min(overflow, room)
        self.buffer.extend(entries)
        self._ready.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"drain:{self.target.id[:8]}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        delay = 0.25
        while True:
            await self._ready.wait()
            try:
                await self._connect_and_ship()
                delay = 0.25
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure of a remote end is retried
                self.failures += 1
                await self._failed(exc)
                log.warning("drain.failed", drain=self.target.id, error=repr(exc), retry_in=delay)
                await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter
                delay = min(delay * 2, self.settings.drain_backoff_max)

    async def _connect_and_ship(self) -> None:
        # Resolved and checked once per connection: the connection uses these addresses only.
        destination = await egress.resolve_checked(
            self.target.url, self.policy, schemes=SCHEMES, allow_userinfo=True
        )
        if destination.scheme == "https":
            await self._ship_https(destination)
        else:
            await self._ship_syslog(destination)

    async def _failed(self, exc: Exception) -> None:
        if isinstance(exc, egress.EgressRefused):
            status = f"refused: {exc.message}"
        elif isinstance(exc, (DrainFailed, egress.FetchFailed)):
            status = f"failing: {exc}"
        else:
            status = f"failing: {type(exc).__name__} {exc}".rstrip()
        changed, self.status = status != self.status, status
        if changed and status.startswith("refused") and self.notify is not None:
            text = f"drain {self.target.token} is not shipping, {status}"
            try:
                await self.notify(self.target.app_id, text)
            except Exception as exc:  # the notice is best effort: the worker must live on
                log.warning("drain.notice_failed", drain=self.target.id, error=repr(exc))

    def _shipped(self) -> None:
        self.status = "ok"

    def _take(self) -> list[LogEntry]:
        batch: list[LogEntry] = []
        if self.dropped:
            batch.append(_overflow_line(self.dropped))
        limit = self.settings.drain_batch_lines
        for entry in self.buffer:
            if len(batch) >= limit:
                break
            batch.append(entry)
        return batch

    def _done(self, batch: list[LogEntry]) -> None:
        shipped = len(batch)
        if self.dropped and batch and batch[0].seq < 0:
            self.dropped = 0
            shipped -= 1
        for _ in range(shipped):
            self.buffer.popleft()
        self.sent += shipped
        if not self.buffer:
            self._ready.clear()

    def _frames(self, batch: list[LogEntry]) -> bytes:
        token = self.target.token
        return b"".join(formats.octet_frame(formats.syslog_message(e, token)) for e in batch)

    async def _ship_syslog(self, destination: egress.Destination) -> None:
        _, writer = await asyncio.wait_for(
            egress.open_stream(destination, ssl_context=self.tls), _CONNECT_TIMEOUT
        )
        try:
            while True:
                batch = self._take()
                if not batch:
                    await self._ready.wait()
                    continue
                writer.write(self._frames(batch))
                await asyncio.wait_for(writer.drain(), _CONNECT_TIMEOUT)
                if writer.is_closing():
                    raise DrainFailed("the syslog drain closed the connection")
                self._done(batch)
                self._shipped()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _ship_https(self, destination: egress.Destination) -> None:
        timeout = aiohttp.ClientTimeout(total=30, connect=_CONNECT_TIMEOUT)
        async with egress.pinned_session(destination, ssl_context=self.tls) as session:
            while True:
                batch = self._take()
                if not batch:
                    await self._ready.wait()
                    continue
                headers = {
                    "Content-Type": "application/logplex-1",
                    "Logplex-Msg-Count": str(len(batch)),
                    "Logplex-Frame-Id": uuid.uuid4().hex,
                    "Logplex-Drain-Token": self.target.token,
                    "User-Agent": "Slipway-Logplex/1",
                }
                # A redirect could point anywhere, the platform included: never followed.
                async with session.post(
                    destination.url,
                    data=self._frames(batch),
                    headers=headers,
                    allow_redirects=False,
                    timeout=timeout,
                ) as answer:
                    _check_answer(answer)
                self._done(batch)
                self._shipped()


def _check_answer(answer: aiohttp.ClientResponse) -> None:
    if 300 <= answer.status < 400:
        raise DrainFailed(
            f"the HTTPS drain answered {answer.status} (a redirect): Slipway does not follow "
            "a drain's redirects; add the final URL as the drain instead"
        )
    if answer.status >= 400:
        raise DrainFailed(f"the HTTPS drain answered {answer.status}")


def _overflow_line(dropped: int) -> LogEntry:
    # seq -1 marks the platform's own notice, so `_done` knows it is not from the buffer.
    return LogEntry(
        host="",
        seq=-1,
        timestamp=time.time(),
        source="heroku",
        dyno="logplex",
        text=f"Error L10 (output buffer overflow): {dropped} messages dropped.",
    )


class Drains:
    """Every drain of this host, by app; a History listener."""

    def __init__(self, settings: LogShipperSettings, notify: Notify | None = None) -> None:
        self.settings = settings
        self.notify = notify
        self.tls = ssl_context(settings.drain_ca_file)
        self.workers: dict[str, DrainWorker] = {}
        self._by_app: dict[str, list[DrainWorker]] = {}
        self.lost = 0  # lines any drain's full buffer dropped, ever (a metric; never reset)

    def offer(self, app_id: str, entries: Sequence[LogEntry]) -> None:
        """Hand new lines of an app to each of its drains (cheap when it has none)."""
        for worker in self._by_app.get(app_id, ()):
            before = worker.dropped  # reset only by its shipping task, never during offer
            worker.offer(entries)
            self.lost += worker.dropped - before

    def add(self, target: DrainTarget) -> None:
        """Start shipping to a drain (nothing happens if it already runs)."""
        if target.id in self.workers:
            return
        worker = DrainWorker(target, self.settings, self.tls, self.notify)
        self.workers[target.id] = worker
        self._by_app.setdefault(target.app_id, []).append(worker)
        worker.start()

    async def remove(self, drain_id: str) -> None:
        """Stop shipping to a drain; what its buffer still held is dropped."""
        worker = self.workers.pop(drain_id, None)
        if worker is None:
            return
        self._by_app[worker.target.app_id].remove(worker)
        await worker.stop()

    async def remove_app(self, app_id: str) -> None:
        for worker in list(self._by_app.get(app_id, ())):
            await self.remove(worker.target.id)

    async def stop(self) -> None:
        for drain_id in list(self.workers):
            await self.remove(drain_id)
