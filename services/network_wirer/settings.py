"""network-wirer's settings (SLIPWAY_*): the router's ports, its behaviour, the Docker hosts."""

from __future__ import annotations

from pathlib import Path

from slipway.libs.caddy import RouterAddress, admin_socket_path
from slipway.libs.service import Settings
from slipway.services.network_wirer.routes import RouterOptions


class WirerSettings(Settings, frozen=True, kw_only=True):
    """Read from SLIPWAY_<FIELD>; the router_* ports are the ones libs/caddy starts Caddy with."""

    base_domain: str = "localhost"  # apps answer at <app>.<base_domain>
    router_http_port: int = 8080
    router_https_port: int = 8443
    # Caddy's admin API: a unix socket only its controller may open (never TCP);
    # "" = <caddy_data>/admin/admin.sock
    router_admin_socket: str = ""
    router_listen_host: str = ""  # "" = every interface
    router_public_http_port: int = 0  # 0: the same as router_http_port
    router_public_https_port: int = 0
    router_upstream_timeout: float = 30.0  # H12 after this long without a response
    router_try_duration: float = 5.0  # retry other dynos on connection failure this long
    # Off by default, as Heroku's router: an active check is a request the app never got
    # from a user (its access log and metrics count it). Passive health and retries stay.
    router_health_path: str = ""  # a path turns active HTTP health checks on
    router_health_interval: float = 5.0
    router_tls_issuer: str = "internal"  # "acme" for a real deployment with public DNS
    router_acme_email: str = ""
    router_acme_ca: str = ""
    # The scheduler's id of the Docker host Caddy runs on (its SLIPWAY_LOCAL_HOST_ID): dynos
    # there are dialled on their app network instead of the published port. "": never.
    router_host_id: str = "local"
    caddy_data: str = ""  # default $SLIPWAY_HOME/caddy
    reconcile_interval: float = 5.0
    # Where Caddy writes its access log: a unix socket of ours (never a loopback port);
    # "" = $SLIPWAY_HOME/network-wirer/run/access.sock
    access_log_socket: str = ""
    docker_hosts: str = "unix:///var/run/docker.sock"  # comma-separated Docker endpoints
    manage_networks: bool = True
    # Each app network takes a /24 from here on each host (libs/appnet.py); "": the
    # scope's pool (10.210.0.0/16 in the default scope, contracts/scope.py).
    app_network_pool: str = ""
    isolation: bool = True  # iptables rules (needs root)

    @property
    def address(self) -> RouterAddress:
        return RouterAddress(
            http_port=self.router_http_port,
            https_port=self.router_https_port,
            admin_socket=str(
                Path(self.router_admin_socket or admin_socket_path(self.caddy_dir)).resolve()
            ),
            listen_host=self.router_listen_host,
        )

    @property
    def caddy_dir(self) -> Path:
        """Caddy's state folder, as libs/caddy.py is given it (SLIPWAY_CADDY_DATA)."""
        return Path(self.caddy_data or Path(self.home) / "caddy").resolve()

    @property
    def access_socket(self) -> Path:
        default = Path(self.home) / "network-wirer" / "run" / "access.sock"
        return Path(self.access_log_socket or default).resolve()

    @property
    def storage_dir(self) -> Path:
        return self.caddy_dir / "storage"

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
