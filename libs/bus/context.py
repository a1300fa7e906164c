"""What a handler knows about the message it is handling, without taking it as an argument.

Handlers read like their contracts (`async def handle(cmd: BuildRequested) -> None`);
the subject, the calling service and the request id travel in a contextvar, and are
bound into structlog's contextvars so every log line of the handler carries them.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any

from slipway.contracts.base import Rpc
from slipway.libs.errors import Forbidden

REQUEST_ID_HEADER = "Slipway-Request-Id"


@dataclass(frozen=True)
class MessageContext:
    """The envelope of the message being handled."""

    subject: str
    caller: str | None = None
    request_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delivery: int = 1


_current: contextvars.ContextVar[MessageContext | None] = contextvars.ContextVar(
    "slipway_message", default=None
)
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "slipway_request_id", default=None
)


def current() -> MessageContext | None:
    """The message being handled in this task, if any."""
    return _current.get()


def request_id() -> str | None:
    """The request id to propagate on outgoing messages from this task."""
    return _request_id.get()


def set_request_id(value: str | None) -> contextvars.Token[str | None]:
    """Bind the request id outgoing calls carry (the gateway sets it per HTTP request)."""
    return _request_id.set(value)


def enter(ctx: MessageContext) -> None:
    """Bind `ctx` for the rest of the current task (each handler runs in its own task)."""
    _current.set(ctx)
    _request_id.set(ctx.request_id)


def require_caller(rpc: Rpc[Any, Any]) -> str:
    """The calling service, if `rpc` declares it among its callers; else raise Forbidden.

    Under the hardened configuration nats-server already refused undeclared callers;
    this keeps a handler that acts for a customer safe on an open server too.
    """
    ctx = current()
    caller = ctx.caller if ctx else None
    if caller is None or caller not in rpc.callers:
        who = caller or "a caller without a Slipway inbox"
        allowed = ", ".join(sorted(rpc.callers)) or "nobody"
        raise Forbidden(
            f"{who} may not call {rpc.service} {rpc.name}: only {allowed} may"
            " (declared in contracts/)."
        )
    return caller
