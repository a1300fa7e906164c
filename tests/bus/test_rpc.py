"""Typed request/reply through libs/bus against a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgspec
import pytest

from slipway.contracts import subjects
from slipway.contracts.base import ErrorReply, Message, Rpc
from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus
from slipway.libs.bus import context as bus_context
from slipway.libs.errors import (
    Internal,
    InvalidRequest,
    NotFound,
    RemoteError,
    RemoteNotFound,
    Timeout,
    Unavailable,
)
from slipway.libs.natsserver import NatsServer
from tests.conftest import assert_eventually

pytestmark = pytest.mark.integration


class Echo(Message, tag="test.echo.v1", frozen=True, kw_only=True):
    text: str
    delay: float = 0.0


class Echoed(Message, tag="test.echoed.v1", frozen=True, kw_only=True):
    text: str
    caller: str | None = None


def echo_rpc(unique: str) -> Rpc[Echo, Echoed]:
    return Rpc(
        Service.KEYRING, "echo", subjects.rpc(Service.KEYRING, f"echo{unique}"), Echo, Echoed
    )


async def test_call_returns_the_typed_reply(
    bus_factory: Callable[[str], Awaitable[Bus]], unique: str
) -> None:
    """A call returns the reply Struct, and the server sees which service called."""
    server, client = await bus_factory("keyring"), await bus_factory("gateway")
    rpc = echo_rpc(unique)

    async def handle(req: Echo) -> Echoed:
        ctx = bus_context.current()
        return Echoed(text=req.text.upper(), caller=ctx.caller if ctx else None)

    await server.serve(rpc, handle)
    reply = await client.call(rpc, Echo(text="hi"))
    assert reply == Echoed(text="HI", caller="gateway")


async def test_remote_error_is_typed(
    bus_factory: Callable[[str], Awaitable[Bus]], unique: str
) -> None:
    """A handler raising NotFound reaches the caller as RemoteNotFound, code and message intact."""
    server, client = await bus_factory("keyring"), await bus_factory("gateway")
    rpc = echo_rpc(unique)

    async def handle(req: Echo) -> Echoed:
        raise NotFound(f"no such thing: {req.text}", details={"thing": req.text})

    await server.serve(rpc, handle)
    with pytest.raises(RemoteNotFound) as caught:
        await client.call(rpc, Echo(text="x"))
    assert isinstance(caught.value, NotFound)
    assert caught.value.code == "not_found"
    assert caught.value.message == "no such thing: x"
    assert caught.value.details == {"thing": "x"}


async def test_unexpected_exception_becomes_internal_error(
    bus_factory: Callable[[str], Awaitable[Bus]], unique: str
) -> None:
    """A crashing handler answers with an internal ErrorReply and keeps serving."""
    server, client = await bus_factory("keyring"), await bus_factory("gateway")
    rpc = echo_rpc(unique)

    async def handle(req: Echo) -> Echoed:
        if req.text == "boom":
            raise ZeroDivisionError
        return Echoed(text=req.text)

    await server.serve(rpc, handle)
    with pytest.raises(Internal):
        await client.call(rpc, Echo(text="boom"))
    assert (await client.call(rpc, Echo(text="ok"))).text == "ok"


async def test_call_times_out(bus_factory: Callable[[str], Awaitable[Bus]], unique: str) -> None:
    """A handler slower than the timeout raises Timeout, which is retryable."""
    server, client = await bus_factory("keyring"), await bus_factory("gateway")
    rpc = echo_rpc(unique)

    async def handle(req: Echo) -> Echoed:
        await asyncio.sleep(req.delay)
        return Echoed(text=req.text)

    await server.serve(rpc, handle)
    with pytest.raises(Timeout) as caught:
        await client.call(rpc, Echo(text="slow", delay=2.0), timeout=0.2)
    assert caught.value.retryable


async def test_no_responders_is_unavailable(
    bus_factory: Callable[[str], Awaitable[Bus]], unique: str
) -> None:
    """Calling a service nobody serves fails with Unavailable once the timeout has passed."""
    client = await bus_factory("gateway")
    with pytest.raises(Unavailable):
        await client.call(echo_rpc(unique), Echo(text="anyone?"), timeout=0.5)


async def test_malformed_request_gets_error_reply(
    bus_factory: Callable[[str], Awaitable[Bus]], unique: str
) -> None:
    """Bytes that are not the request contract get an invalid_request ErrorReply."""
    server, client = await bus_factory("keyring"), await bus_factory("gateway")
    rpc = echo_rpc(unique)

    async def handle(req: Echo) -> Echoed:
        return Echoed(text=req.text)

    await server.serve(rpc, handle)
    # A typed call first: it waits until the server's subscription is visible.
    assert (await client.call(rpc, Echo(text="ready"))).text == "ready"
    msg = await client.nc.request(rpc.subject, b'{"type":"test.echo.v1","text":42}', timeout=2)
    reply = msgspec.json.decode(msg.data, type=ErrorReply)
    error = RemoteError.from_reply(reply)
    assert isinstance(error, InvalidRequest)
    assert "text" in error.message
    assert (await client.call(rpc, Echo(text="still up"))).text == "still up"


async def test_queue_group_shares_requests(
    bus_factory: Callable[[str], Awaitable[Bus]], unique: str
) -> None:
    """Two instances of a service split the requests; each request is answered once."""
    first, second, client = (
        await bus_factory("keyring"),
        await bus_factory("keyring"),
        await bus_factory("gateway"),
    )
    rpc = echo_rpc(unique)
    seen: dict[str, int] = {first.instance: 0, second.instance: 0}

    def handler_for(bus: Bus) -> Callable[[Echo], Awaitable[Echoed]]:
        async def handle(req: Echo) -> Echoed:
            seen[bus.instance] += 1
            return Echoed(text=req.text)

        return handle

    await first.serve(rpc, handler_for(first))
    await second.serve(rpc, handler_for(second))
    replies = await asyncio.gather(*(client.call(rpc, Echo(text=str(i))) for i in range(200)))
    assert [r.text for r in replies] == [str(i) for i in range(200)]
    assert sum(seen.values()) == 200
    assert all(count > 0 for count in seen.values())


async def test_rpc_recovers_after_server_restart(
    bus_factory: Callable[[str], Awaitable[Bus]], unique: str, nats_server: NatsServer
) -> None:
    """After nats-server restarts, both sides reconnect and calls succeed again."""
    server, client = await bus_factory("keyring"), await bus_factory("gateway")
    rpc = echo_rpc(unique)

    async def handle(req: Echo) -> Echoed:
        return Echoed(text=req.text)

    await server.serve(rpc, handle)
    nats_server.restart()

    async def answered() -> None:
        try:
            reply = await client.call(rpc, Echo(text="back"), timeout=0.5)
        except (Unavailable, Timeout) as exc:
            raise AssertionError(f"not yet: {exc}") from exc
        assert reply.text == "back"

    await assert_eventually(answered, timeout=20)


async def test_a_bus_closes_cleanly_while_the_server_is_down(
    bus_factory: Callable[[str], Awaitable[Bus]], unique: str, nats_server: NatsServer
) -> None:
    """A service stopping while NATS is away still stops without an exception."""
    server = await bus_factory("keyring")

    async def handle(req: Echo) -> Echoed:
        return Echoed(text=req.text)

    await server.serve(echo_rpc(unique), handle)
    nats_server.kill()
    await server.close()
    assert server.nc.is_closed


def test_error_kinds_declared_elsewhere_cross_the_wire_typed() -> None:
    """An ErrorReply whose code belongs to a kind declared outside libs.errors comes back as it."""
    from slipway.libs.crypto.errors import DecryptionFailed

    error = RemoteError.from_reply(ErrorReply(code=DecryptionFailed.code, message="tampered"))
    assert isinstance(error, DecryptionFailed)
    assert isinstance(error, RemoteError)
    assert error.message == "tampered"
