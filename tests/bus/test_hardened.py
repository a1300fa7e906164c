"""The hardened NATS configuration: per-service users whose inbox proves who they are."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from slipway.contracts import subjects
from slipway.contracts.base import Rpc
from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus
from slipway.libs.bus import context as bus_context
from slipway.libs.natsserver import NatsServer
from tests.bus.test_rpc import Echo, Echoed

pytestmark = pytest.mark.integration


@pytest.fixture
def hardened(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server with one user per service."""
    server = NatsServer(tmp_path / "nats", hardened=True)
    server.start()
    yield server
    server.stop()


async def connect(server: NatsServer, service: str) -> Bus:
    return await Bus.connect(server.url, service, user=service, password=server.users[service])


async def test_services_call_each_other_and_the_caller_is_proven(hardened: NatsServer) -> None:
    """Under per-service users an RPC works and the handler sees the caller's own name."""
    keyring, gateway = await connect(hardened, "keyring"), await connect(hardened, "gateway")
    await keyring.ensure_streams()
    rpc = Rpc(Service.KEYRING, "who", subjects.rpc(Service.KEYRING, "who"), Echo, Echoed)

    async def handle(req: Echo) -> Echoed:
        ctx = bus_context.current()
        return Echoed(text=req.text, caller=ctx.caller if ctx else None)

    await keyring.serve(rpc, handle)
    assert (await gateway.call(rpc, Echo(text="hi"))).caller == "gateway"
    await keyring.close()
    await gateway.close()


async def test_a_service_cannot_listen_on_another_services_inbox(hardened: NatsServer) -> None:
    """The builder's user is refused a subscription to the keyring's replies."""
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = await nats.connect(
        hardened.url, user="builder", password=hardened.users["builder"], error_cb=on_error
    )
    await nc.subscribe(f"{subjects.inbox_prefix(Service.KEYRING)}.>")
    await nc.subscribe(subjects.rpc(Service.KEYRING, "datakey.generate"))
    for _ in range(50):
        if len(errors) >= 2:
            break
        await asyncio.sleep(0.05)
    assert len(errors) == 2
    assert all("permissions violation" in str(e).lower() for e in errors)
    await nc.close()


async def test_live_subjects_are_read_only_by_their_readers(hardened: NatsServer) -> None:
    """The log-shipper may listen to router lines; the builder may not listen to log tails."""
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    shipper = await nats.connect(
        hardened.url, user="log-shipper", password=hardened.users["log-shipper"]
    )
    heard = await shipper.subscribe(subjects.live_filter("router"))
    await shipper.flush()
    builder = await nats.connect(
        hardened.url, user="builder", password=hardened.users["builder"], error_cb=on_error
    )
    await builder.subscribe(subjects.live("logs", "app1"))
    await builder.publish(subjects.live("router", "app1"), b"line")
    assert (await heard.next_msg(timeout=2)).data == b"line"
    for _ in range(50):
        if errors:
            break
        await asyncio.sleep(0.05)
    assert errors and "permissions violation" in str(errors[0]).lower()
    await shipper.close()
    await builder.close()


async def test_wrong_password_is_refused(hardened: NatsServer) -> None:
    """A CONNECT with a wrong password is answered with an authorization violation."""
    reader, writer = await asyncio.open_connection(hardened.host, hardened.port)
    try:
        assert (await reader.readline()).startswith(b"INFO ")
        connect = json.dumps({"user": "keyring", "pass": "nope", "verbose": False})
        writer.write(f"CONNECT {connect}\r\nPING\r\n".encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.readline(), 5)
        assert b"Authorization Violation" in answer
    finally:
        writer.close()
        await writer.wait_closed()
