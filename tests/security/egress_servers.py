"""Servers the egress tests aim at: loopback HTTP(S) endpoints that record every request.

A refused fetch must leave `hits` empty: that is the proof nothing was sent there.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Recorder:
    """What a test server saw: one `METHOD /path` per request, and the Host headers."""

    port: int = 0
    hits: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)


def redirect(location: str, status: int = 307) -> Handler:
    """A handler answering every request with a redirect to `location`."""

    async def handle(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": location})

    return handle


async def stall_forever(request: web.Request) -> web.StreamResponse:
    """Starts an answer and never finishes it (a slow-loris source)."""
    response = web.StreamResponse()
    response.content_length = 10
    await response.prepare(request)
    await response.write(b"x")
    await asyncio.Event().wait()
    return response


def stream_bytes(size: int, *, declare: bool) -> Handler:
    """A handler sending `size` bytes, with or without a Content-Length header."""

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        if declare:
            response.content_length = size
        await response.prepare(request)
        chunk = b"x" * 65536
        sent = 0
        while sent < size:
            piece = chunk[: size - sent]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        return response

    return handle


@contextlib.asynccontextmanager
async def recording_server(
    routes: Mapping[str, Handler] | None = None,
    *,
    tls: ssl.SSLContext | None = None,
    hosts: tuple[str, ...] = ("127.0.0.1",),
) -> AsyncIterator[Recorder]:
    """An HTTP(S) server on loopback (one port, every address in `hosts`) recording requests.

    Paths not in `routes` answer 200 with a body standing for something secret.
    """
    recorder = Recorder()

    async def any_request(request: web.Request) -> web.StreamResponse:
        recorder.hits.append(f"{request.method} {request.path}")
        recorder.hosts.append(request.headers.get("Host", ""))
        handler = (routes or {}).get(request.path)
        if handler is not None:
            return await handler(request)
        return web.Response(body=b"a secret only the platform's network can read")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", any_request)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    first = web.TCPSite(runner, hosts[0], 0, ssl_context=tls)
    await first.start()
    recorder.port = int(runner.addresses[0][1])
    for host in hosts[1:]:
        await web.TCPSite(runner, host, recorder.port, ssl_context=tls).start()
    try:
        yield recorder
    finally:
        await runner.cleanup()
