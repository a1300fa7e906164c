"""The log context of the running task: keys every log line carries (service, subject, app).

One ContextVar holds an immutable mapping, so binding is one dict copy and a log
line reads one variable (structlog's own contextvars copy the whole context on
every line, which the bus's canonical line cannot afford).

    token = bind(app="hello")     # for the rest of this task, or until reset
    reset(token)
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any

LogContext = Mapping[str, Any]
_EMPTY: LogContext = MappingProxyType({})
_CONTEXT: ContextVar[LogContext] = ContextVar("slipway_log_context", default=_EMPTY)


def bind(**values: Any) -> Token[LogContext]:
    """Add keys to every line logged from this task on; `reset(token)` takes them back."""
    return _CONTEXT.set({**_CONTEXT.get(), **values})


def bind_all(values: LogContext) -> Token[LogContext]:
    """Replace the whole context (the bus starts each message from its worker's base)."""
    return _CONTEXT.set(values)


def unbind(*keys: str) -> None:
    """Drop keys from the context of this task."""
    current = _CONTEXT.get()
    _CONTEXT.set({k: v for k, v in current.items() if k not in keys})


def reset(token: Token[LogContext]) -> None:
    """Undo a `bind` / `bind_all`."""
    _CONTEXT.reset(token)


def get_context() -> LogContext:
    """The keys bound in this task."""
    return _CONTEXT.get()


def merge_into_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the bound keys, under the event's own."""
    context = _CONTEXT.get()
    return {**context, **event} if context else event
