"""The router sends an app nothing its users did not send (#17 item 8).

Heroku's router makes no health request of its own: a dyno is routed once it bound
$PORT, and one that stops accepting is benched by its refused connections (HAProxy's
TCP checks and `observe layer4`: connections, never requests; `test_router.py`'s
killed-dyno test). These run the real HAProxy and network-wirer in front of a real
dyno whose web server writes every request it answers to its own access log, read with
`docker exec` (no request).
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from slipway.contracts.scheduler import Dyno
from tests.network_wirer.conftest import Dynos, Router, RunningWirer, World

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]

REQUEST_LOG = "/tmp/requests.log"  # tests/network_wirer/dyno/server.py writes it


async def requests_seen(dynos: Dynos, dyno: Dyno) -> list[str]:
    """The request lines the dyno's web server answered so far."""
    code, out = await dynos.exec(dyno, "cat", REQUEST_LOG)
    assert code == 0, out
    return out.splitlines()


async def test_an_idle_app_gets_no_request_from_the_router(
    world: World, dynos: Dynos, wirer: RunningWirer, router: Router
) -> None:
    """Routed and idle for several health intervals, the app's log holds no new request;
    then one user request appears in it exactly once."""
    app = world.app("quiet")
    dyno = await dynos.start(app)  # the fixture's own readiness GET is the first line
    await world.set_dyno(dyno, announce=False)
    before = await requests_seen(dynos, dyno)
    await wirer.start()
    # Long enough for a check at the fixture's 1 s interval to have run 4 times.
    await asyncio.sleep(4 * wirer.settings.router_check_interval)
    assert await requests_seen(dynos, dyno) == before

    path = f"/user-{uuid.uuid4().hex[:8]}"
    status, body, _ = await router.get("quiet.localhost", path)
    assert status == 200
    assert json.loads(body)["path"] == path
    after = await requests_seen(dynos, dyno)
    assert after[: len(before)] == before
    (new,) = after[len(before) :]
    assert new.startswith(f"GET {path} HTTP/1.1")
