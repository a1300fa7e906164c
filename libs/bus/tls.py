"""TLS on the bus: a platform CA made at first start, a certificate per user, checked both ways.

nats-server turns TLS on whenever it listens on anything but loopback (`NatsServer`):
it presents a server certificate signed by the platform CA and requires every client
to present one too (`verify: true`), on top of each user's password. Everything lives
in `<nats data>/tls/`, keys mode 0600:

    ca.pem, ca.key             the platform CA (ECDSA P-256, ten years)
    server.pem, server.key     nats-server, for the host it listens on and loopback
    <user>.pem, <user>.key     one client certificate per service, operator, provisioner

A process finds its own through SLIPWAY_NATS_TLS_DIR (the folder) and its NATS user.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TLS_DIR_ENV = "SLIPWAY_NATS_TLS_DIR"
# Listen addresses meaning "every interface" (named here to recognise them, not to bind).
WILDCARDS = frozenset({"0.0.0.0", "::"})  # noqa: S104
_VALID = datetime.timedelta(days=3650)
_LEAF_VALID = datetime.timedelta(days=825)


@dataclass(frozen=True)
class Identity:
    """One party's certificate and key, and the CA that vouches for the other side."""

    ca: Path
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        """A context that verifies the server against the platform CA and presents this cert."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.cert), str(self.key))
        return context


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) stays on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Slipway platform"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def ensure_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The platform CA in `folder`, made on first use."""
    cert_path, key_path = folder / "ca.pem", folder / "ca.key"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = _new_key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Slipway bus CA"))
        .issuer_name(_name("Slipway bus CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_bytes(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _sans(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def issue(folder: Path, name: str, *, server_hosts: list[str] | None = None) -> Identity:
    """`name`'s certificate signed by the platform CA (a server's when `server_hosts`)."""
    ca_cert, ca_key = ensure_ca(folder)
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    identity = Identity(folder / "ca.pem", cert_path, key_path)
    if cert_path.exists() and key_path.exists() and server_hosts is None:
        return identity
    key = _new_key()
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_hosts else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _LEAF_VALID)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server_hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(_sans(server_hosts)), False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_private(key_path, _key_bytes(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return identity


def server_hosts(listen: str) -> list[str]:
    """The names a server listening on `listen` is reached by, loopback included."""
    hosts = ["127.0.0.1", "::1", "localhost", socket.gethostname()]
    if listen not in WILDCARDS:
        hosts.insert(0, listen)
    return hosts


def identity_from_env(user: str) -> Identity | None:
    """`user`'s client identity from $SLIPWAY_NATS_TLS_DIR, if the bus runs TLS."""
    folder = os.environ.get(TLS_DIR_ENV)
    if not folder:
        return None
    path = Path(folder)
    return Identity(path / "ca.pem", path / f"{user}.pem", path / f"{user}.key")
