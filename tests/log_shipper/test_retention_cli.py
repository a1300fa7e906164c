"""`slipway logs:retention` against the real stack."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway.conftest import Stack
from tests.log_shipper.conftest import slipway

pytestmark = pytest.mark.integration


async def test_the_cli_shows_sets_and_resets_the_retention(stack: Stack, tmp_path: Path) -> None:
    """No flag prints it, --days sets it, --default resets it; bad input: one line, exit 1."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "clikeep")

    shown = await slipway(alice, tmp_path, "logs:retention", "-a", "clikeep")
    assert shown.code == 0, shown
    assert shown.out == "clikeep keeps its log history for 7 days (the platform default).\n"
    changed = await slipway(alice, tmp_path, "logs:retention", "-a", "clikeep", "--days", "30")
    assert changed.out == "clikeep keeps its log history for 30 days.\n", changed
    assert await alice.ok("GET", "/apps/clikeep/log-settings") == {
        "retention_days": 30.0,
        "default": False,
    }
    reset = await slipway(alice, tmp_path, "logs:retention", "-a", "clikeep", "--default")
    assert reset.out == "clikeep keeps its log history for 7 days (the platform default).\n"

    for args, says in (
        (("--days", "0"), "between 1 and 365 days, not 0"),
        (("--days", "400"), "between 1 and 365 days, not 400"),
        (("--days", "3", "--default"), "either --days or --default"),
    ):
        refused = await slipway(alice, tmp_path, "logs:retention", "-a", "clikeep", *args)
        assert refused.code != 0, (args, refused)
        assert refused.err.count("\n") == 1 and refused.out == "", (args, refused)
        assert says in refused.err, (args, refused.err)
    assert (await alice.ok("GET", "/apps/clikeep/log-settings"))["default"] is True
