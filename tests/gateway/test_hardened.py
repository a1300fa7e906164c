"""The gateway under the hardened NATS configuration: its own user, its own subjects only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from slipway.contracts.gateway import RELEASE_CREATE, CreateRelease
from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer
from slipway.services.gateway.app import create_service
from slipway.services.keyring.app import create_service as create_keyring
from slipway.services.keyring.settings import KeyringSettings
from tests.conftest import assert_eventually
from tests.gateway.conftest import Api, domain_events, gateway_settings, run_in_background, stop

pytestmark = pytest.mark.integration


@pytest.fixture
def hardened_nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats", hardened=True)
    server.start()
    yield server
    server.stop()


async def test_gateway_serves_with_its_own_nats_user(
    hardened_nats: NatsServer, slipway_home: Path
) -> None:
    """Config through the keyring, events, checkpoints and the builder's command all work."""
    users = hardened_nats.users
    keyring = create_keyring(
        KeyringSettings(
            nats_url=hardened_nats.url,
            nats_user="keyring",
            nats_password=users["keyring"],
            home=str(slipway_home),
            shutdown_grace=5.0,
        )
    )
    keyring_task = await run_in_background(keyring)
    gateway = create_service(
        gateway_settings(
            hardened_nats.url, slipway_home, nats_user="gateway", nats_password=users["gateway"]
        )
    )
    gateway_task = await run_in_background(gateway)
    operator = await Bus.connect(
        hardened_nats.url, "operator", user="operator", password=users["operator"]
    )
    try:
        bootstrap = json.loads((slipway_home / "gateway" / "bootstrap.json").read_text())
        async with aiohttp.ClientSession() as session:
            admin = Api(session, bootstrap["api_url"], bootstrap["token"], bootstrap["email"])
            app = await admin.ok("POST", "/apps", {"name": "hardened"}, 201)
            await admin.ok("PATCH", "/apps/hardened/config-vars", {"K": "v"})
            await operator.send(
                RELEASE_CREATE,
                CreateRelease(
                    app_id=app["id"],
                    image_ref="r/hardened@sha256:" + "0" * 64,
                    image_digest="sha256:" + "0" * 64,
                    process_types={"web": "serve"},
                ),
            )

            async def settled() -> None:
                releases = await admin.ok("GET", "/apps/hardened/releases")
                assert [r["version"] for r in releases] == [1, 2, 3]
                assert await admin.ok("GET", "/apps/hardened/config-vars") == {"K": "v"}
                events = await domain_events(operator, "release")
                assert sorted(e["version"] for e in events) == [1, 2, 3]
                log = await admin.ok("GET", "/teams/admin/audit")
                assert log["checkpoints"][-1]["seq"] == log["entries"][-1]["seq"]

            await assert_eventually(settled)
    finally:
        await operator.close()
        await stop(gateway, gateway_task)
        await stop(keyring, keyring_task)
