"""The backup service's metrics: how old each database's last good backup is.

`slipway_backup_last_success_timestamp_seconds{addon_id}` (when the last completed
backup finished) and `slipway_backup_age_seconds{addon_id}` (now minus that; for a
database never backed up, its age since it was created, so it is not silently absent).
Read from the catalog at each scrape; a destroyed database's series go with it. The
label is the add-on's id: bounded by the databases there are, never their names.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Gauge

from slipway.libs.storage import Database

# Completed backups of each database the catalog still keeps, or its creation time.
LATEST = (
    "SELECT d.addon_id, d.created_at, MAX(b.finished_at) AS last_success"
    " FROM databases d LEFT JOIN backups b"
    " ON b.addon_id = d.addon_id AND b.state = 'completed'"
    " WHERE d.state != 'destroyed' GROUP BY d.addon_id"
)


class BackupAges:
    """The two gauges, refreshed from the catalog."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.last_success = Gauge(
            "slipway_backup_last_success_timestamp_seconds",
            "When the database's last completed backup finished, in seconds since the epoch",
            ["addon_id"],
            registry=registry,
        )
        self.age = Gauge(
            "slipway_backup_age_seconds",
            "Seconds since the database's last completed backup (since its creation if none)",
            ["addon_id"],
            registry=registry,
        )

    async def refresh(self, db: Database) -> None:
        """Read the catalog and replace every series (destroyed databases drop out)."""
        rows = await db.fetchall(LATEST)
        now = time.time()
        self.last_success.clear()
        self.age.clear()
        for row in rows:
            addon_id, created_at, last = row["addon_id"], row["created_at"], row["last_success"]
            if last is not None:
                self.last_success.labels(addon_id).set(last)
            self.age.labels(addon_id).set(max(now - (last if last is not None else created_at), 0))
