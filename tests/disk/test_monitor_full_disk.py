"""An alert first seen with the monitor's disk already full still reaches the operator.

The monitor's state folder is on a loop file system filled to 0 bytes before the alert's
cause happens (a service stops answering), so the alert can be written nowhere: not in
the monitor's SQLite, not in the webhooks' delivery records. It is held in memory, told
from there (the webhook POST needs no disk), and once space is freed it is stored as
told: no second delivery, and its resolve is delivered the ordinary, recorded way.

Real parts: a hardened nats-server (its store is not on the full disk: the bus is
another machine's concern here), the keyring (opens the webhook's sealed URL and
secret), the monitor service, a bare builder instance answering discovery, an HTTPS
receiver on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from slipway.contracts.monitor import MONITOR_STATUS, GetStatus, PlatformStatus
from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp, Settings
from slipway.services.keyring.app import create_service as create_keyring
from slipway.services.keyring.settings import KeyringSettings
from slipway.services.monitor.app import create_service as create_monitor
from slipway.services.monitor.settings import MonitorSettings
from tests.conftest import assert_eventually
from tests.disk.loopfs import LoopFs, available
from tests.gateway.conftest import run_in_background, stop
from tests.webhooks.conftest import (  # noqa: F401 - fixtures
    LOOPBACK_ALLOWED,
    Post,
    Receiver,
    add_operator_webhook,
    alert_posts,
    certificate,
    receiver,
    signed_by,
    webhook_env,
)

pytestmark = [
    pytest.mark.alone,
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=available() or ""),
]

SECRET = "the-operators-webhook-secret"
KEY = "service_down:builder"


@pytest.fixture
def loopfs(tmp_path: Path) -> Iterator[LoopFs]:
    with LoopFs(tmp_path, megabytes=32) as fs:
        yield fs


def _creds(server: NatsServer, who: Service) -> dict[str, Any]:
    return {"nats_url": server.url, "nats_user": str(who), "nats_password": server.users[who]}


class Started:
    def __init__(self) -> None:
        self.running: dict[int, tuple[ServiceApp, asyncio.Task[None]]] = {}

    async def start(self, app: ServiceApp) -> ServiceApp:
        self.running[id(app)] = (app, await run_in_background(app))
        return app

    async def stop(self, app: ServiceApp) -> None:
        app_, task = self.running.pop(id(app))
        await stop(app_, task)

    async def stop_all(self) -> None:
        for app, task in reversed(list(self.running.values())):
            with contextlib.suppress(Exception):
                await stop(app, task)


@pytest.fixture
async def services() -> AsyncIterator[Started]:
    started = Started()
    yield started
    await started.stop_all()


def builder(server: NatsServer, home: Path) -> ServiceApp:
    """A builder instance with no handlers: it answers discovery as the builder's user."""
    values = {**_creds(server, Service.BUILDER), "home": str(home), "metrics": "off"}
    return ServiceApp(Service.BUILDER, settings=msgspec.convert(values, Settings))


async def test_an_alert_first_seen_on_a_full_disk_is_delivered_from_memory(
    hardened: NatsServer,
    loopfs: LoopFs,
    services: Started,
    receiver: Receiver,  # noqa: F811 - a fixture
    certificate: tuple[Path, Path],  # noqa: F811 - a fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """0 bytes left, then the builder stops: the signed `fire` reaches the webhook, the
    status says the alert is told from memory; freed: stored as told (no second fire);
    the builder back: one signed `resolve`."""
    await services.start(
        create_keyring(
            KeyringSettings(**_creds(hardened, Service.KEYRING), home=str(tmp_path / "kr"))
        )
    )
    webhook_env(monkeypatch, certificate[0])
    settings = msgspec.convert(
        {
            **_creds(hardened, Service.MONITOR),
            "home": str(loopfs.mount / "home"),
            "monitor_interval": 0.3,
            "monitor_discovery_wait": 0.3,
            "monitor_down_passes": 2,
            "monitor_expect": "builder",
            "metrics": "off",
            "shutdown_grace": 5.0,
        },
        MonitorSettings,
    )
    await services.start(create_monitor(settings))
    first = await services.start(builder(hardened, tmp_path / "b1"))
    gateway = await Bus.connect(
        hardened.url, Service.GATEWAY, user="gateway", password=hardened.users["gateway"]
    )
    try:
        await add_operator_webhook(gateway, receiver.url(), SECRET)

        async def status() -> PlatformStatus:
            return await gateway.call(MONITOR_STATUS, GetStatus())

        async def builder_seen() -> None:
            seen = await status()
            assert [i.service for i in seen.instances if i.service == "builder"] == ["builder"]
            assert seen.missing == [] and seen.alerts == []

        await assert_eventually(builder_seen, timeout=20)

        # The disk is full before anything is wrong: the alert will have nowhere to go.
        loopfs.fill_up()
        await services.stop(first)

        async def fired() -> Post:
            found = alert_posts(receiver, KEY, "fire")
            assert found, [p.json().get("data", {}).get("key") for p in receiver.posts]
            return found[0]

        post = await assert_eventually(fired, timeout=30)
        assert signed_by(SECRET, post)
        alert = post.json()["data"]
        assert (alert["kind"], alert["severity"], alert["state"]) == (
            "service_down",
            "critical",
            "firing",
        )

        async def told_from_memory() -> PlatformStatus:
            seen = await status()
            assert any("told from memory" in p for p in seen.problems), seen.problems
            assert KEY in {a.key for a in seen.alerts}, seen.alerts
            return seen

        seen = await assert_eventually(told_from_memory, timeout=20)
        assert seen.health == "red" and seen.missing == ["builder"]

        # The monitor's own state folder is on that disk: its disk alert, critical at
        # 100 %, cannot be recorded either, and is delivered the same way.
        async def disk_told() -> dict[str, Any]:
            found: list[dict[str, Any]] = [
                p.json()["data"]
                for p in list(receiver.posts)
                if p.json().get("action") == "fire"
                and p.json()["data"].get("kind") == "disk"
                and str(loopfs.mount) in p.json()["data"]["summary"]
            ]
            assert found, [p.json().get("data", {}).get("key") for p in receiver.posts]
            return found[0]

        told = await assert_eventually(disk_told, timeout=30)
        assert told["severity"] == "critical" and told["value"] >= 99.9, told

        # Space again: the held alert is stored as told, the status stops saying so.
        loopfs.free()

        async def stored() -> None:
            seen = await status()
            assert not any("told from memory" in p for p in seen.problems), seen.problems
            assert [a.key for a in seen.alerts] == [KEY]

        await assert_eventually(stored, timeout=20)
        await services.start(builder(hardened, tmp_path / "b2"))

        async def resolved() -> Post:
            found = alert_posts(receiver, KEY, "resolve")
            assert found
            return found[0]

        closing = await assert_eventually(resolved, timeout=30)
        assert signed_by(SECRET, closing)
        assert closing.json()["data"]["id"] == alert["id"]
        # Told once each: the fire from memory was not repeated once it could be stored.
        assert (
            len({p.headers["Heroku-Webhook-Id"] for p in alert_posts(receiver, KEY, "fire")}) == 1
        )
        assert (
            len({p.headers["Heroku-Webhook-Id"] for p in alert_posts(receiver, KEY, "resolve")})
            == 1
        )
    finally:
        await gateway.close()
