"""ACME HTTP-01 against Debian's pebble, its validation reaching the real HAProxy.

pebble resolves names through pebble-challtestsrv's DNS (`-dnsserver`), which answers
every A query with 127.0.0.1 and no AAAA, and its `httpPort` is HAProxy's HTTP port: the
validation is real (pebble fetches the token from HAProxy), nothing is always-valid.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import shutil
import ssl
import stat
import subprocess
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from slipway.libs.haproxy import free_port
from slipway.services.network_wirer.acme import (
    AcmeManager,
    AcmeSettings,
    Failure,
    due_for_renewal,
    next_failure,
    not_after,
)
from slipway.services.network_wirer.haproxy.reconcile import Reconciler
from tests.conftest import assert_eventually
from tests.network_wirer.haproxy.conftest import Dynos, HAProxyRouter, route, self_signed_pem

pytestmark = [pytest.mark.integration]

DOMAIN = "shop.slipway-acme.test"
NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)


@dataclass
class Pebble:
    directory: str
    management: int
    ca_bundle: Path  # verifies pebble's own HTTPS (not the certificates it issues)

    def root(self) -> str:
        """The root pebble signs with (made afresh at each start)."""
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        url = f"https://127.0.0.1:{self.management}/roots/0"
        with urllib.request.urlopen(url, context=context, timeout=10) as answer:
            return str(answer.read().decode())


def _tls_pair(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for pebble's own listeners (127.0.0.1)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "pebble.crt", folder / "pebble.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _start_pebble(folder: Path, http_port: int) -> tuple[Pebble, list[subprocess.Popen[bytes]]]:
    """pebble-challtestsrv's DNS (every A query: 127.0.0.1, no AAAA) and pebble using it,
    validating HTTP-01 on `http_port`."""
    dns, dns_admin = free_port(), free_port()
    listen, management = free_port(), free_port()
    cert, key = _tls_pair(folder)
    config = folder / "pebble.json"
    settings = {
        "listenAddress": f"127.0.0.1:{listen}",
        "managementListenAddress": f"127.0.0.1:{management}",
        "certificate": str(cert),
        "privateKey": str(key),
        "httpPort": http_port,
        "tlsPort": free_port(),
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }
    config.write_text(json.dumps({"pebble": settings}))
    with (folder / "pebble.out").open("wb") as output:
        dns_server = subprocess.Popen(
            [
                "pebble-challtestsrv",
                f"-dns01=127.0.0.1:{dns}",
                f"-management=127.0.0.1:{dns_admin}",
                "-http01=",
                "-https01=",
                "-tlsalpn01=",
                "-defaultIPv4=127.0.0.1",
                "-defaultIPv6=",  # no AAAA: HAProxy listens on 127.0.0.1 only
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        # No random sleep before validating, and no nonce refused on purpose (the client
        # retries those, but this test is about HTTP-01, not about nonce handling).
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
        server = subprocess.Popen(
            ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{dns}"],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=folder,
        )
    return Pebble(f"https://127.0.0.1:{listen}/dir", management, cert), [server, dns_server]


@pytest.fixture
async def pebble(haproxy: HAProxyRouter, tmp_path: Path) -> AsyncIterator[Pebble]:
    """pebble validating against `haproxy`'s HTTP port, names resolved to loopback."""
    if shutil.which("pebble") is None or shutil.which("pebble-challtestsrv") is None:
        pytest.skip("pebble is not installed (apt-get install -y pebble)")
    found, processes = await asyncio.to_thread(_start_pebble, tmp_path, haproxy.http_port)
    try:

        def directory_answers() -> None:
            assert processes[0].poll() is None, (tmp_path / "pebble.out").read_text()
            context = ssl.create_default_context(cafile=str(found.ca_bundle))
            try:
                directory = found.directory  # https, made by this test
                with urllib.request.urlopen(directory, context=context, timeout=2):  # noqa: S310
                    pass
            except OSError as exc:
                raise AssertionError(f"pebble not ready: {exc}") from exc

        await assert_eventually(lambda: asyncio.to_thread(directory_answers), timeout=20)
        yield found
    finally:
        for process in processes:
            await asyncio.to_thread(_stop, process)


