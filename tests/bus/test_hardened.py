"""The hardened NATS configuration: per-service users whose inbox proves who they are."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import pytest

from slipway.contracts import keyring, subjects
from slipway.contracts.gateway import RELEASE_CREATE, CreateRelease
from slipway.contracts.logs import router_subject
from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus, NotProvisioned, route
from slipway.libs.bus import context as bus_context
from slipway.libs.natsserver import NatsServer
from tests.conftest import assert_eventually

pytestmark = pytest.mark.integration


async def connect(server: NatsServer, service: str) -> Bus:
    return await Bus.connect(server.url, service, user=service, password=server.users[service])


async def test_services_call_each_other_and_the_caller_is_proven(hardened: NatsServer) -> None:
    """Under per-service users a declared RPC works and the handler sees the caller's name."""
    keyring_bus, gateway = await connect(hardened, "keyring"), await connect(hardened, "gateway")

    async def handle(req: keyring.GetAuditKey) -> keyring.AuditKey:
        ctx = bus_context.current()
        return keyring.AuditKey(key_id=str(ctx.caller if ctx else None), public_key=b"")

    await keyring_bus.serve(keyring.AUDIT_KEY, handle)
    assert (await gateway.call(keyring.AUDIT_KEY, keyring.GetAuditKey())).key_id == "gateway"
    await keyring_bus.close()
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

    def refused() -> None:
        assert len(errors) == 2
        assert all("permissions violation" in str(e).lower() for e in errors)

    await assert_eventually(refused)
    await nc.close()


async def test_live_subjects_are_read_only_by_their_readers(hardened: NatsServer) -> None:
    """The log-shipper hears the wirer's router lines; the builder may not listen to logs."""
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    shipper = await nats.connect(
        hardened.url, user="log-shipper", password=hardened.users["log-shipper"]
    )
    heard = await shipper.subscribe(subjects.live_filter("router"))
    await shipper.flush()
    wirer = await nats.connect(
        hardened.url, user="network-wirer", password=hardened.users["network-wirer"]
    )
    await wirer.publish(router_subject("app1"), b"line")
    builder = await nats.connect(
        hardened.url, user="builder", password=hardened.users["builder"], error_cb=on_error
    )
    await builder.subscribe(subjects.live("logs", "app1"))
    assert (await heard.next_msg(timeout=5)).data == b"line"

    def refused() -> None:
        assert errors and "permissions violation" in str(errors[0]).lower()

    await assert_eventually(refused)
    for nc in (shipper, wirer, builder):
        await nc.close()


async def test_a_service_binds_to_its_provisioned_consumer(hardened: NatsServer) -> None:
    """The gateway takes and acks a command the builder sent, from the provisioned consumer."""
    gateway, builder = await connect(hardened, "gateway"), await connect(hardened, "builder")
    got: list[CreateRelease] = []

    async def handle(cmd: CreateRelease) -> None:
        got.append(cmd)

    await gateway.consume_commands([route(RELEASE_CREATE, handle)])
    command = CreateRelease(app_id="a1", image_ref="r/a@sha256:0", image_digest="sha256:0")
    assert await builder.send(RELEASE_CREATE, command)

    operator = await connect(hardened, "operator")

    async def handled_and_acked() -> None:
        assert [c.command_id for c in got] == [command.command_id]
        # A work queue drops a message once acked: the ack was allowed too.
        assert (await operator.js.stream_info(subjects.STREAM_CMD)).state.messages == 0

    await assert_eventually(handled_and_acked)
    for bus in (gateway, builder, operator):
        await bus.close()


async def test_an_undeclared_consumer_is_reported_not_created(hardened: NatsServer) -> None:
    """A service asking for a consumer nobody declared is told to declare it; none appears."""
    gateway = await connect(hardened, "gateway")
    with pytest.raises(NotProvisioned, match=r"declare it in contracts/catalog\.py"):
        await gateway.consume_events("undeclared", [route(RELEASE_CREATE, _ignore)])
    await gateway.close()
    operator = await connect(hardened, "operator")
    names = [c.name for c in await operator.js.consumers_info(subjects.STREAM_EVT)]
    assert "gateway-undeclared" not in names
    await operator.close()


async def _ignore(_: CreateRelease) -> None:
    return None


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


async def test_each_named_instance_gets_its_own_consumer(tmp_path: Path) -> None:
    """Two log-shipper hosts each get a provisioned durable they may bind to."""
    server = NatsServer(tmp_path / "nats", hardened=True, instances={"log-shipper": ["h1", "h2"]})
    server.start()
    try:
        shipper = await connect(server, "log-shipper")
        for host in ("h1", "h2"):
            durable = subjects.durable(Service.LOG_SHIPPER, f"host-{host}")
            bound = await shipper.js.pull_subscribe_bind(durable, stream=subjects.STREAM_EVT)
            assert (await bound.consumer_info()).name == durable
        await shipper.close()
    finally:
        server.stop()
