"""A missed backup schedule is a platform alert that reaches the operator's webhook, signed.

The real cause, end to end: the real keyring, gateway, scheduler and backup service, a
real PostgreSQL add-on on the local Docker engine, the real monitor and an HTTPS webhook
receiver on loopback. The backup service's own schedule loop takes the database's first
base backup; then the database goes down (its container stopped through Docker, as an
outage would stop it), so the scheduled capture cannot be taken; the monitor, reading the
backup service's BACKUP_HEALTH, fires `backup_overdue` and its webhooks POST it to the
receiver signed with the webhook's secret. The database comes back, the schedule loop
captures, the alert resolves and the receiver is told so, signed too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiodocker
import msgspec
import pytest

from slipway.contracts.monitor import MONITOR_STATUS, BackupStatus, GetStatus, PlatformStatus
from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus
from slipway.libs.service import ServiceApp
from slipway.services.backup.app import create_service as create_backup
from slipway.services.monitor.app import create_service as create_monitor
from slipway.services.monitor.settings import MonitorSettings
from tests.addons.conftest import AddonStack
from tests.addons.test_postgresql import database_container, provisioned
from tests.backup.conftest import BackupStack, backup_settings
from tests.conftest import assert_eventually
from tests.gateway.conftest import Api, run_in_background, stop, tamper
from tests.webhooks.conftest import (  # noqa: F401 - fixtures
    LOOPBACK_ALLOWED,
    Post,
    Receiver,
    add_operator_webhook,
    alert_posts,
    certificate,
    first_alert_post,
    receiver,
    signed_by,
    webhook_env,
)

pytestmark = [
    pytest.mark.docker,
    pytest.mark.integration,
    pytest.mark.slow,
    # A provision, two captures and a PostgreSQL restart on two shared cores.
    pytest.mark.timeout(300),
]

SECRET = "a-webhook-secret-of-the-operator"
GRACE = 1.0  # seconds after its slot a scheduled backup may still be missing
DAY = 86400.0
WAIT = 90.0  # a database start or a capture, on a busy machine


@pytest.fixture
async def scheduled_backups(addon_stack: AddonStack) -> AsyncIterator[BackupStack]:
    """`backup_stack` whose schedule loop looks twice a second and retries within one."""
    settings = backup_settings(
        addon_stack,
        schedule_check_seconds=0.5,
        schedule_retry_seconds=1.0,
        snapshot_interval=0.0,  # platform snapshots are not under test
    )
    service = create_backup(settings)
    task = await run_in_background(service)
    try:
        yield BackupStack(addons=addon_stack, backup=service, settings=settings)
    finally:
        await stop(service, task)


@contextlib.asynccontextmanager
async def running_monitor(backups: BackupStack, grace: float) -> AsyncIterator[ServiceApp]:
    """The real monitor on the stack's bus: a backup late by more than `grace` is an alert."""
    stack = backups.addons.stack
    settings = msgspec.convert(
        {
            "nats_url": stack.nats.url,
            "home": str(stack.home),
            "monitor_interval": 0.5,
            "monitor_discovery_wait": 0.3,
            "monitor_expect": "backup",
            "monitor_backup_grace": grace,
            "metrics": "off",
            "shutdown_grace": 5.0,
        },
        MonitorSettings,
    )
    service = create_monitor(settings)
    task = await run_in_background(service)
    try:
        yield service
    finally:
        await stop(service, task)


