"""TLS for add-on databases: a key made here, a certificate from the platform's CA.

The router's internal CA (held by network-wirer, services/network_wirer/ca.py and certs.py)
signs a certificate whose one name is the add-on's name, its host on the app network. This
module makes the private key and sends only a CSR (ROUTER_ADDON_CERT_ISSUE), then writes

    <home>/run/addon-tls/<host>/<addon>/   0500, uid 999 (postgres), mounted read-only
        server.key   0600 postgres (PostgreSQL refuses a key others can read)
        server.crt   the certificate
        ca.crt       the CA's root, for whoever wants to check the chain

at /etc/slipway/tls in the database's container (never in the run folder, which the
backup service's group can read). `<home>/run/addon-tls` and the host folder are root's,
0700: on the host only root reaches the key, whichever account has uid 999 there.

When no network-wirer answers (a platform without a router, most tests), the database
still gets TLS, with a self-signed certificate for the same name, and the next provision
asks the CA again. A certificate with less than `RENEW_BEFORE` left is renewed at the next
provision (a restart or redelivery), and PostgreSQL reloads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import re
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from slipway.contracts import addons as ac
from slipway.contracts import router as rt
from slipway.libs.bus import Bus
from slipway.libs.errors import SlipwayError

if TYPE_CHECKING:
    from slipway.services.scheduler.settings import SchedulerSettings

log = structlog.get_logger("slipway.scheduler.addontls")

MOUNT = "/etc/slipway/tls"
KEY, CERT, CA = "server.key", "server.crt", "ca.crt"
RENEW_BEFORE = datetime.timedelta(days=30)
SELF_SIGNED_VALID = datetime.timedelta(days=90)
# Host and add-on ids become folder names (as in addons.py).
PATH_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
ISSUE_TIMEOUT = 2.0  # no network-wirer: fall back to a self-signed certificate quickly


def tls_root(settings: SchedulerSettings) -> Path:
    """Every host's add-on TLS folders (absolute: Docker mounts from it)."""
    return Path(settings.home).absolute() / "run" / "addon-tls"


def tls_dir_of(settings: SchedulerSettings, host_id: str, addon_id: str) -> Path:
    """The folder mounted read-only at /etc/slipway/tls in the add-on's container."""
    if not (PATH_PART.match(host_id) and PATH_PART.match(addon_id)):
        raise ValueError("refusing a host or add-on id that is no plain folder name")
    return tls_root(settings) / host_id / addon_id


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def csr_for(key: ec.EllipticCurvePrivateKey, name: str) -> str:
    """A PEM CSR for `name` (the CA takes the name from the request, not from here)."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )


def self_signed(key: ec.EllipticCurvePrivateKey, name: str) -> x509.Certificate:
    """A stand-in certificate for `name` while the platform's CA does not answer."""
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + SELF_SIGNED_VALID)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )


def still_good(folder: Path, name: str) -> bool:
    """Whether the folder holds a CA-signed certificate for `name` that is not due."""
    try:
        cert = x509.load_pem_x509_certificate((folder / CERT).read_bytes())
        if not (folder / KEY).is_file():
            return False
    except (OSError, ValueError):
        return False
    if cert.issuer == cert.subject:
        return False  # the stand-in: ask the CA again
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return names.get_values_for_type(x509.DNSName) == [name] and left > RENEW_BEFORE


def _write(folder: Path, name: str, data: bytes, mode: int) -> None:
    uid = ac.POSTGRES_UID
    temporary = folder / f".{name}.tmp"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chown(temporary, uid, uid)
    os.chmod(temporary, mode)
    os.replace(temporary, folder / name)


def write(folder: Path, key: ec.EllipticCurvePrivateKey, cert_pem: str, ca_pem: str) -> None:
    """Put key, certificate and CA into `folder` (made root-only above, postgres's itself)."""
    for parent in (folder.parent.parent, folder.parent):
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not stat.S_ISDIR(os.lstat(parent).st_mode):
            raise RuntimeError(f"{parent} is not a folder")
        os.chmod(parent, 0o700)
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    if not stat.S_ISDIR(os.lstat(folder).st_mode):
        raise RuntimeError(f"{folder} is not a folder")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(folder, KEY, key_pem, 0o600)
    _write(folder, CERT, cert_pem.encode(), 0o644)
    _write(folder, CA, ca_pem.encode(), 0o644)
    os.chown(folder, ac.POSTGRES_UID, ac.POSTGRES_UID, follow_symlinks=False)
    os.chmod(folder, 0o500, follow_symlinks=False)


async def ensure(
    bus: Bus, settings: SchedulerSettings, want: ac.AddonDesired, host_id: str
) -> bool:
    """Make sure the add-on's TLS folder on `host_id` holds a good certificate; whether it
    was (re)written (a running database then has to reload it)."""
    folder = tls_dir_of(settings, host_id, want.addon_id)
    if await asyncio.to_thread(still_good, folder, want.addon_name):
        return False
    key = new_key()
    request = rt.IssueAddonCertificate(
        addon_id=want.addon_id,
        app_id=want.app_id,
        name=want.addon_name,
        csr=csr_for(key, want.addon_name),
    )
    try:
        issued = await bus.call(rt.ROUTER_ADDON_CERT_ISSUE, request, timeout=ISSUE_TIMEOUT)
        cert_pem, ca_pem = issued.certificate, issued.ca
    except SlipwayError as exc:
        if (folder / CERT).is_file():
            return False  # keep the stand-in already there rather than make another
        log.warning("addon.tls_self_signed", addon=want.addon_name, error=str(exc))
        cert_pem = (
            self_signed(key, want.addon_name).public_bytes(serialization.Encoding.PEM).decode()
        )
        ca_pem = cert_pem
    await asyncio.to_thread(write, folder, key, cert_pem, ca_pem)
    return True


def remove_tls_dirs(settings: SchedulerSettings, addon_id: str) -> None:
    """Remove the add-on's TLS folder on every host (rmtree does not follow links)."""
    root = tls_root(settings)
    if not PATH_PART.match(addon_id) or not root.is_dir():
        return
    for host in root.iterdir():
        path = host / addon_id
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(os.lstat(path).st_mode):
                shutil.rmtree(path)
