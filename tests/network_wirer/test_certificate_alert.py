"""A short-lived router certificate is a platform alert that reaches the operator's webhook.

The real cause, end to end on a hardened nats-server (every service its own NATS user, so
each call below is one its generated grant allows): network-wirer with
`router_cert_days=12` issues a custom domain's certificate from its own CA into the real
HAProxy; the real monitor lists the routers' certificates (ROUTER_CERTS_LIST), finds one
ending within its 14 days and fires `certificate_expiring`; the monitor's webhooks, with
the real keyring sealing the receiver's URL and secret, POST it to an HTTPS receiver on
loopback, signed with the webhook's secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography import x509

from slipway.contracts.gateway import DESIRED_GET, AppDesired, DesiredState, GetDesired
from slipway.contracts.monitor import MONITOR_STATUS, GetStatus
from slipway.contracts.router import ROUTER_CERTS_LIST, ListRouterCertificates
from slipway.contracts.scheduler import DYNOS_LIST, DynoList, ListDynos
from slipway.contracts.scope import Scope
from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus
from slipway.libs.haproxy import HAProxyServer
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from slipway.services.keyring.app import create_service as create_keyring
from slipway.services.keyring.settings import KeyringSettings
from slipway.services.monitor.app import create_service as create_monitor
from slipway.services.monitor.settings import MonitorSettings
from slipway.services.network_wirer.settings import WirerSettings
from slipway.services.network_wirer.tls import app_file
from tests.conftest import assert_eventually
from tests.gateway.conftest import run_in_background, stop
from tests.network_wirer.conftest import RunningWirer
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

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOMAIN = "www.shop-example.test"
SECRET = "a-webhook-secret-of-the-operator"
CERT_DAYS = 12  # renewed with 6 days left (half), an alert from 14: fires at issue


def _creds(server: NatsServer, who: Service) -> dict[str, Any]:
    return {"nats_url": server.url, "nats_user": str(who), "nats_password": server.users[who]}


async def _bus(server: NatsServer, who: Service) -> Bus:
    return await Bus.connect(server.url, who, user=str(who), password=server.users[who])


class Started:
    """Service apps the test started, stopped at its end in reverse order."""

    def __init__(self) -> None:
        self.running: list[tuple[ServiceApp, asyncio.Task[None]]] = []

    async def start(self, app: ServiceApp) -> ServiceApp:
        self.running.append((app, await run_in_background(app)))
        return app

    async def stop_all(self) -> None:
        for app, task in reversed(self.running):
            with contextlib.suppress(Exception):
                await stop(app, task)


@pytest.fixture
async def services(hardened: NatsServer) -> AsyncIterator[Started]:
    started = Started()
    yield started
    await started.stop_all()


async def _served_not_after(port: int, context: ssl.SSLContext) -> datetime.datetime:
    """The expiry of the certificate HAProxy serves for DOMAIN (SNI), verified."""
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=DOMAIN
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    return x509.load_der_x509_certificate(der).not_valid_after_utc


async def test_a_12_day_certificate_fires_a_signed_certificate_expiring_webhook(
    hardened: NatsServer,
    haproxy_server: HAProxyServer,
    scope: Scope,
    services: Started,
    receiver: Receiver,  # noqa: F811 - a fixture
    certificate: tuple[Path, Path],  # noqa: F811 - a fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """network-wirer issues a 12-day certificate for a custom domain; the monitor's
    certificate_expiring alert (warning, the domain and its date in the summary) reaches
    the operator's webhook with a valid signature."""
    start = services.start
    home = tmp_path / "home"
    await start(
        create_keyring(KeyringSettings(**_creds(hardened, Service.KEYRING), home=str(home)))
    )

    # What the gateway and the scheduler would say: one app with a custom domain, no dyno
    # (an app without dynos is routed all the same, H14, and has its certificate).
    app = AppDesired(app_id="certapp0001", app_name="shop", team_id="team", domains=[DOMAIN])
    gateway, scheduler = (
        await _bus(hardened, Service.GATEWAY),
        await _bus(hardened, Service.SCHEDULER),
    )

    async def desired(request: GetDesired) -> DesiredState:
        return DesiredState(apps=[app])

    async def dynos(request: ListDynos) -> DynoList:
        return DynoList(dynos=[])

    await gateway.serve(DESIRED_GET, desired)
    await scheduler.serve(DYNOS_LIST, dynos)

    # The monitor's webhooks read their settings from the environment, as in production.
    webhook_env(monkeypatch, certificate[0])
    monitor_settings = msgspec.convert(
        {
            **_creds(hardened, Service.MONITOR),
            "home": str(home),
            "monitor_interval": 0.5,
            "monitor_discovery_wait": 0.3,
            "monitor_expect": "network-wirer",
            "metrics": "off",
            "shutdown_grace": 5.0,
        },
        MonitorSettings,
    )
    assert monitor_settings.monitor_cert_warn_days == 14  # the default under test
    await start(create_monitor(monitor_settings))
    created = await add_operator_webhook(gateway, receiver.url(), SECRET)
    assert created.webhook.app_id == ""

    wirer = RunningWirer(
        WirerSettings(
            **_creds(hardened, Service.NETWORK_WIRER),
            scope=scope.name,
            home=str(home),
            router_http_port=haproxy_server.ports.http_port,
            router_https_port=haproxy_server.ports.https_port,
            router_listen_host="127.0.0.1",
            haproxy_data=str(haproxy_server.paths.data_dir),
            router_cert_days=CERT_DAYS,
            reconcile_interval=60.0,
            probe_interval=0.0,
            manage_networks=False,
            isolation=False,
            metrics="off",
            shutdown_grace=5.0,
        )
    )
    running = await wirer.start()
    try:
        await running.refresh()  # certificates follow the routes by a pass at most

        # The real cause: HAProxy serves the custom domain a certificate of the router's
        # CA that ends within 12 days, and a further pass does not renew it at once.
        root = home / "network-wirer" / "ca" / "root.crt"
        context = ssl.create_default_context(cafile=str(root))
        served = await _served_not_after(haproxy_server.ports.https_port, context)
        left = served - datetime.datetime.now(datetime.UTC)
        assert datetime.timedelta(days=CERT_DAYS - 1) < left <= datetime.timedelta(days=CERT_DAYS)
        await running.refresh()
        certificates = running.certificates
        assert certificates is not None
        assert certificates.held[app_file(app.app_id)].not_after == served

        # Only the monitor may list them: the gateway's request is refused by nats-server.
        refused = await gateway.gather(
            ROUTER_CERTS_LIST, ListRouterCertificates(), timeout=1.0, settle=0.5
        )
        assert not refused.replies

        key = f"certificate:{DOMAIN}"

        async def delivered() -> Post:
            posts = alert_posts(receiver, key)
            assert posts, [p.json()["data"].get("key") for p in receiver.posts]
            return posts[0]

        post = await assert_eventually(delivered, timeout=30)
        assert signed_by(SECRET, post)
        body = post.json()
        assert body["action"] == "fire"
        alert = body["data"]
        date = served.strftime("%Y-%m-%d")
        assert (alert["kind"], alert["severity"], alert["scope"]) == (
            "certificate_expiring",
            "warning",
            "platform",
        )
        assert alert["summary"] == (
            f"certificate for {DOMAIN}, shop.localhost (app shop) expires in"
            f" {CERT_DAYS - 1} days ({date})"
        )

        status = await gateway.call(MONITOR_STATUS, GetStatus())
        [listed] = [c for c in status.certificates if DOMAIN in c.hostnames]
        assert (listed.app_id, listed.issuer, listed.router_id, listed.health) == (
            app.app_id,
            "internal",
            "local",
            "yellow",
        )
        assert abs(listed.not_after - served.timestamp()) < 1
        assert key in {a.key for a in status.alerts}
        assert 0 < listed.days_left <= CERT_DAYS
    finally:
        await wirer.stop()
        await gateway.close()
        await scheduler.close()
