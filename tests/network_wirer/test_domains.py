"""Custom domains in the gateway: Heroku's shape, validation, events, DESIRED_GET."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from slipway.contracts.gateway import DESIRED_GET, AppDesired, GetDesired
from slipway.contracts.scheduler import DYNOS_LIST, DynoList, ListDynos
from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus
from tests.conftest import assert_eventually
from tests.gateway.conftest import Stack
from tests.network_wirer.conftest import Dynos, Router, RunningWirer


async def test_add_list_show_and_remove_a_domain(stack: Stack) -> None:
    """A custom domain is added (201), listed beside the default one, shown, then removed."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")

    added = await alice.ok(
        "POST", "/apps/hello/domains", {"hostname": "WWW.Example.COM", "sni_endpoint": None}, 201
    )
    assert added["hostname"] == "www.example.com"
    assert added["kind"] == "custom"
    assert added["app"] == {"id": app["id"], "name": "hello"}

    listed = await alice.ok("GET", "/apps/hello/domains")
    assert [(d["hostname"], d["kind"]) for d in listed] == [
        ("hello.localhost", "heroku"),
        ("www.example.com", "custom"),
    ]
    shown = await alice.ok("GET", "/apps/hello/domains/www.example.com")
    assert shown["id"] == added["id"]

    removed = await alice.ok("DELETE", f"/apps/hello/domains/{added['id']}")
    assert removed["hostname"] == "www.example.com"
    gone = await alice.get("/apps/hello/domains/www.example.com")
    assert gone.status == 404
    assert gone.error_id == "not_found"


async def test_bad_or_taken_hostnames_are_refused(stack: Stack) -> None:
    """Invalid names, platform names and names another app holds answer 422."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    await stack.app(alice, "other")
    await alice.ok("POST", "/apps/hello/domains", {"hostname": "shop.example.com"}, 201)

    for hostname in ("not a host", "*.example.com", "localhost", "x.localhost", "-a.example.com"):
        answer = await alice.post("/apps/hello/domains", {"hostname": hostname})
        assert answer.status == 422, hostname
        assert answer.error_id == "invalid_params"
    taken = await alice.post("/apps/other/domains", {"hostname": "shop.example.com"})
    assert taken.status == 422
    assert "another app" in taken.body["message"]
    default = await alice.delete("/apps/hello/domains/hello.localhost")
    assert default.status == 422


async def test_domains_reach_events_and_desired_state(
    stack: Stack, bus_factory: Callable[[str], Awaitable[Bus]]
) -> None:
    """Adding and removing emit domain.added/removed; DESIRED_GET carries the hostnames."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    added = await alice.ok("POST", "/apps/hello/domains", {"hostname": "a.example.org"}, 201)
    await alice.ok("POST", "/apps/hello/domains", {"hostname": "b.example.org"}, 201)
    await alice.ok("DELETE", f"/apps/hello/domains/{added['id']}")

    wirer = await bus_factory(Service.NETWORK_WIRER)
    [desired] = (await wirer.call(DESIRED_GET, GetDesired(app_id=app["id"]))).apps
    assert desired.domains == ["b.example.org"]

    async def events() -> None:
        found = [(e["type"], e["hostname"]) for e in await stack.events("domain")]
        assert found == [
            ("domain.added.v1", "a.example.org"),
            ("domain.added.v1", "b.example.org"),
            ("domain.removed.v1", "a.example.org"),
        ]

    await assert_eventually(events)


@pytest.mark.docker
@pytest.mark.integration
@pytest.mark.slow
async def test_domain_added_through_the_api_is_routed(
    stack: Stack,
    bus_factory: Callable[[str], Awaitable[Bus]],
    dynos: Dynos,
    wirer: RunningWirer,
    router: Router,
) -> None:
    """The real gateway's domain reaches the router through DOMAIN_ADDED and DESIRED_GET."""
    alice = await stack.user("alice@example.com")
    created = await stack.app(alice, "routed")
    app = AppDesired(app_id=created["id"], app_name="routed", team_id="t")
    dyno = await dynos.start(app)
    scheduler = await bus_factory(Service.SCHEDULER)

    async def listed(request: ListDynos) -> DynoList:
        return DynoList(dynos=[dyno])

    await scheduler.serve(DYNOS_LIST, listed)
    await wirer.start()
    assert (await router.get("routed.localhost"))[0] == 200
    assert (await router.get("shop.routed.example"))[0] == 404

    await alice.ok("POST", "/apps/routed/domains", {"hostname": "shop.routed.example"}, 201)

    async def routed() -> None:
        status, body, _ = await router.get("shop.routed.example")
        assert status == 200
        assert json.loads(body)["dyno"] == "web.1"

    await assert_eventually(routed)


async def _slipway(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "slipway"),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_cli_adds_lists_and_removes_domains(stack: Stack, tmp_path: Path) -> None:
    """`slipway domains:add`, `domains`, `domains:remove`; a bad hostname is one line, exit 1."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    assert alice.token is not None
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "SLIPWAY_CONFIG_DIR": str(tmp_path / "config"),
        "SLIPWAY_API_URL": stack.url,
        "SLIPWAY_API_KEY": alice.token,
    }
    code, _, err = await _slipway(env, "domains:add", "www.hello.example", "-a", "hello")
    assert code == 0, err
    code, out, _ = await _slipway(env, "domains", "-a", "hello")
    assert code == 0
    assert "hello.localhost" in out
    assert "www.hello.example" in out
    code, _, err = await _slipway(env, "domains:add", "not a host", "-a", "hello")
    assert code != 0
    assert err.count("\n") == 1
    assert "not a valid hostname" in err
    code, _, err = await _slipway(env, "domains:remove", "www.hello.example", "-a", "hello")
    assert code == 0, err
    code, out, _ = await _slipway(env, "domains", "-a", "hello", "--json")
    assert [d["hostname"] for d in json.loads(out)] == ["hello.localhost"]
