"""The router's internal certificates, signed by the router's CA (ca.py), kept in HAProxy
through its runtime API: issued, renewed and removed without a reload.

- The default certificate (`certs/default.pem`) is what HAProxy serves when the client's
  SNI names nothing it holds, and what it needs to bind HTTPS at all: it is written before
  HAProxy first loads network-wirer's configuration. When the base domain has two labels
  or more it is `*.<base domain>`, so it also serves every `<app>.<base domain>`; clients
  refuse a wildcard right under a single label (`*.localhost`), so there it names the
  router itself and each app gets its own.
- One certificate per app for its hosts the default does not cover (`<app>.localhost`,
  its custom domains unless ACME serves those): `certs/app-<digest of the app id>.pem`,
  listed in the crt-list, where HAProxy reads the names that select it from the
  certificate itself.

Leaves live `SLIPWAY_ROUTER_CERT_DAYS` (30) and are renewed with half of that left; an
app's certificate is issued again when its hosts change and removed with the app. A pass
issues at most `BATCH` certificates so that routing never waits on TLS (a new app's HTTPS
follows its HTTP by a pass or two); `Progress.remaining` tells the wirer to run another
pass soon.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import structlog
from cryptography import x509

from slipway.libs.errors import InvalidRequest
from slipway.libs.haproxy import Runtime
from slipway.services.network_wirer.ca import LEAF_VALID, Leaf, RouterCA, needs_renewal
from slipway.services.network_wirer.haproxy.config import HAProxyOptions
from slipway.services.network_wirer.haproxy.reconcile import write_private
from slipway.services.network_wirer.names import plain_dns_name
from slipway.services.network_wirer.routes import AppRoute

log = structlog.get_logger("slipway.network_wirer.tls")

BATCH = 100  # certificates issued per pass (about a millisecond each, plus 4 commands)
APP_FILE = re.compile(r"^app-[0-9a-f]{32}\.pem\Z")
ROUTER_LABEL = "router"  # the default certificate's name under a one-label base domain


@dataclass(frozen=True)
class Held:
    """A certificate HAProxy serves: its names and when it expires."""

    names: frozenset[str]
    not_after: datetime.datetime


@dataclass
class Progress:
    """What one pass did, and how many certificates are still due."""

    issued: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    remaining: int = 0


def default_names(base_domain: str) -> list[str]:
    """The default certificate's names (see the module docstring)."""
    base = base_domain.lower()
    if len(base.split(".")) >= 2:
        return [plain_dns_name(base), plain_dns_name(f"*.{base}", wildcard=True)]
    return [plain_dns_name(f"{ROUTER_LABEL}.{base}")]


def covered_by(host: str, names: Iterable[str]) -> bool:
    """Whether a certificate naming `names` serves `host` (one wildcard label at most)."""
    for name in names:
        if name == host:
            return True
        if name.startswith("*.") and host.count(".") == name.count(".") and host.endswith(name[1:]):
            return True
    return False


def app_file(app_id: str) -> str:
    """The file name of an app's certificate: a digest, as an app id is not a file name."""
    return f"app-{hashlib.sha256(app_id.encode()).hexdigest()[:32]}.pem"


def _held(pem: bytes) -> Held:
    certificate = x509.load_pem_x509_certificate(pem)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return Held(
        frozenset(san.value.get_values_for_type(x509.DNSName)), certificate.not_valid_after_utc
    )


