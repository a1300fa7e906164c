"""Daily backup schedules of an app's databases (`pg:backups:schedule`), kept by the backup service.

    GET    /apps/{app}/backup-schedules                  every database of the app (viewer and up)
    GET    /apps/{app}/addons/{addon}/backup-schedule    one                       (viewer and up)
    PUT    /apps/{app}/addons/{addon}/backup-schedule    {"at": "02:00 UTC"}, or
                                                          {"hour": 2, "timezone": "UTC"}
                                                                                   (member and up)
    DELETE /apps/{app}/addons/{addon}/backup-schedule    no scheduled backups      (member and up)

Every database is backed up daily from its creation, at a stable hour of its own, until
its schedule is set (Heroku's `--at 'HH:00 TZ'`, whole hours, any IANA zone) or removed.
The answer also says how long the plan keeps backups and what the last expiry removed.
Changes are audited in the team's chain.
"""

from __future__ import annotations

from aiohttp import web

from slipway.contracts import backup as bc
from slipway.libs.errors import Conflict, NotFound
from slipway.services.gateway.addons import addonstore
from slipway.services.gateway.addons.addonstore import Addon
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY, Gateway
from slipway.services.gateway.http import views
from slipway.services.gateway.http.auth import Action, actor, app_for
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.gateway.http.routing import Routes, read_body, reply
from slipway.services.gateway.http.schemas import Body
from slipway.services.gateway.outbox.changes import change

routes = Routes("backup-schedule")

ASK_TIMEOUT = 10.0


class RetentionView(views.View, frozen=True, kw_only=True):
    """The plan's retention: the newest backup of each of the last N days, weeks, months."""

    daily: int
    weekly: int
    monthly: int


class BackupScheduleView(views.View, frozen=True, kw_only=True):
    """Slipway: when a database's daily backup runs, and how long backups are kept."""

    addon: views.NamedRef
    enabled: bool
    at: str  # "02:00 UTC", Heroku's `--at`
    hour: int
    timezone: str
    default: bool  # true until a schedule is set: an hour chosen for this database
    next_at: str | None
    retention: RetentionView
    last_expiry: str | None


class SetSchedule(Body, frozen=True, kw_only=True):
    at: str = ""  # "HH:00 TZ"; or hour and timezone
    hour: int | None = None
    timezone: str = "UTC"


def schedule_view(found: bc.BackupSchedule, addon: views.NamedRef) -> BackupScheduleView:
    return BackupScheduleView(
        addon=addon,
        enabled=found.enabled,
        at=f"{found.hour:02d}:00 {found.timezone}",
        hour=found.hour,
        timezone=found.timezone,
        default=found.default,
        next_at=found.next_at or None,
        retention=RetentionView(
            daily=found.keep_daily, weekly=found.keep_weekly, monthly=found.keep_monthly
        ),
        last_expiry=found.last_expiry or None,
    )


def _hour_and_zone(body: SetSchedule) -> tuple[int, str]:
    try:
        if body.at:
            return bc.parse_at(body.at)
        if body.hour is None:
            raise ValueError("give `at` ('02:00 UTC'), or `hour` and `timezone`")
        if not 0 <= body.hour <= 23:
            raise ValueError(f"{body.hour} is not an hour: use 0 to 23")
        return body.hour, bc.check_timezone(body.timezone)
    except ValueError as exc:
        raise InvalidParams(f"{str(exc)[:200]}.") from None


async def _addon(request: web.Request, action: Action, doing: str) -> tuple[store.App, Addon]:
    app = await app_for(request, action, doing)
    ident = request.match_info["addon"]
    addon = await addonstore.get(request.app[GATEWAY].reader, ident)
    if addon is None or addon.app_id != app.id:
        raise NotFound(f"Couldn't find that add-on ({ident[:60]}) on {app.name}.")
    return app, addon


def _ref(addon: Addon) -> views.NamedRef:
    return views.NamedRef(id=addon.id, name=addon.name)


async def _ask(gw: Gateway, app: store.App, addon: Addon) -> bc.BackupSchedule:
    answer = await bc.ask(
        gw.bus,
        bc.BACKUP_SCHEDULE_GET,
        bc.GetBackupSchedule(addon_id=addon.id, app_id=app.id),
        timeout=ASK_TIMEOUT,
        host=addon.host_id or "",
    )
    return answer.schedule


@routes.get(
    "/apps/{app}/backup-schedules",
    summary="Slipway: the daily backup schedules of the app's databases (pg:backups:schedules)",
    response=list[BackupScheduleView],
    extension=True,
)
async def list_schedules(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app = await app_for(request, Action.READ, "read it")
    found = []
    for addon in await addonstore.of_app(gw.reader, app.id):
        try:
            found.append(schedule_view(await _ask(gw, app, addon), _ref(addon)))
        except NotFound:
            continue  # the backup service has not heard of it yet: nothing scheduled
    return reply(found)


@routes.get(
    "/apps/{app}/addons/{addon}/backup-schedule",
    summary="Slipway: a database's daily backup schedule and retention",
    response=BackupScheduleView,
    extension=True,
)
async def get_schedule(request: web.Request) -> web.Response:
    app, addon = await _addon(request, Action.READ, "read it")
    return reply(schedule_view(await _ask(request.app[GATEWAY], app, addon), _ref(addon)))


@routes.put(
    "/apps/{app}/addons/{addon}/backup-schedule",
    summary="Slipway: take the database's daily backup at this hour (pg:backups:schedule --at)",
    body=SetSchedule,
    response=BackupScheduleView,
    extension=True,
)
async def set_schedule(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app, addon = await _addon(request, Action.DEPLOY, "schedule backups")
    hour, zone = _hour_and_zone(await read_body(request, SetSchedule))
    if addon.state == "deprovisioned":
        raise Conflict(f"{addon.name} is being destroyed: it takes no more backups.")
    answer = await bc.ask(
        gw.bus,
        bc.BACKUP_SCHEDULE_SET,
        bc.SetBackupSchedule(addon_id=addon.id, app_id=app.id, hour=hour, timezone=zone),
        timeout=ASK_TIMEOUT,
        host=addon.host_id or "",
    )
    view = schedule_view(answer.schedule, _ref(addon))
    async with change(gw, actor(request)) as tx:
        tx.audit(
            app.team_id,
            "backup.schedule",
            app_name=app.name,
            app_id=app.id,
            details={"addon": addon.name, "at": view.at},
        )
    return reply(view)


@routes.delete(
    "/apps/{app}/addons/{addon}/backup-schedule",
    summary="Slipway: no more scheduled backups of the database (pg:backups:unschedule)",
    response=BackupScheduleView,
    extension=True,
)
async def remove_schedule(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app, addon = await _addon(request, Action.DEPLOY, "schedule backups")
    answer = await bc.ask(
        gw.bus,
        bc.BACKUP_SCHEDULE_REMOVE,
        bc.RemoveBackupSchedule(addon_id=addon.id, app_id=app.id),
        timeout=ASK_TIMEOUT,
        host=addon.host_id or "",
    )
    async with change(gw, actor(request)) as tx:
        tx.audit(
            app.team_id,
            "backup.unschedule",
            app_name=app.name,
            app_id=app.id,
            details={"addon": addon.name},
        )
    return reply(schedule_view(answer.schedule, _ref(addon)))
