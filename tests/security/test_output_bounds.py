"""Build output and live log tails are bounded: a flood is cut to a visible marker.

A build's `OutputStream` publishes to a real nats-server; the gateway (real,
in-process, its own NATS connection) relays a build's output_stream_url and a
log session to a client over real HTTP. The test acts as the builder or the
log-shipper would, publishing on their live subjects, and as a client that
does not read while the flood arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import msgspec
import pytest

from slipway.contracts.base import encode
from slipway.contracts.builder import BuildOutput, output_subject
from slipway.contracts.log_shipper import (
    HISTORY_READ,
    HistoryPage,
    LogEntry,
    ReadHistory,
    TailBatch,
    tail_subject,
)
from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from slipway.services.builder.container import PENDING_MAX_CHARS, LineSplitter
from slipway.services.builder.output import OutputStream
from slipway.services.gateway.app import create_service
from tests.conftest import assert_eventually
from tests.gateway import conftest as gateway_fixtures
from tests.gateway import fakebuilder
from tests.gateway.conftest import Stack, gateway_settings, run_in_background, stop
from tests.gateway.fakebuilder import FakeBuilder
from tests.gateway.test_builds import tarball, upload

pytestmark = pytest.mark.integration

builder = fakebuilder.builder
slipway_home = gateway_fixtures.slipway_home
keyring_service = gateway_fixtures.keyring_service
stack = gateway_fixtures.stack
FLOOD = 100_000
PADDING = "x" * 150
BACKLOG = 100


@pytest.fixture
async def gateway_service(
    nats_server: NatsServer, slipway_home: Path, keyring_service: ServiceApp
) -> AsyncIterator[ServiceApp]:
    """The real gateway holding at most 100 lines for a slow client."""
    settings = gateway_settings(
        nats_server.url, slipway_home, live_backlog_lines=BACKLOG, live_backlog_bytes=64 * 1024
    )
    service = create_service(settings)
    task = await run_in_background(service)
    yield service
    await stop(service, task)


# ---- OutputStream: what the builder sends and keeps -----------------------------------------


async def collect(bus: Bus, build_id: str) -> tuple[list[str], asyncio.Task[None]]:
    """Every live chunk's text of `build_id`, gathered until the final chunk."""
    texts: list[str] = []
    chunks = await bus.live_subscribe(output_subject(build_id))
    decode = msgspec.json.Decoder(BuildOutput).decode

    async def gather() -> None:
        async for data in chunks:
            chunk = decode(data)
            if chunk.final:
                return
            texts.append(chunk.text)

    return texts, asyncio.create_task(gather())


async def test_build_output_over_its_line_limit_ends_in_a_dropped_marker(
    bus_factory: Callable[[str], Awaitable[Bus]],
) -> None:
    """10,000 lines through a 50-line OutputStream: the head, the marker, the last 10 lines."""
    bus = await bus_factory("builder")
    listener = await bus_factory("gateway")
    texts, gathering = await collect(listener, "b-flood")
    out = OutputStream(bus, "b-flood", max_lines=50, tail_lines=10)
    for i in range(10_000):
        await out.line(f"line {i}")
    await out.close("failed")
    await asyncio.wait_for(gathering, 30)
    expected = [f"line {i}" for i in range(50)]
    expected += ["[... 9940 lines dropped]"] + [f"line {i}" for i in range(9990, 10_000)]
    assert texts == [line + "\n" for line in expected]
    assert out.text == "".join(texts)


async def test_build_output_over_its_byte_limit_is_cut(
    bus_factory: Callable[[str], Awaitable[Bus]],
) -> None:
    """Lines of 4 KiB against a 64 KiB budget: sending stops at the budget, the marker follows."""
    bus = await bus_factory("builder")
    out = OutputStream(bus, "b-bytes", max_bytes=64 * 1024, tail_lines=2)
    for _ in range(1000):
        await out.line("y" * 4000)
    assert len(out.text.encode()) < 64 * 1024 + 3 * 4100
    assert "[... 981 lines dropped]\n" in out.text


async def test_one_endless_line_is_cut(bus_factory: Callable[[str], Awaitable[Bus]]) -> None:
    """A single 8 MiB line (no newline ever) is kept as its first 4096 characters."""
    bus = await bus_factory("builder")
    out = OutputStream(bus, "b-line")
    await out.line("z" * (8 * 1024 * 1024))
    assert out.text == "z" * 4096 + " [... cut]\n"


