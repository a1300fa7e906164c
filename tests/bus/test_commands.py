"""Commands through the CMD work queue and events through EVT, against a real nats-server."""

from __future__ import annotations

import asyncio
import collections
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from slipway.contracts import subjects
from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus, route
from slipway.libs.natsserver import NatsServer
from slipway.libs.storage import Database, claim
from tests.bus.messages import Happened, Work, happened_spec, work_spec
from tests.conftest import assert_eventually

pytestmark = pytest.mark.integration

BusFactory = Callable[[str], Awaitable[Bus]]


async def dead_letters(bus: Bus, service: str) -> list[tuple[bytes, dict[str, str]]]:
    """Every message in the DLQ stream for `service`."""
    sub = await bus.js.subscribe(
        subjects.dead_letter_filter(Service(service)), ordered_consumer=True
    )
    found: list[tuple[bytes, dict[str, str]]] = []
    try:
        while True:
            msg = await sub.next_msg(timeout=0.5)
            found.append((msg.data, dict(msg.headers or {})))
    except TimeoutError:
        pass
    finally:
        await sub.unsubscribe()
    return found


async def test_command_goes_to_exactly_one_of_two_consumers(bus_factory: BusFactory) -> None:
    """Two builder instances share one durable: each command is handled by exactly one."""
    sender, first, second = [await bus_factory(n) for n in ("gateway", "builder", "builder")]
    handled: dict[str, list[int]] = {"first": [], "second": []}

    def handler(name: str) -> Callable[[Work], Awaitable[None]]:
        async def handle(cmd: Work) -> None:
            handled[name].append(cmd.item)

        return handle

    await first.consume_commands([route(work_spec(), handler("first"))])
    await second.consume_commands([route(work_spec(), handler("second"))])
    for item in range(100):
        await sender.send(work_spec(), Work(item=item))

    def all_handled() -> None:
        assert sorted(handled["first"] + handled["second"]) == list(range(100))

    await assert_eventually(all_handled)
    assert handled["first"] and handled["second"]


async def test_duplicate_publish_is_processed_once(bus_factory: BusFactory, tmp_path: Path) -> None:
    """The same command id sent twice is stored once; the idempotency helper skips replays."""
    sender, worker = await bus_factory("gateway"), await bus_factory("builder")
    db = await Database.open(tmp_path / "builder.db", ["CREATE TABLE done (item INTEGER)"])
    calls = collections.Counter[str]()

    async def handle(cmd: Work) -> None:
        async with db.transaction() as conn:
            if await claim(conn, cmd.command_id):
                await conn.execute("INSERT INTO done VALUES (?)", (cmd.item,))
        calls[cmd.command_id] += 1

    command = Work(item=7)
    assert await sender.send(work_spec(), command) is True
    assert await sender.send(work_spec(), command) is False
    await worker.consume_commands([route(work_spec(), handle)])
    await assert_eventually(lambda: _assert(calls[command.command_id] == 1))
    # Delivered again by hand (as after a lost ack): the handler runs, the effect does not.
    await handle(command)
    rows = await db.fetchall("SELECT item FROM done")
    assert [r["item"] for r in rows] == [7]
    await db.close()


async def test_failing_handler_is_retried_then_succeeds(bus_factory: BusFactory) -> None:
    """A handler that raises is redelivered with backoff until it succeeds."""
    sender, worker = await bus_factory("gateway"), await bus_factory("builder")
    attempts: list[int] = []

    async def handle(cmd: Work) -> None:
        attempts.append(cmd.item)
        if len(attempts) <= cmd.fail_times:
            raise RuntimeError("transient failure")

    await worker.consume_commands([route(work_spec(), handle)], backoff=(0.05, 0.1))
    await sender.send(work_spec(), Work(item=1, fail_times=2))
    await assert_eventually(lambda: _assert(len(attempts) == 3))


async def test_exhausted_command_goes_to_dead_letter(bus_factory: BusFactory) -> None:
    """After max_deliver failures the command lands in the DLQ with its reason, once."""
    sender, worker = await bus_factory("gateway"), await bus_factory("builder")
    attempts: list[int] = []

    async def handle(cmd: Work) -> None:
        attempts.append(cmd.item)
        raise ValueError("always broken")

    await worker.consume_commands([route(work_spec(), handle)], max_deliver=3, backoff=(0.05,))
    await sender.send(work_spec(), Work(item=5))

    async def dead() -> list[tuple[bytes, dict[str, str]]]:
        found = await dead_letters(sender, "builder")
        assert len(found) == 1
        return found

    found = await assert_eventually(dead)
    payload, headers = found[0]
    assert len(attempts) == 3
    assert b'"item":5' in payload
    assert "always broken" in headers["Slipway-Dead-Reason"]
    assert headers["Slipway-Original-Subject"] == work_spec().subject


