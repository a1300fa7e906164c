"""The monitor against a hardened nats-server: it sees services, lag and disks, and alerts.

Each test runs the real monitor service (its own NATS user, so every read it makes is one
its grant allows) beside real service processes' bus users, and waits for the alert event
the way the log-shipper and the gateway receive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import nats
import pytest
from nats.aio.msg import Msg

from slipway.contracts import disk, subjects
from slipway.contracts.base import encode
from slipway.contracts.gateway import APP_DESTROYED, AppDestroyed
from slipway.contracts.monitor import (
    ALERT_CHANGED,
    MONITOR_STATUS,
    Alert,
    AlertChanged,
    GetStatus,
)
from slipway.contracts.subjects import OPERATOR, Service
from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp, Settings
from slipway.services.keyring.app import create_service as create_keyring
from slipway.services.keyring.settings import KeyringSettings
from slipway.services.monitor.app import create_service
from slipway.services.monitor.settings import MonitorSettings
from tests.conftest import assert_eventually
from tests.webhooks.conftest import (  # noqa: F401 - fixtures
    LOOPBACK_ALLOWED,
    Post,
    Receiver,
    add_operator_webhook,
    alert_posts,
    certificate,
    first_alert_post,
    receiver,
    signed_by,
    webhook_env,
)

pytestmark = pytest.mark.integration

SECRET = "the-operators-webhook-secret"

Run = Callable[[ServiceApp], Awaitable[ServiceApp]]


@pytest.fixture
async def run(hardened: NatsServer) -> AsyncIterator[Run]:
    """Run service apps until the end of the test (or until stopped by it)."""
    tasks: list[tuple[ServiceApp, asyncio.Task[None]]] = []

    async def start(app: ServiceApp) -> ServiceApp:
        task = asyncio.create_task(app.run(install_signals=False))
        tasks.append((app, task))
        started = asyncio.create_task(app.started.wait())
        await asyncio.wait({task, started}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        assert app.started.is_set(), f"{app.service} did not start"
        return app

    yield start
    for app, task in tasks:
        app.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)


def _creds(server: NatsServer, who: str) -> dict[str, str]:
    return {"nats_url": server.url, "nats_user": who, "nats_password": server.users[who]}


def monitor_app(server: NatsServer, home: Path, **settings: object) -> ServiceApp:
    values: dict[str, object] = {
        **_creds(server, str(Service.MONITOR)),
        "home": str(home),
        "monitor_interval": 0.3,
        "monitor_discovery_wait": 0.3,
        "monitor_down_passes": 2,
        "monitor_expect": "builder",
        "metrics": "off",
        **settings,
    }
    return create_service(msgspec.convert(values, MonitorSettings))


def bare_service(server: NatsServer, service: Service, home: Path) -> ServiceApp:
    """A service instance with no handlers: it answers discovery as that service's user."""
    values = {**_creds(server, str(service)), "home": str(home), "metrics": "off"}
    settings = msgspec.convert(values, Settings)
    return ServiceApp(service, settings=settings)


class Alerts:
    """Every ALERT_CHANGED event, as any subscriber of the event stream sees it."""

    def __init__(self) -> None:
        self.seen: list[Alert] = []
        self._decoder = msgspec.json.Decoder(AlertChanged)

    async def record(self, msg: Msg) -> None:
        self.seen.append(self._decoder.decode(msg.data).alert)

    def with_key(self, prefix: str, state: str) -> Alert:
        found = [a for a in self.seen if a.key.startswith(prefix) and a.state == state]
        assert found, f"no {state} alert {prefix}… in {[(a.key, a.state) for a in self.seen]}"
        return found[-1]


@pytest.fixture
async def alerts(hardened: NatsServer) -> AsyncIterator[Alerts]:
    nc = await nats.connect(hardened.url, user=OPERATOR, password=hardened.users[OPERATOR])
    found = Alerts()
    await nc.subscribe(ALERT_CHANGED.subject, cb=found.record)
    yield found
    await nc.close()


async def test_a_service_that_stops_answering_is_an_alert_until_it_is_back(
    hardened: NatsServer, run: Run, alerts: Alerts, tmp_path: Path
) -> None:
    """builder stops → service_down fires (critical); builder back → it resolves."""
    builder = await run(bare_service(hardened, Service.BUILDER, tmp_path / "b1"))
    monitor = await run(monitor_app(hardened, tmp_path / "home"))
    gateway = await gateway_bus(hardened)
    try:

        async def builder_listed() -> None:
            status = await gateway.call(MONITOR_STATUS, GetStatus())
            assert [i.service for i in status.instances if i.service == "builder"] == ["builder"]
            assert status.missing == []

        await assert_eventually(builder_listed, timeout=20)
        builder.stop()
        fired = await assert_eventually(
            lambda: alerts.with_key("service_down:builder", "firing"), timeout=20
        )
        assert fired.severity == "critical" and fired.scope == "platform"
        status = await gateway.call(MONITOR_STATUS, GetStatus())
        assert status.health == "red" and status.missing == ["builder"]
        assert [a.key for a in status.alerts] == ["service_down:builder"]
        await run(bare_service(hardened, Service.BUILDER, tmp_path / "b2"))
        resolved = await assert_eventually(
            lambda: alerts.with_key("service_down:builder", "resolved"), timeout=20
        )
        assert resolved.id == fired.id and resolved.resolved_at is not None
    finally:
        await gateway.close()
    assert monitor.started.is_set()


