"""Who may ask registry-proxy for what: one table, checked on every call.

The caller is the service whose reply inbox a request came from
(`libs.bus.context.current().caller`), which the hardened NATS configuration
makes unforgeable. The builder pushes the images it builds (and pulls them back
for the release phase); the scheduler pulls on behalf of hosts. Nobody else gets
a registry credential.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from slipway.contracts.subjects import Service
from slipway.libs.errors import Forbidden
from slipway.libs.natsauth import OPERATOR


class Operation(StrEnum):
    PULL = "pull"
    PUSH = "push"
    LIST = "images.list"


class Grant(NamedTuple):
    caller: str
    operation: Operation


G, Op = Grant, Operation
BUILDER, SCHEDULER, GATEWAY = Service.BUILDER, Service.SCHEDULER, Service.GATEWAY

# fmt: off
TABLE: tuple[Grant, ...] = (
    G(BUILDER,   Op.PUSH),
    G(BUILDER,   Op.PULL),
    G(SCHEDULER, Op.PULL),
    # The image list says what exists, never grants access to it.
    G(BUILDER,   Op.LIST),
    G(SCHEDULER, Op.LIST),
    G(GATEWAY,   Op.LIST),
    G(OPERATOR,  Op.LIST),
)
# fmt: on

_ALLOWED = frozenset(TABLE)


def check(caller: str | None, operation: Operation) -> None:
    """Raise Forbidden unless the table grants `operation` to `caller`."""
    if caller is not None and Grant(caller, operation) in _ALLOWED:
        return
    who = caller or "a caller without a Slipway inbox"
    raise Forbidden(f"{who} may not {operation}: registry-proxy's policy does not allow it.")
