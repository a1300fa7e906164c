"""Server certificates for add-ons, signed by the router's internal CA (`pg` TLS).

network-wirer holds the router's CA (ca.py, in its own state folder): the CA customers are
told to trust for `*.localhost`. So it signs here, and nobody else holds that key. The
scheduler sends a CSR (it keeps the add-on's private key) and gets a certificate whose one
name is the add-on's name, its host on the app network.

The certificate's names come from the request's `name`, never from the CSR, and a name
with a dot is refused: an add-on certificate can never be one for `<app>.<base domain>`
or a custom domain that the router serves.
"""

from __future__ import annotations

import datetime
import re

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from slipway.contracts.router import (
    ROUTER_ADDON_CERT_ISSUE,
    AddonCertificate,
    IssueAddonCertificate,
)
from slipway.libs.bus import context
from slipway.libs.errors import InvalidRequest
from slipway.libs.service import ServiceApp
from slipway.services.network_wirer.ca import RouterCA

log = structlog.get_logger("slipway.network_wirer.certs")

# An add-on's name (services/gateway/addons/addons.py ADDON_NAME): one DNS label, no dot.
ADDON_HOST = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{1,62}\Z")
VALID = datetime.timedelta(days=397)  # the longest a browser would accept; renewed at provision
CSR_MAX = 16 * 1024


def sign(
    csr_pem: str,
    name: str,
    ca: RouterCA,
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
    return ca.sign(public, [name], now=now, valid=VALID)


def issue(ca: RouterCA, request: IssueAddonCertificate) -> AddonCertificate:
    """Sign the request's CSR for its add-on name with the router's CA."""
    cert = sign(request.csr, request.name, ca)
    return AddonCertificate(
        certificate=cert.public_bytes(serialization.Encoding.PEM).decode(),
        ca=ca.root_pem,
        not_after=cert.not_valid_after_utc.isoformat(),
    )


def install(service: ServiceApp, ca: RouterCA) -> None:
    """Serve ROUTER_ADDON_CERT_ISSUE (the scheduler's only), signing with `ca`."""

    @service.rpc(ROUTER_ADDON_CERT_ISSUE)
    async def issue_addon_certificate(request: IssueAddonCertificate) -> AddonCertificate:
        context.require_caller(ROUTER_ADDON_CERT_ISSUE)
        issued = issue(ca, request)
        log.info(
            "addon.cert_issued", addon=request.name, app=request.app_id, until=issued.not_after
        )
        return issued
