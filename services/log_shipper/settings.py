"""Log-shipper's settings, read from `SLIPWAY_*` environment variables.

One log-shipper runs per Docker host, as its own user, without the Docker socket:

    SLIPWAY_HOST_ID=host-1 python -m slipway.services.log_shipper
"""

from __future__ import annotations

from pathlib import Path

from slipway.contracts.dynoinit import host_log_dir
from slipway.libs.service import Settings

DAY = 86400.0
MIB = 1024 * 1024


class LogShipperSettings(Settings, frozen=True, kw_only=True):
    """What one host's log-shipper needs besides what every service has."""

    # Unused: the log-shipper holds no Docker client (its dynos are the scheduler's word,
    # their metrics the kernel's). Kept so that an environment still setting it starts.
    docker_url: str = ""
    host_id: str = "local"
    # Unused since dynos are learnt from the scheduler, not from their labels; kept so
    # that an environment still setting it starts.
    managed_value: str = ""
    # Seconds a connection from a container the scheduler has not announced waits (unread)
    # for its DYNO_CHANGED before it is refused.
    identify_wait: float = 5.0
    # Where dyno inits find this log-shipper: `<dyno_log_dir>/<host_id>/logs.sock`; the
    # scheduler mounts that folder read-only at /.slipway/log. "": `<home>/run/dynolog`.
    dyno_log_dir: str = ""
    # A batch is sealed and stored when it holds this many lines or is this old.
    batch_lines: int = 20_000
    batch_seconds: float = 1.0
    # Lines waiting to be sealed before dyno connections stop being read (backpressure:
    # the dyno init's ring fills, then it drops and counts lines).
    pending_max_lines: int = 200_000
    # New lines are published to live tails at most this often.
    tail_interval: float = 0.05
    retention_days: float = 7.0
    # Oldest batches go first once an app's stored history passes this size.
    max_bytes_per_app: int = 256 * MIB
    sweep_interval: float = 60.0
    # Lines of a team whose history is sealed to its own key that stay readable, in memory only.
    sealed_recent_lines: int = 1500
    # Dyno metrics: seconds between samples (0 turns them off).
    metrics_interval: float = 20.0
    # Metric series (series.py): seconds between writes of the minutes still changing
    # (what a kill -9 may lose).
    series_flush_interval: float = 10.0
    # Drains: extra CA bundle to trust (a PEM file), lines buffered per drain, backoff cap.
    drain_ca_file: str = ""
    drain_buffer_lines: int = 10_000
    drain_backoff_max: float = 30.0
    drain_batch_lines: int = 500
    # The egress guard (libs/egress.py) for drains: CIDRs allowed despite the default deny
    # (SLIPWAY_EGRESS_ALLOW, e.g. an on-premise syslog), more to refuse (SLIPWAY_EGRESS_DENY).
    egress_allow: str = ""
    egress_deny: str = ""

    def socket_folder(self) -> Path:
        """The folder of this host's dyno output socket."""
        return host_log_dir(self.dyno_log_dir, self.home, self.host_id)

    def db_path(self) -> Path:
        return self.state_dir("log-shipper") / f"log-shipper-{self.host_id}.db"
