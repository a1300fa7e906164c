"""Backups of an add-on's database (`pg:backups`), answered by the backup service over the bus.

    GET  /apps/{app}/addons/{addon}/backups               list, newest first   (viewer and up)
    POST /apps/{app}/addons/{addon}/backups               capture, waits       (member and up)
    GET  /apps/{app}/addons/{addon}/backups/{b001|1}      one backup           (viewer and up)
    GET  /apps/{app}/addons/{addon}/wal                   continuous archive   (viewer and up)
    GET  /apps/{app}/addons/{addon}/backups/{id}/objects  what a restore needs (viewer and up)
    GET  /apps/{app}/addons/{addon}/backup-objects/{key}  the sealed bytes     (member and up)

`{addon}` is the add-on's name or id; a destroyed add-on of the app is still found there
(its tombstone, `addonstore.Tombstone`), so its final backup can be listed, downloaded and
restored: a restore names it in `POST /apps/{app}/addons {"config": {"restore_from": ...}}`,
checked here by `restore_from` before the new add-on is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from aiohttp import web

from slipway.contracts import addons as ac
from slipway.contracts import backup as bc
from slipway.libs.errors import Conflict, NotFound, SlipwayError, Unavailable
from slipway.services.gateway.addons import addonstore
from slipway.services.gateway.addons.addonstore import Addon, Tombstone
from slipway.services.gateway.addons.backupviews import (
    BackupView,
    ObjectView,
    WalView,
    backup_name,
    backup_view,
    object_view,
    wal_view,
)
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY, Gateway
from slipway.services.gateway.http import views
from slipway.services.gateway.http.auth import Action, actor, app_for
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.gateway.http.routing import Routes, reply
from slipway.services.gateway.outbox.changes import Actor, change

log = structlog.get_logger("slipway.gateway.backups")

routes = Routes("backup")

ASK_TIMEOUT = 10.0  # seconds for the backup service's quick answers (lists, one chunk)


@dataclass(frozen=True)
class Source:
    """An add-on whose backups are asked for: live, or a tombstone of a destroyed one."""

    id: str
    name: str
    plan: str
    db_name: str  # a restore keeps the database's and the role's names
    db_user: str
    addon: Addon | None
    tombstone: Tombstone | None

    @classmethod
    def live(cls, addon: Addon) -> Source:
        return cls(addon.id, addon.name, addon.plan, addon.db_name, addon.db_user, addon, None)

    @property
    def ref(self) -> views.NamedRef:
        return views.NamedRef(id=self.id, name=self.name)

    @property
    def host(self) -> str:
        """The host whose backup service answers for it ("": unknown, or not placed yet)."""
        return (self.addon.host_id or "") if self.addon is not None else ""


async def source_of(gw: Gateway, app: store.App, ident: str) -> Source:
    """The app's add-on `ident` (name or id), or its tombstone if it was destroyed."""
    addon = await addonstore.get(gw.reader, ident)
    if addon is not None and addon.app_id == app.id:
        return Source.live(addon)
    gone = await addonstore.tombstone(gw.reader, app.id, ident)
    if gone is not None:
        return Source(gone.id, gone.name, gone.plan, gone.db_name, gone.db_user, None, gone)
    raise NotFound(f"Couldn't find that add-on ({ident[:60]}) on {app.name}.")


def backup_number(text: str) -> int:
    """The number of "b003", "B003" or "3"."""
    digits = text[1:] if text[:1] in ("b", "B") else text
    if not digits.isdigit() or int(digits) < 1:
        raise InvalidParams(f"{text[:30]!r} is not a backup id: use one like b001 (or its number).")
    return int(digits)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; without an offset it is UTC."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidParams(
            f"{text[:40]!r} is not an ISO 8601 time: use one like 2026-12-03T06:30:00+00:00."
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _ended(info: bc.BackupInfo) -> datetime | None:
    try:
        return parse_time(info.finished_at) if info.finished_at else None
    except InvalidParams:
        return None


async def _listed(gw: Gateway, app: store.App, source: Source) -> bc.Backups:
    try:
        return await bc.ask(
            gw.bus,
            bc.BACKUPS_LIST,
            bc.ListBackups(addon_id=source.id, app_id=app.id),
            timeout=ASK_TIMEOUT,
            host=source.host,
        )
    except NotFound:
        # The add-on is the app's (checked here); a database the backup service never
        # saw running simply has no backups yet.
        return bc.Backups()
    except Unavailable:
        # No host holds a database that was never placed on one: it has no backups yet.
        if source.addon is not None and not source.addon.host_id:
            return bc.Backups()
        raise


