"""The backup service killed with -9 in the middle of an upload, and a hole in the WAL.

The service runs as its own process here (`python -m slipway.services.backup`), so it
can die for real: what it had half written must never be listed, and the next capture
must complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.addons.conftest import AddonStack
from tests.addons.test_postgresql import provisioned
from tests.backup.test_backups import sql
from tests.conftest import assert_eventually

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]


def start_backup(addons: AddonStack) -> subprocess.Popen[bytes]:
    home = addons.stack.home
    env = {
        **os.environ,
        "SLIPWAY_NATS_URL": addons.stack.nats.url,
        "SLIPWAY_HOME": str(home),
        "SLIPWAY_SCOPE": addons.scope.name,
        "SLIPWAY_PART_BYTES": str(256 * 1024),  # many small parts: the kill lands between them
        "SLIPWAY_WAL_FLUSH_SECONDS": "1",
        "SLIPWAY_SCHEDULE_CHECK_SECONDS": "3600",
        "SLIPWAY_SHUTDOWN_GRACE": "5",
        "SLIPWAY_LOG_FORMAT": "json",
    }
    out = home / f"backup-{len(list(home.glob('backup-*.out')))}.out"
    with out.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "slipway.services.backup"], env=env, stdout=log, stderr=log
        )


def parts(storage: Path, addon_id: str, num: int) -> list[Path]:
    folder = storage / addon_id / "base" / f"{num:06d}"
    return sorted(folder.iterdir()) if folder.is_dir() else []


async def test_kill_9_mid_upload_lists_nothing_half_written_and_the_next_capture_completes(
    addon_stack: AddonStack,
) -> None:
    """Parts stored, then kill -9: b001 is failed with no object; they are removed; b002 works."""
    stack = addon_stack.stack
    storage = stack.home / "backup" / "objects"
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "crash")
    process = start_backup(addon_stack)
    try:
        addon = await provisioned(alice, "crash")
        # About 40 MB of poorly compressible rows: a capture takes a few seconds here.
        await sql(
            addon_stack,
            alice,
            app,
            "CREATE TABLE big AS SELECT g, md5(g::text) || md5((g * 7)::text) AS v"
            " FROM generate_series(1, 400000) AS g",
        )
        capture = asyncio.create_task(
            alice.request("POST", f"/apps/crash/addons/{addon['name']}/backups")
        )

        async def uploading() -> None:
            assert len(parts(storage, addon["id"], 1)) >= 3

        await assert_eventually(uploading, timeout=60, interval=0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        capture.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await capture
        assert parts(storage, addon["id"], 1), "the kill came after the capture finished"

        process = start_backup(addon_stack)

        async def recovered() -> list[dict[str, object]]:
            listed: list[dict[str, object]] = await alice.ok(
                "GET", f"/apps/crash/addons/{addon['name']}/backups"
            )
            assert [(b["id"], b["state"]) for b in listed] == [("b001", "failed")], listed
            return listed

        listed = await assert_eventually(recovered, timeout=60, interval=0.5)
        assert "interrupted" in str(listed[0]["error"])
        assert parts(storage, addon["id"], 1) == []  # the orphans are gone from storage
        objects = await alice.request(
            "GET", f"/apps/crash/addons/{addon['name']}/backups/b001/objects"
        )
        assert objects.status >= 400, objects.body

        second = await alice.ok("POST", f"/apps/crash/addons/{addon['name']}/backups", status=201)
        assert (second["id"], second["state"]) == ("b002", "completed")
        assert len(parts(storage, addon["id"], 2)) > 3
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=20)
