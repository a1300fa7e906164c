"""`slipway run` attached without a terminal: input from /dev/null, a file or a pipe (#17 item 5).

A real websocket server on loopback plays the dyno's side of the attach protocol: it
collects every input byte until the client's `{"eof": true}` (a dyno without a TTY:
the end of input closes its stdin) or a Ctrl-D byte (a dyno with a TTY, as pg:psql's),
then echoes them, says which end it saw, and reports an exit status. Before the fix,
/dev/null and regular files crashed the CLI (epoll refuses them: PermissionError).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from slipway.cli.commands.run import EOT, attach, websocket_url
from slipway.cli.errors import CliError


@pytest.fixture
async def dyno() -> AsyncIterator[str]:
    """The attach_url of a stand-in dyno: echo input until its end, exit with its length % 7."""

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        got, end = b"", b""
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT and message.json() == {"eof": True}:
                end = b" [eof]"
                break
            if message.type == aiohttp.WSMsgType.BINARY and message.data.endswith(EOT):
                got, end = got + message.data[:-1], b" [ctrl-d]"
                break
            if message.type == aiohttp.WSMsgType.BINARY:
                got += message.data
        await ws.send_bytes(b"got:" + got + end)
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


async def run_with(
    url: str, stdin: int, tmp_path: Path, *, dyno_tty: bool = False
) -> tuple[int, bytes]:
    out = tmp_path / "out"
    with out.open("wb") as stdout:
        status = await attach(url, stdin, stdout.fileno(), dyno_tty=dyno_tty)
    return status, out.read_bytes()


async def test_stdin_from_dev_null(dyno: str, tmp_path: Path) -> None:
    """`< /dev/null`: nothing is sent but the end of input; the output and status come back."""
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        assert await run_with(dyno, fd, tmp_path) == (0, b"got: [eof]")
    finally:
        os.close(fd)


async def test_stdin_from_a_file(dyno: str, tmp_path: Path) -> None:
    """`< input.sql`: the file's bytes reach the dyno, then its end; a non-zero status returns."""
    source = tmp_path / "input.sql"
    source.write_bytes(b"SELECT 1;\n" * 1000)  # more than one read
    with source.open("rb") as file:
        status, output = await run_with(dyno, file.fileno(), tmp_path)
    assert output == b"got:" + b"SELECT 1;\n" * 1000 + b" [eof]"
    assert status == 10000 % 7 != 0


async def test_stdin_from_a_pipe(dyno: str, tmp_path: Path) -> None:
    """`echo hi | slipway run ...`: piped bytes reach the dyno."""
    read, write = os.pipe()
    os.write(write, b"hi\n")
    os.close(write)
    try:
        assert await run_with(dyno, read, tmp_path) == (3, b"got:hi\n [eof]")
    finally:
        os.close(read)


async def test_binary_input_passes_unchanged(dyno: str, tmp_path: Path) -> None:
    """Without a TTY, Ctrl-D and every other byte is data: only the real end ends input."""
    source = tmp_path / "blob"
    blob = bytes(range(256)) * 3
    source.write_bytes(blob)
    with source.open("rb") as file:
        status, output = await run_with(dyno, file.fileno(), tmp_path)
    assert output == b"got:" + blob + b" [eof]"
    assert status == len(blob) % 7


def test_a_rendezvous_attach_url_opens_through_the_api_websocket() -> None:
    """The CLI opens Heroku's rendezvous URL's secret through the API's websocket door."""
    url = websocket_url("http://127.0.0.1:5100/", "rendezvous://127.0.0.1:5101/s3cr-t_x")
    assert url == "ws://127.0.0.1:5100/dynos/attach/s3cr-t_x"
    assert websocket_url("https://api.example", "wss://api.example/a/b") == "wss://api.example/a/b"
    for hostile in ("file:///etc/passwd", "rendezvous://h:1/", "rendezvous://h:1/a/../b"):
        with pytest.raises(CliError):
            websocket_url("http://127.0.0.1:5100", hostile)


async def test_a_dyno_with_a_tty_gets_ctrl_d_at_the_end_of_piped_input(
    dyno: str, tmp_path: Path
) -> None:
    """pg:psql's one-off has a terminal: piped input ends with Ctrl-D, as typed."""
    read, write = os.pipe()
    os.write(write, b"select 1;\n")
    os.close(write)
    try:
        status, output = await run_with(dyno, read, tmp_path, dyno_tty=True)
    finally:
        os.close(read)
    assert (status, output) == (3, b"got:select 1;\n [ctrl-d]")
