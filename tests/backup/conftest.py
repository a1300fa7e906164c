"""Backup tests: the real keyring, gateway, scheduler and backup service, real PostgreSQL.

`backup_stack` (tests/addons/conftest.py) is `addon_stack` plus the backup service
running in this event loop on the same home: the scheduler makes each database's run
folder, the backup service streams its WAL through the socket there.
"""

from __future__ import annotations

from tests.addons.conftest import (  # noqa: F401 - fixtures
    BackupStack,
    addon_stack,
    backup_settings,
    backup_stack,
    postgres_image,
)
from tests.gateway.conftest import (  # noqa: F401 - fixtures
    gateway_service,
    keyring_service,
    slipway_home,
    stack,
)

__all__ = ["BackupStack", "backup_settings"]
