"""The webhooks' own database, `<monitor state>/webhooks.db`: subscriptions, events, deliveries.

No column holds a webhook's URL, signing secret or Authorization value in plaintext:
`webhooks.sealed` is one envelope record (purpose LOGS, as drain URLs are) of the three,
bound to the team, the app and the webhook's id, so a row copied to another webhook or
app does not open. Event payloads are stored as Heroku sends them: names, versions and
states of releases, builds, dynos and alerts, never a config value.

A delivery is the unit of work of the delivery loop: its `status`, `num_attempts` and
`next_attempt_at` are what survive a restart (a delivery that was being attempted when the
monitor stopped is simply due again).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from slipway.libs.storage import Database

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE webhooks (
        id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL,
        team_id TEXT NOT NULL,
        include TEXT NOT NULL,
        level TEXT NOT NULL,
        sealed BLOB NOT NULL,
        has_authorization INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX webhooks_by_app ON webhooks (app_id);
    CREATE TABLE events (
        id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL,
        include TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX events_by_app ON events (app_id, created_at);
    CREATE TABLE deliveries (
        id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL,
        webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
        event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
        status TEXT NOT NULL,
        num_attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        last_attempt TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
    CREATE INDEX deliveries_by_app ON deliveries (app_id, created_at);
    """,
)

OPEN = ("pending", "scheduled", "retrying")


@dataclass(frozen=True, slots=True)
class WebhookRow:
    id: str
    app_id: str
    team_id: str
    include: tuple[str, ...]
    level: str
    sealed: bytes
    has_authorization: bool
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: str
    app_id: str
    webhook_id: str
    event_id: str
    status: str
    num_attempts: int
    next_attempt_at: float | None
    last_attempt: dict[str, Any] | None
    created_at: float
    updated_at: float
    # Joined from the event and the webhook, for the loop and the API.
    include: str = ""
    level: str = ""


@dataclass(frozen=True, slots=True)
class EventRow:
    id: str
    app_id: str
    include: str
    payload: dict[str, Any]
    created_at: float


async def open_store(path: Any) -> Database:
    return await Database.open(path, MIGRATIONS)


def _webhook(row: aiosqlite.Row) -> WebhookRow:
    return WebhookRow(
        id=row["id"],
        app_id=row["app_id"],
        team_id=row["team_id"],
        include=tuple(json.loads(row["include"])),
        level=row["level"],
        sealed=bytes(row["sealed"]),
        has_authorization=bool(row["has_authorization"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def webhooks(db: Database, app_id: str | None = None) -> list[WebhookRow]:
    """The webhooks of one app (`""`: the platform's), or every webhook."""
    if app_id is None:
        rows = await db.fetchall("SELECT * FROM webhooks ORDER BY created_at")
    else:
        rows = await db.fetchall(
            "SELECT * FROM webhooks WHERE app_id = ? ORDER BY created_at", (app_id,)
        )
    return [_webhook(r) for r in rows]


async def webhooks_of_team(db: Database, team_id: str) -> list[WebhookRow]:
    """A team's apps' webhooks (the operator's, app_id "", are no team's)."""
    rows = await db.fetchall(
        "SELECT * FROM webhooks WHERE team_id = ? AND app_id != ''", (team_id,)
    )
    return [_webhook(r) for r in rows]


async def webhook(db: Database, app_id: str, webhook_id: str) -> WebhookRow | None:
    row = await db.fetchone(
        "SELECT * FROM webhooks WHERE app_id = ? AND id = ?", (app_id, webhook_id)
    )
    return _webhook(row) if row is not None else None


async def put_webhook(conn: aiosqlite.Connection, hook: WebhookRow) -> None:
    await conn.execute(
        "INSERT OR REPLACE INTO webhooks (id, app_id, team_id, include, level, sealed,"
        " has_authorization, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            hook.id,
            hook.app_id,
            hook.team_id,
            json.dumps(list(hook.include)),
            hook.level,
            hook.sealed,
            int(hook.has_authorization),
            hook.created_at,
            hook.updated_at,
        ),
    )


async def delete_webhook(conn: aiosqlite.Connection, webhook_id: str) -> None:
    await conn.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,))


async def drop_app(conn: aiosqlite.Connection, app_id: str) -> None:
    """Forget an app's webhooks, events and deliveries (the app was destroyed)."""
    await conn.execute("DELETE FROM deliveries WHERE app_id = ?", (app_id,))
    await conn.execute("DELETE FROM events WHERE app_id = ?", (app_id,))
    await conn.execute("DELETE FROM webhooks WHERE app_id = ?", (app_id,))


async def drop_team(conn: aiosqlite.Connection, team_id: str) -> None:
    """Forget a team's webhooks, their events and deliveries (the team's key was destroyed:
    the sealed targets cannot be opened again, and the events' plain payloads must go)."""
    apps = "SELECT DISTINCT app_id FROM webhooks WHERE team_id = ? AND app_id != ''"
    await conn.execute(f"DELETE FROM deliveries WHERE app_id IN ({apps})", (team_id,))  # noqa: S608
    await conn.execute(f"DELETE FROM events WHERE app_id IN ({apps})", (team_id,))  # noqa: S608
    await conn.execute("DELETE FROM webhooks WHERE team_id = ? AND app_id != ''", (team_id,))


