"""network-wirer's per-app router metrics, from real HAProxy access records."""

from __future__ import annotations

from pathlib import Path

import pytest

from slipway.contracts.gateway import APP_DESTROYED, AppDestroyed
from slipway.libs.metrics import socket_path
from tests.conftest import assert_eventually
from tests.metrics.scrape import label_values, parse, samples, scrape, value
from tests.network_wirer.conftest import Router, RunningWirer, World

pytestmark = pytest.mark.integration

RESPONSES = "slipway_router_responses_total"


async def test_router_answers_are_counted_per_app_id_and_removed_with_it(
    world: World, wirer: RunningWirer, router: Router
) -> None:
    """Three requests to an app with no dyno (H14, 503) count 3 5xx under its id, no path or
    host; once the app is destroyed its series are gone."""
    app = world.app("metered")
    await wirer.start()
    sock = socket_path(Path(wirer.settings.home), "network-wirer")
    for path in ("/", "/users/12345/secret-token-q9", "/x"):
        status, _, _ = await router.get("metered.localhost", path)
        assert status == 503

    async def counted() -> None:
        found = await samples(sock)
        assert value(found, RESPONSES, app_id=app.app_id, status_class="5xx") == 3
        timed = "slipway_router_response_seconds_count"
        assert value(found, timed, app_id=app.app_id) == 3

    await assert_eventually(counted)
    text, _ = await scrape(sock)
    for leaked in ("secret-token-q9", "12345", "metered.localhost", 'metered"'):
        assert leaked not in text

    del world.apps[app.app_id]
    await world.gateway.publish(
        APP_DESTROYED, AppDestroyed(app_id=app.app_id, name="metered", team_id="team", actor="t")
    )

    async def removed() -> None:
        found = parse((await scrape(sock))[0])
        assert app.app_id not in label_values(found, RESPONSES, "app_id")
        assert app.app_id not in label_values(
            found, "slipway_router_response_seconds_count", "app_id"
        )

    await assert_eventually(removed)