async def test_container_output_without_newlines_stays_bounded(
    bus_factory: Callable[[str], Awaitable[Bus]],
) -> None:
    """16 MiB printed with no newline: the splitter holds at most 64 KiB, lines are cut."""
    bus = await bus_factory("builder")
    out = OutputStream(bus, "b-endless")
    splitter = LineSplitter(out.line)
    held = 0
    for _ in range(256):
        await splitter.feed("w" * 65_536)
        held = max(held, len(splitter._pending))
    await splitter.close()
    assert held <= PENDING_MAX_CHARS
    assert set(out.text.splitlines()) == {"w" * 4096 + " [... cut]"}


# ---- the gateway's relays to a slow client --------------------------------------------------


async def build_stream(stack: Stack, builder: FakeBuilder, hold: asyncio.Event) -> tuple[str, str]:
    """A build held half-way by the fake builder: its id and output_stream_url."""
    builder.hold = hold
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "flooded")
    blob = await upload(stack, alice, tarball({"app.py": b"x\n"}))
    build = await alice.ok(
        "POST", "/apps/flooded/builds", {"source_blob": {"url": blob["get_url"]}}, status=201
    )
    await asyncio.wait_for(builder.holding.wait(), 30)
    return build["id"], build["output_stream_url"]


async def test_slow_reader_of_build_output_gets_a_dropped_marker(
    stack: Stack, builder: FakeBuilder
) -> None:
    """100,000 lines to a client not reading: the gateway drops the excess and says so."""
    hold = asyncio.Event()
    build_id, url = await build_stream(stack, builder, hold)
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        assert answer.status == 200  # the gateway subscribed before it answered
        for seq in range(1000, 1000 + FLOOD):
            chunk = BuildOutput(build_id=build_id, seq=seq, text=f"flood {seq} {PADDING}\n")
            await stack.bus.live_publish(output_subject(build_id), encode(chunk))
        last = BuildOutput(build_id=build_id, seq=1000 + FLOOD, text="the end\n")
        await stack.bus.live_publish(output_subject(build_id), encode(last))
        await stack.bus.nc.flush()
        await stack.gw.bus.nc.flush()  # the gateway's connection got all of it
        text = ""
        while "the end\n" not in text:
            text += (await answer.content.readline()).decode()
        hold.set()
    assert "lines dropped]\n" in text
    assert text.count("flood ") < FLOOD


async def test_slow_reader_of_a_log_tail_gets_a_dropped_marker(
    stack: Stack, bus_factory: Callable[[str], Awaitable[Bus]]
) -> None:
    """100,000 tail lines to a `logs --tail` client not reading: excess dropped, marked."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "noisy")
    shipper = await bus_factory("log-shipper")

    async def history(request: ReadHistory) -> HistoryPage:
        # The test is the app's one log-shipper: no history yet, the tail comes next.
        return HistoryPage(app_id=request.app_id, lines=[], host="h1")

    await shipper.serve(HISTORY_READ, history, responder="h1")
    created = await alice.ok("POST", "/apps/noisy/log-sessions", {"tail": True}, status=201)

    def batch(first: int, count: int, text: str = "") -> bytes:
        lines = [
            LogEntry(
                host="h1",
                seq=seq,
                timestamp=1.8e9 + seq,
                source="app",
                dyno="web.1",
                text=text or f"flood {seq} {PADDING}",
            )
            for seq in range(first, first + count)
        ]
        return encode(TailBatch(app_id=app["id"], host="h1", lines=lines))

    async with aiohttp.ClientSession() as http, http.get(created["logplex_url"]) as answer:
        assert answer.status == 200
        hello = asyncio.create_task(answer.content.readline())

        async def subscribed() -> None:
            # Sent until the session shows it: then the gateway is subscribed to the tail.
            await shipper.live_publish(tail_subject(app["id"]), batch(1, 1, "hello"))
            await asyncio.wait([hello], timeout=0.1)
            assert hello.done()

        await assert_eventually(subscribed, timeout=30)
        assert b"hello" in hello.result()
        for first in range(2, 2 + FLOOD, 1000):
            await shipper.live_publish(tail_subject(app["id"]), batch(first, 1000))
        await shipper.live_publish(tail_subject(app["id"]), batch(2 + FLOOD, 1, "the end"))
        await shipper.nc.flush()
        await stack.gw.bus.nc.flush()
        text = ""
        while "the end\n" not in text:
            text += (await answer.content.readline()).decode()
    assert "slipway[logs]: [... " in text and " lines dropped]\n" in text
    assert text.count("flood ") < FLOOD