async def add_event(
    conn: aiosqlite.Connection,
    event: EventRow,
    deliveries: Sequence[tuple[str, str]],
) -> None:
    """Record an event and one pending delivery, due now, per (delivery id, webhook id)."""
    await conn.execute(
        "INSERT INTO events (id, app_id, include, payload, created_at) VALUES (?, ?, ?, ?, ?)",
        (event.id, event.app_id, event.include, json.dumps(event.payload), event.created_at),
    )
    for delivery_id, webhook_id in deliveries:
        await conn.execute(
            "INSERT INTO deliveries (id, app_id, webhook_id, event_id, status, next_attempt_at,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)",
            (
                delivery_id,
                event.app_id,
                webhook_id,
                event.id,
                event.created_at,
                event.created_at,
                event.created_at,
            ),
        )


_DELIVERY_SELECT = (
    "SELECT d.*, e.include AS include, w.level AS level FROM deliveries d"
    " JOIN events e ON e.id = d.event_id JOIN webhooks w ON w.id = d.webhook_id"
)


def _delivery(row: aiosqlite.Row) -> DeliveryRow:
    last = row["last_attempt"]
    return DeliveryRow(
        id=row["id"],
        app_id=row["app_id"],
        webhook_id=row["webhook_id"],
        event_id=row["event_id"],
        status=row["status"],
        num_attempts=row["num_attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_attempt=json.loads(last) if last else None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        include=row["include"],
        level=row["level"],
    )


async def deliveries(db: Database, app_id: str, limit: int) -> list[DeliveryRow]:
    """The app's deliveries, newest first."""
    rows = await db.fetchall(
        f"{_DELIVERY_SELECT} WHERE d.app_id = ? ORDER BY d.created_at DESC LIMIT ?",
        (app_id, limit),
    )
    return [_delivery(r) for r in rows]


async def delivery(db: Database, app_id: str, delivery_id: str) -> DeliveryRow | None:
    row = await db.fetchone(
        f"{_DELIVERY_SELECT} WHERE d.app_id = ? AND d.id = ?", (app_id, delivery_id)
    )
    return _delivery(row) if row is not None else None


async def due(db: Database, now: float, limit: int) -> list[DeliveryRow]:
    """Open deliveries whose next attempt is due, oldest first."""
    rows = await db.fetchall(
        f"{_DELIVERY_SELECT} WHERE d.status IN ('pending', 'scheduled', 'retrying')"
        " AND d.next_attempt_at <= ? ORDER BY d.next_attempt_at LIMIT ?",
        (now, limit),
    )
    return [_delivery(r) for r in rows]


async def next_due(db: Database) -> float | None:
    """When the earliest open delivery is due (None: nothing is waiting)."""
    row = await db.fetchone(
        "SELECT MIN(next_attempt_at) FROM deliveries"
        " WHERE status IN ('pending', 'scheduled', 'retrying')"
    )
    return float(row[0]) if row is not None and row[0] is not None else None


async def record_attempt(
    conn: aiosqlite.Connection,
    delivery_id: str,
    *,
    status: str,
    next_attempt_at: float | None,
    attempt: dict[str, Any],
) -> None:
    """One attempt's outcome: the delivery's new status, count and next time."""
    await conn.execute(
        "UPDATE deliveries SET status = ?, num_attempts = num_attempts + 1, next_attempt_at = ?,"
        " last_attempt = ?, updated_at = ? WHERE id = ?",
        (status, next_attempt_at, json.dumps(attempt), time.time(), delivery_id),
    )


async def postpone(conn: aiosqlite.Connection, delivery_id: str, at: float) -> None:
    """Try again later without counting an attempt (the platform, not the receiver, failed)."""
    await conn.execute(
        "UPDATE deliveries SET next_attempt_at = ?, updated_at = ? WHERE id = ?",
        (at, time.time(), delivery_id),
    )


def _event(row: aiosqlite.Row) -> EventRow:
    return EventRow(
        id=row["id"],
        app_id=row["app_id"],
        include=row["include"],
        payload=json.loads(row["payload"]),
        created_at=row["created_at"],
    )


async def events(db: Database, app_id: str, limit: int) -> list[EventRow]:
    rows = await db.fetchall(
        "SELECT * FROM events WHERE app_id = ? ORDER BY created_at DESC LIMIT ?", (app_id, limit)
    )
    return [_event(r) for r in rows]


async def event(db: Database, event_id: str, app_id: str | None = None) -> EventRow | None:
    if app_id is None:
        row = await db.fetchone("SELECT * FROM events WHERE id = ?", (event_id,))
    else:
        row = await db.fetchone(
            "SELECT * FROM events WHERE id = ? AND app_id = ?", (event_id, app_id)
        )
    return _event(row) if row is not None else None


async def prune(conn: aiosqlite.Connection, before: float) -> None:
    """Forget finished deliveries and events older than `before` (open ones are kept)."""
    await conn.execute(
        "DELETE FROM deliveries WHERE created_at < ? AND status IN ('failed', 'succeeded')",
        (before,),
    )
    await conn.execute(
        "DELETE FROM events WHERE created_at < ? AND id NOT IN (SELECT event_id FROM deliveries)",
        (before,),
    )
