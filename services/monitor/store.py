"""The monitor's database: app alert rules, alerts (firing and recent), and dyno states.

An alert row is one condition from the pass that found it to the pass that found it gone:
`key` says what it is about, and at most one firing row per key exists (a partial unique
index), so a restart mid-incident carries on with the same alert instead of firing anew.
Crashes are the scheduler's DYNO_CHANGED events into `crashed`, one row each, counted
over a rule's window: a crash is often over in a second (restarted, or its failed release
removed), so a count of dynos crashed *now* would miss most of them.
"""

from __future__ import annotations

import time
from pathlib import Path

import aiosqlite

from slipway.contracts.base import new_id
from slipway.contracts.monitor import Alert, AlertRule
from slipway.libs.storage import Database, claim

MIGRATIONS = (
    """
    CREATE TABLE rules (
        id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL,
        app_name TEXT NOT NULL,
        team_id TEXT NOT NULL DEFAULT '',
        metric TEXT NOT NULL,
        threshold REAL NOT NULL,
        window_minutes INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX rules_app ON rules (app_id);
    CREATE TABLE alerts (
        id TEXT PRIMARY KEY,
        key TEXT NOT NULL,
        scope TEXT NOT NULL,
        kind TEXT NOT NULL,
        severity TEXT NOT NULL,
        state TEXT NOT NULL,
        summary TEXT NOT NULL,
        app_id TEXT NOT NULL DEFAULT '',
        app_name TEXT NOT NULL DEFAULT '',
        team_id TEXT NOT NULL DEFAULT '',
        rule_id TEXT NOT NULL DEFAULT '',
        value REAL,
        threshold REAL,
        started_at REAL NOT NULL,
        resolved_at REAL,
        -- the state last told (event, webhooks, log): a crash between the change and the
        -- telling is made good by the next pass
        announced TEXT NOT NULL DEFAULT ''
    );
    CREATE UNIQUE INDEX alerts_firing ON alerts (key) WHERE state = 'firing';
    CREATE INDEX alerts_app ON alerts (app_id, started_at);
    CREATE TABLE crashes (
        event_id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL,
        dyno TEXT NOT NULL,
        release_version INTEGER NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX crashes_app ON crashes (app_id, at);
    """,
    # The severity last told: an alert that escalates while firing is told again.
    "ALTER TABLE alerts ADD COLUMN told_severity TEXT NOT NULL DEFAULT '';",
)

_ALERT_COLUMNS = (
    "id, key, scope, kind, severity, state, summary, app_id, app_name, team_id, rule_id,"
    " value, threshold, started_at, resolved_at"
)


def _alert(row: aiosqlite.Row) -> Alert:
    return Alert(
        id=row["id"],
        key=row["key"],
        scope=row["scope"],
        kind=row["kind"],
        severity=row["severity"],
        state=row["state"],
        summary=row["summary"],
        app_id=row["app_id"],
        app_name=row["app_name"],
        team_id=row["team_id"],
        rule_id=row["rule_id"],
        value=row["value"],
        threshold=row["threshold"],
        started_at=row["started_at"],
        resolved_at=row["resolved_at"],
    )


def _rule(row: aiosqlite.Row) -> AlertRule:
    return AlertRule(
        id=row["id"],
        app_id=row["app_id"],
        metric=row["metric"],
        threshold=row["threshold"],
        window_minutes=row["window_minutes"],
        created_at=row["created_at"],
    )


