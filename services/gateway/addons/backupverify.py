"""Verified backups (`pg:backups:verify`): ask for one, and record every outcome.

    POST /apps/{app}/addons/{addon}/backups/{b001}/actions/verify   waits   (member and up)

The backup service does the work (services/backup/verify.py): it checks the backup's
signatures, chain, objects and WAL without any key, restores it into a throwaway
database the scheduler runs, and compares. Every outcome, asked for here or by the
weekly run, arrives as BACKUP_VERIFIED: it is appended to the team's audit chain, and a
failure is also told to the app's logs as a `heroku[backup]` line.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from aiohttp import web

from slipway.contracts import backup as bc
from slipway.contracts.base import encode
from slipway.contracts.logs import LogLine, LogLines, lines_subject
from slipway.libs.errors import Conflict
from slipway.libs.service import ServiceApp
from slipway.libs.storage import claim
from slipway.services.gateway.addons.backups import backup_number, source_of
from slipway.services.gateway.addons.backupviews import BackupView, backup_name, backup_view
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY, Gateway
from slipway.services.gateway.http import views
from slipway.services.gateway.http.auth import Action, actor, app_for
from slipway.services.gateway.http.routing import Routes, reply
from slipway.services.gateway.outbox.changes import Actor, change

log = structlog.get_logger("slipway.gateway.backupverify")

routes = Routes("backup")


class CheckView(views.View, frozen=True, kw_only=True):
    """One check of a verification."""

    name: str  # signatures, chain, objects, wal, pg_verifybackup, recovery, row_counts
    status: str  # passed, failed, skipped
    detail: str


class VerificationView(views.View, frozen=True, kw_only=True):
    """A verification's outcome: the backup as now recorded, and each check."""

    backup: BackupView
    verified: str  # passed, failed
    verified_at: str | None
    checks: list[CheckView]


@routes.post(
    "/apps/{app}/addons/{addon}/backups/{backup}/actions/verify",
    summary="Slipway: restore a backup into a throwaway database and check it (pg:backups:verify)",
    response=VerificationView,
    extension=True,
)
async def verify(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app = await app_for(request, Action.DEPLOY, "verify backups")
    source = await source_of(gw, app, request.match_info["addon"])
    if source.addon is None:
        raise Conflict(f"{source.name} was destroyed: its backups can be restored, not verified.")
    asked = request.match_info["backup"]
    num = 0 if asked == "latest" else backup_number(asked)
    email = actor(request).email
    report = await bc.ask(
        gw.bus,
        bc.BACKUP_VERIFY,
        bc.VerifyBackup(addon_id=source.id, app_id=app.id, num=num, actor=email),
        timeout=bc.CAPTURE_TIMEOUT,
        host=source.host,
    )
    info = report.backup
    return reply(
        VerificationView(
            backup=backup_view(info, source.ref),
            verified=info.verified,
            verified_at=info.verified_at or None,
            checks=[
                CheckView(name=c.name, status=c.status, detail=c.detail) for c in report.checks
            ],
        )
    )


async def verified(gw: Gateway, event: bc.BackupVerified) -> None:
    """Audit a verification's outcome (once per event); tell the app's logs of a failure."""
    app = await store.get_app(gw.reader, event.app_id)
    if app is None:
        return  # the app went meanwhile
    who = Actor(email=event.actor or "service:backup")
    async with change(gw, who) as tx:
        if not await claim(tx.conn, event.event_id):
            return
        details = {
            "addon": event.addon_name,
            "backup": backup_name(event.num),
            "result": event.result,
            "trigger": event.trigger,
        }
        if event.reason:
            details["reason"] = event.reason[:300]
        tx.audit(app.team_id, "backup.verify", app_name=app.name, app_id=app.id, details=details)
    if event.result == "failed":
        text = (
            f"Error: backup {backup_name(event.num)} of {event.addon_name} failed verification:"
            f" {event.reason}"
        )
        line = LogLine(
            app_id=app.id, timestamp=event.occurred_at, source="heroku", dyno="backup", text=text
        )
        await gw.bus.live_publish(lines_subject(app.id), encode(LogLines(lines=[line])))
    log.info(
        "backup.verified",
        app=app.name,
        addon=event.addon_name,
        backup=event.num,
        result=event.result,
        trigger=event.trigger,
    )


def install(service: ServiceApp, state: Callable[[], Gateway]) -> None:
    """Record the backup service's BACKUP_VERIFIED events (consumer `backups`)."""

    @service.event("backups", bc.BACKUP_VERIFIED)
    async def on_verified(event: bc.BackupVerified) -> None:
        await verified(state(), event)