async def gateway_bus(server: NatsServer) -> Bus:
    gateway = str(Service.GATEWAY)
    return await Bus.connect(
        server.url, Service.GATEWAY, user=gateway, password=server.users[gateway]
    )


async def test_a_consumer_left_behind_is_an_alert(
    hardened: NatsServer,
    run: Run,
    alerts: Alerts,
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811 - a fixture
    certificate: tuple[Path, Path],  # noqa: F811 - a fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Events pile up before a consumer nobody reads (registry-proxy paused: not running):
    consumer_lag fires and reaches the operator's webhook signed; the consumer catches up
    (acknowledges them as registry-proxy): it resolves, signed too."""
    await run(
        create_keyring(
            msgspec.convert(
                {**_creds(hardened, str(Service.KEYRING)), "home": str(tmp_path / "kr")},
                KeyringSettings,
            )
        )
    )
    webhook_env(monkeypatch, certificate[0])
    await run(monitor_app(hardened, tmp_path / "home", monitor_lag_alert=3))
    gateway = await gateway_bus(hardened)
    proxy = await nats.connect(
        hardened.url,
        user="registry-proxy",
        password=hardened.users["registry-proxy"],
        inbox_prefix=subjects.inbox_prefix(Service.REGISTRY_PROXY),  # its grant's inbox
    )
    key = "consumer_lag:EVT:registry-proxy-gc"
    try:
        await add_operator_webhook(gateway, receiver.url(), SECRET)
        for n in range(4):
            await gateway.publish(
                APP_DESTROYED, AppDestroyed(app_id=f"a{n}", name=f"a{n}", team_id="t", actor="test")
            )
        fired = await assert_eventually(lambda: alerts.with_key(key, "firing"), timeout=20)
        assert fired.value is not None and fired.value >= 3  # the mark, or more
        told = await assert_eventually(lambda: first_alert_post(receiver, key, "fire"), timeout=20)
        assert signed_by(SECRET, told) and told.json()["data"]["id"] == fired.id

        # The consumer reads again: everything it was given is acknowledged.
        js = proxy.jetstream()
        reader = await js.pull_subscribe_bind(
            durable=subjects.durable(Service.REGISTRY_PROXY, "gc"), stream=subjects.STREAM_EVT
        )
        caught_up = 0
        while caught_up < 4:
            for msg in await reader.fetch(4, timeout=5):
                await msg.ack()
                caught_up += 1
        await assert_eventually(lambda: alerts.with_key(key, "resolved"), timeout=20)
        closing = await assert_eventually(
            lambda: first_alert_post(receiver, key, "resolve"), timeout=20
        )
        assert signed_by(SECRET, closing) and closing.json()["data"]["id"] == fired.id
    finally:
        await proxy.close()
        await gateway.close()


async def test_a_disk_past_the_alert_mark_is_an_alert_and_resolves_below_it(
    hardened: NatsServer, run: Run, alerts: Alerts, tmp_path: Path
) -> None:
    """A service's reading at 88 % fires a disk warning; at 95 % (past the high-water mark)
    the same alert escalates to critical, told once more; at 40 % it resolves."""
    await run(monitor_app(hardened, tmp_path / "home"))
    keyring = await nats.connect(hardened.url, user="keyring", password=hardened.users["keyring"])

    async def publish(percent: float) -> None:
        reading = disk.DiskReading(
            label="state folder",
            path="/srv/slipway/keyring",
            total_bytes=100,
            free_bytes=int(100 - percent),
            used_percent=percent,
        )
        readings = disk.DiskReadings(
            service="keyring", instance="k1", interval=5.0, readings=[reading], at=time.time()
        )
        await keyring.publish(disk.readings_subject("keyring"), encode(readings))

    try:

        async def fired_at(percent: float) -> Alert:
            await publish(percent)
            return alerts.with_key("disk:k1:/srv/slipway/keyring", "firing")

        fired = await assert_eventually(lambda: fired_at(88.0), timeout=20)
        assert fired.severity == "warning" and fired.threshold == 85.0
        assert "88 % full" in fired.summary

        async def escalated_at(percent: float) -> Alert:
            await publish(percent)
            return alerts.with_key("disk:k1:/srv/slipway/keyring", "firing")

        async def critical() -> Alert:
            alert = await escalated_at(95.0)
            assert alert.severity == "critical", alert
            return alert

        worse = await assert_eventually(critical, timeout=20)
        assert (worse.id, worse.value) == (fired.id, 95.0) and "95 % full" in worse.summary
        # Told once per change: a fire and an escalation, however many passes saw 95 %.
        await publish(95.0)
        await asyncio.sleep(1.0)  # a few passes (0.3 s each)
        told = [a for a in alerts.seen if a.key == fired.key]
        assert [(a.state, a.severity) for a in told] == [
            ("firing", "warning"),
            ("firing", "critical"),
        ]

        async def resolved_at(percent: float) -> Alert:
            await publish(percent)
            return alerts.with_key("disk:k1:/srv/slipway/keyring", "resolved")

        resolved = await assert_eventually(lambda: resolved_at(40.0), timeout=20)
        assert (resolved.id, resolved.severity) == (fired.id, "critical")
    finally:
        await keyring.close()
