"""Drains: RFC 5424 over TLS with octet counting, HTTPS logplex batches, a dead drain isolated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from slipway.contracts.log_shipper import DRAIN_ADD, AddDrain
from slipway.libs.bus import Bus
from tests.conftest import assert_eventually
from tests.gateway.conftest import Stack
from tests.log_shipper.conftest import Dynos, ShipperFactory, new_id
from tests.log_shipper.drain_servers import (
    RFC5424,
    free_port,
    https_server,
    self_signed,
    server_tls,
    split_frames,
    syslog_server,
)

pytestmark = [pytest.mark.docker, pytest.mark.integration]

THREE = "import sys\nprint('one')\nprint('two')\nprint('three', file=sys.stderr)"


async def test_a_syslog_tls_drain_receives_rfc5424_octet_counted_lines(
    tmp_path: Path,
    dynos: Dynos,
    shipper_settings: ShipperFactory,
    start_shipper: Any,
    bus_factory: Any,
) -> None:
    """Each line arrives as `<len> <190>1 TS d.token app web.1 - - text` over TLS."""
    cert, key = self_signed(tmp_path)
    await start_shipper(shipper_settings(drain_ca_file=str(cert)))
    bus: Bus = await bus_factory("gateway")
    app_id, team_id = new_id(), new_id()
    async with syslog_server(server_tls(cert, key)) as (server, port):
        added = await bus.call(
            DRAIN_ADD,
            AddDrain(app_id=app_id, team_id=team_id, url=f"syslog+tls://localhost:{port}"),
        )
        await dynos.run(app_id, team_id, "web.1", THREE)

        def three() -> None:
            assert len(server.messages) == 3, server.messages

        await assert_eventually(three, timeout=20)
    assert server.errors == []
    parsed = [RFC5424.match(m) for m in server.messages]
    assert all(parsed), server.messages
    fields = [(p["pri"], p["host"], p["app"], p["proc"], p["msg"]) for p in parsed if p]
    token = added.drain.token
    # stdout and stderr are separate pipes: Docker may stamp `three` before the others.
    assert [f[4] for f in fields if f[4] != "three"] == ["one", "two"]
    assert sorted(fields) == [
        ("187", token, "app", "web.1", "three"),
        ("190", token, "app", "web.1", "one"),
        ("190", token, "app", "web.1", "two"),
    ]


async def test_a_dead_drain_holds_up_no_other_and_is_retried(
    tmp_path: Path,
    stack: Stack,
    dynos: Dynos,
    shipper_settings: ShipperFactory,
    start_shipper: Any,
) -> None:
    """With one drain down, the HTTPS drain gets every line; the dead one catches up later."""
    cert, key = self_signed(tmp_path)
    running = await start_shipper(shipper_settings(drain_ca_file=str(cert), drain_backoff_max=0.5))
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "drained")
    down_port = free_port()
    async with https_server(server_tls(cert, key)) as (https, port):
        live = await alice.ok(
            "POST", "/apps/drained/log-drains", {"url": f"https://localhost:{port}/logs"}, 201
        )
        dead = await alice.ok(
            "POST", "/apps/drained/log-drains", {"url": f"syslog+tls://localhost:{down_port}"}, 201
        )
        assert set(live) >= {"id", "token", "url", "app", "created_at", "updated_at", "addon"}
        listed = await alice.ok("GET", "/apps/drained/log-drains")
        assert {d["id"] for d in listed} == {live["id"], dead["id"]}
        await dynos.run(app["id"], app["team"]["id"], "web.1", THREE)

        def https_got_three() -> list[str]:
            frames = [m for _, body in https.posts for m in split_frames(body)]
            texts = [m.rsplit(" ", 1)[-1] for m in frames if "app web.1" in m]
            assert sorted(texts) == ["one", "three", "two"]
            assert texts.index("one") < texts.index("two")
            return frames

        await assert_eventually(https_got_three, timeout=20)
        headers = https.posts[0][0]
        assert headers["Content-Type"] == "application/logplex-1"
        assert headers["Logplex-Drain-Token"] == live["token"]
        assert int(headers["Logplex-Msg-Count"]) == len(split_frames(https.posts[0][1]))

    worker = running.shipper.drains.workers[dead["id"]]

    def retried() -> None:
        assert worker.failures >= 2

    await assert_eventually(retried, timeout=10)
    async with syslog_server(server_tls(cert, key), down_port) as (syslog, _):

        def caught_up() -> None:
            texts = [m.rsplit(" ", 1)[-1] for m in syslog.messages if "app web.1" in m]
            assert sorted(texts) == ["one", "three", "two"]

        await assert_eventually(caught_up, timeout=10)
    removed = await alice.ok("DELETE", f"/apps/drained/log-drains/{dead['id']}")
    assert removed["id"] == dead["id"]
    assert [d["id"] for d in await alice.ok("GET", "/apps/drained/log-drains")] == [live["id"]]
    assert dead["id"] not in running.shipper.drains.workers


async def test_plaintext_drains_are_refused(
    stack: Stack, shipper_settings: ShipperFactory, start_shipper: Any
) -> None:
    """syslog:// and http:// drains get a 422 naming the schemes that are allowed."""
    await start_shipper(shipper_settings())
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "strict")
    for url in ("syslog://logs.example.test:514", "http://logs.example.test/x", "nonsense"):
        answer = await alice.post("/apps/strict/log-drains", {"url": url})
        assert answer.status == 422, (url, answer.body)
        assert "syslog+tls://" in answer.body["message"]
