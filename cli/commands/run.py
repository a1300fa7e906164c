"""run: a one-off dyno, attached to this terminal (or detached with --detach).

Attached, the terminal goes raw and every key goes to the dyno, Ctrl-C
included (the dyno's TTY turns it into SIGINT, as a local terminal would); the
window size follows SIGWINCH; `slipway run` exits with the remote command's
status. With `--no-tty`, or input that is not a terminal (a pipe, a file, /dev/null,
as in CI), the dyno gets no TTY, as `heroku run --no-tty`: bytes pass unchanged both
ways, the end of the input closes the dyno's stdin (`cat`, `wc -l` end), and the
exit status still comes back.

The gateway answers Heroku's `rendezvous://host:port/SECRET` attach_url when its
rendezvous door is open; this CLI opens the same secret through the API's websocket
door instead (it knows the API's address and no other CA).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import sys
import termios
import tty
import urllib.parse
from collections.abc import Iterator
from typing import Any

import aiohttp

from slipway.cli.errors import CliError, UsageError
from slipway.cli.registry import Context, arg, command

EOT = b"\x04"  # Ctrl-D: end of input on a TTY


class RemoteExit(CliError):
    """The one-off ended with a non-zero status: exit with it, saying nothing more."""

    def __init__(self, status: int) -> None:
        super().__init__("")
        self.exit_code = status


def parse_env(pairs: list[str]) -> dict[str, str]:
    """`-e KEY=VALUE;KEY2=VALUE2` (Heroku's form) or repeated -e, into a dict."""
    env: dict[str, str] = {}
    for group in pairs:
        for pair in group.split(";"):
            if not pair.strip():
                continue
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"{pair!r} is not KEY=VALUE.")
            env[key.strip()] = value
    return env