async def test_malformed_command_goes_to_dead_letter_and_worker_keeps_going(
    bus_factory: BusFactory,
) -> None:
    """A payload that is not the contract is dead-lettered; the next good one is handled."""
    sender, worker = await bus_factory("gateway"), await bus_factory("builder")
    handled: list[int] = []

    async def handle(cmd: Work) -> None:
        handled.append(cmd.item)

    await worker.consume_commands([route(work_spec(), handle)])
    await sender.publish_persistent(work_spec().subject, b"{not json", msg_id="bad-1")
    await sender.send(work_spec(), Work(item=2))
    await assert_eventually(lambda: _assert(handled == [2]))
    found = await dead_letters(sender, "builder")
    assert [p for p, _ in found] == [b"{not json"]
    assert found[0][1]["Slipway-Dead-Reason"].startswith("malformed payload")


async def test_events_reach_a_durable_subscriber(bus_factory: BusFactory) -> None:
    """Events published before a durable consumer starts are still delivered to it, in order."""
    publisher, listener = await bus_factory("gateway"), await bus_factory("log-shipper")
    for item in range(5):
        await publisher.publish(happened_spec(), Happened(item=item))
    seen: list[int] = []

    async def handle(evt: Happened) -> None:
        seen.append(evt.item)

    await listener.consume_events("test", [route(happened_spec(), handle)], concurrency=1)
    await assert_eventually(lambda: _assert(seen == [0, 1, 2, 3, 4]))


async def test_live_subject_streams_to_a_waiting_client(
    bus_factory: BusFactory, unique: str
) -> None:
    """Chunks published on a live subject reach a subscriber, in order."""
    producer, client = await bus_factory("builder"), await bus_factory("gateway")
    subject = subjects.live("build", unique)
    received: list[bytes] = []
    chunks = await client.live_subscribe(subject)

    async def read() -> None:
        async for chunk in chunks:
            received.append(chunk)
            if chunk == b"done":
                return

    reader = asyncio.create_task(read())
    for chunk in (b"step 1", b"step 2", b"done"):
        await producer.live_publish(subject, chunk)
    await asyncio.wait_for(reader, 30)  # a bound, not a measurement: CI shares two cores
    assert received == [b"step 1", b"step 2", b"done"]


WORKER = """
import asyncio, os, sys
from slipway.libs.bus import Bus, route
from tests.bus.messages import work_spec

async def main() -> None:
    bus = await Bus.connect(sys.argv[1], "builder")
    async def handle(cmd) -> None:
        with open(sys.argv[2], "a") as log:
            log.write(f"start {cmd.item}\\n")
        if sys.argv[3] == "crash":
            os._exit(9)  # dies mid-command, no ack
        with open(sys.argv[2], "a") as log:
            log.write(f"done {cmd.item}\\n")
    await bus.consume_commands([route(work_spec(), handle)], ack_wait=1.0)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_handler_crash_mid_command_is_redelivered_after_restart(
    bus_factory: BusFactory, nats_server: NatsServer, tmp_path: Path
) -> None:
    """A worker process killed mid-command: a restarted worker gets the command and completes it."""
    sender = await bus_factory("gateway")
    log = tmp_path / "worker.log"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    root = str(Path(__file__).resolve().parents[2])
    crashing = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        nats_server.url,
        str(log),
        "crash",
        cwd=root,
        env={"PYTHONPATH": root},
    )
    await sender.send(work_spec(), Work(item=42))
    assert await asyncio.wait_for(crashing.wait(), 20) == 9
    assert log.read_text() == "start 42\n"
    restarted = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        nats_server.url,
        str(log),
        "ok",
        cwd=root,
        env={"PYTHONPATH": root},
    )
    try:
        await assert_eventually(lambda: _assert("done 42" in log.read_text()), timeout=20)
    finally:
        restarted.terminate()
        await restarted.wait()


def _assert(condition: bool) -> None:
    assert condition


async def test_server_restart_loses_nothing_acknowledged(
    bus_factory: BusFactory, nats_server: NatsServer
) -> None:
    """nats-server killed and restarted mid-run: every acknowledged command is handled once."""
    sender, worker = await bus_factory("gateway"), await bus_factory("builder")
    handled: collections.Counter[int] = collections.Counter()

    async def handle(cmd: Work) -> None:
        handled[cmd.item] += 1

    await worker.consume_commands([route(work_spec(), handle)])
    acknowledged: list[int] = []

    async def produce() -> None:
        for item in range(300):
            await sender.send(work_spec(), Work(item=item), retry_for=30.0)
            acknowledged.append(item)

    producer = asyncio.create_task(produce())
    await assert_eventually(lambda: _assert(len(acknowledged) >= 100))
    nats_server.kill()  # SIGKILL: only what reached the disk survives
    nats_server.start()
    await asyncio.wait_for(producer, 60)
    await assert_eventually(lambda: _assert(set(handled) == set(acknowledged)), timeout=30)
    assert acknowledged == list(range(300))
    # At-least-once: a command whose ack was lost in the crash may come twice, never zero times.
    assert all(count >= 1 for count in handled.values())