def _settings(pebble: Pebble, state: Path) -> AcmeSettings:
    return AcmeSettings(directory_url=pebble.directory, state_dir=state, ca_bundle=pebble.ca_bundle)


async def _served_chain(port: int, root_pem: str) -> x509.Certificate:
    """The certificate HAProxy serves for SNI DOMAIN, verified against `root_pem`."""
    context = ssl.create_default_context(cadata=root_pem)
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=DOMAIN
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    return x509.load_der_x509_certificate(der)


async def _https_get(router: HAProxyRouter, root_pem: str) -> dict[str, str]:
    context = ssl.create_default_context(cadata=root_pem)
    url = f"https://127.0.0.1:{router.server.ports.https_port}/"
    async with router.session.get(
        url, headers={"Host": DOMAIN}, server_hostname=DOMAIN, ssl=context
    ) as response:
        assert response.status == 200
        body: dict[str, str] = json.loads(await response.text())
        return body


async def test_issuance_validated_through_haproxy_then_served_by_sni(
    haproxy: HAProxyRouter, dynos: Dynos, pebble: Pebble, tmp_path: Path
) -> None:
    """pebble validates the HTTP-01 token that HAProxy answers from its map; the issued
    chain is then served for the domain's SNI, verified up to pebble's root."""
    await haproxy.reconciler.reconcile([route("shop", await dynos.start(), hosts=(DOMAIN,))])
    settings = _settings(pebble, tmp_path / "state")
    manager = AcmeManager(settings, haproxy.reconciler)
    report = await manager.renew([DOMAIN])
    assert (report.issued, report.failed) == ([DOMAIN], {})
    assert stat.S_IMODE(settings.account_key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.certificate_path(DOMAIN).stat().st_mode) == 0o600
    root = pebble.root()
    served = await _served_chain(haproxy.server.ports.https_port, root)
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [DOMAIN]
    assert (await _https_get(haproxy, root))["dyno"] == "web.1"
    # The challenge was withdrawn: the token path now reaches the app like any other.
    assert await haproxy.reconciler.runtime.show_map(str(haproxy.options.acme_map_path)) == {}
    # Nothing to do on the next pass: the certificate has years left.
    assert await manager.renew([DOMAIN]) == type(report)()


async def test_challenge_answered_by_haproxy_without_an_app(haproxy: HAProxyRouter) -> None:
    """A token in the acme map is answered with its key authorization, for any Host, with
    no app and no reload; once cleared the path is the app's again (404: no app)."""
    token, authorization = "tok_EN-1", "tok_EN-1.thumb_PRINT-2"
    await haproxy.reconciler.set_challenge(token, authorization)
    await haproxy.reconciler.set_challenge(token, authorization)  # again: still one entry
    status, body, headers = await haproxy.get(
        "unknown.example", f"/.well-known/acme-challenge/{token}"
    )
    assert (status, body, headers["Content-Type"]) == (200, authorization, "text/plain")
    status, _, _ = await haproxy.get("unknown.example", f"/.well-known/acme-challenge/{token}/x")
    assert status == 404
    await haproxy.reconciler.clear_challenge(token)
    await haproxy.reconciler.clear_challenge(token)
    status, _, _ = await haproxy.get("unknown.example", f"/.well-known/acme-challenge/{token}")
    assert status == 404
    assert haproxy.reconciler.reloads == 0
    with pytest.raises(ValueError, match="base64url"):
        await haproxy.reconciler.set_challenge("a b", "x\nshow info")


async def test_near_expiry_certificate_is_renewed_and_replaced(
    haproxy: HAProxyRouter, dynos: Dynos, pebble: Pebble, tmp_path: Path
) -> None:
    """A kept certificate with fewer than 30 days left is served until the renewal pass
    orders a new one from the CA and replaces it in HAProxy, without a reload."""
    await haproxy.reconciler.reconcile([route("shop", await dynos.start(), hosts=(DOMAIN,))])
    settings = _settings(pebble, tmp_path / "state")
    old = self_signed_pem(DOMAIN)  # valid one more day
    settings.certificate_path(DOMAIN).parent.mkdir(parents=True)
    settings.certificate_path(DOMAIN).write_bytes(old)
    manager = AcmeManager(settings, haproxy.reconciler)
    await manager.reinstall()
    assert manager.expiry[DOMAIN] == not_after(old)
    report = await manager.renew([DOMAIN])
    assert report.issued == [DOMAIN]
    served = await _served_chain(haproxy.server.ports.https_port, pebble.root())
    assert served.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(
        days=30
    )
    assert haproxy.reconciler.reloads == 0


