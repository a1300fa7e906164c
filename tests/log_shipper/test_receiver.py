"""Dyno output through the init's socket: lines, refusals, bounds, L10, a restarted log-shipper."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from asyncio import StreamReader, StreamWriter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from slipway.contracts import dynoinit
from slipway.contracts.scheduler import DYNOS_LIST, Dyno, DynoList, ListDynos
from slipway.libs.bus import Bus
from slipway.services.gateway.logs.shippers import history
from slipway.services.log_shipper import formats
from slipway.services.log_shipper.app import SHIPPER, create_service
from slipway.services.scheduler.settings import built_init
from tests.conftest import assert_eventually
from tests.gateway.conftest import run_in_background, stop
from tests.log_shipper.conftest import (
    LIB,
    Dynos,
    RunningShipper,
    ShipperFactory,
    dyno_config,
    new_id,
    sender_cmd,
)

pytestmark = [pytest.mark.docker, pytest.mark.integration]

# In-container helpers for containers that speak to the socket themselves.
CLOSED = """
import socket, time, dynoinit
def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(dynoinit.LOG_SOCKET)
    return s
def closed(s):
    s.settimeout(30)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True
def refused(s, data):
    try:
        s.sendall(data)
    except OSError:
        return True
    return closed(s)
"""


async def lines_of(bus: Bus, app_id: str, team_id: str, n: int = 1000) -> list[Any]:
    return await history(bus, app_id, team_id, n)


@contextlib.asynccontextmanager
async def connected(folder: Path) -> AsyncIterator[tuple[StreamReader, StreamWriter]]:
    """A connection to the socket from this test process (short path through the folder's fd)."""
    dirfd = os.open(folder, os.O_PATH | os.O_DIRECTORY)
    try:
        path = f"/proc/self/fd/{dirfd}/{dynoinit.LOG_SOCKET_NAME}"
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            yield reader, writer
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    finally:
        os.close(dirfd)


async def test_a_dynos_stdout_and_stderr_reach_history_in_order(
    dynos: Dynos, shipper_settings: ShipperFactory, start_shipper: Any, gateway_bus: Bus
) -> None:
    """Lines a dyno prints on stdout and stderr are stored in order, tagged app[web.1]."""
    await start_shipper(shipper_settings())
    app_id, team_id = new_id(), new_id()
    script = "import sys\nfor i in range(5): print(f'out {i}')\nprint('oops', file=sys.stderr)"
    await dynos.run(app_id, team_id, "web.1", script)

    async def six() -> list[Any]:
        found = await lines_of(gateway_bus, app_id, team_id)
        assert len(found) == 6, found
        return found

    found = await assert_eventually(six, timeout=20)
    # stdout and stderr are two pipes: the order holds within each, not across them.
    assert [e.text for e in found if not e.stderr] == [f"out {i}" for i in range(5)]
    assert [e.text for e in found if e.stderr] == ["oops"]
    assert {(e.source, e.dyno) for e in found} == {("app", "web.1")}


async def test_the_dyno_init_relays_to_log_shipper(
    dynos: Dynos, shipper_settings: ShipperFactory, start_shipper: Any, gateway_bus: Bus
) -> None:
    """The real init (scripts/build-init), env frame on stdin: its lines arrive, by stream."""
    init = built_init()
    assert init.exists(), f"{init} is missing: run scripts/build-init"
    await start_shipper(shipper_settings())
    app_id, team_id = new_id(), new_id()
    script = "import os, sys\nprint(os.environ['GREETING'])\nprint('to stderr', file=sys.stderr)"
    config = dyno_config(dynos.folder, dynos.labels(app_id, team_id, "web.1"), [])
    config["HostConfig"]["Binds"].append(f"{init}:{dynoinit.INIT_PATH}:ro")
    config |= {
        "Entrypoint": [dynoinit.INIT_PATH, "--"],
        "Cmd": ["python3", "-c", script],
        "OpenStdin": True,
        "StdinOnce": True,
        "AttachStdin": True,
    }
    container = await dynos.docker.containers.create(config, name=f"slw-logtest-{new_id()[:10]}")
    dynos.created.append(container.id)
    await dynos.announce(container.id, config["Labels"])
    async with container.attach(stdin=True) as stream:
        await container.start()
        await stream.write_in(dynoinit.encode_env({"GREETING": "hello from the init"}))
    assert await dynos.exit_code(container.id) == 0

    async def both() -> None:
        found = await lines_of(gateway_bus, app_id, team_id)
        assert sorted((e.text, e.stderr) for e in found) == [
            ("hello from the init", False),
            ("to stderr", True),
        ]

    await assert_eventually(both, timeout=20)


async def test_the_socket_is_open_to_dynos_uid_and_replaced_when_stale(
    dynos: Dynos, shipper_settings: ShipperFactory, start_shipper: Any
) -> None:
    """A stale file at the socket's place is replaced; folder 0755, socket 0666."""
    dynos.folder.mkdir(parents=True)
    (dynos.folder / dynoinit.LOG_SOCKET_NAME).write_text("stale")
    await start_shipper(shipper_settings())
    sock = dynos.folder / dynoinit.LOG_SOCKET_NAME
    assert sock.is_socket()
    assert (dynos.folder.stat().st_mode & 0o777, sock.stat().st_mode & 0o777) == (0o755, 0o666)


async def test_a_process_outside_any_container_is_refused(
    dynos: Dynos, shipper_settings: ShipperFactory, start_shipper: Any
) -> None:
    """This test process is in no container: closed without a record read."""
    running: RunningShipper = await start_shipper(shipper_settings())
    receiver = running.shipper.receiver
    async with connected(dynos.folder) as (reader, writer):
        writer.write(dynoinit.LOG_MAGIC + dynoinit.encode_line(1, time.time_ns(), b"forged"))
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(1), 10) == b""
    assert (receiver.stats.refused, receiver.stats.records) == (1, 0)


