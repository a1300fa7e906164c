"""Backup tests: the real keyring, gateway, scheduler and backup service, real PostgreSQL.

`backup_stack` is tests/addons' `addon_stack` plus the backup service running in this
event loop on the same home: the scheduler makes each database's run folder, the
backup service streams its WAL through the socket there. WAL pieces are stored every
second here (2 s by default), so tests wait less.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from slipway.libs.service import ServiceApp
from slipway.services.backup.app import create_service
from slipway.services.backup.settings import BackupSettings
from tests.addons.conftest import AddonStack, addon_stack, postgres_image  # noqa: F401
from tests.gateway.conftest import (  # noqa: F401
    gateway_service,
    keyring_service,
    run_in_background,
    slipway_home,
    stack,
    stop,
)


@dataclass
class BackupStack:
    addons: AddonStack
    backup: ServiceApp
    settings: BackupSettings

    @property
    def storage(self) -> Path:
        return self.settings.storage_root()


def backup_settings(addons: AddonStack, **overrides: object) -> BackupSettings:
    values: dict[str, object] = {
        "nats_url": addons.stack.nats.url,
        "home": str(addons.stack.home),
        "scope": addons.scope.name,
        "wal_flush_seconds": 1.0,
        "retry_seconds": 1.0,
        "schedule_check_seconds": 3600.0,
        "shutdown_grace": 5.0,
        **overrides,
    }
    return BackupSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def backup_stack(addon_stack: AddonStack) -> AsyncIterator[BackupStack]:  # noqa: F811
    """`addon_stack` plus the backup service."""
    settings = backup_settings(addon_stack)
    service = create_service(settings)
    task = await run_in_background(service)
    try:
        yield BackupStack(addons=addon_stack, backup=service, settings=settings)
    finally:
        await stop(service, task)
