"""network-wirer's part of a platform snapshot: the router's CA and ACME's state come back."""

from __future__ import annotations

import datetime
import io
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from slipway.libs.crypto import age
from slipway.libs.snapshot.export import export
from slipway.libs.snapshot.unpack import Staging
from slipway.services.network_wirer import acme, certs, snapshot
from slipway.services.network_wirer.ca import (
    RouterCA,
    caddy_root,
    legacy_caddy_storage,
    make_root,
)
from slipway.services.network_wirer.settings import WirerSettings
from slipway.services.scheduler import addontls
from tests.snapshot.test_export import members, open_pieces

NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
DOMAIN = "shop.example.com"


def caddy_left_a_root(home: Path) -> x509.Certificate:
    """A root where Caddy kept its internal CA under SLIPWAY_HOME before the switch."""
    cert, key = make_root(NOW)
    cert_path, key_path = caddy_root(legacy_caddy_storage(home))
    cert_path.parent.mkdir(parents=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert


def acme_settings(state: Path) -> acme.AcmeSettings:
    # No CA is contacted: only where the manager keeps its key and certificates matters.
    return acme.AcmeSettings(directory_url="https://127.0.0.1:1/directory", state_dir=state)


async def test_the_router_ca_and_acme_state_come_back_without_caddys_storage(
    tmp_path: Path,
) -> None:
    """After a restore the same CA (adopted from Caddy before) signs, a database certificate
    it signed verifies, the ACME account key and issued certificate are there; Caddy's old
    storage and the sockets are not in the snapshot."""
    home = tmp_path / "home"
    settings = WirerSettings(home=str(home))
    caddys = caddy_left_a_root(home)
    state = settings.state_dir("network-wirer")
    ca = RouterCA.load_or_create(state, legacy_caddy_storage(home))
    assert ca.adopted and ca.certificate == caddys
    key = addontls.new_key()
    database = certs.sign(addontls.csr_for(key, "postgresql-shiny-12345"), "postgresql-x-1", ca)
    account = acme.account_key(acme_settings(state))
    # An ACME chain and its key as the manager keeps them; the router's CA stands in for
    # the ACME CA, which this test does not run (tests/network_wirer/haproxy/test_acme.py).
    issued = ca.issue([DOMAIN]).pem.encode()
    kept = acme_settings(state).certificate_path(DOMAIN)
    kept.parent.mkdir(parents=True)
    kept.write_bytes(issued)
    (state / "run").mkdir()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(state / "run" / "access.sock"))

    identity = age.generate_identity()
    try:
        done = await export(
            snapshot.sources(settings)(), [age.public_of(identity)], tmp_path / "out"
        )
    finally:
        listener.close()
    tar = open_pieces([(tmp_path / "out" / p.name).read_bytes() for p in done.pieces], identity)
    names = set(members(tar))
    assert {
        "network-wirer/ca/root.crt",
        "network-wirer/ca/root.key",
        "network-wirer/acme/account.pem",
        f"network-wirer/acme/certs/{DOMAIN}.pem",
    } <= names
    assert not [n for n in names if not n.startswith("network-wirer/") or "/run" in n]
    assert not [line for line in done.left_out if "access.sock" in line]

    restored_home = tmp_path / "restored"
    restored_home.mkdir()
    with Staging(restored_home) as staging:
        staging.unpack("network-wirer", io.BytesIO(tar))
    restored_state = WirerSettings(home=str(restored_home)).state_dir("network-wirer")
    restored = RouterCA.load_or_create(restored_state, legacy_caddy_storage(restored_home))
    assert restored.certificate == caddys and not restored.adopted
    assert restored.key.private_numbers() == ca.key.private_numbers()
    database.verify_directly_issued_by(restored.certificate)
    restored_acme = acme_settings(restored_state)
    assert acme.account_key(restored_acme).private_numbers() == account.private_numbers()
    assert restored_acme.certificate_path(DOMAIN).read_bytes() == issued
