"""Dyno output on the log-shipper's socket: a dyno cannot speak as another, nor flood memory.

Real log-shipper (in-process), real keyring and nats-server, real containers of
the run stack with the host's socket folder mounted read-only, as dynos get it.
The attackers are dynos of this installation: they may write what they like to
the socket, and only ever into their own log.
"""

from __future__ import annotations

from typing import Any

import pytest

from slipway.contracts import dynoinit
from slipway.libs.bus import Bus
from slipway.services.gateway.logs.shippers import history
from tests.conftest import assert_eventually
from tests.gateway import conftest as gateway_fixtures
from tests.log_shipper import conftest as shipper_fixtures
from tests.log_shipper.conftest import Dynos, RunningShipper, ShipperFactory, new_id

pytestmark = [pytest.mark.docker, pytest.mark.integration]

slipway_home = gateway_fixtures.slipway_home
keyring_service = gateway_fixtures.keyring_service
managed = shipper_fixtures.managed
dynos = shipper_fixtures.dynos
shipper_settings = shipper_fixtures.shipper_settings
start_shipper = shipper_fixtures.start_shipper
gateway_bus = shipper_fixtures.gateway_bus

HELPERS = """
import socket, time, dynoinit
def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(dynoinit.LOG_SOCKET)
    return s
def line(text):
    return dynoinit.encode_line(dynoinit.KIND_STDOUT, time.time_ns(), text.encode())
"""


async def texts(bus: Bus, app_id: str, team_id: str) -> list[str]:
    return [e.text for e in await history(bus, app_id, team_id, 1000)]


async def test_a_dyno_cannot_write_into_another_dynos_log(
    dynos: Dynos, shipper_settings: ShipperFactory, start_shipper: Any, gateway_bus: Bus
) -> None:
    """Whatever names the victim in the stream, the attacker's lines land in its own log only."""
    await start_shipper(shipper_settings())
    victim_app, victim_team = new_id(), new_id()
    app_id, team_id = new_id(), new_id()
    # The victim introduces itself by its container id too (from its own cgroup): a receiver
    # that believed the stream would file both under the victim, and the test would say so.
    victim_script = HELPERS + (
        "me = open('/proc/self/cgroup').readline().strip().rsplit('/', 1)[1]\n"
        "s = connect()\n"
        "s.sendall(dynoinit.LOG_MAGIC + line(me) + line('victim here'))\n"
        "s.close()\n"
    )
    victim = await dynos.raw(dynos.labels(victim_app, victim_team, "web.1"), victim_script)

    async def victim_up() -> None:
        assert "victim here" in await texts(gateway_bus, victim_app, victim_team)

    await assert_eventually(victim_up, timeout=20)
    # The victim's container id first, the way a sender would introduce itself, then lines.
    script = HELPERS + (
        "s = connect()\n"
        f"s.sendall(dynoinit.LOG_MAGIC + line({victim!r}) + line('forged into the victim'))\n"
        "s.close()\n"
    )
    attacker = await dynos.raw(dynos.labels(app_id, team_id, "web.1"), script)
    assert await dynos.exit_code(attacker) == 0

    async def landed() -> None:
        assert "forged into the victim" in await texts(gateway_bus, app_id, team_id)

    await assert_eventually(landed, timeout=20)
    assert await texts(gateway_bus, app_id, team_id) == [victim, "forged into the victim"]
    assert await texts(gateway_bus, victim_app, victim_team) == [victim, "victim here"]


async def test_a_huge_record_does_not_grow_memory(
    dynos: Dynos, shipper_settings: ShipperFactory, start_shipper: Any, gateway_bus: Bus
) -> None:
    """A header claiming 4 GiB, then 32 MiB: refused from the header, at most one record held."""
    running: RunningShipper = await start_shipper(shipper_settings())
    receiver = running.shipper.receiver
    app_id, team_id = new_id(), new_id()
    script = HELPERS + (
        "s = connect()\n"
        "s.sendall(dynoinit.LOG_MAGIC + line('before'))\n"
        "s.sendall(dynoinit.RECORD.pack(1, 2**32 - 1, time.time_ns()))\n"
        "block = b'x' * (1 << 20)\n"
        "try:\n"
        "    for _ in range(32):\n"
        "        s.sendall(block)\n"
        "except OSError:\n"  # refused: the log-shipper closed the connection
        "    raise SystemExit(0)\n"
        "raise SystemExit(3)\n"
    )
    attacker = await dynos.raw(dynos.labels(app_id, team_id, "web.1"), script)
    assert await dynos.exit_code(attacker) == 0
    assert receiver.stats.refused == 1
    assert receiver.stats.peak_held <= dynoinit.MAX_LINE + dynoinit.RECORD.size

    async def kept() -> None:
        assert await texts(gateway_bus, app_id, team_id) == ["before"]

    await assert_eventually(kept, timeout=10)
