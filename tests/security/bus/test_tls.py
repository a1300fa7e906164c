"""TLS on the bus: off loopback, a client without the platform's certificates gets nowhere."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import pytest

from slipway.contracts import keyring
from slipway.libs.bus import Bus
from slipway.libs.bus.tls import TLS_DIR_ENV
from slipway.libs.natsserver import NatsServer

pytestmark = pytest.mark.integration


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A hardened nats-server with TLS forced on (here on loopback, as off it)."""
    server = NatsServer(tmp_path / "nats", hardened=True, tls=True)
    server.start()
    yield server
    server.stop()


def test_tls_is_on_exactly_when_the_bus_leaves_loopback(tmp_path: Path) -> None:
    """Listening on every interface or a LAN address means TLS; loopback stays plain."""
    assert NatsServer(tmp_path, host="0.0.0.0").tls  # noqa: S104 - never started
    assert NatsServer(tmp_path, host="192.0.2.10").tls
    assert not NatsServer(tmp_path, host="127.0.0.1").tls


async def test_a_plain_text_client_is_refused(tls_server: NatsServer) -> None:
    """A CONNECT in clear text, with the right password, is cut off: TLS is required."""
    reader, writer = await asyncio.open_connection("127.0.0.1", tls_server.port)
    try:
        info = await reader.readline()
        assert b'"tls_required":true' in info
        password = tls_server.users["gateway"]
        connect = json.dumps({"user": "gateway", "pass": password, "verbose": False})
        writer.write(f"CONNECT {connect}\r\nPING\r\n".encode())
        await writer.drain()
        # The server waits for a TLS handshake, gets clear text, and hangs up: no PONG.
        assert await asyncio.wait_for(reader.read(4096), 10) == b""
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_tls_client_without_a_platform_certificate_is_refused(
    tls_server: NatsServer,
) -> None:
    """Trusting the CA is not enough: a client must present a certificate it signed."""
    context = ssl.create_default_context(cafile=str(tls_server.tls_dir / "ca.pem"))
    with pytest.raises((nats.errors.NoServersError, OSError, ssl.SSLError)):
        await nats.connect(
            tls_server.url,
            user="gateway",
            password=tls_server.users["gateway"],
            tls=context,
            allow_reconnect=False,
            max_reconnect_attempts=1,
            connect_timeout=5,
        )


async def test_services_with_their_certificates_call_each_other(tls_server: NatsServer) -> None:
    """The keyring and the gateway, each with its own certificate, complete an RPC."""

    async def bus(user: str) -> Bus:
        return await Bus.connect(
            tls_server.url,
            user,
            user=user,
            password=tls_server.users[user],
            tls=tls_server.client_tls(user),
        )

    keyring_bus, gateway = await bus("keyring"), await bus("gateway")

    async def handle(req: keyring.GetAuditKey) -> keyring.AuditKey:
        return keyring.AuditKey(key_id="k1", public_key=b"")

    await keyring_bus.serve(keyring.AUDIT_KEY, handle)
    assert (await gateway.call(keyring.AUDIT_KEY, keyring.GetAuditKey())).key_id == "k1"
    await keyring_bus.close()
    await gateway.close()


async def test_a_service_finds_its_certificate_through_the_environment(
    tls_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SLIPWAY_NATS_TLS_DIR set (the supervisor sets it) a service connects over TLS."""
    monkeypatch.setenv(TLS_DIR_ENV, str(tls_server.tls_dir))
    bus = await Bus.connect(
        tls_server.url, "builder", user="builder", password=tls_server.users["builder"]
    )
    await bus.nc.flush()
    assert bus.nc.is_connected
    await bus.close()
