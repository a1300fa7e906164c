"""Server certificates for add-ons, signed by the router's internal CA (`pg` TLS).

network-wirer already owns the router's certificates, and it is root next to Caddy's
storage, where Caddy keeps its internal CA (`pki/authorities/local/root.crt` and
`root.key`, made at Caddy's first start): the CA customers are told to trust for
`*.localhost`. So it signs here, and nobody else holds that key. The scheduler sends a
CSR (it keeps the add-on's private key) and gets a certificate whose one name is the
add-on's name, its host on the app network.

The certificate's names come from the request's `name`, never from the CSR, and a name
with a dot is refused: an add-on certificate can never be one for `<app>.<base domain>`
or a custom domain that the router serves.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from slipway.contracts.router import (
    ROUTER_ADDON_CERT_ISSUE,
    AddonCertificate,
    IssueAddonCertificate,
)
from slipway.libs.bus import context
from slipway.libs.errors import InvalidRequest, Unavailable
from slipway.libs.service import ServiceApp

log = structlog.get_logger("slipway.network_wirer.certs")

# An add-on's name (services/gateway/addons/addons.py ADDON_NAME): one DNS label, no dot.
ADDON_HOST = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{1,62}\Z")
VALID = datetime.timedelta(days=397)  # the longest a browser would accept; renewed at provision
CSR_MAX = 16 * 1024


def ca_paths(storage_dir: Path) -> tuple[Path, Path]:
    """Caddy's internal CA root: (certificate, key) under its storage folder."""
    folder = storage_dir / "pki" / "authorities" / "local"
    return folder / "root.crt", folder / "root.key"


def load_ca(storage_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The router's CA; Unavailable until Caddy has made it (its first start)."""
    cert_path, key_path = ca_paths(storage_dir)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError:
        raise Unavailable(
            "The router's internal CA does not exist yet (Caddy makes it at its first start)."
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise Unavailable("The router's internal CA key is not an ECDSA key.")
    return cert, key


def sign(
    csr_pem: str,
    name: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    now: datetime.datetime | None = None,
) -> x509.Certificate:
    """A server certificate for `name` with the CSR's public key; InvalidRequest otherwise."""
    if not ADDON_HOST.match(name):
        raise InvalidRequest(
            f"Refusing a certificate for {name[:70]!r}: an add-on's name is one DNS label."
        )
    if len(csr_pem) > CSR_MAX:
        raise InvalidRequest("The CSR is too large.")
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise InvalidRequest("The CSR is not a PEM certificate request.") from None
    if not csr.is_signature_valid:
        raise InvalidRequest("The CSR's signature does not verify.")
    public = csr.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise InvalidRequest("The CSR's key must be ECDSA or RSA.")
    now = now or datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + VALID, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(public, rsa.RSAPublicKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def issue(storage_dir: Path, request: IssueAddonCertificate) -> AddonCertificate:
    """Sign the request's CSR for its add-on name with the router's CA."""
    ca_cert, ca_key = load_ca(storage_dir)
    cert = sign(request.csr, request.name, ca_cert, ca_key)
    return AddonCertificate(
        certificate=cert.public_bytes(serialization.Encoding.PEM).decode(),
        ca=ca_cert.public_bytes(serialization.Encoding.PEM).decode(),
        not_after=cert.not_valid_after_utc.isoformat(),
    )


def install(service: ServiceApp, storage_dir: Path) -> None:
    """Serve ROUTER_ADDON_CERT_ISSUE (the scheduler's only) from Caddy's `storage_dir`."""

    @service.rpc(ROUTER_ADDON_CERT_ISSUE)
    async def issue_addon_certificate(request: IssueAddonCertificate) -> AddonCertificate:
        context.require_caller(ROUTER_ADDON_CERT_ISSUE)
        issued = issue(storage_dir, request)
        log.info(
            "addon.cert_issued", addon=request.name, app=request.app_id, until=issued.not_after
        )
        return issued
