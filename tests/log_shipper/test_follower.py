"""Following dyno containers: every line, in order, tagged with its dyno and stream."""

from __future__ import annotations

from typing import Any

import pytest

from slipway.libs.bus import Bus
from slipway.services.gateway.shippers import history
from tests.conftest import assert_eventually
from tests.log_shipper.conftest import Dynos, ShipperFactory, new_id

pytestmark = [pytest.mark.docker, pytest.mark.integration]


async def lines_of(bus: Bus, app_id: str, team_id: str, n: int = 1000) -> list[Any]:
    return await history(bus, app_id, team_id, n)


async def test_a_dynos_stdout_and_stderr_reach_history_in_order(
    dynos: Dynos, shipper_settings: ShipperFactory, start_shipper: Any, gateway_bus: Bus
) -> None:
    """Lines a dyno prints on stdout and stderr are stored in order, tagged app[web.1]."""
    await start_shipper(shipper_settings())
    app_id, team_id = new_id(), new_id()
    script = "import sys\nfor i in range(5): print(f'out {i}')\nprint('oops', file=sys.stderr)"
    await dynos.run(app_id, team_id, "web.1", script)

    async def six() -> list[Any]:
        found = await lines_of(gateway_bus, app_id, team_id)
        assert len(found) == 6, found
        return found

    found = await assert_eventually(six, timeout=20)
    # stdout and stderr are two pipes: Docker orders lines within each, not across them.
    assert [e.text for e in found if not e.stderr] == [f"out {i}" for i in range(5)]
    assert [e.text for e in found if e.stderr] == ["oops"]
    assert {(e.source, e.dyno) for e in found} == {("app", "web.1")}
