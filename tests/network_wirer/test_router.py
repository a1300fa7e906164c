"""The router end to end: real HAProxy, real containers, the real network-wirer."""

from __future__ import annotations

import asyncio
import json
import ssl
import warnings
from collections import Counter
from pathlib import Path

import aiohttp
import msgspec
import pytest

from slipway.contracts.logs import RouterAccess, router_subject
from slipway.libs.haproxy import HAProxyServer
from slipway.services.network_wirer.ca import RouterCA
from tests.conftest import assert_eventually
from tests.network_wirer.conftest import Dynos, Router, RunningWirer, World

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]

REQUEST_ID = "access-line-request-id-0001"


async def test_routes_by_host_across_every_web_dyno(
    world: World, dynos: Dynos, wirer: RunningWirer, router: Router
) -> None:
    """Three dynos of one app each get traffic; another app and an unknown host stay apart."""
    hello, other = world.app("hello"), world.app("other")
    for name in ("web.1", "web.2", "web.3"):
        await world.set_dyno(await dynos.start(hello, name), announce=False)
    await world.set_dyno(await dynos.start(other, "web.1"), announce=False)
    await wirer.start()

    seen: Counter[str] = Counter()
    for _ in range(9):
        status, body, _ = await router.get("hello.localhost")
        assert status == 200
        seen[json.loads(body)["dyno"]] += 1
    assert set(seen) == {"web.1", "web.2", "web.3"}

    status, body, _ = await router.get("other.localhost")
    assert status == 200
    assert json.loads(body)["dyno"] == "web.1"
    status, body, _ = await router.get("nobody.localhost")
    assert status == 404
    assert "No such app" in body


async def test_request_id_and_forwarded_headers(
    world: World, dynos: Dynos, wirer: RunningWirer, router: Router, haproxy_server: HAProxyServer
) -> None:
    """The dyno sees X-Request-Id (kept when valid, else made) and X-Forwarded-For/Proto/Port.

    HAProxy sends header names lowercased (HTTP/1.1 names are case-insensitive)."""
    app = world.app("headers")
    await world.set_dyno(await dynos.start(app), announce=False)
    await wirer.start()

    mine = "client-chosen-request-id-0001"
    status, body, headers = await router.get("headers.localhost", headers={"X-Request-Id": mine})
    assert status == 200
    seen = json.loads(body)["headers"]
    assert seen["x-request-id"] == mine
    assert headers["X-Request-Id"] == mine
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-port"] == str(haproxy_server.ports.http_port)

    # Heroku's rule: 20 to 200 characters of [A-Za-z0-9+=/-]; anything else is replaced.
    for sent in ({}, {"X-Request-Id": "abc"}):
        status, body, headers = await router.get("headers.localhost", headers=sent)
        made = json.loads(body)["headers"]["x-request-id"]
        assert len(made) == 36
        assert headers["X-Request-Id"] == made


async def test_access_lines_name_app_dyno_and_status(
    world: World, dynos: Dynos, wirer: RunningWirer, router: Router
) -> None:
    """Each request becomes a RouterAccess record on the app's router subject."""
    app = world.app("logged")
    await world.set_dyno(await dynos.start(app, "web.2"), announce=False)
    chunks = await world.gateway.live_subscribe(router_subject(app.app_id))
    await wirer.start()

    sent = {"X-Request-Id": REQUEST_ID}
    status, _, _ = await router.get("logged.localhost", "/some/path?q=1", sent)
    assert status == 200
    data = await asyncio.wait_for(anext(chunks), 10)
    access = msgspec.json.decode(data, type=RouterAccess)
    assert (access.method, access.path, access.host) == (
        "GET",
        "/some/path?q=1",
        "logged.localhost",
    )
    assert (access.request_id, access.dyno, access.status) == (REQUEST_ID, "web.2", 200)
    assert access.fwd == "127.0.0.1"
    assert access.bytes > 0
    assert access.code == ""


