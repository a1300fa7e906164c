"""TLS on add-on databases: a certificate from the router's CA, plaintext TCP refused.

The CA is the router's own (services/network_wirer/ca.py), made in the test's folder;
network-wirer's signer (services/network_wirer/certs.py) runs as its own service on the
test's bus.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import stat
import struct
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from slipway.contracts.subjects import Service
from slipway.libs.errors import InvalidRequest
from slipway.libs.service import ServiceApp
from slipway.services.network_wirer import certs
from slipway.services.network_wirer.ca import RouterCA
from slipway.services.network_wirer.settings import WirerSettings
from slipway.services.scheduler import addontls
from slipway.services.scheduler.addons import image, run_dir_of
from slipway.services.scheduler.settings import SchedulerSettings
from tests.addons.conftest import AddonStack
from tests.addons.test_postgresql import database_container, provisioned
from tests.gateway.conftest import run_in_background, stop

pytestmark = [pytest.mark.docker, pytest.mark.integration]

SSL_REQUEST = struct.pack("!ii", 8, 80877103)


@pytest.fixture
async def signer(addon_stack: AddonStack, tmp_path: Path) -> AsyncIterator[Path]:
    """network-wirer's certificate signer on the test's bus, with a router CA of its own;
    the file of that CA's root (what a customer is told to trust)."""
    ca = RouterCA.load_or_create(tmp_path / "network-wirer")
    root = tmp_path / "root.crt"
    root.write_text(ca.root_pem)
    stack = addon_stack.stack
    settings = WirerSettings(
        nats_url=stack.nats.url, home=str(stack.home), scope=addon_stack.scope.name
    )
    service = ServiceApp(Service.NETWORK_WIRER, settings=settings)
    certs.install(service, ca)
    task = await run_in_background(service)
    try:
        yield root
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


async def libpq_verify_full(network: str, url: str, root_pem: str) -> tuple[int, str]:
    """Log in with psql (libpq) from a container on `network`, `sslmode=verify-full` against
    `root_pem`, and ask whether the session is encrypted: (exit status, output)."""
    verify_full = url.replace("sslmode=require", "sslmode=verify-full&sslrootcert=/tmp/root.crt")
    assert verify_full != url
    done = await asyncio.to_thread(
        subprocess.run,
        [
            "docker", "run", "--rm", "-i", "--network", network, "--log-driver", "none",
            "--entrypoint", "sh", image(), "-c",
            'read -r url; cat > /tmp/root.crt; exec psql "$url" -XAtc "$0"',
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ],
        input=verify_full + "\n" + root_pem,
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    return done.returncode, (done.stdout + done.stderr).strip()


async def test_tls_is_required_and_verifies_against_the_platform_ca(
    addon_stack: AddonStack, signer: Path
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

    version, common = await asyncio.to_thread(handshake, address, addon["name"], signer)
    assert common == addon["name"]
    assert version in ("TLSv1.2", "TLSv1.3")
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.to_thread(handshake, address, "postgresql-someone-else", signer)

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
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(signer.read_bytes()))


async def test_libpq_verify_full_accepts_the_database_only_by_name_and_platform_ca(
    addon_stack: AddonStack, signer: Path, tmp_path: Path
) -> None:
    """What a dyno does with `sslmode=verify-full`: libpq logs in over TLS by the add-on's
    name on the app network; the same database reached by address, or checked against
    another CA, is refused."""
    stack = addon_stack.stack
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "pgfull")
    await provisioned(alice, "pgfull")
    url = (await alice.ok("GET", "/apps/pgfull/config-vars"))["DATABASE_URL"]
    network = addon_stack.scope.network(app["id"])
    root = signer.read_text()

    status, output = await libpq_verify_full(network, url, root)
    assert (status, output) == (0, "t")

    info = await database_container(app["id"])
    address = info["NetworkSettings"]["Networks"][network]["IPAddress"]
    by_address = url.replace(f"@{urlsplit(url).hostname}:", f"@{address}:")
    assert by_address != url
    status, output = await libpq_verify_full(network, by_address, root)
    assert status != 0 and "does not match host name" in output, output

    other = RouterCA.load_or_create(tmp_path / "another-ca").root_pem
    status, output = await libpq_verify_full(network, url, other)
    assert status != 0 and "certificate verify failed" in output, output


def test_the_signer_refuses_names_the_router_serves(tmp_path: Path) -> None:
    """An add-on certificate is for one DNS label: never `<app>.localhost` nor a domain."""
    ca = RouterCA.load_or_create(tmp_path)
    key = addontls.new_key()
    for name in ("hello.localhost", "www.example.com", "*.localhost"):
        with pytest.raises(InvalidRequest):
            certs.sign(addontls.csr_for(key, name), name, ca)
    # The CSR's own names are ignored: the request's name alone is in the certificate.
    issued = certs.sign(addontls.csr_for(key, "hello.localhost"), "postgresql-x-1", ca)
    names = issued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["postgresql-x-1"]
    issued.verify_directly_issued_by(ca.certificate)


def test_an_rsa_key_may_encipher_an_ecdsa_key_only_signs(tmp_path: Path) -> None:
    """TLS 1.2's RSA key exchange needs keyEncipherment on an RSA certificate; an ECDSA one
    is for signatures alone."""
    ca = RouterCA.load_or_create(tmp_path)
    for key, enciphers in (
        (rsa.generate_private_key(65537, 2048), True),
        (addontls.new_key(), False),
    ):
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
            .decode()
        )
        usage = certs.sign(csr, "postgresql-x-1", ca).extensions.get_extension_for_class(
            x509.KeyUsage
        )
        assert usage.critical and usage.value.digital_signature
        assert usage.value.key_encipherment is enciphers
        assert not usage.value.key_cert_sign
