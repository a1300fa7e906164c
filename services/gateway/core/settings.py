"""The gateway's settings, read from `SLIPWAY_*` environment variables.

SLIPWAY_API_PORT=5100 SLIPWAY_HOME=var python -m slipway.services.gateway
"""

from __future__ import annotations

from pathlib import Path

from slipway.libs.service import Settings

KIB = 1024
MIB = 1024 * KIB
DAY = 86400


class GatewaySettings(Settings, frozen=True, kw_only=True):
    """What the customer's door needs besides what every service has."""

    api_host: str = "127.0.0.1"
    api_port: int = 5100  # 0 picks a free port (tests); the bound URL is then in Gateway.api_url
    # The URL customers reach the API at, when it differs from http://api_host:api_port.
    api_url: str = ""
    # Apps answer at http://<app>.<apps_domain>:<router_port>/ (the router, HAProxy).
    apps_domain: str = "localhost"
    router_port: int = 8080
    admin_email: str = "admin@slipway.local"
    max_body_bytes: int = 1 * MIB
    config_value_max_bytes: int = 32 * KIB
    config_total_max_bytes: int = 256 * KIB
    config_max_keys: int = 500
    token_ttl: int = 30 * DAY  # when a client asks for no expiry
    token_max_ttl: int = 365 * DAY
    bootstrap_token_ttl: int = 90 * DAY
    # API requests per token an hour (a bucket refilled continuously, as Heroku's 4,500).
    api_rate_limit: int = 4500
    # False only in tests that prove events survive a crash between commit and publish.
    outbox_relay: bool = True
    # Seconds between outbox and checkpoint sweeps when nothing wakes them earlier.
    sweep_interval: float = 5.0
    # The egress guard (libs/egress.py) checking customer URLs (sources, drains): CIDRs
    # allowed despite the default deny (SLIPWAY_EGRESS_ALLOW), more to refuse (_DENY).
    egress_allow: str = ""
    egress_deny: str = ""
    # git pushes and build sources (services/gateway/git/git.py, sources.py, builds.py).
    git_push_max_bytes: int = 200 * MIB
    source_max_bytes: int = 200 * MIB
    # What a live stream (build output, log tail) holds for a slow client before it drops
    # the oldest lines and shows `[... N lines dropped]` (services/gateway/logs/backlog.py).
    live_backlog_lines: int = 5000
    live_backlog_bytes: int = 2 * MIB
    # Sources a user may hold not yet built from (nor expired): more answers 429.
    source_pending_max: int = 10
    source_ttl: float = 3600.0  # an unused or unfinished source is deleted after this
    build_timeout: float = 1800.0  # a push waits this long for its build to end
    release_wait: float = 60.0  # and then this long for the build's release to appear
    # Log history kept for an app without its own retention; the same SLIPWAY_RETENTION_DAYS
    # the log-shippers read, so both name one default.
    retention_days: float = 7.0
    # One-off dynos' rendezvous door (services/gateway/oneoff/rendezvous.py): TLS on this address;
    # port 0 picks a free one (the attach_url names it); rendezvous=False leaves only the
    # websocket. `rendezvous_public_host` is the name put in attach_urls when clients reach
    # the listener by another name than its address (a wildcard bind, a proxy).
    rendezvous: bool = True
    rendezvous_host: str = "127.0.0.1"
    rendezvous_port: int = 0
    rendezvous_public_host: str = ""

    # Dashboard sessions (services/gateway/web/sessions.py): signed out after this many
    # seconds without a request, and after `web_session_ttl` whatever happens; a one-time
    # login link (`slipway login --web`) works once within `web_login_link_ttl`.
    web_idle_timeout: float = 900.0
    web_session_ttl: float = 12 * 3600.0
    web_login_link_ttl: float = 600.0

    def db_path(self) -> Path:
        return self.state_dir("gateway") / "gateway.db"

    def rendezvous_tls_dir(self) -> Path:
        return self.state_dir("gateway") / "rendezvous-tls"

    def bootstrap_path(self) -> Path:
        return self.state_dir("gateway") / "bootstrap.json"
