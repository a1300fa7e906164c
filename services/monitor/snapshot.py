"""What the monitor puts in a platform snapshot: its alert rules and alerts, its webhooks.

Both databases are exported through SQLite's backup API (a consistent copy of a live
database). The rest of what the monitor knows is looked at again after a restore: the
status, the disks, who answers. Webhook records stay sealed as they are stored (the
keyring's snapshot carries the keys that open them).
"""

from __future__ import annotations

from collections.abc import Callable

from slipway.libs.snapshot.export import Database, Sources
from slipway.services.monitor.settings import MonitorSettings

WEBHOOKS_DB = "webhooks.db"  # webhooks.py opens it in the state folder
LEFT_OUT = ("monitor: the platform's status and disk readings (looked at again)",)


def sources(settings: MonitorSettings) -> Callable[[], Sources]:
    """The monitor's Sources: its two databases."""
    state = settings.monitor_dir()
    return lambda: Sources(
        databases=[
            Database(settings.db_path(), f"monitor/{settings.db_path().name}"),
            Database(state / WEBHOOKS_DB, f"monitor/{WEBHOOKS_DB}"),
        ],
        left_out=LEFT_OUT,
    )
