"""At-least-once handling of commands (stream CMD) and events (stream EVT).

Each consumer is a durable JetStream pull consumer with explicit acks:

- a handler that returns → ack;
- a handler that raises → nak with the next backoff delay, redelivered later;
- a handler still running → `in_progress` keeps the message from timing out;
- a process that dies mid-handler → the server redelivers after `ack_wait`;
- the last allowed delivery fails, the payload is malformed, or no handler
  exists for the subject → the message is copied to `slipway.dlq.<service>...`
  (stream DLQ) with the reason in headers, then acked. The service keeps running.

Handlers therefore run more than once sometimes: they must be idempotent, keyed by
the command or event id (see `slipway.libs.storage.claim`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg

from slipway.contracts import subjects
from slipway.contracts.base import Command, CommandSpec, Event, EventSpec
from slipway.libs import logcontext
from slipway.libs.bus import context
from slipway.libs.bus.provision import ACK_WAIT, consumer_config, undeclared

log = structlog.get_logger("slipway.bus")

M = TypeVar("M", Command, Event)
MsgT = TypeVar("MsgT", bound=Command | Event)

DEFAULT_BACKOFF = (1.0, 5.0, 15.0, 60.0)


# How long a declared consumer may go unanswered at start (a cluster electing its leaders
# after a node's loss) before the service gives up starting.
UNANSWERED_WINDOW = 60.0


class NotProvisioned(RuntimeError):
    """A service started before the consumer it binds to was provisioned as it needs."""


@dataclass(frozen=True)
class Route(Generic[MsgT]):
    """One subject's message type and handler."""

    subject: str
    decoder: msgspec.json.Decoder[MsgT]
    handler: Callable[[MsgT], Awaitable[None]]


def route(
    spec: CommandSpec[Any] | EventSpec[Any], handler: Callable[[Any], Awaitable[None]]
) -> Route[Any]:
    """Bind a handler to a command or event kind."""
    return Route(spec.subject, msgspec.json.Decoder(spec.message), handler)


@dataclass(frozen=True)
class Delivery:
    """What JetStream says about one delivery of a message."""

    subject: str
    stream_sequence: int
    num_delivered: int