async def restore_from(
    gw: Gateway, app: store.App, plan: ac.AddonPlan, config: dict[str, str]
) -> tuple[ac.RestoreFrom, Source] | None:
    """The restore a create's `config` asks for, checked: None when it asks for none.

    The source must be an add-on (or a destroyed one) of the same app and of the same
    service, and a completed backup must reach the point asked for (422 saying why not).
    """
    ident = (config.get("restore_from") or "").strip()
    asked_num, asked_time = config.get("backup"), config.get("to_time")
    if not ident:
        if asked_num or asked_time:
            raise InvalidParams('"backup" and "to_time" go with "restore_from": <add-on>.')
        return None
    try:
        source = await source_of(gw, app, ident)
    except NotFound:
        raise InvalidParams(
            f"Couldn't find the add-on {ident[:60]!r} to restore from: give the name or id of"
            f" a database of {app.name} (or of one destroyed since)."
        ) from None
    source_plan = ac.ADDON_PLANS.get(source.plan)
    if plan.service != "postgresql" or source_plan is None or source_plan.service != plan.service:
        raise InvalidParams(f"A backup of {source.name} restores into a postgresql plan only.")
    num = backup_number(asked_num) if asked_num else 0
    when = parse_time(asked_time) if asked_time else None
    if when is not None and when > datetime.now(UTC):
        raise InvalidParams(f"{asked_time} is in the future: pick a time that has passed.")
    try:
        listed = await _listed(gw, app, source)
    except Unavailable:
        # The source's host is gone: another host's backup service stages the restore
        # from the shared storage and checks all of this there (the add-on fails, saying
        # why, when it cannot).
        log.info("backups.restore_unchecked", source=source.id, reason="its host is unreachable")
    else:
        completed = [b for b in listed.backups if b.state == "completed"]
        _check_reachable(source, completed, num, when)
    to_time = when.isoformat() if when is not None else ""
    return ac.RestoreFrom(source_addon_id=source.id, num=num, to_time=to_time), source


def _check_reachable(
    source: Source, completed: list[bc.BackupInfo], num: int, when: datetime | None
) -> None:
    """InvalidParams unless one of `completed` can be restored to `when` (or backup `num`)."""
    if num:
        found = [b for b in completed if b.num == num]
        if not found:
            raise InvalidParams(
                f"{source.name} has no completed backup {backup_name(num)}: see"
                f" `slipway pg:backups {source.name}`."
            )
        ended = _ended(found[0])
        if when is not None and ended is not None and when < ended:
            raise InvalidParams(
                f"{backup_name(num)} of {source.name} ended at {found[0].finished_at}: a restore"
                " from it reaches that time at the earliest."
            )
        return
    if not completed:
        raise InvalidParams(
            f"{source.name} has no completed backup to restore from: capture one with"
            f" `slipway pg:backups:capture {source.name}`."
        )
    if when is None:
        return
    ends = [e for e in map(_ended, completed) if e is not None]
    if not any(e <= when for e in ends):
        earliest = min(ends).isoformat() if ends else "none"
        raise InvalidParams(
            f"No completed backup of {source.name} ends before {when.isoformat()}: the earliest"
            f" point it can be restored to is {earliest}."
        )


async def _capture(
    gw: Gateway, who: Actor, app: store.App, addon: Addon, kind: bc.BackupKind
) -> bc.BackupInfo:
    """Take a base backup and wait for it; audited whatever the outcome."""
    # A quick question first: an absent backup service fails now, not after CAPTURE_TIMEOUT.
    await _listed(gw, app, Source.live(addon))
    try:
        taken = await bc.ask(
            gw.bus,
            bc.BACKUP_CAPTURE,
            bc.CaptureBackup(addon_id=addon.id, app_id=app.id, kind=kind),
            timeout=bc.CAPTURE_TIMEOUT,
            host=addon.host_id or "",
        )
    except SlipwayError as exc:
        async with change(gw, who) as tx:
            tx.audit(
                app.team_id,
                "backup.capture_failed",
                app_name=app.name,
                app_id=app.id,
                details={"addon": addon.name, "kind": kind, "error": exc.message[:300]},
            )
        raise
    info = taken.backup
    async with change(gw, who) as tx:
        tx.audit(
            app.team_id,
            "backup.capture",
            app_name=app.name,
            app_id=app.id,
            details={
                "addon": addon.name,
                "backup": backup_name(info.num),
                "kind": kind,
                "state": info.state,
            },
        )
    return info


async def final_backup(gw: Gateway, who: Actor, app: store.App, addon: Addon) -> bc.BackupInfo:
    """The backup a destroy takes first; its failure refuses the destroy, saying why."""
    try:
        info = await _capture(gw, who, app, addon, "final")
    except Unavailable as exc:
        raise Unavailable(
            f"The backup service did not answer ({exc.message}): the final backup of"
            f" {addon.name} could not be taken, so it was not destroyed. Try again once the"
            " backup service is back."
        ) from None
    except SlipwayError as exc:
        raise Conflict(
            f"The final backup of {addon.name} failed ({exc.message}), so it was not"
            " destroyed: fix the database (or try again) first."
        ) from None
    if info.state != "completed":
        raise Conflict(
            f"The final backup of {addon.name} ended {info.state}"
            f"{f' ({info.error})' if info.error else ''}, so it was not destroyed."
        )
    log.info("addon.final_backup", app=app.name, addon=addon.name, backup=info.num)
    return info


