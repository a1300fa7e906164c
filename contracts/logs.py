"""Log lines on their way to log-shipper, and the router's access records.

Producers other than dynos (the router, the builder, the platform) send lines
to log-shipper on core NATS live subjects: these lines hold customer data, so
they are never written to a JetStream stream in plaintext. Log-shipper stores
them encrypted and serves tails; a line sent while no log-shipper listens is
lost, which is the price of never persisting plaintext.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from slipway.contracts.base import LiveSpec, Message, only
from slipway.contracts.subjects import Service

LogSource = Literal["app", "heroku", "api", "router"]


class LogLine(msgspec.Struct, frozen=True, kw_only=True):
    """One line, as `slipway logs` prints it: `<timestamp> <source>[<dyno>]: <text>`."""

    app_id: str
    timestamp: float
    source: LogSource
    dyno: str  # "web.1", "router", "build", "api"
    text: str


class LogLines(Message, tag="logs.lines.v1", frozen=True, kw_only=True):
    lines: list[LogLine]


class RouterAccess(Message, tag="router.access.v1", frozen=True, kw_only=True):
    """One request through the router, the fields of Heroku's router log line."""

    app_id: str
    timestamp: float
    method: str
    path: str
    host: str
    request_id: str
    fwd: str  # the client's address
    dyno: str  # "web.1", or "" when no dyno answered
    connect_ms: int
    service_ms: int
    status: int
    bytes: int
    protocol: str = "http"
    code: str = ""  # "H14", "H12", ... when the router answered itself


# Non-dyno lines: API lines from the gateway, build lines, platform lines from the scheduler.
LINES = LiveSpec(
    "logs",
    writers=only(Service.GATEWAY, Service.BUILDER, Service.SCHEDULER),
    readers=only(Service.LOG_SHIPPER),
)
ROUTER = LiveSpec("router", writers=only(Service.NETWORK_WIRER), readers=only(Service.LOG_SHIPPER))


def lines_subject(app_id: str) -> str:
    """Where non-dyno lines of one app go (router, build, platform, api)."""
    return LINES.subject(app_id)


def router_subject(app_id: str) -> str:
    """Where network-wirer publishes the router's access records of one app."""
    return ROUTER.subject(app_id)


LINES_ALL = LINES.filter
ROUTER_ALL = ROUTER.filter
