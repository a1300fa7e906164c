"""`settle_tls_closes`: a TLS connection whose peer never answers close_notify is
aborted before the test's loop ends, so its socket is closed, not left to the collector."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway.libs.bus import tls as bustls
from tests.tlsclose import closing_tls, settle_tls_closes


@pytest.fixture
def mute_tls_peer(tmp_path: Path) -> Iterator[tuple[int, ssl.SSLContext]]:
    """A TLS server that completes the handshake and then never reads (nor answers
    close_notify) until the test ends; its port and a client context trusting it."""
    server = bustls.issue(tmp_path / "tls", "peer", server_hosts=["127.0.0.1"])
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(server.cert, server.key)
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        raw, _ = listener.accept()
        with server_context.wrap_socket(raw, server_side=True) as conn:
            done.wait(30)
            conn.detach()  # no close_notify of its own either

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = ssl.create_default_context(cafile=str(server.ca))
    try:
        yield listener.getsockname()[1], client
    finally:
        done.set()
        thread.join(10)
        listener.close()


async def test_a_close_the_peer_never_answers_is_aborted(
    mute_tls_peer: tuple[int, ssl.SSLContext],
) -> None:
    port, context = mute_tls_peer
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    raw = writer.transport.get_extra_info("socket")
    writer.close()  # sends close_notify; the peer stays silent
    await asyncio.sleep(0.2)
    loop = asyncio.get_running_loop()
    assert len(closing_tls(loop)) == 1
    assert raw.fileno() != -1  # still open: left alone, the collector would meet it

    assert await settle_tls_closes(timeout=0.3) == 1
    assert raw.fileno() == -1
    assert closing_tls(loop) == []


async def test_a_close_the_peer_answers_is_waited_for(tmp_path: Path) -> None:
    identity = bustls.issue(tmp_path / "tls", "peer", server_hosts=["127.0.0.1"])
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(identity.cert, identity.key)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until close_notify, then close (answering it)
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    context = ssl.create_default_context(cafile=str(identity.ca))
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        raw = writer.transport.get_extra_info("socket")
        writer.close()
        assert await settle_tls_closes(timeout=5.0) == 0
        await asyncio.sleep(0)
        assert raw.fileno() == -1
    finally:
        server.close()
        await server.wait_closed()
