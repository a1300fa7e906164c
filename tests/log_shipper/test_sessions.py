"""Log sessions through the gateway: history then live, within a second, only for the app's team."""

from __future__ import annotations

import datetime
import time
from typing import Any

import aiohttp
import pytest

from slipway.libs.bus import Bus
from slipway.services.gateway.logs import logs, shippers
from tests.conftest import assert_eventually
from tests.gateway.conftest import Stack
from tests.log_shipper.conftest import Dynos, ShipperFactory

pytestmark = [pytest.mark.docker, pytest.mark.integration]

TICKER = """
import time
print("hello from web.1")
for i in range(200):
    time.sleep(0.3)
    print(f"tick {i}")
"""


def stamp_of(line: str) -> float:
    return datetime.datetime.fromisoformat(line.split(" ", 1)[0]).timestamp()


async def session_url(api: Any, app: str, **body: Any) -> str:
    created = await api.ok("POST", f"/apps/{app}/log-sessions", body, status=201)
    assert set(created) >= {"id", "logplex_url", "created_at", "updated_at"}
    return str(created["logplex_url"])


async def test_a_tail_shows_history_then_each_new_line_within_a_second(
    stack: Stack,
    dynos: Dynos,
    shipper_settings: ShipperFactory,
    start_shipper: Any,
    gateway_bus: Bus,
) -> None:
    """`slipway logs --tail`: the old line first, then ticks, each within 1 s of being printed."""
    await start_shipper(shipper_settings(tail_interval=0.05))
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "tailed")
    await dynos.run(app["id"], app["team"]["id"], "web.1", TICKER)

    async def printed() -> None:
        lines = await shippers.history(gateway_bus, app["id"], app["team"]["id"], 10)
        assert any(e.text == "hello from web.1" for e in lines)

    await assert_eventually(printed, timeout=20)
    url = await session_url(alice, "tailed", tail=True, lines=1500, dyno="web.1", source="app")
    async with aiohttp.ClientSession() as http, http.get(url) as stream:
        assert stream.status == 200
        first = (await stream.content.readline()).decode()
        assert first.endswith(" app[web.1]: hello from web.1\n"), first
        delays: list[float] = []
        seen: list[int] = []
        while len(delays) < 4:
            line = (await stream.content.readline()).decode()
            received = time.time()
            number = int(line.rsplit("tick ", 1)[1])
            assert not seen or number == seen[-1] + 1, (seen, line)  # in order, no gap
            seen.append(number)
            if len(seen) > 2:  # the first ticks may have come from history
                delays.append(received - stamp_of(line))
    assert max(delays) < 1.0, delays


async def test_a_session_speaks_server_sent_events_when_asked(
    stack: Stack, shipper_settings: ShipperFactory, start_shipper: Any
) -> None:
    """`Accept: text/event-stream`: one `data:` event per line, then keep-alive comments;
    `Accept: text/plain` (which the API's JSON check would refuse) gets the plain lines."""
    await start_shipper(shipper_settings())
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "evented")

    async def released() -> str:
        url = await session_url(alice, "evented", lines=10)
        headers = {"Accept": "text/plain"}
        async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as plain:
            assert plain.status == 200 and plain.content_type == "text/plain"
            text = await plain.text()
        assert " app[api]: Release v1 created by user alice@example.com\n" in text, text
        return url

    await assert_eventually(released, timeout=20, interval=0.3)
    url = await session_url(alice, "evented", lines=10, tail=True)
    headers = {"Accept": "text/event-stream"}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as stream:
        assert stream.status == 200, await stream.text()
        assert stream.content_type == "text/event-stream"
        events: list[str] = []
        while (line := await stream.content.readline()).startswith(b"data: "):
            events.append(line.decode().removeprefix("data: "))
            assert await stream.content.readline() == b"\n"  # each line is its own event
        assert line == b": keep-alive\n", line  # nothing new: the idle stream says it lives
    assert any(
        e.endswith(" app[api]: Release v1 created by user alice@example.com\n") for e in events
    ), events


async def test_only_the_apps_team_can_tail_read_or_drain_its_logs(
    stack: Stack, shipper_settings: ShipperFactory, start_shipper: Any
) -> None:
    """Another user gets 404 for log sessions, drains and metrics of an app not theirs."""
    await start_shipper(shipper_settings())
    alice = await stack.user("alice@example.com")
    mallory = await stack.user("mallory@example.com")
    await stack.app(alice, "private")
    for method, path, body in [
        ("POST", "/apps/private/log-sessions", {"tail": True}),
        ("GET", "/apps/private/log-drains", None),
        ("POST", "/apps/private/log-drains", {"url": "https://example.test/x"}),
        ("GET", "/apps/private/metrics", None),
    ]:
        answer = await mallory.request(method, path, body)
        assert answer.status == 404, (method, path, answer.body)
        assert answer.error_id == "not_found"
    # and alice can: the 404s above are about mallory, not a broken endpoint
    await session_url(alice, "private", lines=10)


async def test_a_log_session_url_expires(
    stack: Stack, shipper_settings: ShipperFactory, start_shipper: Any, monkeypatch: Any
) -> None:
    """Opened after its lifetime, a logplex_url answers 404 saying it expired."""
    await start_shipper(shipper_settings())
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "brief")
    fresh = await session_url(alice, "brief", lines=5)
    monkeypatch.setattr(logs, "SESSION_TTL", -1.0)
    stale = await session_url(alice, "brief", lines=5)
    async with aiohttp.ClientSession() as http:
        async with http.get(fresh) as ok:
            assert ok.status == 200
        async with http.get(stale) as gone:
            assert gone.status == 404
            body = await gone.json()
            assert body["id"] == "not_found"
            assert "expired" in body["message"]
        async with http.get(stale.rsplit("/", 1)[0] + "/not-a-token") as unknown:
            assert unknown.status == 404
