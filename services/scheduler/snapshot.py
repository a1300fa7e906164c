"""What the scheduler puts in a platform snapshot: its database (hosts, dynos, add-ons).

The containers themselves are not exported: after a restore the scheduler starts the
current releases' dynos again on the engines it finds.
"""

from __future__ import annotations

from collections.abc import Callable

from slipway.libs.snapshot.export import Database, Sources
from slipway.services.scheduler.settings import SchedulerSettings

LEFT_OUT = (
    "scheduler: running containers (dynos are started again from the current releases)",
    "scheduler: add-on database files (each add-on comes back from its own backups)",
    "scheduler: add-on TLS keys and certificates (issued again when each add-on starts)",
)


def sources(settings: SchedulerSettings) -> Callable[[], Sources]:
    """The scheduler's Sources."""
    return lambda: Sources(
        databases=[Database(settings.db_path(), "scheduler/scheduler.db")], left_out=LEFT_OUT
    )
