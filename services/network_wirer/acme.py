"""Certificates for customers' domains from an ACME CA (HTTP-01), served by HAProxy.

    manager = AcmeManager(settings, router)     # router: the HAProxy Reconciler
    report = await manager.renew(domains)       # issue what is missing or near expiry
    await manager.run(lambda: domains)          # the same, forever, with backoff

The protocol is the `acme` package's (Let's Encrypt's client library); it speaks
blocking HTTP, so each exchange runs in a thread. HAProxy answers the HTTP-01 requests
itself from its acme map (`set_challenge`, a runtime `add map`: no reload, no dyno
involved), and the issued chain is loaded through the runtime API (`install_certificate`).

The account key (EC P-256) is made once, 0600 in network-wirer's state folder; the same
key finds the same account at the CA again after a restart. A domain is renewed when fewer
than 30 days remain; a failure is retried with a doubling delay (1 min … 6 h, so a broken
domain never hammers the CA's rate limits) and reported: logged, and kept in `failures`.
"""

from __future__ import annotations

import asyncio
import datetime
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

import structlog
from acme import challenges, client, messages
from acme import errors as acme_errors
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.errors import Error as JoseError
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from slipway.libs.errors import Unavailable
from slipway.services.network_wirer.names import InvalidName, plain_dns_name

log = structlog.get_logger("slipway.network_wirer.acme")

RENEW_BEFORE = datetime.timedelta(days=30)
FIRST_RETRY = datetime.timedelta(minutes=1)
LAST_RETRY = datetime.timedelta(hours=6)
ORDER_TIMEOUT = datetime.timedelta(seconds=90)


class AcmeFailed(Unavailable):
    """An order did not end in a certificate (the CA refused, validation failed, timeout);
    retryable: the manager tries again later."""


class Router(Protocol):
    """What the ACME side needs from the router (the HAProxy Reconciler has it)."""

    async def set_challenge(self, token: str, key_authorization: str) -> None: ...
    async def clear_challenge(self, token: str) -> None: ...
    async def install_certificate(self, domain: str, pem: str) -> Path: ...


@dataclass(frozen=True)
class AcmeSettings:
    """Which CA, and where network-wirer keeps what it must not lose."""

    directory_url: str  # the CA's ACME directory
    state_dir: Path  # network-wirer's state folder; an `acme/` folder goes in it
    email: str | None = None  # the CA's expiry notices; optional in RFC 8555
    # The CA bundle that verifies the directory's TLS (a test CA's own); None: the system's.
    ca_bundle: Path | None = None
    renew_before: datetime.timedelta = RENEW_BEFORE

    @property
    def folder(self) -> Path:
        return self.state_dir / "acme"

    @property
    def account_key_path(self) -> Path:
        return self.folder / "account.pem"

    def certificate_path(self, domain: str) -> Path:
        """Where the issued chain and its key are kept (the router serves its own copy)."""
        return self.folder / "certs" / f"{plain_dns_name(domain)}.pem"


@dataclass(frozen=True)
class Failure:
    """A domain's failed attempts so far and when the next one may run."""

    attempts: int
    retry_at: datetime.datetime
    error: str


@dataclass
class Report:
    """What one renewal pass did."""

    issued: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)  # failed earlier, not yet due again


def due_for_renewal(
    wanted: Iterable[str],
    expiry: Mapping[str, datetime.datetime],
    failures: Mapping[str, Failure],
    now: datetime.datetime,
    renew_before: datetime.timedelta = RENEW_BEFORE,
) -> tuple[list[str], list[str]]:
    """(domains to order now, domains due but backing off): a domain is due when it has
    no certificate or fewer than `renew_before` remain on it."""
    due: list[str] = []
    waiting: list[str] = []
    for domain in sorted(set(wanted)):
        not_after = expiry.get(domain)
        if not_after is not None and not_after - now > renew_before:
            continue
        failure = failures.get(domain)
        (waiting if failure is not None and failure.retry_at > now else due).append(domain)
    return due, waiting


def next_failure(previous: Failure | None, error: str, now: datetime.datetime) -> Failure:
    """The record after one more failed attempt: the delay doubles up to LAST_RETRY."""
    attempts = (previous.attempts if previous else 0) + 1
    delay = min(FIRST_RETRY * 2 ** (attempts - 1), LAST_RETRY)
    return Failure(attempts=attempts, retry_at=now + delay, error=error[:500])


def _write_private(path: Path, data: bytes) -> None:
    """Replace `path` whole, 0600 from its creation (never readable by others, even briefly)."""
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


def account_key(settings: AcmeSettings) -> ec.EllipticCurvePrivateKey:
    """The account's key: read, or made once (EC P-256, 0600)."""
    path = settings.account_key_path
    if not path.exists():
        _write_private(path, _private_pem(ec.generate_private_key(ec.SECP256R1())))
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise AcmeFailed(f"{path} does not hold an EC key; move it away to make a new account")
    return key


def certificate_request(domain: str) -> tuple[bytes, bytes]:
    """(CSR PEM, its new private key PEM) for `domain` alone."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))  # the CA reads the names from the SAN only
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM), _private_pem(key)


def not_after(pem: bytes) -> datetime.datetime:
    """The first certificate's expiry in a PEM chain."""
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


@dataclass
class _Order:
    """An order under way: the blocking client, the order, and the challenges to answer."""

    acme: client.ClientV2
    order: messages.OrderResource
    key_pem: bytes
    answers: list[tuple[messages.ChallengeBody, challenges.ChallengeResponse, str]]


