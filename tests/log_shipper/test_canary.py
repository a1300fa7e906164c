"""Canary: a secret a dyno prints is in plaintext nowhere on disk (sqlite, WAL, JetStream, home).

Nor in the dyno's folder under Docker's data root: dynos have no log driver, their
output goes from the init's socket into log-shipper's memory, then sealed to disk.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from slipway.contracts.base import encode
from slipway.contracts.logs import LogLine, LogLines, lines_subject
from slipway.libs.bus import Bus
from slipway.services.gateway.logs import shippers
from tests.conftest import assert_eventually
from tests.gateway.conftest import Stack
from tests.log_shipper.conftest import Dynos, ShipperFactory

pytestmark = [pytest.mark.docker, pytest.mark.integration]


def files_holding(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def test_a_printed_secret_is_nowhere_on_disk_in_plaintext(
    stack: Stack,
    dynos: Dynos,
    shipper_settings: ShipperFactory,
    start_shipper: Any,
    gateway_bus: Bus,
    tmp_path: Path,
) -> None:
    """The secret is in history (so it was stored) and in no file under the test's folders."""
    running = await start_shipper(shipper_settings())
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "canary")
    app_id, team_id = app["id"], app["team"]["id"]
    secret = f"CANARY-{uuid.uuid4().hex}"
    router_secret = f"ROUTER-{uuid.uuid4().hex}"
    # Spelled backwards in the command, which Docker keeps in the container's config.
    script = f"print('patient record ' + {secret[::-1]!r}[::-1])"
    container = await dynos.run(app_id, team_id, "web.1", script)
    line = LogLine(app_id=app_id, timestamp=1.0, source="router", dyno="router", text=router_secret)
    await stack.bus.live_publish(lines_subject(app_id), encode(LogLines(lines=[line])))

    async def stored() -> None:
        texts = [e.text for e in await shippers.history(gateway_bus, app_id, team_id, 100)]
        assert f"patient record {secret}" in texts
        assert router_secret in texts
        assert running.shipper.history.pending_lines() == 0

    await assert_eventually(stored, timeout=20)
    await running.shipper.history.flush(force=True)
    db = stack.home / "log-shipper" / "log-shipper-h1.db"
    assert db.exists() and db.stat().st_size > 0
    for needle in (secret.encode(), router_secret.encode()):
        assert files_holding(stack.home, needle) == []  # sqlite + WAL of every service
        assert files_holding(stack.nats.data_dir, needle) == []  # the JetStream store
        assert files_holding(tmp_path, needle) == []
    info = await dynos.docker.system.info()
    in_docker = Path(info["DockerRootDir"]) / "containers" / container
    assert in_docker.is_dir()
    assert files_holding(in_docker, secret.encode()) == []
