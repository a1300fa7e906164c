"""A real keyring ServiceApp in this event loop, against the test's real nats-server.

    async def test_something(keyring: RunningKeyring, bus_factory: BusFactory) -> None:
        gateway = await bus_factory("gateway")
        key = await gateway.call(DATAKEY_GENERATE, GenerateDataKey(...))

`keyring.restart()` stops it and starts a new one on the same state; `start_keyring`
runs one with any settings (to see it refuse to start, for instance).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from slipway.services.keyring.app import create_service
from slipway.services.keyring.handlers import VAULT
from slipway.services.keyring.settings import KeyringSettings
from slipway.services.keyring.store import AuditRecord, KeyringStore

BusFactory = Callable[[str], Awaitable[Bus]]


@dataclass
class RunningKeyring:
    """One keyring running in the test's event loop."""

    settings: KeyringSettings
    app: ServiceApp
    task: asyncio.Task[None]

    @property
    def store(self) -> KeyringStore:
        return self.app[VAULT].store

    async def audit(self, team_id: str | None = None) -> list[AuditRecord]:
        return await self.store.audit(team_id)

    async def stop(self) -> None:
        self.app.stop()
        await asyncio.wait_for(self.task, 30)

    async def restart(self) -> None:
        """Stop, then start a fresh ServiceApp on the same settings (same key, same database)."""
        await self.stop()
        started = await start_keyring(self.settings)
        self.app, self.task = started.app, started.task


async def start_keyring(settings: KeyringSettings, *, leased: bool = True) -> RunningKeyring:
    """Run a keyring until it serves; re-raise its start-up error if it stops first.

    `leased=False`: it serves beside the leader, as a paused leader that lost its lease
    might for a moment (what the store's own guards are for).
    """
    app = create_service(settings)
    app.leased = leased
    task = asyncio.create_task(app.run(install_signals=False))
    started = asyncio.create_task(app.started.wait())
    await asyncio.wait({task, started}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if not app.started.is_set():
        started.cancel()
        if task.done():
            task.result()
        raise TimeoutError("the keyring did not start")
    return RunningKeyring(settings, app, task)


def settings_for(nats: NatsServer, home: Path) -> KeyringSettings:
    """Keyring settings for a test: its own home, a short shutdown."""
    return KeyringSettings(nats_url=nats.url, home=str(home), shutdown_grace=5.0)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """The test's SLIPWAY_HOME."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
async def keyring(nats_server: NatsServer, home: Path) -> AsyncIterator[RunningKeyring]:
    """The real keyring, with its master key and database under `home`."""
    running = await start_keyring(settings_for(nats_server, home))
    yield running
    if not running.task.done():
        await running.stop()


@pytest.fixture
def team() -> str:
    """A fresh team id."""
    return f"team-{uuid.uuid4().hex[:12]}"