HELLO_THEN_WAIT = CLOSED + (
    "s = connect()\n"
    "hello = dynoinit.LOG_MAGIC + dynoinit.encode_line(1, time.time_ns(), b'hi')\n"
    "raise SystemExit(0 if refused(s, hello) else 3)\n"
)


async def test_a_container_the_scheduler_never_announced_is_refused(
    dynos: Dynos, shipper_settings: ShipperFactory, start_shipper: Any, gateway_bus: Bus
) -> None:
    """Labels say it is a dyno, the scheduler never did: it waits, is closed, nothing stored."""
    running: RunningShipper = await start_shipper(shipper_settings(identify_wait=2.0))
    app_id, team_id = new_id(), new_id()
    labels = {**dynos.labels(app_id, team_id, "web.1"), "org.slipway.managed": "someone-else"}
    assert await dynos.exit_code(await dynos.raw(labels, HELLO_THEN_WAIT)) == 0
    assert running.shipper.receiver.stats.refused == 1
    assert running.shipper.registry.waited == 1
    assert await lines_of(gateway_bus, app_id, team_id) == []


async def test_a_dyno_announced_for_another_host_is_refused(
    dynos: Dynos, shipper_settings: ShipperFactory, start_shipper: Any, gateway_bus: Bus
) -> None:
    """The scheduler placed it on h2: h1's log-shipper does not take its lines."""
    running: RunningShipper = await start_shipper(shipper_settings(identify_wait=2.0))
    app_id, team_id = new_id(), new_id()
    labels = {**dynos.labels(app_id, team_id, "web.1"), "org.slipway.managed": "elsewhere"}
    script = f"import sys; sys.path.insert(0, {LIB!r})\n{HELLO_THEN_WAIT}"
    config = dyno_config(dynos.folder, labels, ["python3", "-c", script])
    container = await dynos.docker.containers.create(config, name=f"slw-logtest-{new_id()[:10]}")
    dynos.created.append(container.id)
    await dynos.announce(container.id, labels, host_id="h2")
    await container.start()
    assert await dynos.exit_code(container.id) == 0
    assert running.shipper.receiver.stats.refused == 1
    assert running.shipper.registry.get(container.id) is None
    assert await lines_of(gateway_bus, app_id, team_id) == []


