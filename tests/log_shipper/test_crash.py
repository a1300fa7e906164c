"""100,000 lines from a dyno reach history, in order, none lost or doubled, across a kill -9.

Dyno output has no replay: what log-shipper held unsealed when killed is gone.
So the kill lands once everything sent so far is stored (the dyno waits at a
gate the test opens afterwards); the 70,000 lines printed while no log-shipper
runs wait in the dyno's relay ring (1 MiB) and reach the next log-shipper.
Lines beyond the ring are dropped and announced (test_receiver.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from slipway.services.gateway.logs.shippers import history
from tests.conftest import assert_eventually
from tests.log_shipper.conftest import Dynos, new_id

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]

TOTAL = 100_000
CHUNKS = 10
BEFORE_KILL = 3  # chunks printed and stored before the kill
# Printed in chunks; after the third the dyno waits for the gate (the kill happened), then
# says when it printed the rest, and stays up (an exiting relay flushes for 2 s only).
SCRIPT = f"""
import os, signal, sys, time
size = {TOTAL // CHUNKS}
for c in range({CHUNKS}):
    if c == {BEFORE_KILL}:
        while not os.path.exists("/gate/open"):
            time.sleep(0.05)
    sys.stdout.write("".join(f"line {{c * size + i:06d}}\\n" for i in range(size)))
    sys.stdout.flush()
open("/gate/printed", "w").close()
signal.pause()  # stays up until the test removes it
"""


def start_process(nats: NatsServer, home: Path, managed: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SLIPWAY_NATS_URL": nats.url,
        "SLIPWAY_HOME": str(home),
        "SLIPWAY_HOST_ID": "h1",
        "SLIPWAY_MANAGED_VALUE": managed,
        "SLIPWAY_BATCH_SECONDS": "0.2",
        "SLIPWAY_METRICS_INTERVAL": "0",
        "SLIPWAY_SHUTDOWN_GRACE": "5",
        "SLIPWAY_LOG_FORMAT": "json",
    }
    out = home / f"log-shipper-{len(list(home.glob('*.out')))}.out"
    with out.open("wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "slipway.services.log_shipper"], env=env, stdout=log, stderr=log
        )


async def newest_line(bus: Bus, app_id: str, team_id: str) -> str:
    found = await history(bus, app_id, team_id, 1)
    return found[-1].text if found else ""


def stored_lines(db: Path, app_id: str) -> int:
    if not db.exists():
        return 0  # the log-shipper process is still starting
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT sum(lines) FROM batches WHERE app_id = ?", (app_id,)).fetchone()
        return int(row[0] or 0)
    finally:
        conn.close()


async def test_no_line_is_lost_or_doubled_across_a_kill_9(
    nats_server: NatsServer,
    slipway_home: Path,
    keyring_service: ServiceApp,
    bus_factory: Callable[[str], Awaitable[Bus]],
    dynos: Dynos,
    managed: str,
    tmp_path: Path,
) -> None:
    """kill -9 while the dyno runs, it keeps printing, restart: history holds each line once."""
    bus = await bus_factory("gateway")
    app_id, team_id = new_id(), new_id()
    gate = tmp_path / "gate"
    gate.mkdir()
    gate.chmod(0o777)  # the dyno (uid 10000) says when it printed everything
    db = slipway_home / "log-shipper" / "log-shipper-h1.db"
    first = start_process(nats_server, slipway_home, managed)
    second: subprocess.Popen[bytes] | None = None
    try:
        await dynos.run(app_id, team_id, "web.1", SCRIPT, binds=(f"{gate}:/gate",))

        def before_kill_stored() -> None:
            assert stored_lines(db, app_id) == BEFORE_KILL * TOTAL // CHUNKS

        await assert_eventually(before_kill_stored, timeout=60, interval=0.1)
        assert await newest_line(bus, app_id, team_id) == "line 029999"
        first.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(first.wait) == -signal.SIGKILL
        (gate / "open").touch()

        def printed() -> None:
            assert (gate / "printed").exists()

        await assert_eventually(printed, timeout=30)  # the rest waits in the dyno's ring
        second = start_process(nats_server, slipway_home, managed)

        def all_stored() -> None:
            assert stored_lines(db, app_id) == TOTAL

        await assert_eventually(all_stored, timeout=60, interval=0.2)
        found = await history(bus, app_id, team_id, TOTAL + 10)
        assert [e.text for e in found] == [f"line {i:06d}" for i in range(TOTAL)]
        second.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(second.wait) == 0
        assert stored_lines(db, app_id) == TOTAL
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
