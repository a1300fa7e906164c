"""Fan-out RPCs: every instance answers, `Bus.gather` collects the answers by responder."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest

from slipway.contracts import subjects
from slipway.contracts.base import Message, Rpc
from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus
from slipway.libs.errors import InvalidRequest

pytestmark = pytest.mark.integration


class Ask(Message, tag="test.gather.ask.v1", frozen=True, kw_only=True):
    only: str | None = None  # the one responder that should answer, or everyone
    fail: str | None = None  # the responder that answers with an error


class Told(Message, tag="test.gather.told.v1", frozen=True, kw_only=True):
    by: str


def fanout_rpc(unique: str) -> Rpc[Ask, Told]:
    subject = subjects.rpc(Service.LOG_SHIPPER, f"gather{unique}")
    return Rpc(Service.LOG_SHIPPER, "gather", subject, Ask, Told, fanout=True)


async def serve_hosts(
    bus_factory: Callable[[str], Awaitable[Bus]], rpc: Rpc[Ask, Told], hosts: list[str]
) -> None:
    for host in hosts:
        bus = await bus_factory("log-shipper")

        async def answer(request: Ask, host: str = host) -> Told | None:
            if request.only is not None and request.only != host:
                return None
            if request.fail == host:
                raise InvalidRequest(f"{host} refuses")
            return Told(by=host)

        await bus.serve(rpc, answer, responder=host)


async def test_every_instance_answers_and_is_named(
    bus_factory: Callable[[str], Awaitable[Bus]], unique: str
) -> None:
    """Three instances outside any queue group: all three answer, each as its responder."""
    rpc = fanout_rpc(unique)
    await serve_hosts(bus_factory, rpc, ["h1", "h2", "h3"])
    client = await bus_factory("gateway")
    found = await client.gather(rpc, Ask(), expect={"h1", "h2", "h3"})
    assert {k: v.by for k, v in found.replies.items()} == {"h1": "h1", "h2": "h2", "h3": "h3"}
    assert not found.missing and not found.errors
    # Without knowing who should answer, a settle window after the first answer.
    found = await client.gather(rpc, Ask(), settle=0.5)
    assert set(found.replies) == {"h1", "h2", "h3"}


async def test_an_addressed_request_is_answered_by_that_instance_alone(
    bus_factory: Callable[[str], Awaitable[Bus]], unique: str
) -> None:
    rpc = fanout_rpc(unique)
    await serve_hosts(bus_factory, rpc, ["h1", "h2"])
    client = await bus_factory("gateway")
    found = await client.gather(rpc, Ask(only="h2"), settle=0.5)
    assert list(found.replies) == ["h2"]


async def test_silent_and_failing_instances_are_reported_not_raised(
    bus_factory: Callable[[str], Awaitable[Bus]], unique: str
) -> None:
    """An expected instance that never answers is `missing` at the deadline; errors are kept."""
    rpc = fanout_rpc(unique)
    await serve_hosts(bus_factory, rpc, ["h1", "h2"])
    client = await bus_factory("gateway")
    started = time.monotonic()
    found = await client.gather(rpc, Ask(fail="h2"), expect={"h1", "h2", "gone"}, timeout=1.0)
    assert time.monotonic() - started >= 1.0  # it waited for "gone" until the deadline
    assert list(found.replies) == ["h1"]
    assert found.errors["h2"].code == "invalid_request" and "h2 refuses" in str(found.errors["h2"])
    assert found.missing == {"gone"}


async def test_nobody_serving_gives_an_empty_gathering_and_call_is_refused(
    bus_factory: Callable[[str], Awaitable[Bus]], unique: str
) -> None:
    rpc = fanout_rpc(unique)
    client = await bus_factory("gateway")
    found = await client.gather(rpc, Ask(), timeout=0.3)
    assert not found.replies and not found.errors and not found.missing
    with pytest.raises(TypeError, match="use gather"):
        await client.call(rpc, Ask())
    plain = Rpc(Service.LOG_SHIPPER, "one", subjects.rpc(Service.LOG_SHIPPER, "one"), Ask, Told)
    with pytest.raises(TypeError, match="use call"):
        await client.gather(plain, Ask())