async def test_a_connection_before_the_announcement_waits_for_it_unread(
    dynos: Dynos, shipper_settings: ShipperFactory, start_shipper: Any, gateway_bus: Bus
) -> None:
    """The init may connect before the scheduler's event lands: held unread, then taken in."""
    running: RunningShipper = await start_shipper(shipper_settings(identify_wait=30.0))
    app_id, team_id = new_id(), new_id()
    labels = {**dynos.labels(app_id, team_id, "web.1"), "org.slipway.managed": "later"}
    script = CLOSED + (
        "s = connect()\n"
        "s.sendall(dynoinit.LOG_MAGIC + dynoinit.encode_line(1, time.time_ns(), b'early'))\n"
        "s.close()\n"
    )
    container_id = await dynos.raw(labels, script)

    def waiting() -> None:
        assert running.shipper.registry.waited == 1

    await assert_eventually(waiting, timeout=20)
    assert running.shipper.receiver.stats.records == 0  # nothing read while unknown
    await dynos.announce(container_id, labels)

    async def taken() -> None:
        assert [e.text for e in await lines_of(gateway_bus, app_id, team_id)] == ["early"]

    await assert_eventually(taken, timeout=20)
    assert running.shipper.receiver.stats.refused == 0


async def test_a_record_claiming_too_many_bytes_is_refused_unread(
    dynos: Dynos, shipper_settings: ShipperFactory, start_shipper: Any, gateway_bus: Bus
) -> None:
    """Lines before it are kept; a header claiming MAX_LINE + 1 bytes closes the connection."""
    running: RunningShipper = await start_shipper(shipper_settings())
    app_id, team_id = new_id(), new_id()
    script = CLOSED + (
        "s = connect()\n"
        "s.sendall(dynoinit.LOG_MAGIC + dynoinit.encode_line(1, time.time_ns(), b'before'))\n"
        "big = dynoinit.RECORD.pack(1, dynoinit.MAX_LINE + 1, time.time_ns())\n"
        "raise SystemExit(0 if refused(s, big) else 3)\n"
    )
    labels = dynos.labels(app_id, team_id, "web.1")
    assert await dynos.exit_code(await dynos.raw(labels, script)) == 0

    async def kept() -> None:
        assert [e.text for e in await lines_of(gateway_bus, app_id, team_id)] == ["before"]

    await assert_eventually(kept, timeout=10)
    assert running.shipper.receiver.stats.refused == 1


async def test_a_dropped_record_becomes_heroku_l10(
    dynos: Dynos, shipper_settings: ShipperFactory, start_shipper: Any, gateway_bus: Bus
) -> None:
    """Kind 3 (42 lines dropped since t): `heroku[logplex]: Error L10 (output buffer overflow)`."""
    await start_shipper(shipper_settings())
    app_id, team_id = new_id(), new_id()
    script = CLOSED + (
        "s = connect()\n"
        "now = time.time_ns()\n"
        "since = (now // 10**9 - 1) * 10**9\n"
        "s.sendall(dynoinit.LOG_MAGIC + dynoinit.encode_dropped(now, 42, since))\n"
        "s.close()\n"
    )
    await dynos.raw(dynos.labels(app_id, team_id, "web.1"), script)

    async def l10() -> Any:
        found = await lines_of(gateway_bus, app_id, team_id)
        assert len(found) == 1, found
        return found[0]

    line = await assert_eventually(l10, timeout=10)
    assert (line.source, line.dyno) == ("heroku", "logplex")
    since = math.floor(line.timestamp) - 1
    assert line.text == formats.l10_text(42, since)
    assert line.text.endswith(".000000+00:00.")


async def test_lines_the_ring_could_not_hold_are_announced(
    dynos: Dynos,
    shipper_settings: ShipperFactory,
    start_shipper: Any,
    gateway_bus: Bus,
    tmp_path: Path,
) -> None:
    """A dyno printing before log-shipper listens, beyond its ring: kept lines, then an L10."""
    app_id, team_id = new_id(), new_id()
    gate = tmp_path / "gate"
    gate.mkdir()
    gate.chmod(0o777)  # the dyno (uid 10000) says when it printed everything
    script = (
        "import signal\nfor i in range(200): print(f'early {i:04d}')\n"
        "open('/gate/printed', 'w').close()\nsignal.pause()"
    )
    binds = (f"{gate}:/gate",)
    await dynos.run(app_id, team_id, "web.1", script, buffer=1000, binds=binds)  # 100 lines

    def printed() -> None:
        assert (gate / "printed").exists()

    await assert_eventually(printed, timeout=20)
    await start_shipper(shipper_settings())

    async def arrived() -> list[Any]:
        found = await lines_of(gateway_bus, app_id, team_id)
        assert len(found) == 101, found
        return found

    found = await assert_eventually(arrived, timeout=20)
    (l10,) = [e for e in found if e.source == "heroku"]
    assert l10.text.startswith("Error L10 (output buffer overflow): 100 messages dropped since ")
    assert [e.text for e in found if e.source == "app"] == [f"early {i:04d}" for i in range(100)]


