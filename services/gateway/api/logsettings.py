"""An app's log settings: how long its stored log history is kept.

    GET   /apps/{app}/log-settings   {"retention_days": 7.0, "default": true}
    PATCH /apps/{app}/log-settings   {"retention_days": 30} or {"retention_days": null}

The gateway owns the setting (`apps.log_retention_days`, NULL = the platform
default, `GatewaySettings.retention_days`, the same SLIPWAY_RETENTION_DAYS the
log-shippers read). A change is written, audited and published as
`LOG_RETENTION_CHANGED` in one transaction (the outbox); every log-shipper
applies it to its own database, and its sweep deletes what is older. Each
log-shipper still bounds an app's history by size (`max_bytes_per_app`), so
a long retention never outgrows the disk.
"""

from __future__ import annotations

import math

from aiohttp import web

from slipway.contracts.gateway import LOG_RETENTION_CHANGED, LogRetentionChanged
from slipway.libs.errors import NotFound
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY, Gateway
from slipway.services.gateway.http.auth import Action, actor, app_for
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.gateway.http.routing import Routes, read_body, reply
from slipway.services.gateway.http.schemas import Body
from slipway.services.gateway.http.views import View
from slipway.services.gateway.outbox.changes import Actor, change

routes = Routes("log-settings")

# A day is the least worth setting (Heroku's own log buffer holds about that much); a year
# is the most kept on the platform: longer belongs to a drain into the team's own archive.
MIN_DAYS = 1.0
MAX_DAYS = 365.0


class LogSettings(View, frozen=True, kw_only=True):
    """Slipway: the retention in force; `default` when the app follows the platform's."""

    retention_days: float
    default: bool


class LogSettingsUpdate(Body, frozen=True, kw_only=True):
    # null: back to the platform default. Required, so an empty body is refused, not a reset.
    retention_days: float | None


def check_days(days: float | None) -> None:
    """Refuse a retention outside MIN_DAYS..MAX_DAYS, saying what is allowed."""
    if days is not None and not (math.isfinite(days) and MIN_DAYS <= days <= MAX_DAYS):
        raise InvalidParams(
            f"retention_days must be between {MIN_DAYS:g} and {MAX_DAYS:g} days, not {days:g};"
            " send null to use the platform default."
        )


def _view(gw: Gateway, days: float | None) -> LogSettings:
    if days is None:
        return LogSettings(retention_days=gw.settings.retention_days, default=True)
    return LogSettings(retention_days=days, default=False)


async def _current(conn: store.Conn, app_id: str) -> tuple[float | None, int]:
    row = await store._one(
        conn, "SELECT log_retention_days, log_settings_revision FROM apps WHERE id = ?", (app_id,)
    )
    if row is None:
        raise NotFound("Couldn't find that app.")
    days = row["log_retention_days"]
    return (None if days is None else float(days)), int(row["log_settings_revision"])


async def set_retention(gw: Gateway, who: Actor, app: store.App, days: float | None) -> None:
    """Store the app's retention, audit it and publish it, all in one transaction."""
    check_days(days)
    async with change(gw, who) as tx:
        before, revision = await _current(tx.conn, app.id)
        if before == days:
            return  # nothing changes: no audit entry, no event
        await tx.conn.execute(
            "UPDATE apps SET log_retention_days = ?, log_settings_revision = ? WHERE id = ?",
            (days, revision + 1, app.id),
        )
        shown = "default" if days is None else f"{days:g}"
        details = {"retention_days": shown, "revision": str(revision + 1)}
        tx.audit(app.team_id, "logs.retention", app_name=app.name, app_id=app.id, details=details)
        tx.emit(
            LOG_RETENTION_CHANGED,
            LogRetentionChanged(
                app_id=app.id,
                team_id=app.team_id,
                retention_days=days,
                revision=revision + 1,
                actor=who.email,
            ),
        )


@routes.get(
    "/apps/{app}/log-settings",
    summary="How long the app's log history is kept (default: true means the platform's"
    " default, SLIPWAY_RETENTION_DAYS, 7 days unless set)",
    response=LogSettings,
    extension=True,
)
async def info(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read its log settings")
    gw = request.app[GATEWAY]
    days, _ = await _current(gw.reader, app.id)
    return reply(_view(gw, days))


@routes.patch(
    "/apps/{app}/log-settings",
    summary="Set the app's log retention in days (1 to 365), or null for the platform default",
    body=LogSettingsUpdate,
    response=LogSettings,
    extension=True,
)
async def update(request: web.Request) -> web.Response:
    app = await app_for(request, Action.DEPLOY, "change its log settings")
    body = await read_body(request, LogSettingsUpdate)
    gw = request.app[GATEWAY]
    await set_retention(gw, actor(request), app, body.retention_days)
    return reply(_view(gw, body.retention_days))