async def test_killed_dyno_does_not_fail_requests(
    world: World, dynos: Dynos, wirer: RunningWirer, router: Router
) -> None:
    """With one of two dynos killed (and no event yet), every request still succeeds."""
    app = world.app("sturdy")
    first = await dynos.start(app, "web.1")
    await world.set_dyno(first, announce=False)
    await world.set_dyno(await dynos.start(app, "web.2"), announce=False)
    await wirer.start()
    await dynos.kill(first)

    statuses = [(await router.get("sturdy.localhost"))[0] for _ in range(20)]
    assert statuses == [200] * 20


async def test_no_web_dynos_then_crashed_pages(
    world: World, dynos: Dynos, wirer: RunningWirer, router: Router
) -> None:
    """Scaled to zero answers H14 (503); dynos that all crashed answer H10 (503)."""
    app = world.app("scaled")
    dyno = await dynos.start(app)
    await world.set_dyno(dyno, announce=False)
    await wirer.start()
    assert (await router.get("scaled.localhost"))[0] == 200

    dyno = await world.dyno_state(dyno, "down")

    async def h14() -> None:
        status, body, headers = await router.get("scaled.localhost")
        assert status == 503
        assert "H14" in body
        assert headers["X-Router-Error"] == "H14"

    await assert_eventually(h14)
    await world.dyno_state(dyno, "crashed")

    async def h10() -> None:
        status, body, _ = await router.get("scaled.localhost")
        assert status == 503
        assert "H10" in body

    await assert_eventually(h10)


async def test_slow_dyno_answers_h12(
    world: World, dynos: Dynos, wirer: RunningWirer, router: Router
) -> None:
    """A dyno that does not answer within the router's timeout gives the H12 page (503)."""
    app = world.app("slow")
    await world.set_dyno(await dynos.start(app), announce=False)
    await wirer.start(router_upstream_timeout=1.0)
    status, body, headers = await router.get("slow.localhost", "/sleep?s=3")
    assert status == 503
    assert "H12" in body
    assert headers["X-Router-Error"] == "H12"


async def test_maintenance_on_and_off(
    world: World, dynos: Dynos, wirer: RunningWirer, router: Router
) -> None:
    """Maintenance answers its page with 503; switched off, the app answers again."""
    app = world.app("upkeep")
    await world.set_dyno(await dynos.start(app), announce=False)
    await wirer.start()
    assert (await router.get("upkeep.localhost"))[0] == 200

    app = await world.maintenance(app, True)

    async def in_maintenance() -> None:
        status, body, _ = await router.get("upkeep.localhost")
        assert status == 503
        assert "maintenance" in body

    await assert_eventually(in_maintenance)
    await world.maintenance(app, False)

    async def back() -> None:
        assert (await router.get("upkeep.localhost"))[0] == 200

    await assert_eventually(back)


@pytest.mark.parametrize("host", ["www.secure-example.test", "secure.localhost"])
async def test_custom_domain_and_app_host_over_https_with_internal_ca(
    world: World, dynos: Dynos, wirer: RunningWirer, haproxy_server: HAProxyServer, host: str
) -> None:
    """A custom domain and the app's own host answer on the HTTPS port, TLS 1.2 or newer,
    with certificates from the router's CA (in network-wirer's state folder)."""
    app = world.app("secure", domains=["www.secure-example.test"])
    await world.set_dyno(await dynos.start(app), announce=False)
    running = await wirer.start()
    root, _ = RouterCA.paths(wirer.settings.home_path / "network-wirer")
    await running.refresh()  # certificates follow the routes by a pass at most

    context = ssl.create_default_context(cafile=str(root))
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"https://127.0.0.1:{haproxy_server.ports.https_port}/",
            headers={"Host": host},
            server_hostname=host,
            ssl=context,
        ) as response,
    ):
        assert response.status == 200
        seen = json.loads(await response.text())
    assert seen["headers"]["x-forwarded-proto"] == "https"

    # TLS 1.2 is accepted, older protocols are refused outright.
    port = haproxy_server.ports.https_port
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=_pinned(root, ssl.TLSVersion.TLSv1_2), server_hostname=host
    )
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
    writer.close()
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.open_connection(
            "127.0.0.1", port, ssl=_pinned(root, ssl.TLSVersion.TLSv1_1), server_hostname=host
        )


