"""Heroku's rendezvous attach, and one-offs without a TTY (#17 item 5).

Real NATS, keyring and gateway in this process, the scheduler's one-off code on the
real Docker engine (the fixtures of test_oneoff.py). The rendezvous client here is
what Heroku's clients do, written with plain `ssl` and asyncio streams: TLS to the
attach_url's host and port, verified against the gateway's rendezvous CA, the
secret and CRLF, drop the first line, then raw bytes both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import urllib.parse
from pathlib import Path

import aiohttp
import pytest

from slipway.services.gateway.oneoff import rendezvous
from slipway.services.scheduler.oneoff import OneOffs
from tests.gateway.conftest import Api, Stack
from tests.oneoff.test_oneoff import open_session, released_app

pytestmark = [pytest.mark.docker, pytest.mark.integration]


def ca_file(stack: Stack) -> Path:
    return stack.home / "gateway" / "rendezvous-tls" / "ca.pem"


async def connect(
    stack: Stack, attach_url: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """TLS to the attach_url's host:port, the server checked against the rendezvous CA."""
    parsed = urllib.parse.urlsplit(attach_url)
    assert parsed.scheme == "rendezvous" and parsed.hostname and parsed.port
    context = ssl.create_default_context(cafile=str(ca_file(stack)))
    return await asyncio.open_connection(parsed.hostname, parsed.port, ssl=context)


def secret_of(attach_url: str) -> str:
    return urllib.parse.urlsplit(attach_url).path.lstrip("/")


async def rendezvous_run(
    stack: Stack, attach_url: str, send: bytes, *, secret: str | None = None
) -> tuple[bytes, bytes]:
    """Attach as Heroku's clients do: (first line, everything until the server closes)."""
    reader, writer = await connect(stack, attach_url)
    try:
        writer.write((secret or secret_of(attach_url)).encode() + b"\r\n")
        first = await reader.readline()
        if first:
            writer.write(send)
            await writer.drain()
        rest = await reader.read()  # until the server closes the connection
        return first, rest
    finally:
        writer.close()
        with closed_quietly():
            await writer.wait_closed()


def closed_quietly() -> contextlib.suppress:
    """What a TLS connection the server already closed may raise on the client's side."""
    return contextlib.suppress(ConnectionError, ssl.SSLError)


async def start(owner: Api, command: str, *, tty: bool) -> str:
    body = {"command": command, "attach": True, "force_no_tty": not tty}
    dyno = await owner.ok("POST", "/apps/hello/dynos", body, 201)
    url = dyno["attach_url"]
    assert isinstance(url, str) and url.startswith("rendezvous://127.0.0.1:")
    assert len(secret_of(url)) >= 43  # 256 bits in URL-safe base64
    return url


async def test_rendezvous_without_tty_forwards_input_closes_it_and_output(
    stack: Stack, scheduler_oneoffs: OneOffs, image: str
) -> None:
    """Heroku's client without a TTY: input, then Ctrl-D reaches `cat` as EOF; it exits."""
    alice = await stack.user("alice@example.com")
    await released_app(stack, alice, "hello", image)
    url = await start(alice, 'cat; echo "after eof $GREETING"', tty=False)
    first, rest = await rendezvous_run(stack, url, b"line one\nline two\n\x04")
    assert first == b"rendezvous\r\n"
    assert rest == b"line one\nline two\nafter eof hello from config\n"


async def test_rendezvous_with_tty_gives_a_terminal(
    stack: Stack, scheduler_oneoffs: OneOffs, image: str
) -> None:
    """Heroku's interactive attach: the dyno has a terminal, typed lines are read from it."""
    alice = await stack.user("alice@example.com")
    await released_app(stack, alice, "hello", image)
    url = await start(alice, 'read x; echo "got:$x"; tty', tty=True)
    first, rest = await rendezvous_run(stack, url, b"typed\r")
    assert first == b"rendezvous\r\n"
    assert b"got:typed" in rest and b"/dev/pts/" in rest


async def test_a_wrong_secret_attaches_nothing(
    stack: Stack, scheduler_oneoffs: OneOffs, image: str
) -> None:
    """A wrong secret: closed, nothing said; the right one still attaches afterwards."""
    alice = await stack.user("alice@example.com")
    await released_app(stack, alice, "hello", image)
    url = await start(alice, "echo attached", tty=False)
    wrong = secret_of(url)[:-1] + ("A" if secret_of(url)[-1] != "A" else "B")
    assert await rendezvous_run(stack, url, b"", secret=wrong) == (b"", b"")
    first, rest = await rendezvous_run(stack, url, b"\x04")
    assert (first, rest) == (b"rendezvous\r\n", b"attached\n")


