"""The monitor's settings, read from `SLIPWAY_*` environment variables.

    SLIPWAY_MONITOR_INTERVAL=15 python -m slipway.services.monitor

Thresholds are the operator's: the defaults follow the issue that asked for them
(disk at 85 %, a backup older than its schedule, a certificate within 14 days).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec

from slipway.libs.service import Settings

Positive = Annotated[float, msgspec.Meta(gt=0)]


class MonitorSettings(Settings, frozen=True, kw_only=True):
    """How often the monitor looks, and what it calls a problem."""

    # Seconds between two passes over the platform (discovery, consumers, hosts, backups).
    monitor_interval: Positive = 15.0
    # How long a discovery request waits for the instances' answers.
    monitor_discovery_wait: Positive = 1.0
    # Disk use (percent) from which a folder is an alert; the gateway refuses new work
    # from `disk_high_water` (90 % by default), so this warns before that happens.
    monitor_disk_alert: Annotated[float, msgspec.Meta(gt=0, le=100)] = 85.0
    # Messages a durable consumer may leave behind before it is an alert.
    monitor_lag_alert: Annotated[int, msgspec.Meta(ge=1)] = 1000
    # A service missing (no instance answering) for this many consecutive passes is
    # down: one missed pass is a restart, which the supervisor does in under a second.
    monitor_down_passes: Annotated[int, msgspec.Meta(ge=1)] = 2
    # A scheduled backup not taken this long after its slot is overdue (the backup service
    # retries a failed capture every few minutes within it).
    monitor_backup_grace: Positive = 3600.0
    # A host the scheduler has not heard from for this long is not answering.
    monitor_host_silence: Positive = 120.0
    # A router's certificate ending within this many days is an alert (critical within 3):
    # the router's CA renews its own with half of their life left (15 days of 30), ACME's
    # 30 days ahead, so one that gets this close is one whose renewal is failing.
    monitor_cert_warn_days: Positive = 14.0
    # The services expected to answer (comma-separated); "": every service of the platform.
    monitor_expect: str = ""
    # Alerts resolved longer ago than this are forgotten.
    monitor_alert_retention_days: Positive = 30.0

    def monitor_dir(self) -> Path:
        return self.state_dir("monitor")

    def db_path(self) -> Path:
        return self.monitor_dir() / "monitor.db"
