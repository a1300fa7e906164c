"""A raw HTTP/1.0 GET to the Docker Engine API, for the one stream that must be fast: logs.

Docker answers an HTTP/1.1 client's log stream in chunked encoding, one chunk
per log line; through aiohttp that costs more per line than everything else
log-shipper does with it. Asked over HTTP/1.0, the engine cannot chunk, so the
body is the bare multiplexed stream until the connection closes, and it is
read in large blocks.

Supports `unix:///path/to/docker.sock` and `tcp://host:port` (add TLS for a
remote engine before using one: see README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlencode, urlsplit

from slipway.libs.errors import NotFound, Unavailable

API_VERSION = "v1.41"  # Docker 20.10's API; every call made here exists since v1.25
BLOCK = 256 * 1024
_HEAD_LIMIT = 64 * 1024


async def _connect(docker_url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(docker_url)
    if parts.scheme == "unix":
        return await asyncio.open_unix_connection(parts.path, limit=BLOCK)
    if parts.scheme in ("tcp", "http"):
        return await asyncio.open_connection(parts.hostname, parts.port or 2375, limit=BLOCK)
    raise Unavailable(f"unsupported Docker URL for log streams: {docker_url!r}")


@contextlib.asynccontextmanager
async def stream(
    docker_url: str, path: str, params: dict[str, str]
) -> AsyncIterator[AsyncIterator[bytes]]:
    """The body of `GET /<version>/<path>?<params>` as blocks of bytes, until the engine ends it."""
    reader, writer = await _connect(docker_url)
    try:
        query = urlencode(params)
        writer.write(f"GET /{API_VERSION}/{path}?{query} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _HEAD_LIMIT:
            raise Unavailable("the Docker engine sent an oversized response head")
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        status = int(status_line.split(" ", 2)[1])
        if status != 200:
            body = (await reader.read(_HEAD_LIMIT)).decode("utf-8", "replace").strip()
            if status == 404:
                raise NotFound(f"Docker: {body}")
            raise Unavailable(f"Docker answered {status_line}: {body}")
        yield _blocks(reader)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _blocks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        block = await reader.read(BLOCK)
        if not block:
            return
        yield block