@pytest.fixture
def webhooks_from_env(
    certificate: tuple[Path, Path],  # noqa: F811 - a fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The monitor's webhooks read their settings from the environment, as in production."""
    webhook_env(monkeypatch, certificate[0])


async def _backups(owner: Api, app: str, addon: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await owner.ok("GET", f"/apps/{app}/addons/{addon}/backups")
    return found


async def _streaming(owner: Api, app: str, addon: str) -> bool:
    wal = await owner.ok("GET", f"/apps/{app}/addons/{addon}/wal")
    return bool(wal["streaming"])


async def _database(app_id: str, action: str) -> None:
    """Stop or start the app's database container through the Docker engine."""
    found = await database_container(app_id)
    async with aiodocker.Docker() as docker:
        container = docker.containers.container(found["Id"])
        await (container.stop() if action == "stop" else container.start())


def _backup_status(status: PlatformStatus, addon_id: str) -> BackupStatus:
    found = [b for b in status.backups if b.addon_id == addon_id]
    assert len(found) == 1, status.backups
    return found[0]


async def test_a_database_down_at_its_slot_fires_a_signed_backup_overdue_webhook(
    scheduled_backups: BackupStack,
    webhooks_from_env: None,
    receiver: Receiver,  # noqa: F811 - a fixture
    bus_factory: Callable[[str], Awaitable[Bus]],
) -> None:
    """The database is down when its daily slot passes: no capture, `backup_overdue`
    (critical, platform, the add-on and the slot in the summary) reaches the operator's
    webhook signed; the database back, the schedule captures and the resolve arrives signed."""
    stack = scheduled_backups.addons.stack
    owner = await stack.user("ops@example.com")
    app = await stack.app(owner, "ledger")
    addon = await provisioned(owner, "ledger")
    name = addon["name"]
    key = f"backup_overdue:{addon['id']}"
    gateway = await bus_factory(str(Service.GATEWAY))

    # The first base backup: the schedule loop takes it by itself (no backup yet, and the
    # database's default daily slot is behind it), once the WAL stream is up.
    async def first_backup() -> dict[str, Any]:
        listed = await _backups(owner, "ledger", name)
        assert [(b["id"], b["state"]) for b in listed] == [("b001", "completed")], listed
        return listed[0]

    first = await assert_eventually(first_backup, timeout=WAIT, interval=0.5)
    assert first["kind"] == "scheduled"

    async with running_monitor(scheduled_backups, GRACE):
        created = await add_operator_webhook(gateway, receiver.url(), SECRET)
        assert created.webhook.app_id == ""  # the operator's: platform alerts

        # Before the outage the monitor sees the database backed up: green, nothing sent.
        async def judged(overdue: bool) -> PlatformStatus:
            status = await gateway.call(MONITOR_STATUS, GetStatus())
            backup = _backup_status(status, addon["id"])
            health = "red" if overdue else "green"
            assert (backup.overdue, backup.health) == (overdue, health), backup
            return status

        status = await assert_eventually(lambda: judged(False), timeout=30, interval=0.5)
        assert key not in {a.key for a in status.alerts}
        assert not alert_posts(receiver, key, "fire")

        # The real cause: the database goes down, and the backup service's stream says so.
        await _database(app["id"], "stop")

        async def stream_down() -> None:
            assert not await _streaming(owner, "ledger", name)

        await assert_eventually(stream_down, timeout=30, interval=0.5)

        # The passage of time, the one thing simulated: a day goes by, so the database and
        # its first backup are yesterday's.
        catalog = scheduled_backups.settings.db_path()
        await tamper(
            catalog,
            "UPDATE backups SET started_at = started_at - ?, finished_at = finished_at - ?"
            " WHERE addon_id = ?",
            (DAY, DAY, addon["id"]),
        )
        await tamper(
            catalog,
            "UPDATE databases SET created_at = created_at - ? WHERE addon_id = ?",
            (DAY, addon["id"]),
        )
        # The daily slot, set as a user would: the hour that began most recently (UTC), so
        # it has passed, and yesterday's backup is older than it.
        slot = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
        schedule = await owner.ok(
            "PUT", f"/apps/ledger/addons/{name}/backup-schedule", {"at": f"{slot:%H}:00 UTC"}
        )
        assert (schedule["enabled"], schedule["hour"], schedule["default"]) == (
            True,
            slot.hour,
            False,
        )

        post = await assert_eventually(lambda: first_alert_post(receiver, key, "fire"), timeout=60)
        assert signed_by(SECRET, post)
        assert not signed_by("another secret", post)
        alert = post.json()["data"]
        assert (alert["kind"], alert["severity"], alert["scope"], alert["state"]) == (
            "backup_overdue",
            "critical",
            "platform",
            "firing",
        )
        assert alert["summary"] == (
            f"{name}: no backup since its scheduled capture at {slot:%Y-%m-%d %H:%M} UTC"
        )

        # The backup service did not capture: the database is down (its loop looks twice a
        # second, so it has passed over the due database many times by now).
        listed = await _backups(owner, "ledger", name)
        assert [b["id"] for b in listed] == ["b001"], listed
        assert not await _streaming(owner, "ledger", name)

        status = await judged(True)
        assert status.health == "red"
        assert key in {a.key for a in status.alerts}
        assert alert["summary"] in status.problems

        # The database comes back: the schedule loop takes the slot's capture, the alert goes.
        await _database(app["id"], "start")

        async def captured() -> dict[str, Any]:
            listed = await _backups(owner, "ledger", name)
            done = [b for b in listed if b["id"] == "b002" and b["state"] == "completed"]
            assert done, listed
            return done[0]

        second = await assert_eventually(captured, timeout=WAIT, interval=0.5)
        assert second["kind"] == "scheduled"
        assert dt.datetime.fromisoformat(second["created_at"]) >= slot

        post = await assert_eventually(
            lambda: first_alert_post(receiver, key, "resolve"), timeout=60
        )
        assert signed_by(SECRET, post)
        assert post.json()["data"]["state"] == "resolved"
        assert post.json()["data"]["resolved_at"] is not None
        assert len(alert_posts(receiver, key, "fire")) == 1  # one alert, not one per pass

        status = await assert_eventually(lambda: judged(False), timeout=30, interval=0.5)
        assert key not in {a.key for a in status.alerts}  # the firing ones


async def test_a_database_newer_than_its_slot_is_not_overdue_before_its_first_backup(
    backup_stack: BackupStack,
    bus_factory: Callable[[str], Awaitable[Bus]],
) -> None:
    """A database provisioned after today's slot has passed is not late for it: green, no
    alert, while its first backup is still to come (the default hour-long grace)."""
    stack = backup_stack.addons.stack
    owner = await stack.user("ops@example.com")
    await stack.app(owner, "fresh")
    # backup_stack's schedule loop looked once at its start, before this database was
    # provisioned, and sleeps an hour: no backup is taken during this test.
    addon = await provisioned(owner, "fresh")
    gateway = await bus_factory(str(Service.GATEWAY))
    # A slot two hours ago: past by more than the grace, yet before the database existed.
    slot = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    await owner.ok(
        "PUT", f"/apps/fresh/addons/{addon['name']}/backup-schedule", {"at": f"{slot:%H}:00 UTC"}
    )

    async with running_monitor(backup_stack, grace=3600.0):

        async def judged() -> PlatformStatus:
            status = await gateway.call(MONITOR_STATUS, GetStatus())
            assert _backup_status(status, addon["id"]).last_backup_at is None
            return status

        status = await assert_eventually(judged, timeout=30, interval=0.5)
        backup = _backup_status(status, addon["id"])
        assert (backup.overdue, backup.health) == (False, "green"), backup
        assert f"backup_overdue:{addon['id']}" not in {a.key for a in status.alerts}
        assert await _backups(owner, "fresh", addon["name"]) == []
