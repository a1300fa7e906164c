"""Undelivered commands and events survive a snapshot: dumped as the backup user, replayed
into a fresh nats-server by the supervisor before any service starts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from structlog.testing import capture_logs

from slipway.contracts import subjects
from slipway.contracts.builder import BUILD_FINISHED
from slipway.contracts.gateway import RELEASE_CREATED
from slipway.contracts.subjects import OPERATOR, PROVISIONER, Service
from slipway.libs.bus.provision import provision_at
from slipway.libs.natsserver import NatsServer
from slipway.libs.snapshot import streams
from slipway.libs.supervisor import Supervisor

pytestmark = pytest.mark.integration

BUILD = subjects.cmd(Service.BUILDER, "build")
SCHEDULER = subjects.durable(Service.SCHEDULER, "desired")
GC = subjects.durable(Service.REGISTRY_PROXY, "gc")
LOGS = subjects.durable(Service.LOG_SHIPPER, "platform")
BUILDER = subjects.durable(Service.BUILDER, "cmd")
GATEWAY_BUILDS = subjects.durable(Service.GATEWAY, "builds")
WEBHOOKS = subjects.durable(Service.MONITOR, "webhooks")


@pytest.fixture
def source(tmp_path: Path) -> Iterator[NatsServer]:
    """The platform a snapshot is taken of: hardened, provisioned."""
    server = NatsServer(tmp_path / "source", hardened=True)
    server.start()
    yield server
    server.stop()


async def _connect(server: NatsServer, user: str) -> NatsClient:
    return await nats.connect(
        server.url,
        user=user,
        password=server.users[user],
        inbox_prefix=subjects.inbox_prefix(user),
        allow_reconnect=False,
    )


@pytest.fixture
async def operator(source: NatsServer) -> AsyncIterator[NatsClient]:
    nc = await _connect(source, OPERATOR)
    yield nc
    await nc.close()


async def _take(js: JetStreamContext, stream: str, durable: str, count: int, acked: int) -> None:
    """Fetch `count` messages of `durable` and acknowledge the first `acked` of them."""
    sub = await js.pull_subscribe_bind(durable, stream=stream)
    got = await sub.fetch(count, timeout=5)
    assert len(got) == count
    for msg in got[:acked]:
        await msg.ack_sync()
    await sub.unsubscribe()


async def _platform_in_flight(nc: NatsClient) -> None:
    """Commands and events, some acknowledged by some consumers (seqs in the comments)."""
    js = nc.jetstream()
    for n in (1, 2, 3):
        await js.publish(BUILD, f"build {n}".encode(), headers={"Nats-Msg-Id": f"c{n}"})
    await js.publish(BUILD_FINISHED.subject, b"done", headers={"Nats-Msg-Id": "b1"})  # EVT 1
    for n in (1, 2, 3, 4, 5):  # EVT 2..6
        await js.publish(
            RELEASE_CREATED.subject, f"v{n}".encode(), headers={"Nats-Msg-Id": f"r{n}"}
        )
    await _take(js, subjects.STREAM_CMD, BUILDER, 1, acked=1)  # c1 done
    await _take(js, subjects.STREAM_EVT, GATEWAY_BUILDS, 1, acked=1)  # b1 done
    await _take(js, subjects.STREAM_EVT, WEBHOOKS, 6, acked=6)  # b1's other reader, done too
    await _take(js, subjects.STREAM_EVT, SCHEDULER, 3, acked=2)  # r3 delivered, not acked
    await _take(js, subjects.STREAM_EVT, GC, 5, acked=5)  # all of them done


async def _positions(js: JetStreamContext) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for stream, durable in (
        (subjects.STREAM_CMD, BUILDER),
        (subjects.STREAM_EVT, SCHEDULER),
        (subjects.STREAM_EVT, GC),
        (subjects.STREAM_EVT, LOGS),
    ):
        info = await js.consumer_info(stream, durable)
        found[durable] = (info.delivered, info.ack_floor, info.num_ack_pending, info.num_pending)
    for stream in (subjects.STREAM_CMD, subjects.STREAM_EVT):
        found[stream] = (await js.stream_info(stream)).state
    return found


async def _dump_as_backup(server: NatsServer, **bounds: int) -> bytes:
    nc = await _connect(server, str(Service.BACKUP))
    try:
        return await streams.dump(nc, **bounds)
    finally:
        await nc.close()


async def _pending_ids(js: JetStreamContext, stream: str, durable: str) -> list[str]:
    """The Nats-Msg-Id of every message `durable` still has to get, in delivery order."""
    info = await js.consumer_info(stream, durable)
    if info.num_pending == 0:
        return []
    sub = await js.pull_subscribe_bind(durable, stream=stream)
    got = await sub.fetch(info.num_pending, timeout=5)
    await sub.unsubscribe()
    return [(msg.headers or {}).get("Nats-Msg-Id", "?") for msg in got]


async def _run_supervisor(
    home: Path, *, hardened: bool = True
) -> tuple[Supervisor, NatsServer, asyncio.Task[None]]:
    """Start a supervisor without children on `home`; return once it started or failed."""
    nats_server = NatsServer(home / "nats", hardened=hardened)
    supervisor = Supervisor(home, [], nats=nats_server)
    running = asyncio.create_task(supervisor.run(install_signals=False))
    started = asyncio.ensure_future(supervisor.started.wait())
    await asyncio.wait({running, started}, return_when=asyncio.FIRST_COMPLETED)
    started.cancel()
    return supervisor, nats_server, running


def _restored_home(tmp_path: Path, data: bytes) -> Path:
    home = tmp_path / "restored"
    (home / "nats").mkdir(parents=True, mode=0o700)
    (home / "nats" / streams.FILE_NAME).write_bytes(data)
    return home


async def test_a_restored_consumer_gets_exactly_what_it_had_not_acknowledged(
    tmp_path: Path, source: NatsServer, operator: NatsClient
) -> None:
    """Dump as backup, replay at the supervisor's start: each consumer resumes where it was."""
    await _platform_in_flight(operator)
    before = await _positions(operator.jetstream())

    data = await _dump_as_backup(source)

    assert await _positions(operator.jetstream()) == before  # nothing acked, moved or made
    header = json.loads(data.splitlines()[0])
    assert header["consumers"]["EVT"][SCHEDULER] == 3
    assert header["streams"]["CMD"]["messages"] == 2
    assert header["streams"]["EVT"]["messages"] == 5  # b1 was acknowledged by its only reader

    home = _restored_home(tmp_path, data)
    supervisor, target, running = await _run_supervisor(home)
    try:
        assert supervisor.started.is_set(), "the supervisor did not start"
        admin = await _connect(target, OPERATOR)
        try:
            js = admin.jetstream()
            # Provisioning ran after the replay; once more must not move anyone either.
            await provision_at(target.url, user=PROVISIONER, password=target.users[PROVISIONER])
            info = await js.consumer_info(subjects.STREAM_EVT, SCHEDULER)
            assert info.config.opt_start_seq == 3
            assert await _pending_ids(js, subjects.STREAM_EVT, SCHEDULER) == ["r3", "r4", "r5"]
            assert await _pending_ids(js, subjects.STREAM_EVT, GC) == []
            assert await _pending_ids(js, subjects.STREAM_EVT, LOGS) == [
                "r1",
                "r2",
                "r3",
                "r4",
                "r5",
            ]
            assert await _pending_ids(js, subjects.STREAM_CMD, BUILDER) == ["c2", "c3"]
        finally:
            await admin.close()
    finally:
        supervisor.stop()
        await running
    assert not (home / "nats" / streams.FILE_NAME).exists()
    kept = list((home / "nats").glob(f"{streams.FILE_NAME}.replayed-*"))
    assert len(kept) == 1
    assert kept[0].stat().st_mode & 0o777 == 0o600
    assert kept[0].read_bytes() == data


