"""What one host's backup service puts in a platform snapshot: its catalog.

The catalog (which backups exist, where, sealed to whom) is exported; the backup objects
are not: they stay in the backup storage, which a snapshot assumes survives (it is where
snapshots are stored too), and the restored catalog finds them there again. The backup
service of the snapshot's taker also adds the NATS streams' undelivered messages.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable

from slipway.libs.service import ServiceApp
from slipway.libs.snapshot.export import Database, Generated, Sources
from slipway.services.backup.settings import BackupSettings


def sources(service: ServiceApp, settings: BackupSettings) -> Callable[[], Sources]:
    """This host's backup service's Sources."""
    path = settings.db_path()

    def declare() -> Sources:
        storage = settings.backup_s3_url or str(settings.storage_root())
        return Sources(
            databases=[Database(path, f"backup/{path.name}")],
            generated=_streams(service),
            left_out=(
                f"backup@{settings.host_id}: the backup objects themselves (not exported:"
                f" they stay in the backup storage, {storage},"
                " which must survive for add-ons to come back)",
            ),
        )

    return declare


def _streams(service: ServiceApp) -> list[Generated]:
    """nats/streams.jsonl, made by libs/snapshot/streams.py's `dump(nc)` once it exists."""
    try:
        module = importlib.import_module("slipway.libs.snapshot.streams")
    except ImportError:
        return []  # before STREAMS' module exists, the part holds no streams
    dump: Callable[..., Awaitable[bytes]] = module.dump
    return [Generated("nats/streams.jsonl", lambda: dump(service.bus.nc))]  # <- STREAMS plugs in
