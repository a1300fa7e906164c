"""network-wirer's settings (SLIPWAY_*): the router's ports, its behaviour, the Docker hosts."""

from __future__ import annotations

from pathlib import Path

from slipway.libs.caddy import RouterAddress
from slipway.libs.service import Settings
from slipway.services.network_wirer.routes import RouterOptions


class WirerSettings(Settings, frozen=True, kw_only=True):
    """Read from SLIPWAY_<FIELD>; the router_* ports are the ones libs/caddy starts Caddy with."""

    base_domain: str = "localhost"  # apps answer at <app>.<base_domain>
    router_http_port: int = 8080
    router_https_port: int = 8443
    router_admin_port: int = 2019  # always on 127.0.0.1
    router_listen_host: str = ""  # "" = every interface
    router_public_http_port: int = 0  # 0: the same as router_http_port
    router_public_https_port: int = 0
    router_upstream_timeout: float = 30.0  # H12 after this long without a response
    router_try_duration: float = 5.0  # retry other dynos on connection failure this long
    router_health_path: str = "/"  # active health check; "" to turn it off
    router_health_interval: float = 5.0
    router_tls_issuer: str = "internal"  # "acme" for a real deployment with public DNS
    router_acme_email: str = ""
    router_acme_ca: str = ""
    # The scheduler's id of the Docker host Caddy runs on (its SLIPWAY_LOCAL_HOST_ID): dynos
    # there are dialled on their app network instead of the published port. "": never.
    router_host_id: str = "local"
    caddy_data: str = ""  # default $SLIPWAY_HOME/caddy
    reconcile_interval: float = 5.0
    access_log_host: str = "127.0.0.1"
    docker_hosts: str = "unix:///var/run/docker.sock"  # comma-separated Docker endpoints
    manage_networks: bool = True
    # Each app network takes a /24 from here on each host (libs/appnet.py).
    app_network_pool: str = "10.210.0.0/16"
    isolation: bool = True  # iptables rules (needs root)

    @property
    def address(self) -> RouterAddress:
        return RouterAddress(
            http_port=self.router_http_port,
            https_port=self.router_https_port,
            admin_port=self.router_admin_port,
            listen_host=self.router_listen_host,
        )

    @property
    def storage_dir(self) -> Path:
        return Path(self.caddy_data or Path(self.home) / "caddy").resolve() / "storage"

    def router_options(self, access_log: str | None) -> RouterOptions:
        """The router's behaviour, with the address of our access-log listener."""
        return RouterOptions(
            address=self.address,
            storage_dir=str(self.storage_dir),
            access_log=access_log,
            upstream_timeout=self.router_upstream_timeout,
            try_duration=self.router_try_duration,
            health_path=self.router_health_path,
            health_interval=self.router_health_interval,
            tls_issuer=self.router_tls_issuer,
            acme_email=self.router_acme_email,
            acme_ca=self.router_acme_ca,
            public_http_port=self.router_public_http_port or None,
            public_https_port=self.router_public_https_port or None,
            router_host=self.router_host_id,
        )

    @property
    def docker_urls(self) -> list[str]:
        return [url.strip() for url in self.docker_hosts.split(",") if url.strip()]
