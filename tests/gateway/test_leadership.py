"""Two gateways, one store: the standby refuses with 503 until the leader goes, then serves."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from slipway.services.gateway.app import create_service
from tests.conftest import assert_eventually
from tests.gateway.conftest import Api, Stack, gateway_settings, stop

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_standby_gateway_refuses_then_takes_over_with_the_same_store(stack: Stack) -> None:
    """While the leader runs the standby answers 503; stopped, the standby serves its data."""
    app = await stack.app(stack.admin, "leased")
    port = free_port()
    standby = create_service(gateway_settings(stack.nats.url, stack.home, api_port=port))
    task = asyncio.create_task(standby.run(install_signals=False))
    there = Api(stack.session, f"http://127.0.0.1:{port}", stack.admin.token, stack.admin.email)
    try:

        async def refuses() -> None:
            try:
                health = await there.get("/healthz")
            except aiohttp.ClientConnectionError as exc:
                raise AssertionError("the standby does not listen yet") from exc
            assert health.status == 503, health.body
            assert health.body == {"role": "standby", "instance": standby.bus.instance}
            answer = await there.get(f"/apps/{app['id']}")
            assert answer.status == 503
            assert answer.error_id == "unavailable"
            assert answer.headers["Retry-After"] == "1"

        await assert_eventually(refuses, timeout=20)
        leader = await stack.admin.get("/healthz")
        assert leader.status == 200 and leader.body["role"] == "leader"

        stack.gateway.stop()  # the fixture awaits its end
        await asyncio.wait_for(standby.started.wait(), 30)
        health = await there.get("/healthz")
        assert health.status == 200 and health.body["role"] == "leader"
        # The same store: the app and the admin's token made through the old leader.
        got = await there.get(f"/apps/{app['id']}")
        assert got.status == 200 and got.body["name"] == "leased"
    finally:
        await stop(standby, task)
