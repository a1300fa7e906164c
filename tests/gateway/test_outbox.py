"""The transactional outbox: events commit with their change and survive a crash before publish."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from tests.conftest import assert_eventually
from tests.gateway.conftest import ACCEPT, Stack, domain_events

pytestmark = pytest.mark.integration

BusFactory = Callable[[str], Awaitable[Bus]]


def pending_rows(db_path: Path) -> int:
    db = sqlite3.connect(db_path)
    try:
        return int(db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0])
    finally:
        db.close()


async def test_change_publishes_its_event(stack: Stack) -> None:
    """Creating an app puts app.created in the EVT stream, and the outbox row is marked sent."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")

    async def published() -> None:
        events = [e for e in await stack.events("app") if e["app_id"] == app["id"]]
        assert [e["type"] for e in events] == ["app.created.v1"]

    await assert_eventually(published)
    await assert_eventually(lambda: _no_pending(stack.home / "gateway" / "gateway.db"))


def _no_pending(db_path: Path) -> None:
    assert pending_rows(db_path) == 0


async def test_relaying_twice_stores_one_copy(stack: Stack) -> None:
    """Each event's id is its Nats-Msg-Id: relaying a row again is dropped by JetStream."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    await stack.gw.relay.relay_pending()
    async with stack.gw.db.transaction() as conn:
        await conn.execute("UPDATE outbox SET sent_at = NULL")
    assert await stack.gw.relay.relay_pending() > 0
    events = [e for e in await stack.events("app") if e["app_id"] == app["id"]]
    assert len(events) == 1


# ---- a real process, killed ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def gateway_process(nats_server: NatsServer, slipway_home: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(nats_server.url, slipway_home, free_port())
    yield process
    process.kill()


class GatewayProcess:
    """`python -m slipway.services.gateway` as a child process."""

    def __init__(self, nats_url: str, home: Path, port: int) -> None:
        self.home = home
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "SLIPWAY_NATS_URL": nats_url,
            "SLIPWAY_HOME": str(home),
            "SLIPWAY_API_PORT": str(port),
            "SLIPWAY_LOG_FORMAT": "json",
            "SLIPWAY_SWEEP_INTERVAL": "0.5",
            "SLIPWAY_SHUTDOWN_GRACE": "5",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, **settings: str) -> None:
        env = self.env | {f"SLIPWAY_{k.upper()}": v for k, v in settings.items()}
        log = (self.home / "gateway-process.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "slipway.services.gateway"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    async def wait_ready(self, session: aiohttp.ClientSession, token: str | None) -> str:
        """Wait until the API answers; returns the admin token (from bootstrap.json)."""

        async def answers() -> str:
            assert self.process is not None and self.process.poll() is None, "gateway exited"
            path = self.home / "gateway" / "bootstrap.json"
            secret = token or (json.loads(path.read_text())["token"] if path.exists() else "")
            assert secret
            try:
                async with session.get(f"{self.url}/account", headers=headers(secret)) as r:
                    assert r.status == 200
            except aiohttp.ClientConnectionError as exc:
                raise AssertionError(f"not listening yet: {exc}") from None
            return secret

        return await assert_eventually(answers, timeout=30)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": ACCEPT}


async def test_event_survives_a_kill_between_commit_and_publish(
    gateway_process: GatewayProcess,
    keyring_service: ServiceApp,
    bus_factory: BusFactory,
) -> None:
    """SIGKILL after the commit but before the relay ran: the event is published on restart."""
    db_path = gateway_process.home / "gateway" / "gateway.db"
    bus = await bus_factory("operator")
    async with aiohttp.ClientSession() as session:
        gateway_process.start(outbox_relay="false")
        token = await gateway_process.wait_ready(session, None)
        async with session.post(
            f"{gateway_process.url}/apps", json={"name": "survivor"}, headers=headers(token)
        ) as response:
            assert response.status == 201
            app_id = (await response.json())["id"]
        assert pending_rows(db_path) > 0
        gateway_process.kill()
        assert not [e for e in await domain_events(bus, "app") if e["app_id"] == app_id]

        gateway_process.start()
        await gateway_process.wait_ready(session, token)

        async def delivered() -> None:
            events = [e for e in await domain_events(bus, "app") if e["app_id"] == app_id]
            assert [e["type"] for e in events] == ["app.created.v1"]

        await assert_eventually(delivered)
        await assert_eventually(lambda: _no_pending(db_path))
        assert gateway_process.terminate() == 0
