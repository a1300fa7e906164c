"""App webhooks (Heroku's app-webhook, -delivery and -event resources), kept by the monitor.

    GET/POST          /apps/{app}/webhooks                  and GET/PATCH/DELETE /{webhook}
    GET               /apps/{app}/webhook-deliveries        and GET /{delivery}
    GET               /apps/{app}/webhook-events            and GET /{event}
    GET/POST          /admin/webhooks                       and GET/PATCH/DELETE /{webhook}
    GET               /admin/webhook-deliveries, /admin/webhook-events   (platform admins)

Every app endpoint needs the app's "manage" permission (owners and admins of its team), as
Heroku asks for webhooks: a webhook sends what happens to the app elsewhere. The operator's
own webhooks (platform alerts) are platform admins' only. A secret is never answered,
except the one the monitor generates when none is given: once, in the create answer's
`Heroku-Webhook-Secret` header, as Heroku does. The audit chain records the webhook's id,
include and level, never its URL, secret or Authorization value.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec
import structlog
from aiohttp import web

from slipway.contracts import webhooks as wh
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY
from slipway.services.gateway.http.auth import Action, actor, app_for, require_admin
from slipway.services.gateway.http.routing import Routes, read_body, reply
from slipway.services.gateway.http.views import NamedRef, Timestamp, View
from slipway.services.gateway.outbox.changes import change

routes = Routes("webhook")
log = structlog.get_logger("slipway.gateway.webhooks")

_CALL_TIMEOUT = 15.0  # creating resolves the URL (egress guard) and seals through the keyring


class WebhookCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str
    include: list[str]
    level: Literal["notify", "sync"]
    secret: str | None = None
    authorization: str | None = None


class WebhookUpdate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fields left out stay as they are; `authorization: ""` removes the header."""

    url: str | None = None
    include: list[str] | None = None
    level: Literal["notify", "sync"] | None = None
    secret: str | None = None
    authorization: str | None = None


class AppWebhook(View, frozen=True, kw_only=True):
    app: NamedRef | None = None  # None for the operator's (platform) webhooks
    created_at: Timestamp
    id: str
    include: list[str]
    level: str
    updated_at: Timestamp
    url: str


class EventRef(View, frozen=True, kw_only=True):
    id: str
    include: str


class WebhookRef(View, frozen=True, kw_only=True):
    id: str
    level: str


class LastAttempt(View, frozen=True, kw_only=True):
    id: str
    code: int | None
    error_class: str | None
    status: str
    created_at: Timestamp
    updated_at: Timestamp


class AppWebhookDelivery(View, frozen=True, kw_only=True):
    created_at: Timestamp
    event: EventRef
    id: str
    num_attempts: int
    next_attempt_at: Timestamp | None
    last_attempt: LastAttempt | None
    status: str
    updated_at: Timestamp
    webhook: WebhookRef


class AppWebhookEvent(View, frozen=True, kw_only=True):
    created_at: Timestamp
    id: str
    include: str
    payload: dict[str, Any]
    updated_at: Timestamp


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _webhook(hook: wh.WebhookInfo, app: store.App | None) -> AppWebhook:
    return AppWebhook(
        app=NamedRef(id=app.id, name=app.name) if app is not None else None,
        created_at=_iso(hook.created_at),
        id=hook.id,
        include=hook.include,
        level=hook.level,
        updated_at=_iso(hook.updated_at),
        url=hook.url,
    )


def _delivery(found: wh.DeliveryInfo) -> AppWebhookDelivery:
    last = found.last_attempt
    return AppWebhookDelivery(
        created_at=_iso(found.created_at),
        event=EventRef(id=found.event_id, include=found.include),
        id=found.id,
        num_attempts=found.num_attempts,
        next_attempt_at=_iso(found.next_attempt_at) if found.next_attempt_at else None,
        last_attempt=(
            LastAttempt(
                id=last.id,
                code=last.code,
                error_class=last.error_class,
                status=last.status,
                created_at=_iso(last.created_at),
                updated_at=_iso(last.updated_at),
            )
            if last is not None
            else None
        ),
        status=found.status,
        updated_at=_iso(found.updated_at),
        webhook=WebhookRef(id=found.webhook_id, level=found.level),
    )


def _event(found: wh.EventInfo) -> AppWebhookEvent:
    return AppWebhookEvent(
        created_at=_iso(found.created_at),
        id=found.id,
        include=found.include,
        payload=msgspec.json.decode(found.payload),
        updated_at=_iso(found.updated_at),
    )


async def _owner(request: web.Request, doing: str) -> store.App | None:
    """The app named in the path (manage permission), or None on /admin/ (admins only)."""
    if "app" in request.match_info:
        return await app_for(request, Action.MANAGE, doing)
    require_admin(request)
    return None


async def _audit(
    request: web.Request, app: store.App | None, action: str, hook: wh.WebhookInfo
) -> None:
    details = {"webhook_id": hook.id, "include": ",".join(hook.include), "level": hook.level}
    if app is None:
        # Team chains hold team actions; the platform's webhooks are logged, as hosts are.
        log.info(action, actor=str(actor(request)), **details)
        return
    async with change(request.app[GATEWAY], actor(request)) as tx:
        tx.audit(app.team_id, action, app_name=app.name, app_id=app.id, details=details)


def _app_id(app: store.App | None) -> str:
    return app.id if app is not None else wh.PLATFORM


async def list_webhooks(request: web.Request) -> web.Response:
    app = await _owner(request, "read its webhooks")
    found = await request.app[GATEWAY].bus.call(wh.WEBHOOK_LIST, wh.ListForApp(app_id=_app_id(app)))
    return reply([_webhook(h, app) for h in found.webhooks])


