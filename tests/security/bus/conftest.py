"""A hardened nats-server per test, and clients that record what the server refused."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import nats
import pytest
from nats.aio.client import Client as NatsClient

from slipway.contracts import subjects
from slipway.libs.natsserver import NatsServer

# How nats-server words a refusal; nats-py hands it to the error callback.
_VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]+)"', re.I)


def lowered(found: set[str]) -> set[str]:
    """Subjects as nats-py reports them in a refusal (it lower-cases the server's error)."""
    return {subject.lower() for subject in found}


@dataclass
class Refusals:
    """Every (publish|subscribe, lower-cased subject) the server refused to one client."""

    seen: set[tuple[str, str]] = field(default_factory=set)
    other: list[str] = field(default_factory=list)

    async def record(self, exc: Exception) -> None:
        match = _VIOLATION.search(str(exc))
        if match:
            kind = "publish" if match.group(1).lower() == "publish" else "subscribe"
            self.seen.add((kind, match.group(2)))
        else:
            self.other.append(repr(exc))

    def published(self) -> set[str]:
        return {subject for kind, subject in self.seen if kind == "publish"}

    def subscribed(self) -> set[str]:
        return {subject for kind, subject in self.seen if kind == "subscribe"}


@dataclass
class Client:
    """A raw NATS connection as one user, with its own inbox prefix, and its refusals."""

    nc: NatsClient
    refusals: Refusals


Connect = Callable[[str], Awaitable[Client]]


@pytest.fixture
async def connect_as(hardened: NatsServer) -> AsyncIterator[Connect]:
    """Connect raw clients as any user; all are closed at the end of the test."""
    clients: list[Client] = []

    async def connect(user: str) -> Client:
        refusals = Refusals()
        nc = await nats.connect(
            hardened.url,
            user=user,
            password=hardened.users[user],
            inbox_prefix=subjects.inbox_prefix(user),
            error_cb=refusals.record,
            allow_reconnect=False,
        )
        client = Client(nc, refusals)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.nc.close()
