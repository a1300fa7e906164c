"""The scheduler's boot check is a TCP connect: nothing an app would log reaches it (#17 item 8)."""

from __future__ import annotations

import asyncio

from slipway.services.scheduler import health


async def test_the_port_check_sends_the_app_no_byte() -> None:
    """port_accepts connects to a listening server and closes without writing a byte."""
    received: list[bytes] = []
    closed = asyncio.Event()

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # What a web server would parse into a request line (and log): whatever arrives.
        received.append(await reader.read())
        writer.close()
        closed.set()

    server = await asyncio.start_server(app, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await health.port_accepts("127.0.0.1", port)
        await asyncio.wait_for(closed.wait(), 10)
    finally:
        server.close()
        await server.wait_closed()
    assert received == [b""]


async def test_a_port_nobody_listens_on_is_not_up() -> None:
    """A refused connection is no dyno: the check says so without retrying forever."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    assert not await health.port_accepts("127.0.0.1", port)


def test_no_health_url_without_a_declared_path() -> None:
    """Without SLIPWAY_HEALTH_PATH no HTTP request is ever built for a dyno."""
    assert health.health_url("127.0.0.1", 5000, None) is None
    assert health.health_url("127.0.0.1", 5000, "") is None