async def test_a_dump_over_its_bound_is_refused(source: NatsServer, operator: NatsClient) -> None:
    """More waiting messages (or bytes) than the bound: a clear refusal, not a huge file."""
    await _platform_in_flight(operator)

    with pytest.raises(streams.StreamsTooLarge, match="more than 4 messages"):
        await _dump_as_backup(source, max_messages=4)
    with pytest.raises(streams.StreamsTooLarge, match="more than 100000 messages or 10 bytes"):
        await _dump_as_backup(source, max_bytes=10)


async def test_replay_refuses_streams_that_hold_messages(
    tmp_path: Path, source: NatsServer, operator: NatsClient
) -> None:
    """Replayed twice, or into a live platform: refused, nothing published, the file kept."""
    await _platform_in_flight(operator)
    data = await _dump_as_backup(source)
    path = tmp_path / streams.FILE_NAME
    path.write_bytes(data)
    state = (await operator.jetstream().stream_info(subjects.STREAM_CMD)).state

    with pytest.raises(streams.StreamsReplayError, match="already holds 2 messages"):
        await streams.replay_file(path, source.url, user=OPERATOR, password=source.users[OPERATOR])

    assert path.read_bytes() == data
    assert (await operator.jetstream().stream_info(subjects.STREAM_CMD)).state == state