async def test_hsts_only_over_https_and_only_for_apps_that_ask(
    world: World, dynos: Dynos, wirer: RunningWirer, haproxy_server: HAProxyServer
) -> None:
    """The `hsts` feature puts Strict-Transport-Security on the app's HTTPS answers (never
    on plain HTTP, never on another app's); switched off, the header goes."""
    strict, plain = world.app("strict"), world.app("plain")
    for app in (strict, plain):
        await world.set_dyno(await dynos.start(app), announce=False)
    running = await wirer.start()
    root, _ = RouterCA.paths(wirer.settings.home_path / "network-wirer")
    context = ssl.create_default_context(cafile=str(root))

    async def header(host: str, scheme: str) -> str | None:
        port = (
            haproxy_server.ports.https_port if scheme == "https" else haproxy_server.ports.http_port
        )
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{scheme}://127.0.0.1:{port}/",
                headers={"Host": host},
                server_hostname=host if scheme == "https" else None,
                ssl=context if scheme == "https" else False,
            ) as response,
        ):
            assert response.status == 200
            return response.headers.get("Strict-Transport-Security")

    await running.refresh()  # certificates follow the routes by a pass at most
    assert await header("strict.localhost", "https") is None
    await world.hsts(strict, True)

    async def on() -> None:
        assert await header("strict.localhost", "https") == "max-age=31536000"

    await assert_eventually(on)
    assert await header("strict.localhost", "http") is None
    assert await header("plain.localhost", "https") is None

    await world.hsts(world.apps[strict.app_id], False)

    async def off() -> None:
        assert await header("strict.localhost", "https") is None

    await assert_eventually(off)


def _pinned(root: Path, newest: ssl.TLSVersion) -> ssl.SSLContext:
    """A client context offering TLS versions up to `newest` only."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(root))
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = newest
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # lets the client offer TLS 1.1 at all
    return context


async def test_websocket_echo_through_router(
    world: World, dynos: Dynos, wirer: RunningWirer, haproxy_server: HAProxyServer
) -> None:
    """A websocket upgrades through the router and echoes both ways."""
    app = world.app("sockets")
    await world.set_dyno(await dynos.start(app), announce=False)
    await wirer.start()
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"http://127.0.0.1:{haproxy_server.ports.http_port}/ws",
            headers={"Host": "sockets.localhost"},
        ) as ws,
    ):
        for text in ("ping", "pong"):
            await ws.send_str(text)
            assert (await ws.receive_str(timeout=10)) == f"web.1:{text}"


async def test_routes_heal_after_restarts_and_missed_events(
    world: World, dynos: Dynos, wirer: RunningWirer, router: Router, haproxy_server: HAProxyServer
) -> None:
    """A restarted HAProxy and wirer route again; a change nobody announced is picked up."""
    app = world.app("healing")
    await world.set_dyno(await dynos.start(app, "web.1"), announce=False)
    running = await wirer.start(reconcile_interval=0.5)
    assert (await router.get("healing.localhost"))[0] == 200
    # Nothing changed: further passes send HAProxy no command and never reload.
    before = (running.snapshot.commands, running.snapshot.reloads)
    await running.refresh()
    await running.refresh()
    assert (running.snapshot.commands, running.snapshot.reloads) == before

    await wirer.stop()
    # Restarted, HAProxy has only what its files say: routes added at runtime are gone.
    await asyncio.to_thread(haproxy_server.stop)
    await asyncio.to_thread(haproxy_server.start)
    assert (await router.get("healing.localhost"))[0] == 404
    await wirer.start(reconcile_interval=0.5)
    assert (await router.get("healing.localhost"))[0] == 200

    # A second dyno the scheduler never announced: the periodic reconcile finds it.
    await world.set_dyno(await dynos.start(app, "web.2"), announce=False)

    async def both() -> None:
        names = {json.loads((await router.get("healing.localhost"))[1])["dyno"] for _ in range(4)}
        assert names == {"web.1", "web.2"}

    await assert_eventually(both)
