"""The transactional outbox: events commit with their change, then reach JetStream.

A change writes its events as outbox rows in its own transaction (`enqueue`).
The relay publishes pending rows in order with `Bus.publish_persistent`, the
event id as `Nats-Msg-Id`, and marks them sent. Rows left pending by a crash are
published when the gateway starts again. The window for a duplicate is a crash
between JetStream's acknowledgement and the "sent" mark: within JetStream's
duplicate window (120 s) the server drops the copy; beyond it a consumer sees
the event twice, which is why consumers key their work by `event_id`.
"""

from __future__ import annotations

import time

import aiosqlite
import structlog

from slipway.contracts.base import Event, encode
from slipway.libs.bus import Bus
from slipway.libs.bus.context import REQUEST_ID_HEADER
from slipway.libs.storage import Database
from slipway.services.gateway.outbox.sweeper import Sweeper

log = structlog.get_logger("slipway.gateway.outbox")

BATCH = 200
KEEP_SENT_FOR = 7 * 86400.0  # sent rows are kept a week: a local trace of what left


async def enqueue(
    conn: aiosqlite.Connection, subject: str, event: Event, request_id: str | None
) -> None:
    """Store `event` for publication; call inside the transaction of the change."""
    await conn.execute(
        "INSERT INTO outbox (event_id, subject, payload, request_id, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (event.event_id, subject, encode(event), request_id, time.time()),
    )


class OutboxRelay(Sweeper):
    """Publishes pending outbox rows; woken after each commit, and every `interval` seconds."""

    name = "outbox"

    def __init__(
        self, db: Database, reader: aiosqlite.Connection, bus: Bus, *, interval: float = 5.0
    ) -> None:
        super().__init__(interval=interval)
        self.db = db
        self.reader = reader
        self.bus = bus

    async def sweep(self) -> None:
        await self.relay_pending()

    async def relay_pending(self) -> int:
        """Publish every pending row in order; returns how many were published."""
        published = 0
        while True:
            async with self.reader.execute(
                "SELECT seq, event_id, subject, payload, request_id FROM outbox"
                " WHERE sent_at IS NULL ORDER BY seq LIMIT ?",
                (BATCH,),
            ) as cursor:
                rows = list(await cursor.fetchall())
            if not rows:
                break
            sent: list[int] = []
            try:
                for row in rows:
                    headers = {REQUEST_ID_HEADER: row["request_id"]} if row["request_id"] else None
                    await self.bus.publish_persistent(
                        row["subject"],
                        bytes(row["payload"]),
                        msg_id=row["event_id"],
                        headers=headers,
                        retry_for=5.0,
                    )
                    sent.append(row["seq"])
            finally:
                # Mark what did leave even when a later row failed, so it is not sent again.
                await self._mark_sent(sent)
            published += len(sent)
        await self._prune()
        return published

    async def _mark_sent(self, seqs: list[int]) -> None:
        if not seqs:
            return
        now = time.time()
        async with self.db.transaction() as conn:
            await conn.executemany(
                "UPDATE outbox SET sent_at = ? WHERE seq = ?", [(now, seq) for seq in seqs]
            )

    async def _prune(self) -> None:
        cutoff = time.time() - KEEP_SENT_FOR
        async with self.reader.execute(
            "SELECT 1 FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ? LIMIT 1", (cutoff,)
        ) as cursor:
            if await cursor.fetchone() is None:
                return
        async with self.db.transaction() as conn:
            await conn.execute(
                "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?", (cutoff,)
            )
