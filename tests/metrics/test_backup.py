"""The backup service's age of each database's last good backup, after a real capture."""

from __future__ import annotations

import time

import pytest

from slipway.libs.metrics import socket_path
from tests.addons.test_postgresql import provisioned
from tests.backup.conftest import BackupStack
from tests.metrics.scrape import samples, scrape, value

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]

LAST = "slipway_backup_last_success_timestamp_seconds"
AGE = "slipway_backup_age_seconds"


async def test_a_capture_sets_the_last_success_and_resets_the_age(
    backup_stack: BackupStack,
) -> None:
    """After a capture, the database's last success is that backup's end, labelled by id."""
    stack = backup_stack.addons.stack
    sock = socket_path(stack.home, "backup", backup_stack.settings.instance)
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "aged")
    addon = await provisioned(alice, "aged")
    before = await samples(sock)
    assert value(before, AGE, addon_id=addon["id"]) >= 0
    started = time.time()
    backup = await alice.ok("POST", f"/apps/aged/addons/{addon['name']}/backups", status=201)
    assert backup["state"] == "completed", backup
    after = await samples(sock)
    assert value(after, LAST, addon_id=addon["id"]) >= started
    last, age = value(after, LAST, addon_id=addon["id"]), value(after, AGE, addon_id=addon["id"])
    assert 0 <= age <= time.time() - last + 1e-3  # measured from that backup, not before it
    text, _ = await scrape(sock)
    assert addon["name"] not in text  # the label is the add-on's id, never its name
