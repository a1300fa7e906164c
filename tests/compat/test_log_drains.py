"""Log drains as Heroku's clients add, list, show and remove them, with the real log-shipper.

The gateway and the log-shipper are tests/log_shipper's: both allow loopback drains (the
egress guard refuses them otherwise), so a drain to this machine can be added without
any server behind it. Each answer is checked against Heroku's `log-drain`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from tests.compat.conftest import cli, clients
from tests.compat.test_platform_api import fit_list, fits, refused
from tests.gateway.conftest import Stack
from tests.log_shipper.conftest import (
    ShipperFactory,
    gateway_service,
    managed,
    shipper_settings,
    start_shipper,
)

pytestmark = [pytest.mark.docker, pytest.mark.integration]

__all__ = ["gateway_service", "managed", "shipper_settings", "start_shipper"]  # fixtures


async def test_log_drains_add_list_info_remove(
    stack: Stack, shipper_settings: ShipperFactory, start_shipper: Any
) -> None:
    """`heroku drains:add URL`, `drains`, info by id and by URL, `drains:remove`."""
    await start_shipper(shipper_settings())
    alice = await stack.user("alice@example.com")
    bob = await stack.user("bob@example.com")
    await stack.app(alice, "drained")
    client = cli(alice)
    url = "syslog+tls://localhost:6514"
    added = fits(
        await client.request("POST", "/apps/drained/log-drains", {"url": url}), "log-drain", 201
    )
    for each in clients(alice):
        listed = fit_list(await each.get("/apps/drained/log-drains"), "log-drain")
        assert [d["id"] for d in listed] == [added["id"]]
        for ident in (added["id"], quote(url, safe="")):
            one = fits(await each.get(f"/apps/drained/log-drains/{ident}"), "log-drain")
            assert one["id"] == added["id"]
    refused(await cli(bob).get("/apps/drained/log-drains"), 404, "not_found")
    # `drains:remove URL` names the drain by its URL, percent-encoded.
    removed = await client.request("DELETE", f"/apps/drained/log-drains/{quote(url, safe='')}")
    assert fits(removed, "log-drain")["id"] == added["id"]
    assert fit_list(await client.get("/apps/drained/log-drains"), "log-drain") == []
