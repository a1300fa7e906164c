"""Base message types and the typed bindings between subjects and messages.

Evolution rules (msgspec's schema-evolution guide, applied):
- a new field always has a default, so old senders still decode;
- a field's type never changes and a field is never renamed;
- a breaking change is a new class with a new tag (`"...v2"`), decoded side by side.

msgspec applies `kw_only` per class, not by inheritance: every contract class
states `kw_only=True` itself (tests/contracts checks that none forgets).

Every message carries its tag in the `type` field, so a payload names its own
contract and golden samples under tests/ prove old bytes keep decoding.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from slipway.contracts import subjects


def new_id() -> str:
    """A random, unique id for commands, events and requests (UUID4, hex)."""
    return uuid.uuid4().hex


def now() -> float:
    """Seconds since the epoch, the one clock format on the wire."""
    return time.time()


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Root of every contract. Subclasses set `tag="<noun>.<verb>.v<N>"`."""


class ErrorReply(Message, tag="error.v1", frozen=True, kw_only=True):
    """How any failure crosses the wire; the caller turns it into a `RemoteError`."""

    code: str
    message: str
    retryable: bool = False
    details: dict[str, str] = {}


class Command(Message, frozen=True, kw_only=True):
    """An instruction to one service, delivered at least once.

    `command_id` is the idempotency key: it is also sent as `Nats-Msg-Id` so
    JetStream drops duplicate publishes, and handlers record it so a redelivery
    does no work twice.
    """

    command_id: str = msgspec.field(default_factory=new_id)
    issued_at: float = msgspec.field(default_factory=now)


class Event(Message, frozen=True, kw_only=True):
    """A fact that happened; persisted in the EVT stream for replay and audit."""

    event_id: str = msgspec.field(default_factory=new_id)
    occurred_at: float = msgspec.field(default_factory=now)


class Ok(Message, tag="ok.v1", frozen=True, kw_only=True):
    """The reply of an RPC whose only answer is that it worked."""


ReqT = TypeVar("ReqT", bound=Message)
RepT = TypeVar("RepT", bound=Message)
CmdT = TypeVar("CmdT", bound=Command)
EvtT = TypeVar("EvtT", bound=Event)


@dataclass(frozen=True)
class Rpc(Generic[ReqT, RepT]):
    """A request/reply endpoint: its subject, request type and reply type.

    A `fanout` endpoint is served by every instance (no queue group), each answering
    for what only it holds (one log-shipper per Docker host); callers collect the
    answers with `Bus.gather`.
    """

    service: str
    name: str
    subject: str
    request: type[ReqT]
    reply: type[RepT]
    fanout: bool = False
    # The services (NATS users) that may call it; libs/natsauth grants them the subject.
    callers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CommandSpec(Generic[CmdT]):
    """A command kind: the owning service, its subject, its message type and who sends it."""

    service: str
    name: str
    subject: str
    message: type[CmdT]
    senders: frozenset[str] = frozenset()


@dataclass(frozen=True)
class EventSpec(Generic[EvtT]):
    """An event kind: its subject in the EVT stream, its message type and who publishes it."""

    subject: str
    message: type[EvtT]
    publishers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class LiveSpec:
    """A kind of ephemeral core-NATS stream (`slipway.live.<kind>.<id>`): who writes, who reads.

    Live subjects carry customer bytes (output, log lines, keystrokes), so only their
    declared readers may subscribe and only their writers may publish.
    """

    kind: str
    writers: frozenset[str]
    readers: frozenset[str]

    @property
    def filter(self) -> str:
        """Every subject of this kind (one token per id)."""
        return subjects.live_filter(self.kind)

    def subject(self, ident: str) -> str:
        """The subject of one stream of this kind."""
        return subjects.live(self.kind, ident)


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable consumer of the EVT stream, provisioned before its service starts.

    A `per_instance` consumer exists once per instance (each builder, each log-shipper
    host needs every event): its durable is `<service>-<purpose>-<instance>`.
    """

    service: str
    purpose: str
    events: tuple[EventSpec[Any], ...]
    per_instance: bool = False

    def durable_purpose(self, instance: str | None = None) -> str:
        """The purpose a service passes to `Bus.consume_events` for `instance`."""
        if not self.per_instance or instance is None:
            return self.purpose
        return f"{self.purpose}-{instance}"


def only(*who: str) -> frozenset[str]:
    """The set of services (NATS users) a declaration names."""
    return frozenset(who)


def encode(message: Message) -> bytes:
    """The wire encoding of every contract (JSON: readable with `nats sub`)."""
    return _ENCODER.encode(message)


def decoder(kind: Any) -> msgspec.json.Decoder[Any]:
    """A decoder built once for a message type or a union of them."""
    return msgspec.json.Decoder(kind)


_ENCODER = msgspec.json.Encoder()
