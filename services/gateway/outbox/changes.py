"""One state change = one transaction holding its rows, its audit entries and its events.

    async with change(gw, actor) as tx:
        await store.insert_app(tx.conn, app)
        tx.audit(team_id, "app.create", app_name=app.name, app_id=app.id)
        tx.emit(APP_CREATED, AppCreated(...))

The audit entries are linked into their team's hash chain and the events are
written to the outbox *inside* the same transaction, just before COMMIT: either
all of it happened or none of it did. After the commit the outbox relay and the
checkpoint signer are woken; if the process dies first, both catch up at start.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from slipway.contracts.base import Event, EventSpec
from slipway.libs.auditchain import GENESIS, AuditEntry, canonical, link
from slipway.services.gateway.core.store import Conn, timestamp
from slipway.services.gateway.outbox import outbox

if TYPE_CHECKING:
    from slipway.services.gateway.core.state import Gateway

EvtT = TypeVar("EvtT", bound=Event)


@dataclass(frozen=True)
class Actor:
    """Who acts and from where: what every audit entry records."""

    email: str  # a user's email, or "service:<name>" for the platform itself
    user_id: str | None = None
    source_ip: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class _Pending:
    team_id: str
    action: str
    app_name: str | None
    app_id: str | None
    details: dict[str, str]


@dataclass
class Change:
    """The audit entries and events a transaction will commit with."""

    conn: Conn
    actor: Actor
    _audits: list[_Pending] = field(default_factory=list)
    _events: list[tuple[str, Event]] = field(default_factory=list)

    def audit(
        self,
        team_id: str,
        action: str,
        *,
        app_name: str | None = None,
        app_id: str | None = None,
        details: dict[str, str] | None = None,
    ) -> None:
        """Record an action in the team's chain. `details` must never hold a secret."""
        self._audits.append(_Pending(team_id, action, app_name, app_id, details or {}))

    def emit(self, spec: EventSpec[EvtT], event: EvtT) -> None:
        """Publish `event` once the transaction has committed (through the outbox)."""
        if type(event) is not spec.message:
            raise TypeError(f"{spec.subject} carries {spec.message.__name__}")
        self._events.append((spec.subject, event))

    @property
    def audited_teams(self) -> set[str]:
        return {pending.team_id for pending in self._audits}

    async def flush(self) -> None:
        """Append the audit entries and enqueue the events, inside the open transaction."""
        for pending in self._audits:
            await append_audit(self.conn, self.actor, pending)
        for subject, event in self._events:
            await outbox.enqueue(self.conn, subject, event, self.actor.request_id)


async def append_audit(conn: Conn, actor: Actor, pending: _Pending) -> AuditEntry:
    """Link one entry to its team's chain: h_i = SHA-256(h_{i-1} || canonical(entry_i))."""
    async with conn.execute(
        "SELECT seq, hash FROM audit_entries WHERE team_id = ? ORDER BY seq DESC LIMIT 1",
        (pending.team_id,),
    ) as cursor:
        head = await cursor.fetchone()
    previous = bytes.fromhex(head["hash"]) if head else GENESIS
    entry = AuditEntry(
        seq=(head["seq"] + 1) if head else 1,
        team_id=pending.team_id,
        at=timestamp(),
        actor=actor.email,
        action=pending.action,
        app=pending.app_name,
        source_ip=actor.source_ip,
        request_id=actor.request_id,
        details=pending.details,
    )
    await conn.execute(
        "INSERT INTO audit_entries (team_id, seq, app_id, entry, hash) VALUES (?, ?, ?, ?, ?)",
        (
            entry.team_id,
            entry.seq,
            pending.app_id,
            canonical(entry).decode(),
            link(previous, entry).hex(),
        ),
    )
    return entry


@asynccontextmanager
async def change(gw: Gateway, actor: Actor) -> AsyncIterator[Change]:
    """A write transaction whose audit entries and events commit with it."""
    async with gw.db.transaction() as conn:
        tx = Change(conn, actor)
        yield tx
        await tx.flush()
    if tx._events:
        gw.relay.wake()
    if tx._audits:
        gw.checkpointer.touched(tx.audited_teams)
