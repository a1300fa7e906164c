"""TLS on add-on databases: a certificate from the router's CA, plaintext TCP refused.

The CA is a real Caddy's internal one (libs/caddy.py); network-wirer's signer
(services/network_wirer/certs.py) runs as its own service on the test's bus.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import stat
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509

from slipway.contracts.subjects import Service
from slipway.libs.caddy import CaddyServer, RouterAddress
from slipway.libs.errors import InvalidRequest
from slipway.libs.service import ServiceApp
from slipway.services.network_wirer import certs
from slipway.services.network_wirer.settings import WirerSettings
from slipway.services.scheduler import addontls
from slipway.services.scheduler.addons import run_dir_of
from slipway.services.scheduler.settings import SchedulerSettings
from tests.addons.conftest import AddonStack
from tests.addons.test_postgresql import database_container, provisioned
from tests.conftest import assert_eventually
from tests.gateway.conftest import run_in_background, stop

pytestmark = [pytest.mark.docker, pytest.mark.integration]

SSL_REQUEST = struct.pack("!ii", 8, 80877103)


@pytest.fixture
def caddy(tmp_path: Path) -> Iterator[CaddyServer]:
    """A real Caddy: its internal CA is the platform's."""
    server = CaddyServer(
        tmp_path / "caddy", RouterAddress(http_port=0, https_port=0, listen_host="127.0.0.1")
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def signer(addon_stack: AddonStack, caddy: CaddyServer) -> AsyncIterator[CaddyServer]:
    """network-wirer's certificate signer, serving on the test's bus from Caddy's storage."""

    def made() -> None:
        assert all(path.is_file() for path in certs.ca_paths(caddy.storage_dir))

    await assert_eventually(made, timeout=30)
    stack = addon_stack.stack
    settings = WirerSettings(
        nats_url=stack.nats.url, home=str(stack.home), scope=addon_stack.scope.name
    )
    service = ServiceApp(Service.NETWORK_WIRER, settings=settings)
    certs.install(service, caddy.storage_dir)
    task = await run_in_background(service)
    try:
        yield caddy
    finally:
        await stop(service, task)


def startup_plaintext(address: str, user: str, database: str) -> bytes:
    """Send a StartupMessage without TLS; the server's first reply message."""
    params = f"user\0{user}\0database\0{database}\0\0".encode()
    body = struct.pack("!i", 196608) + params
    with socket.create_connection((address, 5432), timeout=10) as sock:
        sock.sendall(struct.pack("!i", len(body) + 4) + body)
        return sock.recv(4096)


def handshake(address: str, name: str, cafile: Path) -> tuple[str | None, str]:
    """TLS through PostgreSQL's SSLRequest, verifying the server as `name` against `cafile`."""
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection((address, 5432), timeout=10) as sock:
        sock.sendall(SSL_REQUEST)
        assert sock.recv(1) == b"S"
        with context.wrap_socket(sock, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True) or b""
            cert = x509.load_der_x509_certificate(der)
            common = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
            return tls.version(), str(common)


async def test_tls_is_required_and_verifies_against_the_platform_ca(
    addon_stack: AddonStack, signer: CaddyServer
) -> None:
    """The database's certificate names the add-on and chains to the router's CA; a
    plaintext TCP login finds no pg_hba line; the key stays postgres's, out of the run folder."""
    stack = addon_stack.stack
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "pgtls")
    addon = await provisioned(alice, "pgtls")
    url = (await alice.ok("GET", "/apps/pgtls/config-vars"))["DATABASE_URL"]
    assert url.endswith("?sslmode=require")
    parts = urlsplit(url)
    info = await database_container(app["id"])
    address = info["NetworkSettings"]["Networks"][addon_stack.scope.network(app["id"])]["IPAddress"]

    version, common = await asyncio.to_thread(
        handshake, address, addon["name"], signer.root_certificate
    )
    assert common == addon["name"]
    assert version in ("TLSv1.2", "TLSv1.3")
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.to_thread(
            handshake, address, "postgresql-someone-else", signer.root_certificate
        )

    refused = await asyncio.to_thread(
        startup_plaintext, address, parts.username or "", parts.path.lstrip("/")
    )
    assert refused[:1] == b"E", refused[:80]
    assert b"no encryption" in refused and b"28000" in refused

    settings = addon_stack.scheduler.settings
    assert isinstance(settings, SchedulerSettings)
    folder = addontls.tls_dir_of(settings, "local", addon["id"])
    key = folder / addontls.KEY
    mode = os.stat(key)
    assert stat.S_IMODE(mode.st_mode) == 0o600 and mode.st_uid == 999
    assert (
        stat.S_IMODE(os.stat(folder.parent).st_mode) == 0o700 and os.stat(folder.parent).st_uid == 0
    )
    run_dir = run_dir_of(settings, "local", addon["id"])
    assert not any(p.name.endswith(".key") for p in run_dir.rglob("*"))
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts[addontls.MOUNT]["RW"] is False
    cert = x509.load_pem_x509_certificate((folder / addontls.CERT).read_bytes())
    ca = x509.load_pem_x509_certificate(signer.root_certificate.read_bytes())
    assert cert.issuer == ca.subject


def test_the_signer_refuses_names_the_router_serves(tmp_path: Path) -> None:
    """An add-on certificate is for one DNS label: never `<app>.localhost` nor a domain."""
    from slipway.libs.bus import tls as bustls

    ca_cert, ca_key = bustls.ensure_ca(tmp_path)
    key = addontls.new_key()
    for name in ("hello.localhost", "www.example.com", "*.localhost"):
        with pytest.raises(InvalidRequest):
            certs.sign(addontls.csr_for(key, name), name, ca_cert, ca_key)
    # The CSR's own names are ignored: the request's name alone is in the certificate.
    issued = certs.sign(addontls.csr_for(key, "hello.localhost"), "postgresql-x-1", ca_cert, ca_key)
    names = issued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["postgresql-x-1"]