class _Silent:
    """A router that never publishes the challenge: the CA's validation must fail."""

    def __init__(self, real: Reconciler) -> None:
        self.real = real

    async def set_challenge(self, token: str, key_authorization: str) -> None:
        return None

    async def clear_challenge(self, token: str) -> None:
        await self.real.clear_challenge(token)

    async def install_certificate(self, domain: str, pem: str) -> Path:
        return await self.real.install_certificate(domain, pem)


class _Untouched:
    """A router no call may reach."""

    async def set_challenge(self, token: str, key_authorization: str) -> None:
        raise AssertionError("no challenge may be published for a refused name")

    async def clear_challenge(self, token: str) -> None:
        raise AssertionError("no challenge may be withdrawn for a refused name")

    async def install_certificate(self, domain: str, pem: str) -> Path:
        raise AssertionError("no certificate may be installed for a refused name")


async def test_failed_validation_is_reported_and_backed_off(
    haproxy: HAProxyRouter, pebble: Pebble, tmp_path: Path
) -> None:
    """pebble finds no token (HAProxy answers 404): the pass reports the failure, keeps no
    certificate, and the next pass waits for the backoff instead of ordering again."""
    manager = AcmeManager(_settings(pebble, tmp_path / "state"), _Silent(haproxy.reconciler))
    report = await manager.renew([DOMAIN])
    assert report.issued == []
    # pebble reached HAProxy, which had no such token and no app for the domain.
    assert "returned 404" in report.failed[DOMAIN], report.failed
    assert manager.failures[DOMAIN].attempts == 1
    assert not manager.settings.certificate_path(DOMAIN).exists()
    again = await manager.renew([DOMAIN])
    assert (again.issued, again.failed, again.waiting) == ([], {}, [DOMAIN])


async def test_hostile_names_are_refused_before_any_order(tmp_path: Path) -> None:
    """Names that are not plain DNS names are reported and never reach the CA (the
    directory URL here answers nothing: an order would fail differently)."""
    settings = AcmeSettings(directory_url="https://127.0.0.1:1/dir", state_dir=tmp_path)
    manager = AcmeManager(settings, _Untouched())
    hostile = ["evil.test\nshow info", "127.0.0.1", "*.wild.test", "../../etc.test", "x" * 300]
    report = await manager.renew(hostile)
    assert sorted(report.failed) == sorted(h[:100] for h in hostile)
    assert report.issued == report.waiting == []
    assert manager.failures == {}


def test_due_for_renewal_decides_from_expiry_and_backoff() -> None:
    """Missing or under 30 days: due; over 30 days: not; failed and not yet retryable: waits."""
    expiry = {
        "fresh.test": NOW + datetime.timedelta(days=60),
        "old.test": NOW + datetime.timedelta(days=29),
        "broken.test": NOW + datetime.timedelta(days=1),
    }
    failures = {"broken.test": Failure(1, NOW + datetime.timedelta(minutes=1), "no")}
    wanted = ["fresh.test", "old.test", "new.test", "broken.test"]
    due, waiting = due_for_renewal(wanted, expiry, failures, NOW)
    assert (due, waiting) == (["new.test", "old.test"], ["broken.test"])
    later = NOW + datetime.timedelta(minutes=2)
    assert due_for_renewal(["broken.test"], expiry, failures, later) == (["broken.test"], [])


def test_backoff_doubles_up_to_six_hours() -> None:
    """Each failure doubles the wait from one minute, never beyond six hours."""
    failure = None
    waits = []
    for _ in range(12):
        failure = next_failure(failure, "refused", NOW)
        waits.append(failure.retry_at - NOW)
    assert waits[:3] == [datetime.timedelta(minutes=m) for m in (1, 2, 4)]
    assert waits[-1] == datetime.timedelta(hours=6)
    assert failure is not None and failure.attempts == 12