@command(
    "run",
    "run a one-off process inside a dyno",
    arg("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="what to run"),
    arg("--detach", "-d", action="store_true", help="run in the background; output goes to logs"),
    arg("--size", "-s", help="the dyno size, e.g. standard-2x"),
    arg("--env", "-e", action="append", default=[], help="KEY=VALUE[;KEY=VALUE] for this run"),
    arg("--no-tty", action="store_true", help="do not allocate a TTY"),
    arg("--time-to-live", type=int, default=3600, help="stop after this many seconds"),
    examples=("slipway run -a hello -- python manage.py migrate", "slipway run --detach bash x"),
    needs_app=True,
)
def run(ctx: Context, args: argparse.Namespace) -> None:
    """POST /apps/{app}/dynos; attached, bridge the terminal to the attach_url websocket."""
    words = args.cmd[1:] if args.cmd[:1] == ["--"] else list(args.cmd)
    if not words:
        raise UsageError("Say what to run: slipway run -a APP -- COMMAND.")
    env = parse_env(args.env)
    app = ctx.app(args)
    terminal = not args.no_tty and os.isatty(sys.stdin.fileno())
    body: dict[str, Any] = {
        "command": shlex.join(words) if len(words) > 1 else words[0],
        "attach": not args.detach,
        "env": env,
        "time_to_live": args.time_to_live,
        "force_no_tty": not terminal,
    }
    if args.size:
        body["size"] = args.size
    ctx.note(f"Running {body['command']} on {app}... ")
    dyno = ctx.client().post(f"/apps/{app}/dynos", body)
    if args.detach or not dyno.get("attach_url"):
        ctx.note(f"Running as {dyno['name']}; see its output with `slipway logs -a {app}`.")
        ctx.out(str(dyno["name"]))
        return
    ctx.note(f"up, {dyno['name']}")
    url = websocket_url(ctx.client().api_url, dyno["attach_url"])
    status = asyncio.run(attach(url, sys.stdin.fileno(), sys.stdout.fileno(), dyno_tty=terminal))
    if status:
        raise RemoteExit(status)


def websocket_url(api_url: str, attach_url: str) -> str:
    """The websocket door for an attach_url (a rendezvous URL's secret opens it too)."""
    parsed = urllib.parse.urlsplit(attach_url)
    if parsed.scheme in ("ws", "wss"):
        return attach_url
    secret = parsed.path.lstrip("/")
    if parsed.scheme != "rendezvous" or not secret or "/" in secret:
        raise CliError(f"The API answered an attach_url this CLI cannot open ({parsed.scheme}:).")
    base = api_url.rstrip("/").replace("http", "ws", 1)
    return f"{base}/dynos/attach/{urllib.parse.quote(secret, safe='')}"


async def attach(url: str, stdin: int, stdout: int, *, dyno_tty: bool = True) -> int:
    """Bridge `stdin`/`stdout` to the dyno's websocket until it exits; its status.

    `dyno_tty`: the dyno has a terminal, so the end of `stdin` is sent as Ctrl-D;
    without one it is `{"eof": true}`, which closes the dyno's stdin. A local
    terminal goes raw and follows the window size when the dyno has one too.
    """
    loop = asyncio.get_running_loop()
    interactive = dyno_tty and os.isatty(stdin)
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        keys: asyncio.Queue[bytes] = asyncio.Queue()
        reading = _start_reading(loop, stdin, keys)
        if interactive:
            await _send_size(ws, stdin)
            loop.add_signal_handler(
                signal.SIGWINCH, lambda: asyncio.ensure_future(_send_size(ws, stdin))
            )
        sender = asyncio.create_task(_send_keys(ws, keys, dyno_tty))
        try:
            with _raw(stdin, interactive):
                return await _receive(ws, stdout)
        finally:
            sender.cancel()
            if reading is None:
                loop.remove_reader(stdin)
            else:
                reading.cancel()
            if interactive:
                loop.remove_signal_handler(signal.SIGWINCH)


def _start_reading(
    loop: asyncio.AbstractEventLoop, fd: int, keys: asyncio.Queue[bytes]
) -> asyncio.Task[None] | None:
    """Feed `keys` from `fd`: by the event loop for a terminal, pipe or socket; else a task.

    epoll refuses regular files and /dev/null (PermissionError): those never block, so a
    thread reads them (`slipway run ... < input.sql`, `< /dev/null` in CI). A pipe stays
    with the loop, since a thread blocked on a silent writer would never let the CLI exit.
    """
    try:
        loop.add_reader(fd, _read_into, fd, keys)
    except PermissionError:
        return asyncio.create_task(_read_file(fd, keys))
    return None


async def _read_file(fd: int, keys: asyncio.Queue[bytes]) -> None:
    while data := await asyncio.to_thread(os.read, fd, 65536):
        keys.put_nowait(data)
    keys.put_nowait(b"")


def _read_into(fd: int, keys: asyncio.Queue[bytes]) -> None:
    data = os.read(fd, 4096)
    keys.put_nowait(data)
    if not data:
        asyncio.get_running_loop().remove_reader(fd)


async def _send_keys(
    ws: aiohttp.ClientWebSocketResponse, keys: asyncio.Queue[bytes], dyno_tty: bool
) -> None:
    while True:
        data = await keys.get()
        if not data:  # end of input: Ctrl-D to the dyno's terminal, else close its stdin
            if dyno_tty:
                await ws.send_bytes(EOT)
            else:
                await ws.send_json({"eof": True})
            return
        await ws.send_bytes(data)


async def _send_size(ws: aiohttp.ClientWebSocketResponse, fd: int) -> None:
    with contextlib.suppress(OSError):
        cols, rows = os.get_terminal_size(fd)
        await ws.send_json({"resize": [cols, rows]})


async def _receive(ws: aiohttp.ClientWebSocketResponse, stdout: int) -> int:
    async for message in ws:
        if message.type == aiohttp.WSMsgType.BINARY:
            os.write(stdout, message.data)
        elif message.type == aiohttp.WSMsgType.TEXT:
            control = message.json()
            if "exit" in control:
                return int(control["exit"] if control["exit"] is not None else 1)
            if "error" in control:
                raise CliError(f"The dyno could not run: {control['error']}.")
    raise CliError("The connection to the dyno closed before it exited.")


@contextlib.contextmanager
def _raw(fd: int, interactive: bool) -> Iterator[None]:
    """The terminal in raw mode (keys unprocessed, no echo) for the session, then restored."""
    if not interactive:
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