async def test_the_supervisor_starts_no_service_when_the_replay_fails(tmp_path: Path) -> None:
    """A streams file from a newer platform: one clear log line, no start, the file kept."""
    header = {"format": streams.FORMAT + 1, "kind": streams.KIND, "streams": {}, "consumers": {}}
    home = _restored_home(tmp_path, json.dumps(header).encode() + b"\n")

    with capture_logs() as logs:
        supervisor, _, running = await _run_supervisor(home)
        supervisor.stop()  # had it started, it would stop now (and the test fail below)
        with pytest.raises(streams.StreamsReplayError, match="newer than this platform"):
            await running

    assert not supervisor.started.is_set()
    failed = [entry for entry in logs if entry["event"] == "nats.replay_failed"]
    assert len(failed) == 1
    assert "upgrade Slipway" in failed[0]["error"]
    assert (home / "nats" / streams.FILE_NAME).exists()


async def test_an_open_bus_refuses_to_replay(tmp_path: Path) -> None:
    """Without the hardened bus services would provision from the start: no start at all."""
    home = _restored_home(tmp_path, b"{}\n")
    supervisor, _, running = await _run_supervisor(home, hardened=False)
    supervisor.stop()

    with pytest.raises(streams.StreamsReplayError, match="needs the hardened bus"):
        await running

    assert not supervisor.started.is_set()
    assert (home / "nats" / streams.FILE_NAME).exists()


async def test_a_truncated_or_garbled_file_is_refused_before_anything_is_published(
    source: NatsServer, operator: NatsClient
) -> None:
    """Cut at a line's end, cut mid-line, or not a streams file: refused by its checks."""
    await _platform_in_flight(operator)
    data = await _dump_as_backup(source)
    lines = data.splitlines(keepends=True)

    with pytest.raises(streams.StreamsReplayError, match="truncated or altered"):
        streams.parse(b"".join(lines[:-1]))
    with pytest.raises(streams.StreamsReplayError, match="not JSON lines"):
        streams.parse(data[: len(data) - 10])
    with pytest.raises(streams.StreamsReplayError, match="no streams header"):
        streams.parse(b"[1, 2]\n")
    _, messages = streams.parse(data)
    assert [m["headers"]["Nats-Msg-Id"] for m in messages] == [
        "c2",
        "c3",
        "r1",
        "r2",
        "r3",
        "r4",
        "r5",
    ]


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("slipway.evt.release.created", "slipway.evt.release.created", True),
        ("slipway.evt.*.created", "slipway.evt.app.created", True),
        ("slipway.evt.>", "slipway.evt.app.created", True),
        ("slipway.evt.>", "slipway.evt", False),
        ("slipway.evt.*", "slipway.evt.app.created", False),
        ("slipway.evt.app.created", "slipway.evt.app", False),
    ],
)
def test_subjects_match_filters_as_nats_does(pattern: str, subject: str, matches: bool) -> None:
    """A consumer's filter selects the messages it still waits for, with NATS's wildcards."""
    assert streams.subject_matches(pattern, subject) is matches
