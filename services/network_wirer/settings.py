"""network-wirer's settings (SLIPWAY_*): the router's ports, its behaviour, the Docker hosts."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Annotated

import msgspec

from slipway.libs import appnet
from slipway.libs.haproxy import RouterPorts
from slipway.libs.service import Settings
from slipway.services.network_wirer.haproxy.config import HAProxyOptions


class WirerSettings(Settings, frozen=True, kw_only=True):
    """Read from SLIPWAY_<FIELD>; the router_* ports are the ones libs/haproxy starts HAProxy
    with (the supervisor runs `python -m slipway.libs.haproxy` on the same variables)."""

    base_domain: str = "localhost"  # apps answer at <app>.<base_domain>
    # This router's name: one router (HAProxy and its network-wirer) per host that receives
    # traffic, each with its own copy of the route events (contracts/catalog.py); the names
    # are the network-wirer instances the supervisor provisions (default: one, "local").
    router_id: str = "local"
    router_http_port: int = 8080
    router_https_port: int = 8443
    router_listen_host: str = ""  # "" = every interface
    router_public_http_port: int = 0  # 0: the same as router_http_port
    router_public_https_port: int = 0
    router_upstream_timeout: float = 30.0  # H12 after this long without response headers
    router_connect_timeout: float = 5.0
    router_retries: int = 3  # other dynos tried when one refuses the connection
    # TCP checks only (a connect, never an HTTP request: the app's logs and metrics see
    # nothing, as with Heroku's router): a dyno that refused a connection is benched until
    # it accepts again. 0: no checks; a refused connection is still retried on another dyno.
    router_check_interval: float = 5.0
    router_tls_issuer: str = "internal"  # "acme": custom domains get certificates by ACME
    # The life of each certificate the router's own CA issues (renewed with half of it left).
    # At most a year: browsers refuse longer-lived server certificates from public CAs, and a
    # private one gains nothing by more.
    router_cert_days: Annotated[int, msgspec.Meta(ge=1, le=365)] = 30
    router_acme_email: str = ""
    router_acme_directory: str = ""  # the CA's ACME directory URL (required for "acme")
    router_acme_ca_bundle: str = ""  # verifies the directory's TLS; "": the system's bundle
    # The scheduler's id of the Docker host HAProxy runs on (its SLIPWAY_LOCAL_HOST_ID):
    # dynos there are dialled on their app network instead of the published port. "": never.
    router_host_id: str = "local"
    # HAProxy's folder (configuration, maps, certificates, sockets), the one the supervisor's
    # `python -m slipway.libs.haproxy` uses (SLIPWAY_HAPROXY_DATA); "" = $SLIPWAY_HOME/haproxy
    haproxy_data: str = ""
    reconcile_interval: float = 5.0
    # Seconds between two uptime probes of each app through the router (uptime.py); 0: none.
    probe_interval: float = 30.0
    docker_hosts: str = "unix:///var/run/docker.sock"  # comma-separated Docker endpoints
    manage_networks: bool = True
    # The scheduler makes and removes app networks (libs/appnet.py); these two say what a
    # network-wirer expects of them and must equal the scheduler's: each takes a
    # /<app_subnet_prefix> from the pool ("": the scope's, 10.210.0.0/16 by default).
    app_network_pool: str = ""
    app_subnet_prefix: Annotated[
        int, msgspec.Meta(ge=appnet.MIN_SUBNET_PREFIX, le=appnet.MAX_SUBNET_PREFIX)
    ] = appnet.DEFAULT_SUBNET_PREFIX
    isolation: bool = True  # iptables rules (needs root)

    def __post_init__(self) -> None:
        appnet.parse_pool(self.app_network_pool or self.scoped.pool, self.app_subnet_prefix)

    @property
    def haproxy_dir(self) -> Path:
        return Path(self.haproxy_data or Path(self.home) / "haproxy").resolve()

    @property
    def router_cert_valid(self) -> datetime.timedelta:
        return datetime.timedelta(days=self.router_cert_days)

    @property
    def ports(self) -> RouterPorts:
        return RouterPorts(
            http_port=self.router_http_port,
            https_port=self.router_https_port,
            listen_host=self.router_listen_host,
        )

    def haproxy_options(self) -> HAProxyOptions:
        """How the router behaves and where HAProxy's files are."""
        return HAProxyOptions(
            data_dir=self.haproxy_dir,
            ports=self.ports,
            public_http_port=self.router_public_http_port or None,
            public_https_port=self.router_public_https_port or None,
            upstream_timeout=self.router_upstream_timeout,
            connect_timeout=self.router_connect_timeout,
            retries=self.router_retries,
            check_interval=self.router_check_interval,
        )

    @property
    def docker_urls(self) -> list[str]:
        return [url.strip() for url in self.docker_hosts.split(",") if url.strip()]
