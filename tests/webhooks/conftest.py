"""Fixtures for webhook tests: the real keyring, the monitor's webhooks in-process, a receiver.

The receiver is an aiohttp HTTPS server on loopback with a certificate made for the test,
which the monitor trusts through `webhook_ca_file`. Loopback is refused by the egress guard
unless the operator allows it: these tests are that operator (`LOOPBACK_ALLOWED`), except
where a test checks the refusal itself.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web

from slipway.contracts import webhooks as wh
from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from slipway.services.monitor.settings import MonitorSettings
from slipway.services.monitor.webhooks import WEBHOOKS, Webhooks, WebhookSettings, register
from tests.gateway.conftest import (  # noqa: F401 - fixtures
    keyring_service,
    run_in_background,
    slipway_home,
    stop,
)
from tests.log_shipper.drain_servers import self_signed, server_tls

LOOPBACK_ALLOWED = "127.0.0.1/32,::1/128"


@dataclass
class Post:
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        decoded: dict[str, Any] = msgspec.json.decode(self.body)
        return decoded


@dataclass
class Receiver:
    """A webhook receiver: records every POST, answers `failures` 500s first, then 204."""

    port: int = 0
    failures: int = 0
    posts: list[Post] = field(default_factory=list)

    def url(self, path: str = "/hooks") -> str:
        return f"https://localhost:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        self.posts.append(Post(dict(request.headers), await request.read()))
        if self.failures > 0:
            self.failures -= 1
            return web.Response(status=500, text="not now")
        return web.Response(status=204)


def signed_by(secret: str, post: Post) -> bool:
    """Whether the POST carries a valid Heroku-Webhook-Hmac-SHA256 for `secret`."""
    expected = base64.b64encode(hmac.new(secret.encode(), post.body, hashlib.sha256).digest())
    got = post.headers.get("Heroku-Webhook-Hmac-SHA256", "").encode()
    return hmac.compare_digest(expected, got)


async def _redirect(_request: web.Request) -> web.Response:
    return web.Response(status=307, headers={"Location": "/hooks"})


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path)


@pytest.fixture
async def receiver(certificate: tuple[Path, Path]) -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", found.handle)
    # A redirect to the receiver's own /hooks: followed, it would be seen there.
    app.router.add_post("/moved", _redirect)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls(*certificate))
    await site.start()
    found.port = int(runner.addresses[0][1])
    try:
        yield found
    finally:
        await runner.cleanup()


class Monitors:
    """Starts monitors serving webhooks (each call a new one) and stops them."""

    def __init__(self, nats_url: str, home: Path, ca_file: Path) -> None:
        self.nats_url = nats_url
        self.home = home
        self.ca_file = ca_file
        self.running: dict[int, tuple[ServiceApp, asyncio.Task[None]]] = {}

    async def start(self, **overrides: Any) -> ServiceApp:
        settings = MonitorSettings(
            nats_url=self.nats_url, home=str(self.home), shutdown_grace=5.0, metrics="off"
        )
        values: dict[str, Any] = {
            "egress_allow": LOOPBACK_ALLOWED,
            "webhook_ca_file": str(self.ca_file),
            "webhook_backoff": 0.2,
            "webhook_backoff_max": 0.5,
            "webhook_timeout": 5.0,
            **overrides,
        }
        service = ServiceApp(Service.MONITOR, settings=settings)
        register(service, settings, WebhookSettings(**values))
        task = await run_in_background(service)
        self.running[id(service)] = (service, task)
        return service

    async def stop(self, service: ServiceApp) -> None:
        found = self.running.pop(id(service), None)
        if found is not None:
            await stop(*found)


@pytest.fixture
async def monitors(
    nats_server: NatsServer,
    slipway_home: Path,  # noqa: F811 - a fixture
    keyring_service: ServiceApp,  # noqa: F811 - a fixture
    certificate: tuple[Path, Path],
) -> AsyncIterator[Monitors]:
    made = Monitors(nats_server.url, slipway_home, certificate[0])
    yield made
    for service, _task in list(made.running.values()):
        await made.stop(service)


@pytest.fixture
async def gateway_bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    """The bus as the gateway, the webhook RPCs' one caller."""
    bus = await Bus.connect(nats_server.url, Service.GATEWAY)
    await bus.ensure_streams()
    yield bus
    await bus.close()


def hooks_of(service: ServiceApp) -> Webhooks:
    return service[WEBHOOKS]


def webhook_env(monkeypatch: pytest.MonkeyPatch, ca_file: Path) -> None:
    """The environment a monitor service's webhooks read (as in production) for a
    receiver on loopback with the test's certificate, retrying quickly."""
    monkeypatch.setenv("SLIPWAY_EGRESS_ALLOW", LOOPBACK_ALLOWED)
    monkeypatch.setenv("SLIPWAY_WEBHOOK_CA_FILE", str(ca_file))
    monkeypatch.setenv("SLIPWAY_WEBHOOK_BACKOFF", "0.2")


async def add_operator_webhook(bus: Bus, url: str, secret: str) -> wh.WebhookCreated:
    """The operator's webhook for platform alerts (app "", no team), as the gateway adds it."""
    return await bus.call(
        wh.WEBHOOK_CREATE,
        wh.CreateWebhook(
            app_id="", team_id="", url=url, include=["alert"], level="sync", secret=secret
        ),
    )


def alert_posts(found: Receiver, key: str, action: str = "fire") -> list[Post]:
    """The receiver's alert deliveries about `key` with `action` (fire, escalate, resolve)."""
    return [
        p
        for p in list(found.posts)  # a copy: the server appends meanwhile
        if p.json().get("resource") == "alert"
        and p.json().get("action") == action
        and p.json()["data"].get("key") == key
    ]


def first_alert_post(found: Receiver, key: str, action: str = "fire") -> Post:
    """The first delivery of `action` about the alert `key` (AssertionError while none:
    for assert_eventually)."""
    posts = alert_posts(found, key, action)
    seen = [(p.json().get("action"), p.json().get("data", {}).get("key")) for p in found.posts]
    assert posts, seen
    return posts[0]
