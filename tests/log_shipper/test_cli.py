"""`slipway logs`, `drains`, `drains:add`, `drains:remove` against the real stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import assert_eventually
from tests.gateway.conftest import Stack
from tests.log_shipper.conftest import ShipperFactory, slipway

pytestmark = pytest.mark.integration


async def test_the_cli_prints_logs_and_manages_drains(
    stack: Stack, shipper_settings: ShipperFactory, start_shipper: Any, tmp_path: Path
) -> None:
    """logs prints Heroku-style lines; drains:add, drains and drains:remove round-trip."""
    await start_shipper(shipper_settings())
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "clilogs")

    async def released() -> str:
        result = await slipway(alice, tmp_path, "logs", "-a", "clilogs", "-n", "20")
        assert result.code == 0, result
        assert " app[api]: Release v1 created by user alice@example.com\n" in result.out, result
        return result.out

    await assert_eventually(released, timeout=20, interval=0.3)
    only_router = await slipway(alice, tmp_path, "logs", "-a", "clilogs", "--source", "router")
    assert only_router.code == 0 and only_router.out == ""

    url = "https://127.0.0.1:9/slipway"  # loopback: the drain never reaches out
    added = await slipway(alice, tmp_path, "drains:add", url, "-a", "clilogs")
    assert added.code == 0, added
    assert url in added.out
    listed = await slipway(alice, tmp_path, "drains", "-a", "clilogs")
    assert url in listed.out and "d." in listed.out
    removed = await slipway(alice, tmp_path, "drains:remove", url, "-a", "clilogs")
    assert removed.code == 0, removed
    assert "has no log drains" in (await slipway(alice, tmp_path, "drains", "-a", "clilogs")).out


async def test_the_cli_refuses_in_one_line(
    stack: Stack, shipper_settings: ShipperFactory, start_shipper: Any, tmp_path: Path
) -> None:
    """A bad -n, a plaintext drain or another team's app: non-zero exit, one readable line."""
    await start_shipper(shipper_settings())
    alice = await stack.user("alice@example.com")
    mallory = await stack.user("mallory@example.com")
    await stack.app(alice, "guarded")
    for api, args in [
        (alice, ("logs", "-a", "guarded", "-n", "100000")),
        (alice, ("drains:add", "syslog://plain.example.test:514", "-a", "guarded")),
        (mallory, ("logs", "-a", "guarded")),
    ]:
        result = await slipway(api, tmp_path, *args)
        assert result.code != 0, (args, result)
        assert result.err.count("\n") == 1, (args, result.err)
