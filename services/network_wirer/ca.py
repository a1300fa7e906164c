"""The router's own internal CA: certificates for `<app>.localhost`-style hosts and for
custom domains until (or unless) ACME issues theirs, with no Caddy involved.

    ca = RouterCA.load_or_create(state_dir, caddy_storage=legacy_caddy_storage(home))
    leaf = ca.issue(["myapp.localhost"])        # chain + key, for install_certificate
    cert = ca.sign(csr.public_key(), ["postgresql-x"])  # a key kept elsewhere (certs.py)
    if needs_renewal(leaf.certificate, now): …  # half of its life left

The root is ECDSA P-256: what every browser and libpq (OpenSSL) accept, and what Caddy's
internal CA already is. It is made at the first start, its key 0600 in a 0700 folder of
network-wirer's state, except when a Caddy root exists: that root is ADOPTED (copied,
key and certificate unchanged), so that everything it signed keeps verifying after the
router changes: the PostgreSQL add-ons' server certificates (certs.py) and the root
customers were told to trust. Once adopted the copy is the CA; Caddy's storage is never
read again.

Leaves are short-lived (`LEAF_VALID`, 30 days, unless SLIPWAY_ROUTER_CERT_DAYS says
otherwise; renewed with half of it left), signed by the root directly, their names checked as
plain DNS names: at least two labels, a wildcard only above two (`*.apps.example.com`,
never `*.localhost`, which clients refuse).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from slipway.libs.errors import InvalidRequest, Unavailable
from slipway.services.network_wirer.names import plain_dns_name

log = structlog.get_logger("slipway.network_wirer.ca")

ROOT_VALID = datetime.timedelta(days=3650)
LEAF_VALID = datetime.timedelta(days=30)
MAX_NAMES = 100  # one app's hosts; a certificate with thousands of names is a mistake
ROOT_NAME = "Slipway Router Root CA"


def legacy_caddy_storage(home: Path) -> Path:
    """Where Caddy kept its storage under SLIPWAY_HOME when it was the router: the root
    adopted at the first start after the switch."""
    return home / "caddy" / "storage"


def caddy_root(storage: Path) -> tuple[Path, Path]:
    """Caddy's internal CA root (certificate, key) under its storage folder."""
    folder = storage / "pki" / "authorities" / "local"
    return folder / "root.crt", folder / "root.key"


def _write_private(path: Path, data: bytes) -> None:
    """Create `path` 0600 from the start, in a 0700 folder; replaced whole."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _key_usage(*, signs_certificates: bool, key_encipherment: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def make_root(now: datetime.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new self-signed root (EC P-256, ten years)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ROOT_NAME)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + ROOT_VALID)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


@dataclass(frozen=True)
class Leaf:
    """A server certificate and its key; `pem` is HAProxy's format (chain, then key)."""

    certificate: x509.Certificate
    key_pem: str

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode() + self.key_pem


def needs_renewal(certificate: x509.Certificate, now: datetime.datetime) -> bool:
    """True once half of the certificate's life is left (or it has expired).

    Half, not a third: the monitor warns of a certificate ending within 14 days, so a 30-day
    leaf is renewed at 15 days left and only one whose renewal fails ever reaches the mark."""
    life = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    return certificate.not_valid_after_utc - now < life / 2


@dataclass(frozen=True)
class RouterCA:
    """The root that signs the router's internal certificates and the add-ons' ones."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    adopted: bool = False  # this start copied Caddy's root

    @staticmethod
    def paths(state_dir: Path) -> tuple[Path, Path]:
        folder = state_dir / "ca"
        return folder / "root.crt", folder / "root.key"

    @classmethod
    def load_or_create(
        cls,
        state_dir: Path,
        caddy_storage: Path | None = None,
        *,
        now: datetime.datetime | None = None,
    ) -> RouterCA:
        """The CA kept in `state_dir`; at the first start Caddy's root when there is one
        (adopted), else a new one."""
        cert_path, key_path = cls.paths(state_dir)
        adopted = False
        if not key_path.exists():
            caddy_cert, caddy_key = caddy_root(caddy_storage) if caddy_storage else (None, None)
            if caddy_cert and caddy_key and caddy_cert.exists() and caddy_key.exists():
                # The certificate first, the key last: the key's presence means "done".
                _write_private(cert_path, caddy_cert.read_bytes())
                _write_private(key_path, caddy_key.read_bytes())
                adopted = True
                log.info("ca.adopted_caddy_root", source=str(caddy_cert))
            else:
                new_cert, new_key = make_root(now or datetime.datetime.now(datetime.UTC))
                _write_private(cert_path, new_cert.public_bytes(serialization.Encoding.PEM))
                _write_private(key_path, _private_pem(new_key))
                log.info("ca.created", not_after=new_cert.not_valid_after_utc.isoformat())
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (FileNotFoundError, ValueError) as exc:
            raise Unavailable(
                f"The router's CA in {cert_path.parent} is unreadable ({exc}): restore it from"
                " a snapshot; making a new one would invalidate every certificate it signed."
            ) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise Unavailable(f"The router's CA key {key_path} is not an ECDSA key.")
        if cert.public_key() != key.public_key():
            raise Unavailable(f"The router's CA certificate and key in {cert_path.parent} differ.")
        return cls(cert, key, adopted)

    @property
    def root_pem(self) -> str:
        """What clients trust (the CA customers are told to install)."""
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    def issue(
        self,
        hosts: Iterable[str],
        *,
        now: datetime.datetime | None = None,
        valid: datetime.timedelta = LEAF_VALID,
    ) -> Leaf:
        """A server certificate for `hosts` (plain DNS names), with a new key."""
        names = sorted({plain_dns_name(host, wildcard=True) for host in hosts})
        if not names or len(names) > MAX_NAMES:
            raise InvalidRequest(f"A certificate names 1 to {MAX_NAMES} hosts.")
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self.sign(key.public_key(), names, now=now, valid=valid)
        return Leaf(cert, _private_pem(key).decode())

    def sign(
        self,
        public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        names: Sequence[str],
        *,
        now: datetime.datetime | None = None,
        valid: datetime.timedelta = LEAF_VALID,
    ) -> x509.Certificate:
        """A server certificate for `public`, named `names` (the first is its common name),
        never outliving the root. The caller has checked the names: this signs them as given."""
        now = now or datetime.datetime.now(datetime.UTC)
        # RSA key exchange (TLS 1.2 without ECDHE) encrypts to the key; ECDSA only signs.
        usage = _key_usage(
            signs_certificates=False, key_encipherment=isinstance(public, rsa.RSAPublicKey)
        )
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.certificate.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(min(now + valid, self.certificate.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