async def test_a_used_secret_is_refused(
    stack: Stack, scheduler_oneoffs: OneOffs, image: str
) -> None:
    """After one session, the same secret opens nothing, through either door."""
    alice = await stack.user("alice@example.com")
    await released_app(stack, alice, "hello", image)
    url = await start(alice, "echo once", tty=False)
    assert await rendezvous_run(stack, url, b"\x04") == (b"rendezvous\r\n", b"once\n")
    assert await rendezvous_run(stack, url, b"") == (b"", b"")
    ws = f"{alice.url.replace('http', 'ws', 1)}/dynos/attach/{secret_of(url)}"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await stack.session.ws_connect(ws)
    assert refused.value.status == 404


async def test_two_connections_racing_with_one_secret_attach_once(
    stack: Stack, scheduler_oneoffs: OneOffs, image: str
) -> None:
    """The attack: many connections send one secret at once; exactly one is let in.

    With the single-use claim weakened to a lookup, every racer would be greeted.
    """
    alice = await stack.user("alice@example.com")
    await released_app(stack, alice, "hello", image)
    url = await start(alice, "cat", tty=False)
    racers = [await connect(stack, url) for _ in range(8)]
    line = secret_of(url).encode() + b"\r\n"
    for _, writer in racers:  # every line is on the wire before any is answered
        writer.write(line)
    await asyncio.gather(*(writer.drain() for _, writer in racers))
    firsts = await asyncio.gather(*(reader.readline() for reader, _ in racers))
    winners = [i for i, first in enumerate(firsts) if first == b"rendezvous\r\n"]
    assert len(winners) == 1 and firsts.count(b"") == len(racers) - 1
    reader, writer = racers[winners[0]]
    writer.write(b"only the winner\n\x04")
    assert await reader.read() == b"only the winner\n"
    for _, writer in racers:
        writer.close()


async def test_the_listener_survives_hostile_clients(
    stack: Stack, scheduler_oneoffs: OneOffs, image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Garbage, an endless line, a client that says nothing, plain TCP: each is closed; the
    door still works for a real client after them."""
    monkeypatch.setattr(rendezvous, "HANDSHAKE_DEADLINE", 1.0)
    alice = await stack.user("alice@example.com")
    await released_app(stack, alice, "hello", image)
    url = await start(alice, "echo still works", tty=False)
    parsed = urllib.parse.urlsplit(url)
    assert parsed.hostname and parsed.port

    garbage_r, garbage_w = await connect(stack, url)
    garbage_w.write(b"\x00\xff" * 50 + b"\r\n")
    endless_r, endless_w = await connect(stack, url)
    endless_w.write(b"A" * (rendezvous.MAX_LINE * 4))  # no newline, ever
    silent_r, silent_w = await connect(stack, url)  # slowloris: TLS, then nothing
    plain_r, plain_w = await asyncio.open_connection(parsed.hostname, parsed.port)
    plain_w.write(secret_of(url).encode() + b"\r\n")  # no TLS: the secret is never read
    for reader in (garbage_r, endless_r, silent_r):
        with closed_quietly():
            assert await reader.read() == b""
    assert b"rendezvous" not in await plain_r.read()
    for writer in (garbage_w, endless_w, silent_w, plain_w):
        writer.close()
    assert await rendezvous_run(stack, url, b"\x04") == (b"rendezvous\r\n", b"still works\n")


async def test_websocket_without_tty_passes_bytes_and_closes_stdin(
    stack: Stack, scheduler_oneoffs: OneOffs, image: str
) -> None:
    """`force_no_tty` with `attach` is attached without a terminal: every byte reaches the
    dyno unchanged (Ctrl-D and CR included), `{"eof": true}` ends its input, the status returns."""
    alice = await stack.user("alice@example.com")
    await released_app(stack, alice, "hello", image)
    _, url = await open_session(
        alice, "hello", "od -An -tx1 | tr -s ' \\n' ' '; exit 4", force_no_tty=True
    )
    output = b""
    async with stack.session.ws_connect(url) as ws:
        await ws.send_bytes(b"a\x04b\r\n")
        await ws.send_json({"eof": True})
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                output += message.data
            elif message.type == aiohttp.WSMsgType.TEXT:
                status = message.json()["exit"]
                break
    assert output.split() == [b"61", b"04", b"62", b"0d", b"0a"]
    assert status == 4
