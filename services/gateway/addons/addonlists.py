"""Add-ons and attachments across apps, the way Heroku's clients list and find them.

`/addons` and `/addon-attachments` list those of every app of the caller's teams (the
apps `/apps` lists); one found by id is shown only to someone who may read its app,
and is otherwise 404, as another team's app is. A Slipway add-on has exactly one
attachment, to the app it was created for (its config var `<NAME>_URL`), so the
attachment shares the add-on's life: attaching it to another app or detaching it
answers 422 naming what to do instead; renaming it (`POST /addon-attachments` for its
own app) is `attach` of addons.py, as `POST /apps/{app}/addon-attachments` is.
"""

from __future__ import annotations

from aiohttp import web

from slipway.libs.errors import NotFound
from slipway.services.gateway.addons import addons, addonstore
from slipway.services.gateway.addons.addonstore import Addon
from slipway.services.gateway.addons.addonviews import (
    AddonView,
    AttachmentView,
    addon_view,
    attachment_view,
)
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY, Gateway
from slipway.services.gateway.http.auth import Action, actor, app_for, principal
from slipway.services.gateway.http.errors import ErrorBody, InvalidParams
from slipway.services.gateway.http.routing import Routes, read_body, reply

routes = Routes("add-on")


async def _live_of_user(gw: Gateway, user_id: str) -> list[tuple[Addon, store.App]]:
    """The add-ons of every app of the user's teams (none that is being removed)."""
    found = []
    for app in await store.apps_of(gw.reader, user_id):
        found += [
            (addon, app)
            for addon in await addonstore.of_app(gw.reader, app.id)
            if addon.state != "deprovisioned"
        ]
    return found


async def _readable(request: web.Request, addon: Addon | None, what: str) -> store.App:
    """The add-on's app if the caller may read it; 404 alike for missing and not theirs."""
    if addon is None or addon.state == "deprovisioned":
        raise NotFound(f"Couldn't find that {what}.")
    # Membership is checked on the add-on's app, as for the app's own routes.
    request.match_info["app"] = addon.app_id
    try:
        return await app_for(request, Action.READ, "read it")
    except NotFound:
        raise NotFound(f"Couldn't find that {what}.") from None


async def _by_attachment_id(conn: store.Conn, ident: str) -> Addon | None:
    async with conn.execute("SELECT id FROM addons WHERE attachment_id = ?", (ident,)) as cursor:
        row = await cursor.fetchone()
    return await addonstore.get(conn, str(row["id"])) if row else None


@routes.get("/addons", summary="List the add-ons of all your apps", response=list[AddonView])
async def list_all(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    found = await _live_of_user(gw, principal(request).user.id)
    return reply([addon_view(addon, app) for addon, app in found])


@routes.get(
    "/addon-attachments",
    summary="List the add-on attachments of all your apps",
    response=list[AttachmentView],
)
async def list_attachments(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    found = await _live_of_user(gw, principal(request).user.id)
    return reply([attachment_view(addon, app) for addon, app in found])


@routes.get(
    "/addon-attachments/{attachment}",
    summary="Info for an add-on attachment",
    response=AttachmentView,
)
async def attachment_info(request: web.Request) -> web.Response:
    conn = request.app[GATEWAY].reader
    addon = await _by_attachment_id(conn, request.match_info["attachment"])
    app = await _readable(request, addon, "add-on attachment")
    assert addon is not None  # _readable refused a missing one
    return reply(attachment_view(addon, app))


@routes.get(
    "/apps/{app}/addon-attachments/{attachment}",
    summary="Info for an add-on attachment of the app (id or name)",
    response=AttachmentView,
)
async def attachment_info_by_app(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app = await app_for(request, Action.READ, "read it")
    wanted = request.match_info["attachment"]
    for addon in await addonstore.of_app(gw.reader, app.id):
        if addon.state != "deprovisioned" and wanted in (
            addon.attachment_id,
            addon.attachment_name,
        ):
            return reply(attachment_view(addon, app))
    raise NotFound(f"Couldn't find that add-on attachment ({wanted[:60]}) on {app.name}.")


@routes.get(
    "/addons/{addon}/addon-attachments",
    summary="List an add-on's attachments (its one, to its app)",
    response=list[AttachmentView],
)
async def attachments_of_addon(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    addon = await addonstore.get(gw.reader, request.match_info["addon"])
    app = await _readable(request, addon, "add-on")
    assert addon is not None
    return reply([attachment_view(addon, app)])


@routes.post(
    "/addon-attachments",
    summary="Rename an add-on's attachment to its own app (another app: 422)",
    body=addons.CreateAttachment,
    response=AttachmentView,
    status=201,
)
async def create_attachment(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    body = await read_body(request, addons.CreateAttachment)
    addon = await addonstore.get(gw.reader, body.addon)
    own = await _readable(request, addon, "add-on")
    assert addon is not None
    if body.app is not None and body.app not in (own.id, own.name):
        request.match_info["app"] = body.app
        other = await app_for(request, Action.DEPLOY, "attach add-ons")
        raise InvalidParams(
            f"A Slipway add-on is attached to its own app only; {other.name} cannot share"
            f" {addon.name}: create one for it (`slipway addons:create postgresql -a"
            f" {other.name}`)."
        )
    request.match_info["app"] = own.id
    app = await app_for(request, Action.DEPLOY, "attach add-ons")
    attached = await addons.attach(
        gw, actor(request), app, addon, body.name or addons.PRIMARY_ATTACHMENT
    )
    return reply(attachment_view(attached, app), status=201)


@routes.delete(
    "/addon-attachments/{attachment}",
    summary="Refused: an add-on's attachment lasts as long as the add-on",
    response=ErrorBody,
    status=422,
)
async def delete_attachment(request: web.Request) -> web.Response:
    conn = request.app[GATEWAY].reader
    addon = await _by_attachment_id(conn, request.match_info["attachment"])
    await _readable(request, addon, "add-on attachment")
    assert addon is not None
    raise InvalidParams(
        f"{addon.name} is attached to its own app for as long as it exists: destroy the"
        f" add-on (`slipway addons:destroy {addon.name}`) to remove its {addon.config_var}."
    )
