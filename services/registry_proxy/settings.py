"""registry-proxy's settings, read from `SLIPWAY_*` environment variables.

SLIPWAY_REGISTRY_HOST=127.0.0.1 SLIPWAY_REGISTRY_PORT=5000 python -m slipway.services.registry_proxy

Engines on this machine reach the proxy on 127.0.0.1, which Docker treats as an
insecure (plain HTTP) registry without configuration. Engines on other hosts (or in
another network namespace) need an address they can route to (`SLIPWAY_REGISTRY_HOST`,
or 0.0.0.0), that address in `SLIPWAY_REGISTRY_ADVERTISE` (`host`, the bound port is
added, or `host:port`), and TLS: `SLIPWAY_REGISTRY_TLS_CERT` / `_KEY`, a server
certificate for that address from the platform CA, which each engine trusts in
`/etc/docker/certs.d/<host:port>/ca.crt`; no engine needs `--insecure-registry`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import ssl
import tempfile
from pathlib import Path
from typing import Annotated

import msgspec

from slipway.libs.service import Settings
from slipway.services.registry_proxy.errors import RegistryProxyError

# A unix socket path longer than this does not fit `sockaddr_un.sun_path` (108 bytes).
_MAX_SOCKET_PATH = 100


class RegistryProxySettings(Settings, frozen=True, kw_only=True):
    """Where the proxy listens, how long credentials live, how many images are kept."""

    registry_host: str = "127.0.0.1"
    registry_port: int = 5000  # 0 picks a free port (tests)
    # host:port written into credentials; a host alone gets the bound port; empty:
    # registry_host and the bound port.
    registry_advertise: str = ""
    # The proxy's server certificate (PEM, its chain after it) and key: HTTPS instead of
    # plain HTTP, so engines elsewhere pull without `--insecure-registry`. Both or none;
    # none: `registry-proxy/tls/registry.pem` and `.key` if both are there (where
    # `certificate.py` writes them), else plain HTTP.
    registry_tls_cert: str = ""
    registry_tls_key: str = ""
    registry_credential_ttl_s: int = 900  # when the caller asks for 0
    registry_credential_max_ttl_s: int = 3600
    # The rollback window (SLIPWAY_ROLLBACK_WINDOW): the images the last N releases of an
    # app run are kept, so a rollback to any of them finds its image; older ones are
    # deleted unless a release in the window re-uses them. At least 1: the current release.
    rollback_window: Annotated[int, msgspec.Meta(ge=1)] = 10
    # An image no release references yet (a build still finishing) is kept this long.
    registry_unreleased_grace_s: float = 86400.0
    # Seconds between a manifest deletion and the garbage collection that frees its blobs,
    # so several releases in a row cost one collection.
    registry_gc_delay_s: float = 60.0
    # A push session without a request for this long is considered abandoned.
    registry_push_idle_s: float = 300.0
    # How long a new push waits for a running garbage collection before it is refused.
    registry_gc_wait_s: float = 600.0
    registry_distribution_bin: str = "/usr/bin/docker-registry"
    # Where Distribution stores blobs and manifests; empty: <home>/registry.
    registry_storage_dir: str = ""

    def advertised(self, port: int) -> str:
        """The host:port credentials name, for a proxy bound to `port`."""
        advertise = self.registry_advertise
        if advertise:
            # "10.0.0.5" or "[fd00::5]": no port of its own, so the one bound is added.
            bare = ":" not in advertise or advertise.endswith("]")
            return f"{advertise}:{port}" if bare else advertise
        try:
            everywhere = ipaddress.ip_address(self.registry_host).is_unspecified
        except ValueError:
            everywhere = not self.registry_host
        if everywhere:
            raise RegistryProxyError(
                f"listening on every address ({self.registry_host or 'no host'}): set"
                " SLIPWAY_REGISTRY_ADVERTISE to the host:port Docker engines should use"
            )
        return f"{self.registry_host}:{port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server side of TLS, from `registry_tls_cert`/`_key`; None: plain HTTP."""
        cert, key = self.registry_tls_cert, self.registry_tls_key
        if not cert and not key:
            folder = self.tls_dir()
            if not (folder / "registry.pem").is_file() or not (folder / "registry.key").is_file():
                return None
            cert, key = str(folder / "registry.pem"), str(folder / "registry.key")
        if not (cert and key):
            raise RegistryProxyError(
                "set both SLIPWAY_REGISTRY_TLS_CERT and SLIPWAY_REGISTRY_TLS_KEY, or neither"
            )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise RegistryProxyError(
                f"the registry's TLS certificate {cert} or key {key} cannot be used: {exc}"
            ) from None
        return context

    def proxy_dir(self) -> Path:
        """registry-proxy's own state: database, signing key, Distribution's config."""
        return self.state_dir("registry-proxy")

    def db_path(self) -> Path:
        return self.proxy_dir() / "registry-proxy.db"

    def tls_dir(self) -> Path:
        """Where `certificate.py` puts the registry's certificate, key and CA by default."""
        return self.proxy_dir() / "tls"

    def signing_key_path(self) -> Path:
        return self.proxy_dir() / "signing.key"

    def storage_path(self) -> Path:
        """Distribution's storage root."""
        path = (
            Path(self.registry_storage_dir)
            if self.registry_storage_dir
            else self.home_path / "registry"
        )
        path.mkdir(parents=True, exist_ok=True)
        return path

    def socket_path(self) -> Path:
        """The unix socket Distribution listens on, in a folder only this user can enter."""
        path = self.proxy_dir() / "run" / "distribution.sock"
        if len(str(path.absolute())) > _MAX_SOCKET_PATH:
            # A deep home (a test's temporary folder) would not fit; use a short private
            # folder named after the home so two instances never share it.
            digest = hashlib.sha256(str(path.absolute()).encode()).hexdigest()[:16]
            path = Path(tempfile.gettempdir()) / f"slipway-registry-{digest}" / "d.sock"
        return path
