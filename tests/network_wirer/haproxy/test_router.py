"""The HAProxy router end to end: real HAProxy, real HTTP dynos, the runtime reconciler."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from functools import partial
from typing import Any

import aiohttp
import pytest

from slipway.services.network_wirer.haproxy.access import AccessJoiner
from slipway.services.network_wirer.haproxy.reconcile import Reconciler
from slipway.services.network_wirer.pages import load
from tests.conftest import assert_eventually
from tests.network_wirer.haproxy.conftest import Dynos, HAProxyRouter, route

pytestmark = [pytest.mark.integration]

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


async def test_routes_by_host_whatever_its_case_and_port(
    haproxy: HAProxyRouter, dynos: Dynos
) -> None:
    """Host is matched lowercased without its port; each dyno of an app gets traffic."""
    web1, web2, other = await dynos.start("web.1"), await dynos.start("web.2"), None
    other = await dynos.start("web.1")
    await haproxy.reconciler.reconcile(
        [route("hello", web1, web2, hosts=("www.hello-example.test",)), route("other", other)]
    )
    seen: Counter[str] = Counter()
    for host in ("hello.localhost", "HELLO.LocalHost:8080", "www.hello-example.test:1") * 2:
        status, body, _ = await haproxy.get(host)
        assert status == 200
        seen[json.loads(body)["dyno"]] += 1
    assert seen == {"web.1": 3, "web.2": 3}
    status, body, _ = await haproxy.get("other.localhost")
    assert (status, json.loads(body)["dyno"]) == (200, "web.1")
    assert json.loads(body)["dyno"] == "web.1"
    status, body, headers = await haproxy.get("nobody.localhost")
    assert status == 404
    assert "No such app" in body
    assert "X-Router-Error" not in headers


async def test_request_id_kept_when_valid_else_generated(
    haproxy: HAProxyRouter, dynos: Dynos
) -> None:
    """A valid X-Request-Id reaches the dyno and comes back; others are replaced by a UUID."""
    await haproxy.reconciler.reconcile([route("rid", await dynos.start())])
    valid = ["0f8fad5b-d9cb-469f-a165-70867728950e", "a" * 20, "Ab+/=-" * 33 + "xy"]
    for rid in valid:
        status, body, headers = await haproxy.get("rid.localhost", headers={"X-Request-Id": rid})
        assert status == 200
        assert json.loads(body)["headers"]["x-request-id"] == rid
        assert headers["X-Request-Id"] == rid
    invalid: list[Any] = [
        {"X-Request-Id": "abc"},  # too short
        {"X-Request-Id": "a" * 201},  # too long
        {"X-Request-Id": "a" * 19 + " x"},  # a space
        {"X-Request-Id": "a" * 20 + ",b" * 10},  # a comma: two ids in one
        [("X-Request-Id", "a" * 20), ("X-Request-Id", "b" * 20)],  # two headers
        None,
    ]
    for headers_sent in invalid:
        _, body, headers = await haproxy.get("rid.localhost", headers=headers_sent)
        seen = json.loads(body)["headers"]["x-request-id"]
        assert UUID.match(seen), seen
        assert headers["X-Request-Id"] == seen
    # The router's own pages carry one too.
    _, _, headers = await haproxy.get("nobody.localhost")
    assert UUID.match(headers["X-Request-Id"])


async def test_forwarded_headers_and_via(haproxy: HAProxyRouter, dynos: Dynos) -> None:
    """The dyno sees the client's address (never a forged one), the scheme, the port, Via,
    and X-Request-Start: when the router got the request, in ms (never the client's)."""
    await haproxy.reconciler.reconcile([route("fwd", await dynos.start())])
    forged = {
        "X-Forwarded-For": "6.6.6.6",
        "X-Forwarded-Proto": "https",
        "Via": "1.0 front",
        "X-Request-Start": "1",
    }
    before = time.time() * 1000
    _, body, _ = await haproxy.get("fwd.localhost", headers=forged)
    after = time.time() * 1000
    seen = json.loads(body)["headers"]
    assert before - 1000 <= int(seen["x-request-start"]) <= after + 1000
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-port"] == str(haproxy.http_port)
    assert seen["via"] == "1.0 front, 1.1 slipway"


async def test_route_states_answer_their_pages_and_codes(
    haproxy: HAProxyRouter, dynos: Dynos
) -> None:
    """Maintenance (H80), no web dyno (H14), all crashed (H10): 503 pages, codes logged."""
    web = await dynos.start()
    cases = [
        (route("app", web, maintenance=True), "maintenance", "H80"),
        (route("app"), "H14", "H14"),
        (route("app", crashed=True), "H10", "H10"),
    ]
    joiner = AccessJoiner()
    for desired, text, code in cases:
        await haproxy.reconciler.reconcile([desired])
        joiner.update([desired])
        status, body, headers = await haproxy.get("app.localhost")
        assert (status, headers["X-Router-Error"], headers["Retry-After"]) == (503, code, "30")
        assert text in body
        access = joiner.record(await haproxy.next_record("app.localhost"))
        assert access is not None
        assert (access.status, access.code, access.dyno) == (503, code, "")
    await haproxy.reconciler.reconcile([route("app", web)])
    assert (await haproxy.get("app.localhost"))[0] == 200


@pytest.mark.parametrize("haproxy_options", [{"upstream_timeout": 1.0}])
async def test_dyno_errors_answer_h12_h13_h10(haproxy: HAProxyRouter, dynos: Dynos) -> None:
    """No answer in time is H12, a hang-up H13, every dyno refusing H10: all 503 pages."""
    web = await dynos.start()
    desired = route("err", web)
    joiner = AccessJoiner()
    joiner.update([desired])
    await haproxy.reconciler.reconcile([desired])
    for path, code, page in (("/sleep?s=3", "H12", "H12"), ("/close", "H13", "error")):
        status, body, headers = await haproxy.get("err.localhost", path)
        assert (status, headers["X-Router-Error"]) == (503, code)
        assert page in body
        access = joiner.record(await haproxy.next_record("err.localhost"))
        assert access is not None
        assert (access.status, access.code, access.dyno) == (503, code, "web.1")
    await dynos.stop(web)
    status, body, headers = await haproxy.get("err.localhost")
    assert (status, headers["X-Router-Error"]) == (503, "H10")
    access = joiner.record(await haproxy.next_record("err.localhost"))
    assert access is not None
    assert (access.status, access.code) == (503, "H10")


async def test_refused_dyno_is_retried_on_another(haproxy: HAProxyRouter, dynos: Dynos) -> None:
    """With one of two dynos gone (and no change told yet), every request still succeeds."""
    web1, web2 = await dynos.start("web.1"), await dynos.start("web.2")
    await haproxy.reconciler.reconcile([route("sturdy", web1, web2)])
    await dynos.stop(web1)
    statuses = [(await haproxy.get("sturdy.localhost"))[0] for _ in range(20)]
    assert statuses == [200] * 20


async def test_access_line_has_dyno_and_times(haproxy: HAProxyRouter, dynos: Dynos) -> None:
    """The log socket's line names app, dyno, path, request id, status, bytes and times."""
    desired = route("logged", await dynos.start("web.2"))
    await haproxy.reconciler.reconcile([desired])
    joiner = AccessJoiner()
    joiner.update([desired])
    rid = "request-id-of-twenty-chars"
    status, body, _ = await haproxy.get(
        "Logged.localhost:80", "/sleep?s=0.3&x=%20y", {"X-Request-Id": rid}
    )
    assert status == 200
    access = joiner.record(await haproxy.next_record("logged.localhost"))
    assert access is not None
    assert (access.app_id, access.method, access.path, access.host) == (
        "id-logged",
        "GET",
        "/sleep?s=0.3&x=%20y",
        "logged.localhost",
    )
    assert (access.request_id, access.dyno, access.status, access.code) == (rid, "web.2", 200, "")
    assert access.fwd == "127.0.0.1"
    assert access.bytes > len(body)  # headers included
    assert access.connect_ms >= 0
    assert access.service_ms >= 300  # the dyno slept 0.3 s
    assert access.protocol == "http"


async def test_websocket_echo_through_router(haproxy: HAProxyRouter, dynos: Dynos) -> None:
    """A websocket upgrades through the router and echoes both ways."""
    await haproxy.reconciler.reconcile([route("sockets", await dynos.start())])
    async with haproxy.session.ws_connect(
        haproxy.url("/ws"), headers={"Host": "sockets.localhost"}
    ) as ws:
        for text in ("ping", "pong"):
            await ws.send_str(text)
            assert (await ws.receive_str(timeout=10)) == f"web.1:{text}"


async def test_drained_dyno_finishes_in_flight_requests(
    haproxy: HAProxyRouter, dynos: Dynos
) -> None:
    """A dyno replaced mid-request answers it; new requests go to its successor; it is
    then deleted from HAProxy once idle."""
    old = await dynos.start("web.1")
    await haproxy.reconciler.reconcile([route("roll", old)])
    in_flight = asyncio.create_task(haproxy.get("roll.localhost", "/sleep?s=1.5"))

    async def connected() -> None:
        servers = await haproxy.reconciler.runtime.show_servers("be_0")
        assert [s.sessions for s in servers] == [1]

    await assert_eventually(connected)
    new = await dynos.start("web.2")
    outcome = await haproxy.reconciler.reconcile([route("roll", new)])
    assert outcome.pending  # web.1 still serves its request: drained, not deleted
    for _ in range(4):
        status, body, _ = await haproxy.get("roll.localhost")
        assert (status, json.loads(body)["dyno"]) == (200, "web.2")
    status, body, _ = await in_flight
    assert (status, json.loads(body)) == (200, {"dyno": "web.1", "slept": True})

    async def deleted() -> None:
        outcome = await haproxy.reconciler.reconcile([route("roll", new)])
        assert not outcome.pending
        servers = await haproxy.reconciler.runtime.show_servers("be_0")
        assert [s.dial for s in servers] == [new.dial]

    await assert_eventually(deleted)


async def test_reconcile_is_idempotent_and_survives_restarts(
    haproxy: HAProxyRouter, dynos: Dynos
) -> None:
    """A second pass sends nothing; a fresh reconciler (wirer crash), a change made behind
    its back and a restarted HAProxy (its boot files are stale) all end routed as desired."""
    web = await dynos.start()
    desired = [route("first", web), route("second", web, maintenance=True)]
    assert (await haproxy.reconciler.reconcile(desired)).commands > 0
    assert (await haproxy.reconciler.reconcile(desired)).commands == 0
    fresh = Reconciler(haproxy.server, haproxy.options, load())
    try:
        assert (await fresh.reconcile(desired)).commands == 0
        await fresh.runtime.expect(f"del map {haproxy.options.map_path} first.localhost")
        assert (await haproxy.get("first.localhost"))[0] == 404
        assert (await fresh.reconcile(desired, full=True)).commands == 1
        assert (await haproxy.get("first.localhost"))[0] == 200
    finally:
        await fresh.close()

    await asyncio.to_thread(haproxy.server.stop)
    await asyncio.to_thread(haproxy.server.start)
    assert (await haproxy.get("first.localhost"))[0] == 404  # the boot map was empty
    assert (await haproxy.reconciler.reconcile(desired)).commands > 0
    assert (await haproxy.get("first.localhost"))[0] == 200
    assert (await haproxy.get("second.localhost"))[0] == 503


@pytest.mark.parametrize("pool_size", [2])
async def test_pool_grows_by_reload_under_load_without_failures(
    haproxy: HAProxyRouter, dynos: Dynos
) -> None:
    """More apps than backends: one seamless reload, no request fails meanwhile."""
    web = await dynos.start()
    await haproxy.reconciler.reconcile([route("busy", web)])
    statuses: Counter[int | str] = Counter()
    stop = asyncio.Event()

    async def load() -> None:
        # A fresh connection per request too: the listeners must never refuse one.
        async with aiohttp.ClientSession() as fresh:
            while not stop.is_set():
                for session in (haproxy.session, fresh):
                    try:
                        async with session.get(
                            haproxy.url(), headers={"Host": "busy.localhost", "Connection": "close"}
                        ) as response:
                            await response.read()
                            statuses[response.status] += 1
                    except aiohttp.ClientError as exc:
                        statuses[type(exc).__name__] += 1

    loaders = [asyncio.create_task(load()) for _ in range(4)]
    await assert_eventually(lambda: _at_least(statuses, 50))
    more = [route(f"more{i}", web) for i in range(5)]
    outcome = await haproxy.reconciler.reconcile([route("busy", web), *more])
    assert outcome.reloaded
    assert outcome.layout is not None and outcome.layout.pool_size >= 6
    counted = sum(statuses.values())
    await assert_eventually(lambda: _at_least(statuses, counted + 50))
    stop.set()
    await asyncio.gather(*loaders)
    assert set(statuses) == {200}, statuses
    for i in range(5):
        assert (await haproxy.get(f"more{i}.localhost"))[0] == 200
    assert (await haproxy.reconciler.reconcile([route("busy", web), *more])).commands == 0
    # Servers the reload declared in the file are deleted at runtime like added ones.
    web2 = await dynos.start("web.2")
    outcome = await haproxy.reconciler.reconcile([route("busy", web2), *more])
    assert outcome.layout is not None
    backend = outcome.layout.hosts["busy.localhost"].split(":")[0]

    async def replaced() -> None:
        assert not (await haproxy.reconciler.reconcile([route("busy", web2), *more])).pending
        servers = await haproxy.reconciler.runtime.show_servers(backend)
        assert [s.dial for s in servers] == [web2.dial]

    await assert_eventually(replaced)


def _at_least(statuses: Counter[int | str], count: int) -> None:
    assert sum(statuses.values()) >= count


async def test_thousands_of_new_hosts_in_one_pass(haproxy: HAProxyRouter, dynos: Dynos) -> None:
    """New hosts go in as `add map` payloads that fit HAProxy's buffer, and all route."""
    hosts = tuple(f"host-{i:04d}.many-domains.test" for i in range(3000))
    await haproxy.reconciler.reconcile([route("many", await dynos.start(), hosts=hosts)])
    entries = await haproxy.reconciler.runtime.show_map(str(haproxy.options.map_path))
    assert len(entries) == 3001
    assert (await haproxy.get(hosts[-1]))[0] == 200


async def test_route_changes_under_load_fail_no_request(
    haproxy: HAProxyRouter, dynos: Dynos
) -> None:
    """Dynos replaced, added and removed while clients keep sending: every request is
    answered 200, and every dyno that left is eventually deleted from HAProxy."""
    web = [await dynos.start(f"web.{i}") for i in range(1, 4)]
    rounds = [[web[0]], [web[1]], [web[1], web[2]], [web[0]], [web[2]], [web[0], web[1]]]
    await haproxy.reconciler.reconcile([route("churn", web[0])])
    statuses: Counter[int | str] = Counter()
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            try:
                async with haproxy.session.get(
                    haproxy.url("/sleep?s=0.05"), headers={"Host": "churn.localhost"}
                ) as response:
                    await response.read()
                    statuses[response.status] += 1
            except aiohttp.ClientError as exc:
                statuses[type(exc).__name__] += 1

    loaders = [asyncio.create_task(load()) for _ in range(6)]
    for upstreams in rounds:
        await haproxy.reconciler.reconcile([route("churn", *upstreams)])
        counted = sum(statuses.values())
        await assert_eventually(partial(_at_least, statuses, counted + 20))
    stop.set()
    await asyncio.gather(*loaders)
    assert set(statuses) == {200}, statuses

    async def settled() -> None:
        outcome = await haproxy.reconciler.reconcile([route("churn", *rounds[-1])])
        assert not outcome.pending
        servers = await haproxy.reconciler.runtime.show_servers()
        assert sorted(s.dial for s in servers) == sorted(u.dial for u in rounds[-1])

    await assert_eventually(settled)


def _connection_pool(answer: str) -> dict[str, str]:
    """`show servers conn` for one server: column → value."""
    header, row = (line for line in answer.splitlines() if line.strip())
    return dict(zip(header.lstrip("# ").split(), row.split(), strict=False))


async def test_servers_added_at_runtime_keep_idle_connections(
    haproxy: HAProxyRouter, dynos: Dynos
) -> None:
    """A dyno's server added through the runtime API gets the idle-connection pool a
    configured one has (2.6 gives it none: twice the router CPU per request)."""
    await haproxy.reconciler.reconcile([route("pooled", await dynos.start())])
    pool = _connection_pool(await haproxy.reconciler.runtime.command("show servers conn be_0"))
    assert (pool["purge_delay"], pool["idle_lim"]) == ("1000", "-1")


@pytest.mark.parametrize("haproxy_options", [{"check_interval": 0}])
async def test_no_health_checks_when_the_interval_is_zero(
    haproxy: HAProxyRouter, dynos: Dynos
) -> None:
    """check_interval 0 renders a valid configuration and adds servers without checks,
    before and after a reload."""
    web = await dynos.start()
    apps = [route(f"nocheck{i}", web) for i in range(6)]  # the pool of 4 grows: one reload
    outcome = await haproxy.reconciler.reconcile(apps)
    assert outcome.reloaded
    await haproxy.reconciler.reconcile([*apps, route("late", web)])
    for app in ("nocheck5", "late"):
        status, body, _ = await haproxy.get(f"{app}.localhost")
        assert (status, json.loads(body)["dyno"]) == (200, "web.1")
    states = await haproxy.reconciler.runtime.command("show servers state")
    assert re.search(r"\bweb\.1--", states)
    assert "check" not in haproxy.options.paths.config.read_text().split("backend be_0", 1)[1]
