"""`slipway run` attached without a terminal: input from /dev/null, a file or a pipe (#17 item 5).

A real websocket server on loopback plays the dyno's side of the attach protocol: it
echoes every input byte back until Ctrl-D, then reports an exit status. Before the fix,
/dev/null and regular files crashed the CLI (epoll refuses them: PermissionError).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from slipway.cli.commands.run import EOT, attach


@pytest.fixture
async def dyno() -> AsyncIterator[str]:
    """The attach_url of a stand-in dyno: echo input until Ctrl-D, exit with its length % 7."""

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        got = b""
        async for message in ws:
            if message.type != aiohttp.WSMsgType.BINARY:
                continue
            if EOT in message.data:
                got += message.data.split(EOT, 1)[0]
                break
            got += message.data
        await ws.send_bytes(b"got:" + got)
        await ws.send_json({"exit": len(got) % 7})
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/attach", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/attach"
    finally:
        await runner.cleanup()


async def run_with(url: str, stdin: int, tmp_path: Path) -> tuple[int, bytes]:
    out = tmp_path / "out"
    with out.open("wb") as stdout:
        status = await attach(url, stdin, stdout.fileno())
    return status, out.read_bytes()


async def test_stdin_from_dev_null(dyno: str, tmp_path: Path) -> None:
    """`< /dev/null`: nothing is sent but Ctrl-D; the output and status come back."""
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        assert await run_with(dyno, fd, tmp_path) == (0, b"got:")
    finally:
        os.close(fd)


async def test_stdin_from_a_file(dyno: str, tmp_path: Path) -> None:
    """`< input.sql`: the file's bytes reach the dyno, then Ctrl-D; a non-zero status returns."""
    source = tmp_path / "input.sql"
    source.write_bytes(b"SELECT 1;\n" * 1000)  # more than one read
    with source.open("rb") as file:
        status, output = await run_with(dyno, file.fileno(), tmp_path)
    assert output == b"got:" + b"SELECT 1;\n" * 1000
    assert status == 10000 % 7 != 0


async def test_stdin_from_a_pipe(dyno: str, tmp_path: Path) -> None:
    """`echo hi | slipway run ...`: piped bytes reach the dyno."""
    read, write = os.pipe()
    os.write(write, b"hi\n")
    os.close(write)
    try:
        assert await run_with(dyno, read, tmp_path) == (3, b"got:hi\n")
    finally:
        os.close(read)