class Consumer:
    """A durable pull consumer that dispatches by subject to typed handlers."""

    def __init__(
        self,
        bus: Any,
        *,
        stream: str,
        durable: str,
        filter_subjects: list[str],
        routes: Iterable[Route[Any]],
        max_deliver: int = 5,
        backoff: tuple[float, ...] = DEFAULT_BACKOFF,
        ack_wait: float = ACK_WAIT,
        concurrency: int = 8,
    ) -> None:
        self.bus = bus
        self.stream = stream
        self.durable = durable
        self.filter_subjects = filter_subjects
        self.routes = {r.subject: r for r in routes}
        self.max_deliver = max_deliver
        self.backoff = backoff
        self.ack_wait = ack_wait
        self.concurrency = concurrency
        self._inflight: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Bind to the durable consumer (creating it first on an open server), then fetch."""
        if self.bus.provisions_itself:
            config = consumer_config(
                self.durable,
                self.filter_subjects,
                ack_wait=self.ack_wait,
                max_ack_pending=max(self.concurrency * 4, 64),
            )
            await self.bus.js.add_consumer(self.stream, config)
        else:
            await self._check_provisioned()
        self._subscription = await self.bus.js.pull_subscribe_bind(self.durable, stream=self.stream)
        self.bus.track(self)
        self._loop_task = asyncio.create_task(self._fetch_loop(), name=f"consumer:{self.durable}")

    async def _check_provisioned(self) -> None:
        # Without JetStream admin rights the service cannot fix a missing or narrower
        # consumer itself: say what to declare rather than silently miss messages.
        absent = NotProvisioned(
            f"the durable consumer {self.durable} on stream {self.stream} does not exist"
            " or is not this service's:"
            " declare it in contracts/catalog.py and run the provisioner"
            " (python -m slipway.libs.bus.provision)"
        )
        deadline = time.monotonic() + UNANSWERED_WINDOW
        delay = 0.25
        while True:
            try:
                info = await self.bus.js.consumer_info(self.stream, self.durable)
                break
            except nats.js.errors.NotFoundError:
                raise absent from None
            except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError) as exc:
                # A consumer this user was not granted looks like no answer at all; so does
                # a declared one while the cluster elects its leader after losing a node,
                # which only waiting cures.
                if undeclared([(self.stream, self.durable)]):
                    raise absent from None
                if time.monotonic() > deadline:
                    raise NotProvisioned(
                        f"JetStream did not answer for the durable consumer {self.durable} on"
                        f" stream {self.stream} within {UNANSWERED_WINDOW:g} s: is every"
                        " nats-server node up and the stream's quorum there?"
                    ) from None
                log.warning("consumer.info_unanswered", durable=self.durable, error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 4.0)
        config = info.config
        carried = set(config.filter_subjects or []) | {config.filter_subject or ""}
        missing = sorted(set(self.filter_subjects) - carried)
        if missing:
            raise NotProvisioned(
                f"the durable consumer {self.durable} does not carry {', '.join(missing)}:"
                " add them to its declaration in contracts/catalog.py and run the provisioner"
            )

    def stop(self) -> None:
        """Stop fetching; messages already fetched are still handled."""
        self._stopping.set()

    async def wait_idle(self) -> None:
        """Wait until the fetch loop has ended and every handler has finished."""
        if self._loop_task is not None:
            await self._loop_task
        while self._inflight:
            await asyncio.wait(set(self._inflight))

    async def _fetch_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set() and not self.bus.nc.is_closed:
            free = self.concurrency - len(self._inflight)
            if free <= 0:
                await asyncio.wait(set(self._inflight), return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                # A short expiry so that stop() is honoured promptly.
                messages = await self._subscription.fetch(free, timeout=0.5)
            except (TimeoutError, nats.errors.TimeoutError):
                failures = 0
                continue
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                # The server is restarting, or the connection is reconnecting: wait, retry.
                failures += 1
                log.warning("consumer.fetch_failed", durable=self.durable, error=repr(exc))
                await asyncio.sleep(min(0.1 * 2**failures, 2.0))
                continue
            failures = 0
            for msg in messages:
                task = asyncio.create_task(self._handle(msg))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

        with contextlib.suppress(nats.errors.Error):
            # Releases the fetch inbox so that draining the connection does not wait on it.
            await self._subscription.unsubscribe()

    async def _handle(self, msg: Msg) -> None:
        started = time.perf_counter()
        meta = msg.metadata
        delivery = Delivery(msg.subject, meta.sequence.stream, meta.num_delivered)
        headers = msg.headers or {}
        ctx = context.MessageContext(
            subject=msg.subject,
            request_id=headers.get(context.REQUEST_ID_HEADER),
            headers=headers,
            delivery=delivery.num_delivered,
        )
        context.enter(ctx)
        logcontext.bind(
            subject=msg.subject, request_id=ctx.request_id, delivery=delivery.num_delivered
        )
        route = self.routes.get(msg.subject)
        if route is None:
            await self._dead_letter(msg, delivery, "no handler for this subject")
            self._count("unknown", "dead_letter")
            return
        try:
            message = route.decoder.decode(msg.data)
        except msgspec.DecodeError as exc:
            await self._dead_letter(msg, delivery, f"malformed payload: {exc}")
            self._count(route.subject, "dead_letter")
            return
        if delivery.num_delivered > self.max_deliver:
            # Delivered again after the process died on what was its last try.
            await self._dead_letter(msg, delivery, "delivery limit reached")
            self._count(route.subject, "dead_letter")
            return
        logcontext.bind(message_type=type(message).__name__)
        keepalive = asyncio.create_task(self._keep_alive(msg))
        try:
            await route.handler(message)
        except Exception as exc:
            keepalive.cancel()
            if delivery.num_delivered >= self.max_deliver:
                log.exception("message.failed", durable=self.durable)
                await self._dead_letter(msg, delivery, f"handler failed: {exc!r}")
                self._count(route.subject, "dead_letter")
            else:
                delay = self.backoff[min(delivery.num_delivered - 1, len(self.backoff) - 1)]
                log.warning(
                    "message.retry", durable=self.durable, error=repr(exc), retry_in_s=delay
                )
                await self._settle(msg.nak(delay=delay))
                self._count(route.subject, "retry")
            return
        keepalive.cancel()
        await self._settle(msg.ack())
        self._count(route.subject, "ok")
        log.info(
            "message",
            durable=self.durable,
            outcome="ok",
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    def _count(self, kind: str, outcome: str) -> None:
        # `kind` is a route's subject (the catalog's, never a message's own) or "unknown".
        metrics = getattr(self.bus, "metrics", None)
        if metrics is not None:
            metrics.handled.labels(kind, outcome).inc()

    async def _keep_alive(self, msg: Msg) -> None:
        # Long handlers (builds, deploys) tell the server they are still working.
        while True:
            await asyncio.sleep(self.ack_wait / 3)
            await self._settle(msg.in_progress())

    async def _settle(self, action: Awaitable[Any]) -> None:
        try:
            await action
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            # Lost ack: the message comes back and the idempotent handler skips it.
            log.warning("message.settle_failed", durable=self.durable, error=repr(exc))

    async def _dead_letter(self, msg: Msg, delivery: Delivery, reason: str) -> None:
        log.error("message.dead_letter", durable=self.durable, reason=reason)
        await self.bus.publish_persistent(
            subjects.dead_letter(self.bus.service, msg.subject),
            msg.data,
            msg_id=f"dlq-{self.stream}-{delivery.stream_sequence}",
            headers={
                "Slipway-Dead-Reason": reason[:500],
                "Slipway-Original-Subject": msg.subject,
                "Slipway-Deliveries": str(delivery.num_delivered),
            },
        )
        await self._settle(msg.ack())
