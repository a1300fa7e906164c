"""The router's own CA: made once, adopting the root Caddy left, its leaves served by HAProxy."""

from __future__ import annotations

import datetime
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from slipway.libs.errors import InvalidRequest
from slipway.services.network_wirer import certs
from slipway.services.network_wirer.ca import (
    RouterCA,
    caddy_root,
    legacy_caddy_storage,
    make_root,
    needs_renewal,
)
from tests.network_wirer.haproxy.conftest import Dynos, HAProxyRouter, route

NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)


def _addon_csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def test_made_at_first_start_private_and_kept(tmp_path: Path) -> None:
    """No Caddy root: a new EC P-256 root, its key 0600 in a 0700 folder; the next start
    loads the same root instead of making another."""
    first = RouterCA.load_or_create(tmp_path, tmp_path / "no-caddy", now=NOW)
    _, key_path = RouterCA.paths(tmp_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    assert isinstance(first.key.curve, ec.SECP256R1)
    constraints = first.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.value.ca and not first.adopted
    again = RouterCA.load_or_create(tmp_path)
    assert again.certificate == first.certificate


def test_adopts_the_root_caddy_left_so_addon_certificates_keep_verifying(tmp_path: Path) -> None:
    """A root where Caddy kept its internal CA under SLIPWAY_HOME is adopted at the first
    start: a database certificate it signed before the switch verifies against the router's
    CA, as do the CA's new leaves; Caddy's storage is not needed any more."""
    home = tmp_path / "home"
    # What Caddy made at its first start: an EC P-256 root, its key in SEC1 PEM, in the
    # layout of its storage (Caddy itself is gone from the platform).
    caddy_cert, caddy_key = make_root(NOW)
    cert_path, key_path = caddy_root(legacy_caddy_storage(home))
    cert_path.parent.mkdir(parents=True)
    cert_path.write_bytes(caddy_cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        caddy_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    # Signed with Caddy's own files, as certs.py did while Caddy was the router.
    database = certs.sign(_addon_csr(), "postgresql-shiny-12345", RouterCA(caddy_cert, caddy_key))
    state = tmp_path / "wirer"
    ca = RouterCA.load_or_create(state, legacy_caddy_storage(home))
    assert ca.adopted
    assert ca.certificate == caddy_cert
    database.verify_directly_issued_by(ca.certificate)
    for path in (cert_path, key_path):
        path.unlink()
    kept = RouterCA.load_or_create(state, legacy_caddy_storage(home))
    assert (kept.certificate, kept.adopted) == (caddy_cert, False)
    database.verify_directly_issued_by(kept.certificate)
    kept.issue(["myapp.localhost"]).certificate.verify_directly_issued_by(caddy_cert)


async def test_leaf_served_by_haproxy_verifies_against_the_root(
    haproxy: HAProxyRouter, dynos: Dynos, tmp_path: Path
) -> None:
    """An app host's leaf, installed without reload, passes a client's full verification
    (chain and hostname) with the router's root as the only trust anchor."""
    ca = RouterCA.load_or_create(tmp_path)
    await haproxy.reconciler.reconcile([route("myapp", await dynos.start())])
    await haproxy.reconciler.install_certificate(
        "myapp.localhost", ca.issue(["myapp.localhost"]).pem
    )
    context = ssl.create_default_context(cadata=ca.root_pem)
    url = f"https://127.0.0.1:{haproxy.server.ports.https_port}/"
    async with haproxy.session.get(
        url, headers={"Host": "myapp.localhost"}, server_hostname="myapp.localhost", ssl=context
    ) as response:
        assert response.status == 200
    assert haproxy.reconciler.reloads == 0


def test_leaves_are_short_lived_and_renewed_with_half_left(tmp_path: Path) -> None:
    """30 days, never beyond the root; due for renewal once fewer than 15 days remain (the
    monitor warns from 14: a renewed certificate never reaches its mark)."""
    ca = RouterCA.load_or_create(tmp_path, now=NOW)
    leaf = ca.issue(["Shop.Example.COM", "*.apps.example.com"], now=NOW).certificate
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["*.apps.example.com", "shop.example.com"]
    assert leaf.not_valid_after_utc - NOW == datetime.timedelta(days=30)
    assert not needs_renewal(leaf, NOW + datetime.timedelta(days=14))
    assert needs_renewal(leaf, NOW + datetime.timedelta(days=16))


@pytest.mark.parametrize(
    "host",
    ["evil.test\nshow info", "*.localhost", "localhost", "10.0.0.1", "a..b.test", "é.test", ""],
)
def test_names_that_are_not_plain_dns_names_are_refused(tmp_path: Path, host: str) -> None:
    """Hostile or malformed names never reach a certificate."""
    ca = RouterCA.load_or_create(tmp_path, now=NOW)
    with pytest.raises(InvalidRequest):
        ca.issue([host])
