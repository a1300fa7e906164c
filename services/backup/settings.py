"""The backup service's settings, read from `SLIPWAY_*` environment variables.

One backup service runs per host that runs databases, as its own user, without the
Docker socket: it reaches each database through the socket in the add-on's run folder.

    SLIPWAY_HOST_ID=host-1 python -m slipway.services.backup
"""

from __future__ import annotations

from pathlib import Path

from slipway.contracts.backup import addon_run_root
from slipway.contracts.snapshot import EXPORT_TIMEOUT
from slipway.libs.service import Settings

MIB = 1024 * 1024


class BackupSettings(Settings, frozen=True, kw_only=True):
    """What one host's backup service needs besides what every service has."""

    host_id: str = "local"
    # The add-ons' run folders (contracts/backup.py); "": `<home>/run/addons`.
    addon_run_dir: str = ""
    # Where sealed objects are stored; "": `<home>/backup/objects`.
    backup_storage_dir: str = ""
    # A second destination every object is also written to: a folder (an off-site mount)
    # or an `s3://bucket/prefix` URL; "" for none. Restores read it when the primary lost
    # an object.
    backup_copy_to: str = ""
    # An S3-compatible bucket as the primary destination, instead of the folder above:
    # `s3://bucket/prefix`; "": the folder. services/backup/s3.py; README: Backups.
    backup_s3_url: str = ""
    # How to reach the bucket(s) above, primary and copy alike. Endpoint "": AWS itself;
    # else e.g. `https://minio.internal:9000` (no credentials in it: they are refused).
    backup_s3_endpoint: str = ""
    backup_s3_region: str = "us-east-1"
    # Path-style URLs (`endpoint/bucket/key`), which most on-prem servers want.
    backup_s3_path_style: bool = False
    # A CA bundle trusted for the endpoint instead of the system's (an on-prem CA).
    backup_s3_ca_file: str = ""
    # An INI file like ~/.aws/credentials (`[default]` aws_access_key_id, ...); "": the
    # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN) variables.
    backup_s3_credentials_file: str = ""
    # Objects larger than this go up as a multipart upload, in parts of the next size.
    backup_s3_multipart_bytes: int = 64 * MIB
    backup_s3_part_bytes: int = 16 * MIB
    # Compare the ETag the server answers with the MD5 of what was sent; turn off only
    # for a server whose ETags are not MD5s (some encrypt-at-rest modes).
    backup_s3_check_etag: bool = True
    # The open WAL segment's new bytes are sealed and stored at least this often: the
    # recovery point after losing the host is at most this old (plus one round trip).
    wal_flush_seconds: float = 2.0
    # A base backup is cut into sealed parts of this many compressed bytes.
    part_bytes: int = 16 * MIB
    zstd_level: int = 3
    # How often the schedule loop looks for due captures (and expiry, below).
    schedule_check_seconds: float = 60.0
    # A scheduled capture that failed is tried again after this long (same day's slot).
    schedule_retry_seconds: float = 600.0
    # Expiry (services/backup/retention.py) runs this often from the schedule loop.
    retention_check_seconds: float = 3600.0
    # A destroyed add-on's final backup stays this many days, then all of it goes.
    retention_final_days: float = 30.0
    # The length of a retention "day": shorter only in tests (a week is seven of them).
    retention_day_seconds: float = 86400.0
    # How long a stopped stream waits before connecting again.
    retry_seconds: float = 3.0
    # Each database's newest backup is verified (restored into a throwaway database and
    # checked: services/backup/verify.py) when none of its backups was for this many days.
    verify_days: float = 7.0
    # How long a throwaway database may take to recover before the verification fails.
    verify_timeout: float = 1800.0
    # ---- platform snapshots (services/backup/snapshots.py) ----
    # The age recipients (`age1...`, separated by spaces or commas) of the operator's
    # offline recovery key: the same variable the keyring reads. Snapshots are sealed to
    # them; without any, a snapshot is refused (nobody could ever open it).
    recovery_recipients: str = ""
    # Seconds between scheduled snapshots; 0: none (only `slipway admin:snapshot`).
    snapshot_interval: float = 3600.0
    # The completed snapshots kept; older ones (and failed ones older than those) go.
    snapshot_keep: int = 48
    # The host whose backup service takes the scheduled snapshots: one instance per
    # platform takes them, and a fixed name needs no election ("local": the only host
    # of a one-machine platform). On-demand snapshots are taken by whichever instance
    # the request reaches.
    snapshot_taker: str = "local"
    # How long one service may take to export its state (seconds).
    snapshot_export_timeout: float = EXPORT_TIMEOUT
    # Tests only: the services asked to export ("gateway,scheduler"); "": every one in
    # contracts/snapshot.EXPORTERS. A snapshot of fewer services restores less.
    snapshot_exporters: str = ""

    def run_root(self) -> Path:
        return addon_run_root(self.addon_run_dir, self.home).absolute()

    def storage_root(self) -> Path:
        if self.backup_storage_dir:
            return Path(self.backup_storage_dir)
        return self.state_dir("backup") / "objects"

    def db_path(self) -> Path:
        return self.state_dir("backup") / f"backup-{self.host_id}.db"