async def _source(request: web.Request, action: Action, doing: str) -> tuple[store.App, Source]:
    app = await app_for(request, action, doing)
    return app, await source_of(request.app[GATEWAY], app, request.match_info["addon"])


@routes.get(
    "/apps/{app}/addons/{addon}/backups",
    summary="Slipway: a database's base backups, newest first (pg:backups)",
    response=list[BackupView],
    extension=True,
)
async def list_backups(request: web.Request) -> web.Response:
    app, source = await _source(request, Action.READ, "read it")
    listed = await _listed(request.app[GATEWAY], app, source)
    newest_first = sorted(listed.backups, key=lambda b: b.num, reverse=True)
    return reply([backup_view(b, source.ref) for b in newest_first])


@routes.post(
    "/apps/{app}/addons/{addon}/backups",
    summary="Slipway: capture a base backup now and wait for it (pg:backups:capture)",
    response=BackupView,
    status=201,
    extension=True,
)
async def capture(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app, source = await _source(request, Action.DEPLOY, "capture backups")
    if source.addon is None:
        raise Conflict(f"{source.name} was destroyed: its backups can be restored, not added to.")
    if source.addon.state != "provisioned":
        raise Conflict(f"{source.name} is {source.addon.state}: only a running database backs up.")
    info = await _capture(gw, actor(request), app, source.addon, "manual")
    return reply(backup_view(info, source.ref), status=201)


@routes.get(
    "/apps/{app}/addons/{addon}/backups/{backup}",
    summary="Slipway: one base backup (pg:backups:info)",
    response=BackupView,
    extension=True,
)
async def info(request: web.Request) -> web.Response:
    app, source = await _source(request, Action.READ, "read it")
    num = backup_number(request.match_info["backup"])
    found = await bc.ask(
        request.app[GATEWAY].bus,
        bc.BACKUP_GET,
        bc.GetBackup(addon_id=source.id, app_id=app.id, num=num),
        timeout=ASK_TIMEOUT,
        host=source.host,
    )
    return reply(backup_view(found.backup, source.ref))


@routes.get(
    "/apps/{app}/addons/{addon}/wal",
    summary="Slipway: the database's continuous WAL archive (how fresh, how far back)",
    response=WalView,
    extension=True,
)
async def wal(request: web.Request) -> web.Response:
    app, source = await _source(request, Action.READ, "read it")
    listed = await _listed(request.app[GATEWAY], app, source)
    return reply(wal_view(listed.wal, source.ref))


@routes.get(
    "/apps/{app}/addons/{addon}/backups/{backup}/objects",
    summary="Slipway: the stored objects a restore of a backup needs, manifests included",
    response=list[ObjectView],
    extension=True,
)
async def objects(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app, source = await _source(request, Action.READ, "read it")
    num = backup_number(request.match_info["backup"])
    asked = request.query.get("to_time", "")
    to_time = parse_time(asked).isoformat() if asked else ""
    found = await bc.ask(
        gw.bus,
        bc.BACKUP_OBJECTS,
        bc.ListObjects(addon_id=source.id, app_id=app.id, num=num, to_time=to_time),
        timeout=ASK_TIMEOUT,
        host=source.host,
    )
    base = f"{gw.api_url}/apps/{app.name}/addons/{source.id}/backup-objects"
    return reply([object_view(o, base) for o in found.objects])


@routes.get(
    "/apps/{app}/addons/{addon}/backup-objects/{key}",
    summary="Slipway: one stored object's sealed bytes ({key} URL-encoded, '/' as %2F)",
    response=str,
    extension=True,
)
async def download(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    app, source = await _source(request, Action.DEPLOY, "download backups")
    key = request.match_info["key"]
    if not key.startswith(f"{source.id}/") or ".." in key.split("/"):
        raise NotFound(f"{source.name} has no object {key[:120]}.")

    async def read(offset: int) -> bc.ObjectChunk:
        asked = bc.ReadObject(
            addon_id=source.id, app_id=app.id, key=key, offset=offset, length=bc.MAX_OBJECT_READ
        )
        return await bc.ask(
            gw.bus, bc.BACKUP_OBJECT_READ, asked, timeout=ASK_TIMEOUT, host=source.host
        )

    # The first chunk before any header: a missing object is still a JSON 404.
    chunk = await read(0)
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if chunk.eof:
        response.content_length = len(chunk.data)
    else:
        response.enable_chunked_encoding()
    await response.prepare(request)
    offset = 0
    try:
        while True:
            await response.write(chunk.data)
            offset += len(chunk.data)
            if chunk.eof:
                break
            if not chunk.data:
                raise Unavailable(f"no progress reading {key} at {offset}")
            chunk = await read(offset)
    except SlipwayError as exc:
        # The status is sent already: cutting the connection is the one way left to say
        # the body is short (a chunked body then never ends), so no client keeps it whole.
        log.warning("backup.download_cut", key=key, offset=offset, error=exc.message)
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response