class AcmeManager:
    """Issues and renews the certificates of customers' domains, served by `router`."""

    def __init__(
        self,
        settings: AcmeSettings,
        router: Router,
        *,
        clock: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self.failures: dict[str, Failure] = {}
        self.expiry: dict[str, datetime.datetime] = {}
        self._account: client.ClientV2 | None = None
        self._load_issued()

    def _load_issued(self) -> None:
        folder = self.settings.folder / "certs"
        for path in sorted(folder.glob("*.pem")) if folder.is_dir() else ():
            try:
                self.expiry[path.stem] = not_after(path.read_bytes())
            except ValueError:
                log.warning("acme.unreadable_certificate", path=str(path))

    # The blocking half (threads) -------------------------------------------------------

    def _client(self) -> client.ClientV2:
        if self._account is not None:
            return self._account
        key = JWKEC(key=account_key(self.settings))
        # `acme` hands verify_ssl to requests' `verify`, which also takes a CA bundle path.
        verify = cast(bool, str(self.settings.ca_bundle) if self.settings.ca_bundle else True)
        net = client.ClientNetwork(key, alg=ES256, verify_ssl=verify, user_agent="slipway")
        directory = client.ClientV2.get_directory(self.settings.directory_url, net)
        acme = client.ClientV2(directory, net)
        registration = messages.NewRegistration.from_data(
            email=self.settings.email, terms_of_service_agreed=True
        )
        try:
            net.account = acme.new_account(registration)
        except acme_errors.ConflictError as exists:
            # The key already has an account (a restart): use it.
            found = messages.RegistrationResource(uri=exists.location, body=messages.Registration())
            net.account = acme.query_registration(found)
        self._account = acme
        return acme

    def _begin(self, domain: str) -> _Order:
        acme = self._client()
        csr_pem, key_pem = certificate_request(domain)
        order = acme.new_order(csr_pem)
        answers = []
        for authorization in order.authorizations:
            if authorization.body.status == messages.STATUS_VALID:
                continue  # validated recently for this account; the CA reuses it
            http01 = [
                c for c in authorization.body.challenges if isinstance(c.chall, challenges.HTTP01)
            ]
            if not http01:
                raise AcmeFailed(f"the CA offers no HTTP-01 challenge for {domain}")
            response, validation = http01[0].response_and_validation(acme.net.key)
            answers.append((http01[0], response, validation))
        return _Order(acme, order, key_pem, answers)

    def _finish(self, order: _Order) -> str:
        for challenge, response, _ in order.answers:
            order.acme.answer_challenge(challenge, response)
        deadline = datetime.datetime.now() + ORDER_TIMEOUT  # `acme` compares naive local times
        done = order.acme.poll_and_finalize(order.order, deadline)
        return str(done.fullchain_pem)

    # The asynchronous half ---------------------------------------------------------------

    async def issue(self, domain: str) -> Path:
        """Order, validate and install a certificate for `domain`; the router's file for it.

        AcmeFailed when the CA does not issue (the challenges are withdrawn either way)."""
        domain = plain_dns_name(domain)
        try:
            order = await asyncio.to_thread(self._begin, domain)
        except (acme_errors.Error, JoseError, OSError) as exc:
            self._account = None  # a new directory and nonce next time
            raise AcmeFailed(f"ordering a certificate for {domain}: {exc}") from exc
        tokens = [challenge.chall.encode("token") for challenge, _, _ in order.answers]
        try:
            for (_, _, validation), token in zip(order.answers, tokens, strict=True):
                await self.router.set_challenge(token, validation)
            chain = await asyncio.to_thread(self._finish, order)
        except (acme_errors.Error, JoseError, OSError) as exc:
            self._account = None
            raise AcmeFailed(f"validating {domain}: {exc}") from exc
        finally:
            for token in tokens:
                await self.router.clear_challenge(token)
        pem = chain.rstrip("\n") + "\n" + order.key_pem.decode()
        _write_private(self.settings.certificate_path(domain), pem.encode())
        installed = await self.router.install_certificate(domain, pem)
        self.expiry[domain] = not_after(pem.encode())
        log.info("acme.issued", domain=domain, not_after=self.expiry[domain].isoformat())
        return installed

    async def reinstall(self) -> None:
        """Load every kept certificate into the router (after the router restarted)."""
        for domain in sorted(self.expiry):
            pem = self.settings.certificate_path(domain).read_text()
            await self.router.install_certificate(domain, pem)

    async def renew(self, domains: Iterable[str]) -> Report:
        """One pass: issue every domain of `domains` that is due, one after the other (a CA
        rate-limits accounts; a pass is not in a hurry). Invalid names are reported, never
        ordered."""
        report = Report()
        wanted: list[str] = []
        for domain in domains:
            try:
                wanted.append(plain_dns_name(domain))
            except InvalidName as exc:
                report.failed[domain[:100]] = exc.message
        due, report.waiting = due_for_renewal(
            wanted, self.expiry, self.failures, self.clock(), self.settings.renew_before
        )
        for domain in due:
            try:
                await self.issue(domain)
            except AcmeFailed as exc:
                failure = next_failure(self.failures.get(domain), str(exc), self.clock())
                self.failures[domain] = failure
                report.failed[domain] = failure.error
                log.warning(
                    "acme.failed",
                    domain=domain,
                    attempts=failure.attempts,
                    retry_at=failure.retry_at.isoformat(),
                    error=failure.error,
                )
            else:
                self.failures.pop(domain, None)
                report.issued.append(domain)
        return report

    async def run(self, domains: Callable[[], Iterable[str]], interval: float = 300.0) -> None:
        """`renew` forever; an unexpected error is logged and the loop goes on."""
        while True:
            try:
                await self.renew(domains())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("acme.pass_failed")
            await asyncio.sleep(interval)
