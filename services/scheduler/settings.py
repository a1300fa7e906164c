"""The scheduler's settings (`SLIPWAY_*`): engines, health timings, backoff, drain."""

from __future__ import annotations

from pathlib import Path

from slipway.libs.service import Settings


class SchedulerSettings(Settings, frozen=True, kw_only=True):
    """Every timing is in seconds; tests shorten them, production keeps Heroku's."""

    # The engine registered as host `local` at first start ("" registers none).
    local_engine: str = "unix:///var/run/docker.sock"
    local_host_id: str = "local"
    local_address: str = "127.0.0.1"
    # Heroku R10: a web dyno must bind $PORT within this long of starting.
    boot_timeout: float = 60.0
    # SIGTERM, then SIGKILL after this long (Heroku: 30 s).
    stop_grace: float = 30.0
    # Between a dyno leaving the router (published `down`) and its SIGTERM.
    deregister_delay: float = 1.0
    # Crash restarts wait backoff_base * 2^(restarts), at most backoff_cap ...
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    # ... and the count starts again once a dyno stayed up this long.
    healthy_reset: float = 600.0
    # How often each engine is listed (crashes, lost hosts) and everything reconciled.
    poll_interval: float = 1.0
    reconcile_interval: float = 15.0
    # An engine that has not answered for this long is down; its dynos move.
    host_down_grace: float = 10.0
    engine_timeout: float = 5.0
    # The process types' container port ($PORT); published on a port Docker picks.
    port: int = 5000
    # The release phase (Procfile `release:`) is killed after this long.
    release_phase_timeout: float = 600.0
    log_max_size: str = "10m"
    log_max_file: str = "3"
    tmp_size: str = "64m"
    # Each app network takes a /24 from here on each host (libs/appnet.py); "": the
    # scope's pool (10.210.0.0/16 in the default scope, contracts/scope.py).
    app_network_pool: str = ""
    # `scope` (every Settings has it) picks the containers it labels, lists and adopts.

    def db_path(self) -> Path:
        return self.state_dir("scheduler") / "scheduler.db"
