"""What one host's log-shipper puts in a platform snapshot: its database (drains, history)."""

from __future__ import annotations

from collections.abc import Callable

from slipway.libs.snapshot.export import Database, Sources
from slipway.services.log_shipper.settings import LogShipperSettings


def sources(settings: LogShipperSettings) -> Callable[[], Sources]:
    """This host's log-shipper's Sources."""
    path = settings.db_path()
    return lambda: Sources(
        databases=[Database(path, f"log-shipper/{path.name}")],
        left_out=(
            f"log-shipper@{settings.host_id}: lines not yet sealed into a batch (the last"
            f" {settings.batch_seconds:g} s), and live tails",
        ),
    )
