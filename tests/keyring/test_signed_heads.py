"""audit.sign keeps each team's chain append-only: no lower seq, no other head, proof to extend."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable

import pytest

from slipway.contracts.keyring import AUDIT_SIGN, AuditSignature, SignAudit
from slipway.libs import auditchain
from slipway.libs.bus import Bus
from slipway.libs.errors import InvalidRequest, RemoteError
from tests.keyring.conftest import BusFactory, RunningKeyring

pytestmark = pytest.mark.integration


def chain(team: str, count: int, actor: str = "alice@example.com") -> list[tuple[bytes, str]]:
    """`count` entries of `team` as (canonical bytes, head hex after it)."""
    out, head = [], auditchain.GENESIS
    for seq in range(1, count + 1):
        entry = auditchain.AuditEntry(
            seq=seq, team_id=team, at="2026-01-01T00:00:00Z", actor=actor, action="app.create"
        )
        head = auditchain.link(head, entry)
        out.append((auditchain.canonical(entry), head.hex()))
    return out


async def sign(
    gateway: Bus, team: str, links: list[tuple[bytes, str]], upto: int, after: int = 0
) -> AuditSignature:
    """Ask for a checkpoint at `upto` proving the entries after `after`, as the gateway does."""
    previous = links[after - 1][1] if after else ""
    request = SignAudit(
        team_id=team,
        message=auditchain.checkpoint_message(team, upto, links[upto - 1][1]),
        previous_seq=after,
        previous_head=previous,
        entries=[raw for raw, _ in links[after:upto]],
    )
    return await gateway.call(AUDIT_SIGN, request)


async def rollback(call: Awaitable[object]) -> str:
    """The message of the audit_rollback the awaited call fails with."""
    with pytest.raises(RemoteError) as caught:
        await call
    assert caught.value.code == "audit_rollback"
    return caught.value.message


async def test_chain_that_grows_is_signed(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Each head proven to extend the last signed one is signed, and recorded."""
    gateway, links = await bus_factory("gateway"), chain(team, 5)
    await sign(gateway, team, links, 2)
    await sign(gateway, team, links, 5, after=2)
    async with keyring.store.transaction() as conn:
        assert await keyring.store.signed_head_in(conn, team) == (5, links[4][1])


async def test_same_head_is_signed_again(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """The same (seq, head) again is signed (the gateway may have lost the first reply)."""
    gateway, links = await bus_factory("gateway"), chain(team, 3)
    first = await sign(gateway, team, links, 3)
    assert (await sign(gateway, team, links, 3)).signature == first.signature


async def test_lower_seq_is_refused(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A head below the last signed one (a cut chain) is refused as audit_rollback."""
    gateway, links = await bus_factory("gateway"), chain(team, 4)
    await sign(gateway, team, links, 4)
    said = await rollback(sign(gateway, team, links, 3))
    assert "it signed entry 4 already, so entries were removed" in said
    [*_, row] = await keyring.audit(team)
    assert (row.operation, row.outcome) == ("audit.sign", "audit_rollback")


async def test_other_head_at_same_seq_is_refused(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Another head at the last signed seq (a rewritten chain) is refused."""
    gateway = await bus_factory("gateway")
    await sign(gateway, team, chain(team, 3), 3)
    said = await rollback(sign(gateway, team, chain(team, 3, actor="mallory@example.com"), 3))
    assert "differs from the head the keyring signed at entry 3" in said


async def test_proof_from_an_older_head_through_the_signed_one_is_signed(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A proof starting before the signed head is signed if it passes through that head."""
    gateway, links = await bus_factory("gateway"), chain(team, 6)
    await sign(gateway, team, links, 4)
    # The gateway crashed before storing checkpoint 4: it proves from its checkpoint 2.
    await sign(gateway, team, links, 6, after=2)


async def test_forged_proof_from_genesis_is_refused(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A rewritten chain proven from genesis (its checkpoints dropped) is refused."""
    gateway = await bus_factory("gateway")
    await sign(gateway, team, chain(team, 4), 4)
    said = await rollback(sign(gateway, team, chain(team, 6, actor="mallory@example.com"), 6))
    assert "differs from the head the keyring signed at entry 4" in said


async def test_proof_from_a_head_it_never_signed_is_refused(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A proof starting after the last signed head cannot show it extends that head."""
    gateway, links = await bus_factory("gateway"), chain(team, 6)
    await sign(gateway, team, links, 2)
    said = await rollback(sign(gateway, team, links, 6, after=4))
    assert "it signed up to entry 2 only" in said


async def test_higher_seq_over_rewritten_entries_is_refused(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Entries that do not lead from the signed head to the new one are refused."""
    gateway, links = await bus_factory("gateway"), chain(team, 4)
    await sign(gateway, team, links, 2)
    forged = chain(team, 4, actor="mallory@example.com")
    request = SignAudit(
        team_id=team,
        message=auditchain.checkpoint_message(team, 4, forged[3][1]),
        previous_seq=2,
        previous_head=links[1][1],
        entries=[raw for raw, _ in forged[2:4]],
    )
    said = await rollback(gateway.call(AUDIT_SIGN, request))
    assert "do not lead from the head at entry 2" in said


async def test_incomplete_proof_is_invalid(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A proof missing entries between the signed head and the new one is an invalid request."""
    gateway, links = await bus_factory("gateway"), chain(team, 4)
    await sign(gateway, team, links, 1)
    request = SignAudit(
        team_id=team,
        message=auditchain.checkpoint_message(team, 4, links[3][1]),
        previous_seq=1,
        previous_head=links[0][1],
        entries=[links[3][0]],
    )
    with pytest.raises(InvalidRequest, match="needs the 3 entries between"):
        await gateway.call(AUDIT_SIGN, request)


async def test_signed_heads_survive_restart(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """After a restart the keyring still refuses a head below the one it signed."""
    gateway, links = await bus_factory("gateway"), chain(team, 3)
    await sign(gateway, team, links, 3)
    await keyring.restart()
    await rollback(sign(gateway, team, links, 2))


async def test_signed_heads_are_append_only(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """The signed heads cannot be updated or deleted, even with direct SQL."""
    await sign(await bus_factory("gateway"), team, chain(team, 1), 1)
    db = sqlite3.connect(keyring.settings.db_path())
    try:
        for sql in ("UPDATE signed_heads SET seq = 0", "DELETE FROM signed_heads"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(sql)
    finally:
        db.close()
