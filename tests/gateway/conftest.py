"""Fixtures that start the real stack for gateway (and CLI) tests, in this process.

    async def test_something(stack: Stack) -> None:
        alice = await stack.user("alice@example.com")
        answer = await alice.post("/apps", {"name": "hello"})
        assert answer.status == 201

Fixtures, each building on the one before:

- `nats_server` (tests/conftest.py): a real nats-server with JetStream on disk;
- `slipway_home`: the test's SLIPWAY_HOME (`tmp_path/home`);
- `keyring_service`: the real keyring ServiceApp, running in this event loop;
- `gateway_service`: the real gateway ServiceApp on a free loopback port;
- `stack`: all of it, with `stack.admin` (an `Api` logged in with the bootstrap
  token), `stack.user(email)` to register users and log them in (through an
  invitation), `stack.bus` to read the EVT stream or call services, and
  `stack.gw` (the gateway's state).

`Api` wraps an aiohttp client session: `await api.get(path)` returns an
`Answer(status, body, headers)` with the JSON body decoded. Nothing is faked.

Other test folders reuse the fixtures by importing them into their conftest:

    from tests.gateway.conftest import (  # noqa: F401
        gateway_service, keyring_service, slipway_home, stack,
    )
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import secrets
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from multidict import CIMultiDictProxy

from slipway.contracts import subjects
from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from slipway.services.gateway.app import STATE, create_service
from slipway.services.gateway.core.settings import GatewaySettings
from slipway.services.gateway.core.state import Gateway
from slipway.services.keyring.app import create_service as create_keyring
from slipway.services.keyring.settings import KeyringSettings

ACCEPT = "application/vnd.heroku+json; version=3"


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, decoded JSON body (None if empty or not JSON), headers."""

    status: int
    body: Any
    headers: CIMultiDictProxy[str]

    @property
    def error_id(self) -> str | None:
        return self.body.get("id") if isinstance(self.body, dict) else None


@dataclass
class Api:
    """A client of the API, logged in with `token` (or anonymous)."""

    session: aiohttp.ClientSession
    url: str
    token: str | None = None
    email: str = ""

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        sent = {"Accept": ACCEPT}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        # A BytesIO body: aiohttp warns about sending large raw bytes, and it keeps a length.
        payload = io.BytesIO(data) if data is not None else None
        async with self.session.request(method, self.url + path, data=payload, headers=sent) as r:
            raw = await r.read()
            try:
                decoded = json.loads(raw) if raw else None
            except ValueError:
                decoded = None
            return Answer(r.status, decoded, r.headers)

    async def get(self, path: str, **kw: Any) -> Answer:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> Answer:
        return await self.request("POST", path, body, **kw)

    async def put(self, path: str, body: Any = None, **kw: Any) -> Answer:
        return await self.request("PUT", path, body, **kw)

    async def patch(self, path: str, body: Any = None, **kw: Any) -> Answer:
        return await self.request("PATCH", path, body, **kw)

    async def delete(self, path: str, **kw: Any) -> Answer:
        return await self.request("DELETE", path, **kw)

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        """The body of a request that must answer `status`."""
        answer = await self.request(method, path, body)
        assert answer.status == status, (method, path, answer.status, answer.body)
        return answer.body

    def as_token(self, token: str | None) -> Api:
        return Api(self.session, self.url, token, self.email)


@dataclass
class Stack:
    """The running stack of one test."""

    home: Path
    nats: NatsServer
    gateway: ServiceApp
    keyring: ServiceApp
    bus: Bus
    admin: Api
    session: aiohttp.ClientSession
    _users: dict[str, Api] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.admin.url

    @property
    def gw(self) -> Gateway:
        return self.gateway[STATE]

    def anonymous(self) -> Api:
        return Api(self.session, self.url)

    async def user(self, email: str) -> Api:
        """Register `email` (as the platform admin), invite them, and redeem it as the user.

        As in production, the admin only ever sees the SHA-256 of the user's secret.
        """
        if email not in self._users:
            user = await self.admin.ok("POST", "/users", {"email": email}, status=201)
            secret = secrets.token_urlsafe(32)
            verifier = hashlib.sha256(secret.encode()).hexdigest()
            await self.admin.ok(
                "POST", f"/users/{user['id']}/invitations", {"verifier": verifier}, status=201
            )
            auth = await self.anonymous().ok(
                "POST",
                "/invitations/actions/redeem",
                {"email": email, "secret": secret, "description": "test"},
                status=201,
            )
            self._users[email] = Api(self.session, self.url, auth["access_token"]["token"], email)
        return self._users[email]

    async def join(self, owner: Api, team: str, user: Api, role: str) -> None:
        """`owner` adds `user` to `team` with `role`."""
        await owner.ok("PUT", f"/teams/{team}/members", {"email": user.email, "role": role})

    async def app(self, owner: Api, name: str, team: str | None = None) -> dict[str, Any]:
        body = {"name": name} if team is None else {"name": name, "team": team}
        created: dict[str, Any] = await owner.ok("POST", "/apps", body, status=201)
        return created

    async def events(self, domain: str) -> list[dict[str, Any]]:
        """Every event of `domain` in the EVT stream, decoded as plain JSON."""
        return await domain_events(self.bus, domain)


