"""What one host's backup service puts in a platform snapshot: its catalog.

The catalog (which backups exist, where, sealed to whom) is exported; the backup objects
are not: they stay in the backup storage, which a snapshot assumes survives (it is where
snapshots are stored too), and the restored catalog finds them there again. The backup
service of the host named by SLIPWAY_SNAPSHOT_TAKER also adds the NATS streams'
undelivered messages (libs/snapshot/streams.py): one copy, since every instance would
read the same streams and a restore refuses a file two parts both hold.
"""

from __future__ import annotations

from collections.abc import Callable

from slipway.libs.service import ServiceApp
from slipway.libs.snapshot import streams
from slipway.libs.snapshot.export import Database, Generated, Sources
from slipway.services.backup.settings import BackupSettings


def sources(service: ServiceApp, settings: BackupSettings) -> Callable[[], Sources]:
    """This host's backup service's Sources."""
    path = settings.db_path()

    def declare() -> Sources:
        storage = settings.backup_s3_url or str(settings.storage_root())
        carries_streams = settings.host_id == settings.snapshot_taker
        return Sources(
            databases=[Database(path, f"backup/{path.name}")],
            generated=(
                [Generated(streams.MEMBER, lambda: streams.dump(service.bus.nc))]
                if carries_streams
                else []
            ),
            left_out=(
                f"backup@{settings.host_id}: the backup objects themselves (not exported:"
                f" they stay in the backup storage, {storage},"
                " which must survive for add-ons to come back)",
            ),
        )

    return declare
