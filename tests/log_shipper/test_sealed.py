"""A team with its own key: history is sealed to it, the platform cannot read it back."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from slipway.contracts.keyring import PUBKEY_REGISTER, Purpose, RegisterPublicKey
from slipway.contracts.log_shipper import HISTORY_READ, LogEntry, ReadHistory
from slipway.libs.bus import Bus
from slipway.libs.crypto import Binding, envelope, fingerprint, generate_keypair, open_sealed
from slipway.services.log_shipper import store
from tests.conftest import assert_eventually
from tests.gateway.conftest import Stack
from tests.log_shipper.conftest import Dynos, ShipperFactory, new_id, slipway

pytestmark = [pytest.mark.docker, pytest.mark.integration]


async def test_history_sealed_to_a_team_key_opens_only_with_the_private_key(
    dynos: Dynos, shipper_settings: ShipperFactory, start_shipper: Any, bus_factory: Any
) -> None:
    """Reads answer recent lines from memory, marked sealed; the stored batch needs the key."""
    running = await start_shipper(shipper_settings())
    gateway: Bus = await bus_factory("gateway")
    app_id, team_id = new_id(), new_id()
    private, public = generate_keypair()
    await gateway.call(PUBKEY_REGISTER, RegisterPublicKey(team_id=team_id, public_key=public))
    await dynos.run(app_id, team_id, "web.1", "print('sealed away')")
    shipper = running.shipper

    async def stored() -> list[store.BatchRow]:
        rows = await store.all_batches(shipper.db, app_id)
        assert rows and shipper.history.pending_lines() == 0
        return rows

    rows = await assert_eventually(stored, timeout=20)
    answers = await gateway.gather(HISTORY_READ, ReadHistory(app_id=app_id, team_id=team_id))
    (page,) = answers.replies.values()
    assert page.sealed and page.notice
    assert [e.text for e in page.lines] == ["sealed away"]  # from memory only

    row = rows[0]
    assert row.sealed_to is not None
    place = Binding(team=team_id, app=app_id, kind="logs", record=row.id)
    # The platform can remove its own envelope, and finds only a box it cannot open.
    inner = await envelope.decrypt(running.bus, team_id, Purpose.LOGS, place, row.data)
    with pytest.raises(zlib.error):
        zlib.decompress(inner)
    lines = msgspec.msgpack.decode(
        zlib.decompress(open_sealed(private, inner, place)), type=list[LogEntry]
    )
    assert [e.text for e in lines] == ["sealed away"]


async def test_the_owner_exports_sealed_history_and_opens_it_with_the_cli(
    stack: Stack,
    dynos: Dynos,
    shipper_settings: ShipperFactory,
    start_shipper: Any,
    bus_factory: Any,
    tmp_path: Path,
) -> None:
    """GET /apps/{app}/log-archive hands out boxes; `slipway logs:export --key` opens them."""
    running = await start_shipper(shipper_settings())
    gateway: Bus = await bus_factory("gateway")
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "sealedapp")
    private, public = generate_keypair()
    team_id = app["team"]["id"]
    await gateway.call(PUBKEY_REGISTER, RegisterPublicKey(team_id=team_id, public_key=public))
    await dynos.run(app["id"], team_id, "web.1", "print('for your eyes only')")

    async def archived() -> dict[str, Any]:
        await running.shipper.history.flush(force=True)
        archive: dict[str, Any] = await alice.ok("GET", "/apps/sealedapp/log-archive")
        assert sum(b["lines"] for b in archive["batches"]) >= 1
        return archive

    archive = await assert_eventually(archived, timeout=20)
    assert {b["fingerprint"] for b in archive["batches"]} == {fingerprint(public)}
    key_file = tmp_path / "team.key"
    key_file.write_text(private.hex())
    export = ("logs:export", "-a", "sealedapp", "--key")

    async def exported() -> None:
        # The platform's own lines (the release) may be sealed in a batch before the dyno's.
        await running.shipper.history.flush(force=True)
        result = await slipway(alice, tmp_path, *export, str(key_file))
        assert result.code == 0, result
        assert " app[web.1]: for your eyes only\n" in result.out

    await assert_eventually(exported, timeout=20)
    wrong = tmp_path / "wrong.key"
    wrong.write_text(generate_keypair()[0].hex())
    refused = await slipway(alice, tmp_path, *export, str(wrong))
    assert refused.code != 0 and "sealed to another key" in refused.err
