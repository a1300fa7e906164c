"""The JSON log lines: bound context, timestamps, and no context leaking between messages."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Awaitable, Callable, Iterator

import msgspec
import pytest
import structlog

from slipway.contracts import subjects
from slipway.contracts.base import Message, Rpc
from slipway.contracts.subjects import Service
from slipway.libs import logcontext
from slipway.libs.bus import Bus
from slipway.libs.service.logging import configure_logging


class Echo(Message, tag="test.log.echo.v1", frozen=True, kw_only=True):
    text: str


@pytest.fixture
def lines() -> Iterator[Callable[[], list[dict[str, object]]]]:
    out = io.BytesIO()
    configure_logging("tester", fmt="json", file=out)
    yield lambda: [msgspec.json.decode(line) for line in out.getvalue().splitlines()]
    structlog.reset_defaults()
    logcontext.bind_all({})


def test_a_line_carries_the_bound_context_and_an_iso_timestamp(
    lines: Callable[[], list[dict[str, object]]],
) -> None:
    """Bound keys appear on every line until reset; the event's own keys win."""
    log = structlog.get_logger("t")
    token = logcontext.bind(app="hello", subject="x")
    log.info("first", subject="own")
    logcontext.reset(token)
    log.info("second")
    first, second = lines()
    assert first["service"] == "tester" and first["app"] == "hello"
    assert first["subject"] == "own"
    assert "app" not in second
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", str(first["timestamp"]))


async def test_keys_a_handler_binds_do_not_leak_into_the_next_request(
    lines: Callable[[], list[dict[str, object]]],
    bus_factory: Callable[[str], Awaitable[Bus]],
    unique: str,
) -> None:
    """RPC workers are long-lived; each request starts from the worker's base context."""
    subject = subjects.rpc(Service.GATEWAY, f"echo{unique}")
    rpc: Rpc[Echo, Echo] = Rpc("tester", "echo", subject, Echo, Echo)
    server, client = await bus_factory("tester"), await bus_factory("gateway")

    async def handle(request: Echo) -> Echo:
        if request.text == "bind":
            logcontext.bind(secret_key="only-for-this-request")
        return request

    await server.serve(rpc, handle, concurrency=1)
    await client.call(rpc, Echo(text="bind"))
    await client.call(rpc, Echo(text="plain"))
    await asyncio.sleep(0)
    canonical = [line for line in lines() if line.get("event") == "rpc"]
    assert len(canonical) == 2
    assert "secret_key" not in canonical[1]
    assert canonical[1]["caller"] == "gateway"