class RouterCertificates:
    """The default certificate and one per app, issued by `ca`, served by HAProxy."""

    def __init__(
        self,
        ca: RouterCA,
        options: HAProxyOptions,
        base_domain: str,
        *,
        acme_serves_domains: bool = False,
        valid: datetime.timedelta = LEAF_VALID,
    ) -> None:
        self.ca = ca
        self.valid = valid  # each leaf's life; renewed with half of it left
        self.options = options
        self.base_domain = base_domain.lower()
        self.acme_serves_domains = acme_serves_domains
        self.defaults = default_names(base_domain)
        self.folder = options.crt_list.parent
        self.held: dict[str, Held] = {}  # file name → what it holds
        self._verified = False  # HAProxy's memory checked against the files since start

    def _now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    # The default certificate -------------------------------------------------------------

    def ensure_default(self) -> Leaf | None:
        """Write the default certificate when it is missing, due or names other hosts
        (HAProxy must have one before it can bind HTTPS); the new one, or None."""
        path = self.options.default_certificate
        try:
            held = _held(path.read_bytes())
        except (FileNotFoundError, ValueError, x509.ExtensionNotFound):
            held = None
        if held and held.names == set(self.defaults):
            certificate = x509.load_pem_x509_certificate(path.read_bytes())
            if not needs_renewal(certificate, self._now()):
                return None
        leaf = self.ca.issue(self.defaults, valid=self.valid)
        write_private(path, leaf.pem.encode())
        log.info("tls.default_issued", names=self.defaults)
        return leaf

    def default(self) -> Held | None:
        """What the default certificate's file holds now (None: missing or unreadable)."""
        try:
            return _held(self.options.default_certificate.read_bytes())
        except (FileNotFoundError, ValueError, x509.ExtensionNotFound):
            return None

    async def renew_default(self, runtime: Runtime) -> None:
        """`ensure_default`, and a new one replaces the old in HAProxy's memory at once."""
        leaf = self.ensure_default()
        if leaf is not None:
            await runtime.put_certificate(str(self.options.default_certificate), leaf.pem)

    # One certificate per app ---------------------------------------------------------------

    def load(self) -> None:
        """What earlier runs issued (the files HAProxy reads at start)."""
        self.held.clear()
        for path in sorted(self.folder.glob("app-*.pem")) if self.folder.is_dir() else ():
            if not APP_FILE.match(path.name):
                continue
            try:
                self.held[path.name] = _held(path.read_bytes())
            except (ValueError, x509.ExtensionNotFound):
                log.warning("tls.unreadable_certificate", path=str(path))

    def wanted(self, routes: Iterable[AppRoute]) -> dict[str, frozenset[str]]:
        """file name → the names its app's certificate must hold (apps with none left out)."""
        wanted: dict[str, frozenset[str]] = {}
        for route in routes:
            names: set[str] = set()
            base_host = f"{route.app_name}.{self.base_domain}".lower()
            for host in route.hosts:
                if covered_by(host, self.defaults):
                    continue
                if self.acme_serves_domains and host != base_host:
                    continue  # a custom domain: ACME's certificate serves it
                try:
                    names.add(plain_dns_name(host))
                except InvalidRequest:
                    continue  # never in the map either (config.valid_hosts)
            if names:
                wanted[app_file(route.app_id)] = frozenset(sorted(names)[:100])
        return wanted

    async def update(self, runtime: Runtime, routes: Iterable[AppRoute]) -> Progress:
        """Issue, renew and remove app certificates so HAProxy serves what `routes` need."""
        progress = Progress()
        if not self._verified:
            await self._reload_missing(runtime)
            self._verified = True
        await self.renew_default(runtime)
        wanted = self.wanted(routes)
        now = self._now()
        due = [
            name
            for name, names in sorted(wanted.items())
            if name not in self.held
            or self.held[name].names != names
            or self.held[name].not_after - now < self.valid / 2  # ca.needs_renewal's rule
        ]
        gone = sorted(set(self.held) - set(wanted))
        progress.remaining = max(len(due) - BATCH, 0)
        issued: dict[str, Leaf] = {}
        for name in due[:BATCH]:
            leaf = self.ca.issue(wanted[name], valid=self.valid)
            write_private(self.folder / name, leaf.pem.encode())
            issued[name] = leaf
        crt_list = self.options.crt_list
        for name in gone:
            path = str(self.folder / name)
            answer = await runtime.command(f"del ssl crt-list {crt_list} {path}")
            if "not found" not in answer.lower() and "deleted" not in answer.lower():
                log.warning("tls.crt_list_delete", path=path, answer=answer.strip()[:200])
            await runtime.command(f"del ssl cert {path}")
        self._write_list(added=issued, removed=gone)
        for name in gone:
            (self.folder / name).unlink(missing_ok=True)
            del self.held[name]
            progress.removed.append(name)
        for name, leaf in issued.items():
            await runtime.put_certificate(str(self.folder / name), leaf.pem, str(crt_list))
            self.held[name] = Held(wanted[name], leaf.certificate.not_valid_after_utc)
            progress.issued.append(name)
        if issued or gone:
            log.info(
                "tls.updated",
                issued=len(issued),
                removed=len(gone),
                remaining=progress.remaining,
            )
        return progress

    def _write_list(self, *, added: Iterable[str], removed: Iterable[str]) -> None:
        """The crt-list HAProxy reads at its next start or reload: the files it serves."""
        crt_list = self.options.crt_list
        lines = crt_list.read_text().splitlines() if crt_list.exists() else []
        drop = {str(self.folder / name) for name in removed}
        kept = [line for line in lines if line and line not in drop]
        kept += [str(self.folder / name) for name in added if str(self.folder / name) not in kept]
        if kept != lines:
            write_private(crt_list, "".join(f"{line}\n" for line in kept).encode())

    async def _reload_missing(self, runtime: Runtime) -> None:
        """Put back what the files hold and HAProxy does not (a wirer stopped mid-pass)."""
        self.load()
        loaded = await runtime.certificates()
        for name in sorted(self.held):
            path = self.folder / name
            if str(path) not in loaded:
                await runtime.put_certificate(
                    str(path), path.read_text(), str(self.options.crt_list)
                )
                self._write_list(added=[name], removed=[])
