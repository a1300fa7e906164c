"""The backup service's settings, read from `SLIPWAY_*` environment variables.

One backup service runs per host that runs databases, as its own user, without the
Docker socket: it reaches each database through the socket in the add-on's run folder.

    SLIPWAY_HOST_ID=host-1 python -m slipway.services.backup
"""

from __future__ import annotations

from pathlib import Path

from slipway.contracts.backup import addon_run_root
from slipway.libs.service import Settings

MIB = 1024 * 1024


class BackupSettings(Settings, frozen=True, kw_only=True):
    """What one host's backup service needs besides what every service has."""

    host_id: str = "local"
    # The add-ons' run folders (contracts/backup.py); "": `<home>/run/addons`.
    addon_run_dir: str = ""
    # Where sealed objects are stored; "": `<home>/backup/objects`.
    backup_storage_dir: str = ""
    # A second folder every object is also written to (an off-site mount): "" for none.
    backup_copy_to: str = ""
    # The open WAL segment's new bytes are sealed and stored at least this often: the
    # recovery point after losing the host is at most this old (plus one round trip).
    wal_flush_seconds: float = 2.0
    # A base backup is cut into sealed parts of this many compressed bytes.
    part_bytes: int = 16 * MIB
    zstd_level: int = 3
    # A database without a completed base backup this recent gets a scheduled one.
    schedule_hours: float = 24.0
    schedule_check_seconds: float = 60.0
    # How long a stopped stream waits before connecting again.
    retry_seconds: float = 3.0

    def run_root(self) -> Path:
        return addon_run_root(self.addon_run_dir, self.home).absolute()

    def storage_root(self) -> Path:
        if self.backup_storage_dir:
            return Path(self.backup_storage_dir)
        return self.state_dir("backup") / "objects"

    def db_path(self) -> Path:
        return self.state_dir("backup") / f"backup-{self.host_id}.db"