async def tamper(db_path: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Change the gateway's database behind its back, as an attacker with the file would."""
    # In a thread: the gateway runs in this event loop and may hold the write lock.
    await asyncio.to_thread(_write, db_path, sql, params)


def _write(db_path: Path, sql: str, params: tuple[Any, ...]) -> None:
    db = sqlite3.connect(db_path, timeout=10, isolation_level=None)
    try:
        # IMMEDIATE: take the write lock before reading, so no snapshot can go stale.
        db.execute("BEGIN IMMEDIATE")
        db.execute(sql, params)
        db.execute("COMMIT")
    finally:
        db.close()


async def domain_events(bus: Bus, domain: str) -> list[dict[str, Any]]:
    """Every event of `domain` in the EVT stream, decoded as plain JSON."""
    payloads = await stream_messages(bus, subjects.evt_filter(domain))
    return [msgspec.json.decode(data) for data in payloads]


async def stream_messages(bus: Bus, subject_filter: str) -> list[bytes]:
    """The payloads JetStream holds for `subject_filter`, read with an ordered consumer."""
    sub = await bus.js.subscribe(subject_filter, ordered_consumer=True)
    found: list[bytes] = []
    try:
        while True:
            msg = await sub.next_msg(timeout=0.3)
            found.append(msg.data)
    except TimeoutError:
        pass
    finally:
        await sub.unsubscribe()
    return found


async def run_in_background(service: ServiceApp) -> asyncio.Task[None]:
    """Start a ServiceApp in this loop and return once it serves (or raise why it could not)."""
    task = asyncio.create_task(service.run(install_signals=False))
    started = asyncio.create_task(service.started.wait())
    await asyncio.wait({task, started}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if not service.started.is_set():
        started.cancel()
        if task.done():
            task.result()  # raises the start-up failure
        raise TimeoutError(f"{service.service} did not start")
    return task


async def stop(service: ServiceApp, task: asyncio.Task[None]) -> None:
    service.stop()
    await asyncio.wait_for(task, 30)


@pytest.fixture
def slipway_home(tmp_path: Path) -> Path:
    """The test's SLIPWAY_HOME: every file a service writes lands under it."""
    home = tmp_path / "home"
    home.mkdir()
    return home


def gateway_settings(nats_url: str, home: Path, **overrides: Any) -> GatewaySettings:
    """Settings for a test gateway: a free port, quick sweeps, a short shutdown."""
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "home": str(home),
        "api_port": 0,
        "sweep_interval": 0.5,
        "shutdown_grace": 5.0,
        **overrides,
    }
    return GatewaySettings(**values)


@pytest.fixture
async def keyring_service(nats_server: NatsServer, slipway_home: Path) -> AsyncIterator[ServiceApp]:
    """The real keyring, in-process, with its master key under `slipway_home`."""
    service = create_keyring(
        KeyringSettings(nats_url=nats_server.url, home=str(slipway_home), shutdown_grace=5.0)
    )
    task = await run_in_background(service)
    yield service
    await stop(service, task)


@pytest.fixture
async def gateway_service(
    nats_server: NatsServer, slipway_home: Path, keyring_service: ServiceApp
) -> AsyncIterator[ServiceApp]:
    """The real gateway, in-process, listening on a free loopback port."""
    service = create_service(gateway_settings(nats_server.url, slipway_home))
    task = await run_in_background(service)
    yield service
    await stop(service, task)


@pytest.fixture
async def stack(
    nats_server: NatsServer,
    slipway_home: Path,
    keyring_service: ServiceApp,
    gateway_service: ServiceApp,
    bus_factory: Callable[[str], Awaitable[Bus]],
) -> AsyncIterator[Stack]:
    """The whole stack, with the bootstrap admin logged in."""
    bootstrap = json.loads((slipway_home / "gateway" / "bootstrap.json").read_text())
    async with aiohttp.ClientSession() as session:
        admin = Api(session, bootstrap["api_url"], bootstrap["token"], bootstrap["email"])
        yield Stack(
            home=slipway_home,
            nats=nats_server,
            gateway=gateway_service,
            keyring=keyring_service,
            bus=await bus_factory("operator"),
            admin=admin,
            session=session,
        )
