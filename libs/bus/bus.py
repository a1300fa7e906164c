"""The connection every service holds: typed RPC, command and event publishing, live streams.

RPC is core NATS request/reply with a queue group per service, so any number of
instances share the load; a fan-out RPC is answered by every instance and gathered.
Commands and events go through JetStream with the message id as `Nats-Msg-Id`, so a
retried publish is stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec
import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.nuid import NUID

from slipway.contracts import subjects
from slipway.contracts.base import (
    Command,
    CommandSpec,
    ErrorReply,
    Event,
    EventSpec,
    Message,
    Rpc,
    encode,
)
from slipway.libs import logcontext
from slipway.libs.bus import context
from slipway.libs.bus import tls as bus_tls
from slipway.libs.bus.consumer import Consumer, Route
from slipway.libs.bus.provision import ensure_streams
from slipway.libs.errors import (
    InsufficientStorage,
    Internal,
    InvalidRequest,
    RemoteError,
    SlipwayError,
    Timeout,
    Unavailable,
    disk_full,
)
from slipway.libs.metrics import BusMetrics, bounded_code

log = structlog.get_logger("slipway.bus")

ReqT = TypeVar("ReqT", bound=Message)
RepT = TypeVar("RepT", bound=Message)
CmdT = TypeVar("CmdT", bound=Command)
EvtT = TypeVar("EvtT", bound=Event)

# Who answered a fan-out request (the `responder` the instance serves as).
RESPONDER_HEADER = "Slipway-Responder"
_NO_RESPONDERS = "503"


@dataclass
class Gathered(Generic[RepT]):
    """What the instances serving a fan-out RPC answered, by responder."""

    replies: dict[str, RepT] = field(default_factory=dict)
    errors: dict[str, SlipwayError] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)  # expected, but silent until the deadline


# Errors after which a JetStream publish may be retried: the message id makes it safe.
_TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
)


@dataclass
class EndpointStats:
    """Counters the `$SRV.STATS` discovery reply reports for one RPC endpoint."""

    name: str
    subject: str
    queue_group: str
    num_requests: int = 0
    num_errors: int = 0
    processing_time_ns: int = 0
    last_error: str = ""


@dataclass
class _Endpoint:
    stats: EndpointStats
    subscription: Subscription
    inbox: asyncio.Queue[Msg]
    workers: set[asyncio.Task[None]] = field(default_factory=set)


class Bus:
    """One service instance's typed connection to NATS."""

    def __init__(
        self, nc: NatsClient, service: str, instance: str, *, provisions_itself: bool = True
    ) -> None:
        self.nc = nc
        # Under the hardened configuration (a user per service) the provisioner made the
        # streams and consumers and this user may not: it only binds. An open server has
        # nobody else to make them.
        self.provisions_itself = provisions_itself
        self.js: JetStreamContext = nc.jetstream(timeout=5.0)
        self.service = service
        self.instance = instance
        self._endpoints: dict[str, _Endpoint] = {}
        self._reply_decoders: dict[str, msgspec.json.Decoder[Any]] = {}
        self._consumers: list[Any] = []
        self._stopping = False
        self._served = itertools.count(1)
        # Set by the ServiceApp when its metrics are on (libs/metrics.py); None costs nothing.
        self.metrics: BusMetrics | None = None

    @classmethod
    async def connect(
        cls,
        servers: str | list[str],
        service: str,
        *,
        instance: str | None = None,
        user: str | None = None,
        password: str | None = None,
        connect_timeout: float = 5.0,
        tls: ssl.SSLContext | None = None,
    ) -> Bus:
        """Connect as `service`, with its own inbox prefix, reconnecting forever.

        Over TLS when `tls` is given, or when $SLIPWAY_NATS_TLS_DIR holds this user's
        certificate (the supervisor sets it when the bus leaves loopback).
        """
        instance = instance or NUID().next().decode()[-8:].lower()

        async def on_error(exc: Exception) -> None:
            log.warning("nats.error", error=repr(exc))

        async def on_disconnected() -> None:
            log.warning("nats.disconnected")

        async def on_reconnected() -> None:
            log.info("nats.reconnected")

        if tls is None:
            identity = bus_tls.identity_from_env(user or service)
            tls = identity.client_context() if identity is not None else None
        secure: dict[str, Any] = {"tls": tls} if tls is not None else {}
        nc = await nats.connect(
            servers,
            **secure,
            name=f"{service}-{instance}",
            user=user,
            password=password,
            inbox_prefix=subjects.inbox_prefix(service, instance),
            connect_timeout=connect_timeout,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            allow_reconnect=True,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
        )
        return cls(nc, service, instance, provisions_itself=user is None)

    async def ensure_streams(self) -> None:
        """Create the platform's streams if missing; under hardened NATS, the provisioner's job."""
        if self.provisions_itself:
            await ensure_streams(self.js)

    # ---- request / reply -------------------------------------------------------------

    async def call(self, rpc: Rpc[ReqT, RepT], request: ReqT, *, timeout: float = 5.0) -> RepT:
        """Send `request` to `rpc`'s service; return its typed reply or raise a RemoteError."""
        metrics = self.metrics
        if metrics is None:
            return await self._call(rpc, request, timeout)
        started = time.perf_counter()
        outcome = "failed"  # neither a reply nor an error of ours: a bug or a cancellation
        try:
            reply = await self._call(rpc, request, timeout)
            outcome = "ok"
            return reply
        except SlipwayError as exc:
            outcome = bounded_code(exc.code)
            raise
        finally:
            metrics.rpc("made", "rpc", _verb(rpc), outcome, time.perf_counter() - started)

    async def _call(self, rpc: Rpc[ReqT, RepT], request: ReqT, timeout: float) -> RepT:
        if rpc.fanout:
            raise TypeError(f"every instance answers {rpc.name}: use gather()")
        if type(request) is not rpc.request:
            raise TypeError(
                f"{rpc.name} takes {rpc.request.__name__}, not {type(request).__name__}"
            )
        rid = context.request_id()
        headers = {context.REQUEST_ID_HEADER: rid} if rid else None
        payload = encode(request)
        deadline = time.monotonic() + timeout
        pause = 0.02
        while True:
            try:
                msg = await self.nc.request(
                    rpc.subject,
                    payload,
                    timeout=max(deadline - time.monotonic(), 0.001),
                    headers=headers,
                )
                break
            except nats.errors.NoRespondersError:
                # Nobody serves it right now: a service restarting, or a subscription
                # still propagating. Try again until the caller's deadline.
                if time.monotonic() + pause >= deadline:
                    raise Unavailable(f"no {rpc.service} instance is serving {rpc.name}") from None
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.5)
            except nats.errors.TimeoutError:
                raise Timeout(
                    f"{rpc.service} did not answer {rpc.name} within {timeout:g}s"
                ) from None
        try:
            reply = self._reply_decoder(rpc).decode(msg.data)
        except msgspec.DecodeError as exc:
            raise Internal(f"malformed reply to {rpc.name}: {exc}") from None
        if isinstance(reply, ErrorReply):
            raise RemoteError.from_reply(reply)
        assert isinstance(reply, rpc.reply)
        return reply

    def _reply_decoder(self, rpc: Rpc[Any, Any]) -> msgspec.json.Decoder[Any]:
        decoder = self._reply_decoders.get(rpc.subject)
        if decoder is None:
            kind: Any = rpc.reply | ErrorReply if rpc.reply is not ErrorReply else ErrorReply
            decoder = self._reply_decoders[rpc.subject] = msgspec.json.Decoder(kind)
        return decoder

    async def gather(
        self,
        rpc: Rpc[ReqT, RepT],
        request: ReqT,
        *,
        expect: Collection[str] | None = None,
        timeout: float = 10.0,
        settle: float = 0.25,
    ) -> Gathered[RepT]:
        """Send `request` to every instance serving the fan-out `rpc`; collect their answers.

        With `expect` (the responders that should answer), waits until each of them has,
        or until `timeout`; those still silent are reported `missing`. Without it nobody
        knows how many will answer, so it stops once `settle` seconds pass with no new
        answer after the first (or at `timeout`, with none).
        """
        if not rpc.fanout:
            raise TypeError(f"{rpc.name} is answered by one instance: use call()")
        if type(request) is not rpc.request:
            raise TypeError(
                f"{rpc.name} takes {rpc.request.__name__}, not {type(request).__name__}"
            )
        started = time.perf_counter()
        rid = context.request_id()
        headers = {context.REQUEST_ID_HEADER: rid} if rid else None
        inbox = self.nc.new_inbox()
        subscription = await self.nc.subscribe(inbox)
        found: Gathered[RepT] = Gathered()
        waiting = set(expect) if expect is not None else None
        decoder = self._reply_decoder(rpc)
        try:
            await self.nc.publish(rpc.subject, encode(request), reply=inbox, headers=headers)
            deadline = time.monotonic() + timeout
            while waiting is None or waiting:
                left = deadline - time.monotonic()
                if waiting is None and (found.replies or found.errors):
                    left = min(left, settle)
                if left <= 0:
                    break
                try:
                    msg = await subscription.next_msg(timeout=left)
                except nats.errors.TimeoutError:
                    break
                if (msg.headers or {}).get(api.Header.STATUS) == _NO_RESPONDERS:
                    break  # the server's word that nobody subscribes to the subject
                responder = (msg.headers or {}).get(RESPONDER_HEADER, "")
                try:
                    reply = decoder.decode(msg.data)
                except msgspec.DecodeError as exc:
                    found.errors[responder] = Internal(f"malformed reply to {rpc.name}: {exc}")
                else:
                    if isinstance(reply, ErrorReply):
                        found.errors[responder] = RemoteError.from_reply(reply)
                    else:
                        found.replies[responder] = reply
                if waiting is not None:
                    waiting.discard(responder)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()
        found.missing = waiting or set()
        if self.metrics is not None:
            first = next(iter(found.errors.values()), None)
            outcome = "ok" if first is None else bounded_code(first.code)
            self.metrics.rpc("made", "fanout", _verb(rpc), outcome, time.perf_counter() - started)
        return found

    async def serve(
        self,
        rpc: Rpc[ReqT, RepT],
        handler: Callable[[ReqT], Awaitable[RepT | None]],
        *,
        concurrency: int = 64,
        responder: str | None = None,
    ) -> None:
        """Answer `rpc` with `handler`, in the service's queue group, `concurrency` at a time.

        A fan-out `rpc` is served outside any queue group: every instance gets every
        request, answers as `responder` (default: its instance id), and may let its
        handler return None to stay silent about requests addressed to another one.
        """
        if rpc.subject in self._endpoints:
            raise ValueError(f"{rpc.subject} is already served")
        decoder = msgspec.json.Decoder(rpc.request)
        queue = "" if rpc.fanout else rpc.service
        answer_as = {RESPONDER_HEADER: responder or self.instance} if rpc.fanout else None
        stats = EndpointStats(name=rpc.name, subject=rpc.subject, queue_group=queue)
        inbox: asyncio.Queue[Msg] = asyncio.Queue(maxsize=concurrency)
        base_log = dict(logcontext.get_context())

        async def work() -> None:
            # Long-lived workers rather than a task per request: starting a task costs
            # more than the rest of the contract layer put together.
            while True:
                msg = await inbox.get()
                try:
                    await self._handle_request(
                        rpc, decoder, handler, stats, msg, base_log, answer_as
                    )
                finally:
                    inbox.task_done()

        async def on_message(msg: Msg) -> None:
            # Waiting here, in the subscription's reader, is the backpressure: beyond
            # `concurrency` requests, new ones stay queued in the client.
            await inbox.put(msg)

        workers = {
            asyncio.create_task(work(), name=f"rpc:{rpc.name}:{i}") for i in range(concurrency)
        }
        subscription = await self.nc.subscribe(rpc.subject, queue=queue, cb=on_message)
        # The server knows the subscription only after a round trip: until then a
        # caller would get "no responders".
        await self.nc.flush()
        self._endpoints[rpc.subject] = _Endpoint(stats, subscription, inbox, workers)

    async def _handle_request(
        self,
        rpc: Rpc[ReqT, RepT],
        decoder: msgspec.json.Decoder[ReqT],
        handler: Callable[[ReqT], Awaitable[RepT | None]],
        stats: EndpointStats,
        msg: Msg,
        base_log: dict[str, Any],
        answer_as: dict[str, str] | None,
    ) -> None:
        started = time.perf_counter_ns()
        headers = msg.headers or {}
        caller = subjects.caller_of(msg.reply)
        if msg.reply and not subjects.is_inbox(msg.reply):
            # The answer would go to a subject no Slipway inbox owns: possibly one the
            # sender can read while posing as someone else. Never answer there.
            log.warning("rpc.refused", endpoint=rpc.name, reason="reply is not a Slipway inbox")
            return
        ctx = context.MessageContext(
            subject=msg.subject,
            caller=caller,
            request_id=headers.get(context.REQUEST_ID_HEADER) or self._local_request_id(),
            headers=headers,
        )
        context.enter(ctx)
        # Workers outlive requests: start each request from the worker's base log
        # context, so keys a handler bound for one request do not leak into the next.
        logcontext.bind_all(
            {**base_log, "subject": ctx.subject, "caller": ctx.caller, "request_id": ctx.request_id}
        )
        reply: Message | None
        try:
            request = decoder.decode(msg.data)
        except msgspec.DecodeError as exc:
            reply = InvalidRequest(f"malformed {rpc.name} request: {exc}").to_reply()
        else:
            try:
                reply = await handler(request)
                if reply is None and not rpc.fanout:
                    raise TypeError(f"the handler of {rpc.name} returned nothing")
            except SlipwayError as exc:
                reply = exc.to_reply()
            except Exception as exc:
                if disk_full(exc):
                    # A full disk is the operator's to fix, not a bug: say so to the caller.
                    log.warning("rpc.disk_full", error=repr(exc))
                    reply = InsufficientStorage(
                        f"{rpc.service}'s disk is full ({rpc.name} could not write): free"
                        " space on the platform's state folder; nothing is pruned to make room."
                    ).to_reply()
                else:
                    log.exception("rpc.crashed")
                    reply = Internal(f"{rpc.service} failed to handle {rpc.name}").to_reply()
        if reply is None:
            return  # a fan-out request addressed to another instance
        stats.num_requests += 1
        if isinstance(reply, ErrorReply):
            stats.num_errors += 1
            stats.last_error = f"{reply.code}: {reply.message}"
        if msg.reply:
            try:
                await self.nc.publish(msg.reply, encode(reply), headers=answer_as)
            except nats.errors.Error as exc:
                log.warning("rpc.reply_failed", error=repr(exc))
        elapsed = time.perf_counter_ns() - started
        stats.processing_time_ns += elapsed
        outcome = reply.code if isinstance(reply, ErrorReply) else "ok"
        log.info("rpc", endpoint=rpc.name, outcome=outcome, duration_ms=round(elapsed / 1e6, 3))
        if self.metrics is not None:
            kind = "fanout" if rpc.fanout else "rpc"
            self.metrics.rpc("served", kind, _verb(rpc), bounded_code(outcome), elapsed / 1e9)

    def _local_request_id(self) -> str:
        # For requests that arrive without an id: unique per instance, and far cheaper
        # than a random id on the hot path.
        return f"{self.instance}-{next(self._served)}"

    def endpoint_stats(self) -> list[EndpointStats]:
        """Counters of every served endpoint, for the discovery protocol."""
        return [endpoint.stats for endpoint in self._endpoints.values()]

    # ---- commands and events -----------------------------------------------------------

    async def send(
        self, spec: CommandSpec[CmdT], command: CmdT, *, retry_for: float = 30.0
    ) -> bool:
        """Store `command` in the CMD stream; False when JetStream saw its id before."""
        if type(command) is not spec.message:
            raise TypeError(f"{spec.name} takes {spec.message.__name__}")
        ack = await self.publish_persistent(
            spec.subject, encode(command), msg_id=command.command_id, retry_for=retry_for
        )
        return not ack.duplicate

    async def publish(self, spec: EventSpec[EvtT], event: EvtT, *, retry_for: float = 30.0) -> bool:
        """Store `event` in the EVT stream; False when JetStream saw its id before."""
        if type(event) is not spec.message:
            raise TypeError(f"{spec.subject} carries {spec.message.__name__}")
        ack = await self.publish_persistent(
            spec.subject, encode(event), msg_id=event.event_id, retry_for=retry_for
        )
        return not ack.duplicate

    async def publish_persistent(
        self,
        subject: str,
        payload: bytes,
        *,
        msg_id: str,
        headers: dict[str, str] | None = None,
        retry_for: float = 30.0,
    ) -> api.PubAck:
        """Publish to JetStream and wait for the stored-on-disk acknowledgement.

        Transient failures (a restarting server, a lost reply) are retried until
        `retry_for` seconds have passed; the message id makes every retry safe.
        """
        all_headers = {"Nats-Msg-Id": msg_id}
        rid = context.request_id()
        if rid:
            all_headers[context.REQUEST_ID_HEADER] = rid
        if headers:
            all_headers.update(headers)
        deadline = time.monotonic() + retry_for
        delay = 0.05
        while True:
            try:
                return await self.js.publish(subject, payload, headers=all_headers)
            except (*_TRANSIENT, nats.js.errors.APIError) as exc:
                if disk_full(exc):
                    # JetStream's store is out of space: waiting will not help, the operator must.
                    raise InsufficientStorage(
                        f"The bus's store (JetStream) has no room for {subject}: free space on"
                        " its disk; nothing is pruned to make room."
                    ) from exc
                if not isinstance(exc, _TRANSIENT):
                    raise
                if time.monotonic() + delay > deadline:
                    raise Unavailable(f"JetStream did not store {subject}: {exc!r}") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def consume_commands(self, routes: list[Route[Any]], **options: Any) -> Consumer:
        """Start this service's durable consumer on the CMD work queue."""
        service = subjects.Service(self.service)
        consumer = Consumer(
            self,
            stream=subjects.STREAM_CMD,
            durable=subjects.durable(service, "cmd"),
            filter_subjects=[subjects.cmd_filter(service)],
            routes=routes,
            **options,
        )
        await consumer.start()
        return consumer

    async def consume_events(
        self, purpose: str, routes: list[Route[Any]], **options: Any
    ) -> Consumer:
        """Start a durable consumer named for `purpose` on the EVT stream."""
        consumer = Consumer(
            self,
            stream=subjects.STREAM_EVT,
            durable=subjects.durable(subjects.Service(self.service), purpose),
            filter_subjects=[r.subject for r in routes],
            routes=routes,
            **options,
        )
        await consumer.start()
        return consumer

    # ---- live, ephemeral streams ----------------------------------------------------------

    async def live_publish(self, subject: str, data: bytes) -> None:
        """Send one chunk to whoever is listening on a live subject; nothing is stored."""
        await self.nc.publish(subject, data)

    async def live_subscribe(self, subject: str) -> AsyncIterator[bytes]:
        """Subscribe now (the server knows it when this returns); iterate to read chunks."""
        subscription = await self.nc.subscribe(subject)
        await self.nc.flush()
        return _chunks(subscription)

    # ---- lifecycle --------------------------------------------------------------------------

    def track(self, consumer: Any) -> None:
        """Let `stop_taking_work` and `wait_idle` reach a consumer started on this bus."""
        self._consumers.append(consumer)

    def consumers(self) -> list[Consumer]:
        """The durable consumers started on this bus (their lag is a metric)."""
        return [consumer for consumer in self._consumers if isinstance(consumer, Consumer)]

    async def stop_taking_work(self) -> None:
        """Stop receiving requests and commands; work already received goes on."""
        self._stopping = True
        for endpoint in self._endpoints.values():
            # drain, not unsubscribe: requests already delivered to us are still answered.
            with contextlib.suppress(nats.errors.Error):
                await endpoint.subscription.drain()  # type: ignore[no-untyped-call]
        for consumer in self._consumers:
            consumer.stop()

    async def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait for in-flight handlers; False if some were still running at the timeout."""
        waiters = [endpoint.inbox.join() for endpoint in self._endpoints.values()]
        waiters += [consumer.wait_idle() for consumer in self._consumers]
        if waiters:
            everything = [asyncio.ensure_future(w) for w in waiters]
            _, still = await asyncio.wait(everything, timeout=timeout)
            for future in still:
                future.cancel()
        else:
            still = set()
        for endpoint in self._endpoints.values():
            for worker in endpoint.workers:
                worker.cancel()
        return not still

    async def close(self) -> None:
        """Stop consumers, flush what was published and close the connection."""
        if self.nc.is_closed:
            return
        if not self._stopping:
            await self.stop_taking_work()
            await self.wait_idle(timeout=10.0)
        try:
            await self.nc.drain()
        except (TimeoutError, nats.errors.Error, OSError):
            # The server is gone (or going): there is nothing left to flush to, and a
            # failure to say goodbye must not turn a clean stop into a crash.
            with contextlib.suppress(OSError, nats.errors.Error):
                await self.nc.close()


async def _chunks(subscription: Subscription) -> AsyncIterator[bytes]:
    try:
        async for msg in subscription.messages:
            yield msg.data
    finally:
        await subscription.unsubscribe()


def _verb(rpc: Rpc[Any, Any]) -> str:
    # The metrics' label: contract names repeat across services (snapshot.export).
    return f"{rpc.service}.{rpc.name}"