async def webhook_info(request: web.Request) -> web.Response:
    app = await _owner(request, "read its webhooks")
    ref = wh.WebhookRef(app_id=_app_id(app), id=request.match_info["webhook"])
    found = await request.app[GATEWAY].bus.call(wh.WEBHOOK_INFO, ref)
    return reply(_webhook(found.webhook, app))


async def create_webhook(request: web.Request) -> web.Response:
    app = await _owner(request, "add webhooks")
    body = await read_body(request, WebhookCreate)
    create = wh.CreateWebhook(
        app_id=_app_id(app),
        team_id=app.team_id if app is not None else "",
        url=body.url,
        include=body.include,
        level=body.level,
        secret=body.secret,
        authorization=body.authorization,
    )
    made = await request.app[GATEWAY].bus.call(wh.WEBHOOK_CREATE, create, timeout=_CALL_TIMEOUT)
    await _audit(request, app, "webhook.add", made.webhook)
    response = reply(_webhook(made.webhook, app), 201)
    if made.secret:
        response.headers["Heroku-Webhook-Secret"] = made.secret
    return response


async def update_webhook(request: web.Request) -> web.Response:
    app = await _owner(request, "change webhooks")
    body = await read_body(request, WebhookUpdate)
    update = wh.UpdateWebhook(
        app_id=_app_id(app),
        team_id=app.team_id if app is not None else "",
        webhook_id=request.match_info["webhook"],
        url=body.url,
        include=body.include,
        level=body.level,
        secret=body.secret,
        authorization=body.authorization,
    )
    done = await request.app[GATEWAY].bus.call(wh.WEBHOOK_UPDATE, update, timeout=_CALL_TIMEOUT)
    await _audit(request, app, "webhook.update", done.webhook)
    return reply(_webhook(done.webhook, app))


async def delete_webhook(request: web.Request) -> web.Response:
    app = await _owner(request, "remove webhooks")
    ref = wh.WebhookRef(app_id=_app_id(app), id=request.match_info["webhook"])
    done = await request.app[GATEWAY].bus.call(wh.WEBHOOK_DELETE, ref, timeout=_CALL_TIMEOUT)
    await _audit(request, app, "webhook.remove", done.webhook)
    return reply(_webhook(done.webhook, app))


async def list_deliveries(request: web.Request) -> web.Response:
    app = await _owner(request, "read its webhook deliveries")
    found = await request.app[GATEWAY].bus.call(
        wh.WEBHOOK_DELIVERIES_LIST, wh.ListForApp(app_id=_app_id(app))
    )
    return reply([_delivery(d) for d in found.deliveries])


async def delivery_info(request: web.Request) -> web.Response:
    app = await _owner(request, "read its webhook deliveries")
    ref = wh.WebhookRef(app_id=_app_id(app), id=request.match_info["delivery"])
    found = await request.app[GATEWAY].bus.call(wh.WEBHOOK_DELIVERIES_INFO, ref)
    return reply(_delivery(found.delivery))


async def list_events(request: web.Request) -> web.Response:
    app = await _owner(request, "read its webhook events")
    found = await request.app[GATEWAY].bus.call(
        wh.WEBHOOK_EVENTS_LIST, wh.ListForApp(app_id=_app_id(app))
    )
    return reply([_event(e) for e in found.events])


async def event_info(request: web.Request) -> web.Response:
    app = await _owner(request, "read its webhook events")
    ref = wh.WebhookRef(app_id=_app_id(app), id=request.match_info["event"])
    found = await request.app[GATEWAY].bus.call(wh.WEBHOOK_EVENTS_INFO, ref)
    return reply(_event(found.event))


def _register(prefix: str, extension: bool) -> None:
    """The same handlers under an app (Heroku's paths) and under /admin (the platform's)."""
    kw: dict[str, Any] = {"extension": extension} if extension else {}
    where = "the platform" if extension else "an app"

    def named(handler: Any) -> Any:
        # operationIds in the OpenAPI document come from handler names: one per path.
        async def serve(request: web.Request) -> web.Response:
            return await handler(request)  # type: ignore[no-any-return]

        serve.__name__ = f"{'admin_' if extension else ''}{handler.__name__}"
        return serve

    hooks, one = f"{prefix}/webhooks", f"{prefix}/webhooks/{{webhook}}"
    routes.get(hooks, summary=f"List webhooks of {where}", response=list[AppWebhook], **kw)(
        named(list_webhooks)
    )
    routes.post(
        hooks,
        summary=f"Create a webhook of {where}",
        body=WebhookCreate,
        response=AppWebhook,
        status=201,
        **kw,
    )(named(create_webhook))
    routes.get(one, summary="Info for a webhook", response=AppWebhook, **kw)(named(webhook_info))
    routes.patch(one, summary="Update a webhook", body=WebhookUpdate, response=AppWebhook, **kw)(
        named(update_webhook)
    )
    routes.delete(one, summary="Delete a webhook", response=AppWebhook, **kw)(named(delete_webhook))
    deliveries = f"{prefix}/webhook-deliveries"
    routes.get(
        deliveries, summary="List webhook deliveries", response=list[AppWebhookDelivery], **kw
    )(named(list_deliveries))
    routes.get(
        f"{deliveries}/{{delivery}}",
        summary="Info for a webhook delivery",
        response=AppWebhookDelivery,
        **kw,
    )(named(delivery_info))
    events = f"{prefix}/webhook-events"
    routes.get(events, summary="List webhook events", response=list[AppWebhookEvent], **kw)(
        named(list_events)
    )
    routes.get(
        f"{events}/{{event}}", summary="Info for a webhook event", response=AppWebhookEvent, **kw
    )(named(event_info))


_register("/apps/{app}", extension=False)
_register("/admin", extension=True)