async def test_line_times_are_clamped_to_the_containers_life(
    dynos: Dynos, shipper_settings: ShipperFactory, start_shipper: Any, gateway_bus: Bus
) -> None:
    """A time of 0 becomes the container's start - 5 s at most; one far ahead becomes now."""
    await start_shipper(shipper_settings())
    app_id, team_id = new_id(), new_id()
    script = CLOSED + (
        "s = connect()\n"
        "s.sendall(dynoinit.LOG_MAGIC + dynoinit.encode_line(1, 0, b'past')"
        " + dynoinit.encode_line(1, 2**63, b'future'))\n"
        "s.close()\n"
    )
    before = time.time()
    await dynos.raw(dynos.labels(app_id, team_id, "web.1"), script)

    async def both() -> list[Any]:
        found = await lines_of(gateway_bus, app_id, team_id)
        assert [e.text for e in found] == ["past", "future"]
        return found

    past, future = await assert_eventually(both, timeout=10)
    after = time.time()
    assert before - 6 <= past.timestamp <= after
    assert before <= future.timestamp <= after


async def test_a_restarted_log_shipper_is_reached_again(
    dynos: Dynos, shipper_settings: ShipperFactory, keyring_service: Any, gateway_bus: Bus
) -> None:
    """The socket is re-created by the next log-shipper; the dyno's relay reconnects to it."""
    settings = shipper_settings()
    app_id, team_id = new_id(), new_id()
    script = "import time\nfor i in range(99999):\n    print(f'tick {i:05d}')\n    time.sleep(0.05)"
    first = create_service(settings)
    task = await run_in_background(first)
    await dynos.run(app_id, team_id, "web.1", script)

    async def ticking() -> int:
        found = await lines_of(gateway_bus, app_id, team_id)
        assert found
        return int(found[-1].text.split()[1])

    await assert_eventually(ticking, timeout=20)
    last = await ticking()
    await stop(first, task)
    second = create_service(settings)
    task = await run_in_background(second)
    try:

        async def beyond() -> None:
            assert await ticking() > last + 10
            assert second[SHIPPER].receiver.stats.accepted >= 1

        await assert_eventually(beyond, timeout=30)
    finally:
        await stop(second, task)


async def test_dynos_the_scheduler_lists_at_start_are_taken_without_their_event(
    dynos: Dynos, shipper_settings: ShipperFactory, start_shipper: Any, gateway_bus: Bus
) -> None:
    """An event missed: the DYNOS_LIST answer at start names the dyno (this host's only)."""
    assert dynos.scheduler is not None
    app_id, team_id = new_id(), new_id()
    labels = {**dynos.labels(app_id, team_id, "web.1"), "org.slipway.managed": "listed"}
    container_id = await dynos.start(dyno_config(dynos.folder, labels, sender_cmd("print(1)")))
    listed = [
        Dyno(
            app_id=app_id,
            app_name="listed",
            team_id=team_id,
            name=name,
            process_type="web",
            release_version=1,
            state="up",
            host_id=host,
            container_id=cid,
            updated_at=time.time(),
        )
        for name, host, cid in [("web.1", "h1", container_id), ("web.2", "h2", "f" * 64)]
    ]

    async def answer(request: ListDynos) -> DynoList:
        return DynoList(dynos=listed)

    await dynos.scheduler.serve(DYNOS_LIST, answer)
    running: RunningShipper = await start_shipper(shipper_settings())

    async def taken() -> None:
        assert [e.text for e in await lines_of(gateway_bus, app_id, team_id)] == ["1"]

    await assert_eventually(taken, timeout=30)
    registry = running.shipper.registry
    assert registry.get("f" * 64) is None
    assert [d.dyno for d in registry.running] == ["web.1"]
