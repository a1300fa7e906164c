"""Add-on tests: the real keyring and gateway (tests/gateway) plus the real scheduler service.

`addon_stack` is `stack` with the scheduler running in this event loop, in the test's own
scope, on the local Docker engine; every container, network and volume of that scope is
removed afterwards. PostgreSQL runs from `slipway/addon-postgresql:bookworm`
(scripts/build-addons).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from slipway.contracts.addons import LABEL_ADDON
from slipway.contracts.scope import Scope
from slipway.libs.service import ServiceApp
from slipway.services.backup.app import create_service as create_backup
from slipway.services.backup.settings import BackupSettings
from slipway.services.scheduler.addons import image
from slipway.services.scheduler.app import create_service
from slipway.services.scheduler.settings import SchedulerSettings
from tests.conftest import remove_scope_objects
from tests.gateway.conftest import (  # noqa: F401
    Stack,
    gateway_service,
    keyring_service,
    run_in_background,
    slipway_home,
    stack,
    stop,
)


@dataclass
class AddonStack:
    """The gateway stack and the scheduler of one test."""

    stack: Stack
    scheduler: ServiceApp
    scope: Scope


def _remove_volumes(scope: Scope) -> None:
    names = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", f"label={scope.managed_label}",
         "--filter", f"label={LABEL_ADDON}"],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    if names:
        subprocess.run(["docker", "volume", "rm", "-f", *names], capture_output=True, check=False)


@pytest.fixture(scope="session")
def postgres_image() -> str:
    """The add-on image, which scripts/build-addons makes (scripts/test runs it first)."""
    found = subprocess.run(["docker", "image", "inspect", image()], capture_output=True)
    if found.returncode != 0:
        pytest.fail(f"{image()} is missing: run scripts/build-addons")
    return image()


@contextlib.asynccontextmanager
async def running_scheduler(
    stack: Stack,  # noqa: F811 - the fixture imported above
    scope: Scope,
    **settings: Any,
) -> AsyncIterator[AddonStack]:
    """The scheduler service on the local engine in `scope`, with `settings` on top."""
    config = SchedulerSettings(
        nats_url=stack.nats.url,
        home=str(stack.home),
        scope=scope.name,
        poll_interval=0.5,
        reconcile_interval=5.0,
        host_down_grace=2.0,
        shutdown_grace=5.0,
        **settings,
    )
    scheduler = create_service(config)
    task = await run_in_background(scheduler)
    try:
        yield AddonStack(stack=stack, scheduler=scheduler, scope=scope)
    finally:
        await stop(scheduler, task)
        await asyncio.to_thread(remove_scope_objects, scope)
        await asyncio.to_thread(_remove_volumes, scope)


@pytest.fixture
async def addon_stack(
    stack: Stack,  # noqa: F811 - the fixture imported above
    scope: Scope,
    postgres_image: str,
) -> AsyncIterator[AddonStack]:
    """`stack` plus the scheduler service on the local engine, in this test's scope."""
    async with running_scheduler(stack, scope) as running:
        yield running


@dataclass
class BackupStack:
    """`addon_stack` plus the backup service (services/backup) running in this event loop."""

    addons: AddonStack
    backup: ServiceApp
    settings: BackupSettings

    @property
    def storage(self) -> Path:
        return self.settings.storage_root()


def backup_settings(addons: AddonStack, **overrides: Any) -> BackupSettings:
    """The backup service of a test: WAL pieces every second (2 s by default), no schedule."""
    values: dict[str, Any] = {
        "nats_url": addons.stack.nats.url,
        "home": str(addons.stack.home),
        "scope": addons.scope.name,
        "wal_flush_seconds": 1.0,
        "retry_seconds": 1.0,
        "schedule_check_seconds": 3600.0,
        "shutdown_grace": 5.0,
        **overrides,
    }
    return BackupSettings(**values)


@pytest.fixture
async def backup_stack(addon_stack: AddonStack) -> AsyncIterator[BackupStack]:
    """`addon_stack` plus the backup service: destroys take their final backup through it."""
    settings = backup_settings(addon_stack)
    service = create_backup(settings)
    task = await run_in_background(service)
    try:
        yield BackupStack(addons=addon_stack, backup=service, settings=settings)
    finally:
        await stop(service, task)