class MonitorStore:
    """What the monitor remembers across restarts."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    async def open(cls, path: Path) -> MonitorStore:
        return cls(await Database.open(path, MIGRATIONS))

    async def close(self) -> None:
        await self.db.close()

    # ---- rules ---------------------------------------------------------------------------------

    async def add_rule(
        self,
        *,
        app_id: str,
        app_name: str,
        team_id: str,
        metric: str,
        threshold: float,
        window_minutes: int,
    ) -> AlertRule:
        rule_id = new_id()
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO rules (id, app_id, app_name, team_id, metric, threshold,"
                " window_minutes, created_at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    rule_id,
                    app_id,
                    app_name,
                    team_id,
                    metric,
                    threshold,
                    window_minutes,
                    time.time(),
                ),
            )
        rule = await self.rule(app_id, rule_id)
        assert rule is not None
        return rule

    async def rule(self, app_id: str, rule_id: str) -> AlertRule | None:
        row = await self.db.fetchone(
            "SELECT * FROM rules WHERE app_id=? AND id=?", (app_id, rule_id)
        )
        return _rule(row) if row else None

    async def rules(self, app_id: str) -> list[AlertRule]:
        rows = await self.db.fetchall(
            "SELECT * FROM rules WHERE app_id=? ORDER BY created_at", (app_id,)
        )
        return [_rule(r) for r in rows]

    async def all_rules(self) -> list[tuple[AlertRule, str, str]]:
        """Every rule with its app's name and team (for the alert lines)."""
        rows = await self.db.fetchall("SELECT * FROM rules ORDER BY app_id, created_at")
        return [(_rule(r), r["app_name"], r["team_id"]) for r in rows]

    async def remove_rule(self, app_id: str, rule_id: str) -> AlertRule | None:
        rule = await self.rule(app_id, rule_id)
        if rule is not None:
            async with self.db.transaction() as conn:
                await conn.execute("DELETE FROM rules WHERE id=?", (rule_id,))
        return rule

    # ---- alerts --------------------------------------------------------------------------------

    async def firing(self) -> dict[str, Alert]:
        rows = await self.db.fetchall(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE state='firing'"  # noqa: S608 (constant)
        )
        return {row["key"]: _alert(row) for row in rows}

    async def put(self, alert: Alert, *, told: bool = False) -> None:
        """Record `alert` as it is now: a new one, or a change of one (by its id).

        `told`: this state was told already (while the disk was full), do not tell it again.
        """
        announced = alert.state if told else ""
        told_severity = alert.severity if told else ""
        async with self.db.transaction() as conn:
            await conn.execute(
                f"INSERT INTO alerts ({_ALERT_COLUMNS}, announced, told_severity)"  # noqa: S608
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET"
                " severity=excluded.severity, state=excluded.state, summary=excluded.summary,"
                " value=excluded.value, threshold=excluded.threshold,"
                " resolved_at=excluded.resolved_at,"
                " announced=CASE WHEN ? THEN excluded.announced ELSE announced END,"
                " told_severity=CASE WHEN ? THEN excluded.told_severity ELSE told_severity END",
                (
                    alert.id,
                    alert.key,
                    alert.scope,
                    alert.kind,
                    alert.severity,
                    alert.state,
                    alert.summary,
                    alert.app_id,
                    alert.app_name,
                    alert.team_id,
                    alert.rule_id,
                    alert.value,
                    alert.threshold,
                    alert.started_at,
                    alert.resolved_at,
                    announced,
                    told_severity,
                    int(told),
                    int(told),
                ),
            )

    async def unannounced(self) -> list[tuple[Alert, str]]:
        """Alerts whose last change has not been told yet, oldest first, with the severity
        told before ("" when none was): a firing alert told at a lower one escalated."""
        rows = await self.db.fetchall(
            f"SELECT {_ALERT_COLUMNS}, told_severity FROM alerts"  # noqa: S608 (constant)
            " WHERE announced != state"
            " OR (state='firing' AND told_severity NOT IN ('', severity))"
            " ORDER BY COALESCE(resolved_at, started_at)"
        )
        return [(_alert(r), r["told_severity"]) for r in rows]

    async def announced(self, alert: Alert) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE alerts SET announced=?, told_severity=? WHERE id=?",
                (alert.state, alert.severity, alert.id),
            )

    async def alerts(self, *, app_id: str, limit: int) -> list[Alert]:
        """An app's alerts ("": the platform's), firing first, then the newest."""
        rows = await self.db.fetchall(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE app_id=?"  # noqa: S608 (constant)
            " ORDER BY state='firing' DESC, started_at DESC LIMIT ?",
            (app_id, limit),
        )
        return [_alert(r) for r in rows]

    async def forget_resolved(self, before: float) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "DELETE FROM alerts WHERE state='resolved' AND resolved_at<?", (before,)
            )

    # ---- apps and their dynos ------------------------------------------------------------------

    async def crashed(self, event_id: str, app_id: str, dyno: str, release: int, at: float) -> None:
        """Record a dyno's crash (a DYNO_CHANGED into `crashed`); a redelivery changes nothing."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT OR IGNORE INTO crashes (event_id, app_id, dyno, release_version, at)"
                " VALUES (?,?,?,?,?)",
                (event_id, app_id, dyno, release, at),
            )

    async def crashes_since(self, app_id: str, since: float) -> int:
        """How many times the app's dynos crashed since `since`."""
        row = await self.db.fetchone(
            "SELECT COUNT(*) FROM crashes WHERE app_id=? AND at>=?", (app_id, since)
        )
        return int(row[0]) if row else 0

    async def forget_crashes(self, before: float) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM crashes WHERE at<?", (before,))

    async def app_destroyed(self, event_id: str, app_id: str) -> None:
        async with self.db.transaction() as conn:
            if not await claim(conn, event_id):
                return
            await conn.execute("DELETE FROM crashes WHERE app_id=?", (app_id,))
            await conn.execute("DELETE FROM rules WHERE app_id=?", (app_id,))
            await conn.execute(
                # The app is gone: nobody is left to tell, so nothing is announced.
                "UPDATE alerts SET state='resolved', resolved_at=?, announced='resolved'"
                " WHERE app_id=? AND state='firing'",
                (time.time(), app_id),
            )

    async def team_shredded(self, event_id: str, team_id: str) -> None:
        """The team's key was destroyed: its rules and alerts (summaries name its apps) go."""
        async with self.db.transaction() as conn:
            if not await claim(conn, event_id):
                return
            await conn.execute("DELETE FROM rules WHERE team_id=?", (team_id,))
            await conn.execute("DELETE FROM alerts WHERE team_id=? AND scope='app'", (team_id,))
