"""App webhooks (Heroku's `app-webhook`, `app-webhook-delivery`, `app-webhook-event`).

The monitor keeps the subscriptions and delivers them; the gateway is the only caller.

    gateway  WEBHOOK_{CREATE,LIST,INFO,UPDATE,DELETE}   subscriptions of an app
    gateway  WEBHOOK_DELIVERIES_{LIST,INFO}             what was sent, how often, how it went
    gateway  WEBHOOK_EVENTS_{LIST,INFO}                 what happened (the payloads)

`app_id` "" (`PLATFORM`) names the operator's own webhooks, for platform alerts: the
same records, reached through `/admin/webhooks` by platform admins only.

The URL, the signing secret and the `Authorization` value are sealed at rest by the
monitor and never cross the bus again once stored: no reply carries the secret, except
`WebhookCreated.secret` for a secret the monitor generated (Heroku returns it once, in the
`Heroku-Webhook-Secret` header of the create answer).
"""

from __future__ import annotations

from typing import Any, Literal

from slipway.contracts import subjects
from slipway.contracts.base import Message, Rpc, only
from slipway.contracts.subjects import Service

Level = Literal["notify", "sync"]
# pending: not attempted yet; retrying: an attempt failed, another is due at
# `next_attempt_at`; failed: given up (notify webhooks after one attempt); succeeded.
# Heroku also lists "scheduled"; Slipway's deliveries never wait in that state.
DeliveryStatus = Literal["pending", "scheduled", "retrying", "failed", "succeeded"]
AttemptStatus = Literal["scheduled", "succeeded", "failed"]

PLATFORM = ""

# The entities Slipway delivers (Heroku's names, plus its own `alert`: an app's or the
# platform's alert fired, escalated or resolved: actions "fire", "escalate", "resolve").
INCLUDES: tuple[str, ...] = ("api:build", "api:release", "dyno", "alert")
# What the operator's webhooks can subscribe to: the platform has no builds or releases.
PLATFORM_INCLUDES: tuple[str, ...] = ("alert",)

MAX_URL = 2048
MAX_HEADER_VALUE = 1024


class WebhookInfo(Message, tag="webhooks.info.v1", frozen=True, kw_only=True):
    """One subscription as its owner may see it: never its secret or Authorization value."""

    id: str
    app_id: str
    include: list[str]
    level: Level
    url: str
    has_authorization: bool = False
    created_at: float
    updated_at: float


class CreateWebhook(Message, tag="webhooks.create.v1", frozen=True, kw_only=True):
    app_id: str
    team_id: str  # whose keys seal the URL and secret ("" for the platform's)
    url: str
    include: list[str]
    level: Level
    secret: str | None = None  # None: the monitor generates one and returns it once
    authorization: str | None = None


class WebhookCreated(Message, tag="webhooks.created.v1", frozen=True, kw_only=True):
    webhook: WebhookInfo
    secret: str = ""  # only when generated: the one time it is ever shown


class UpdateWebhook(Message, tag="webhooks.update.v1", frozen=True, kw_only=True):
    """None leaves a field as it is; `authorization` "" removes the header."""

    app_id: str
    team_id: str
    webhook_id: str
    url: str | None = None
    include: list[str] | None = None
    level: Level | None = None
    secret: str | None = None
    authorization: str | None = None


class WebhookRef(Message, tag="webhooks.ref.v1", frozen=True, kw_only=True):
    """Names one record of an app (a webhook, a delivery or an event) by its id."""

    app_id: str
    id: str


class ListForApp(Message, tag="webhooks.list.v1", frozen=True, kw_only=True):
    app_id: str
    limit: int = 200


class WebhookReply(Message, tag="webhooks.reply.v1", frozen=True, kw_only=True):
    webhook: WebhookInfo


class WebhookList(Message, tag="webhooks.listed.v1", frozen=True, kw_only=True):
    webhooks: list[WebhookInfo]


class AttemptInfo(Message, tag="webhooks.attempt.v1", frozen=True, kw_only=True):
    id: str
    code: int | None = None  # the receiver's HTTP status, None when none came back
    error_class: str | None = None  # why it failed without a status (refused, timeout, ...)
    status: AttemptStatus
    created_at: float
    updated_at: float


class DeliveryInfo(Message, tag="webhooks.delivery.v1", frozen=True, kw_only=True):
    id: str
    app_id: str
    webhook_id: str
    level: Level
    event_id: str
    include: str
    status: DeliveryStatus
    num_attempts: int = 0
    next_attempt_at: float | None = None
    last_attempt: AttemptInfo | None = None
    created_at: float
    updated_at: float


class DeliveryReply(Message, tag="webhooks.delivery.reply.v1", frozen=True, kw_only=True):
    delivery: DeliveryInfo


class DeliveryList(Message, tag="webhooks.deliveries.v1", frozen=True, kw_only=True):
    deliveries: list[DeliveryInfo]


class EventInfo(Message, tag="webhooks.event.v1", frozen=True, kw_only=True):
    id: str
    app_id: str
    include: str
    # Heroku's `payload` (action, actor, data, previous_data, resource, version) as JSON
    # text: its `data` differs by entity, and the gateway answers it as it is.
    payload: str
    created_at: float
    updated_at: float


class EventReply(Message, tag="webhooks.event.reply.v1", frozen=True, kw_only=True):
    event: EventInfo


class EventList(Message, tag="webhooks.events.v1", frozen=True, kw_only=True):
    events: list[EventInfo]


def _rpc(verb: str, request: type[Any], reply: type[Any]) -> Rpc[Any, Any]:
    return Rpc(
        Service.MONITOR,
        verb,
        subjects.rpc(Service.MONITOR, verb),
        request,
        reply,
        callers=only(Service.GATEWAY),
    )


WEBHOOK_CREATE: Rpc[CreateWebhook, WebhookCreated] = _rpc(
    "webhooks.create", CreateWebhook, WebhookCreated
)
WEBHOOK_LIST: Rpc[ListForApp, WebhookList] = _rpc("webhooks.list", ListForApp, WebhookList)
WEBHOOK_INFO: Rpc[WebhookRef, WebhookReply] = _rpc("webhooks.info", WebhookRef, WebhookReply)
WEBHOOK_UPDATE: Rpc[UpdateWebhook, WebhookReply] = _rpc(
    "webhooks.update", UpdateWebhook, WebhookReply
)
WEBHOOK_DELETE: Rpc[WebhookRef, WebhookReply] = _rpc("webhooks.delete", WebhookRef, WebhookReply)
WEBHOOK_DELIVERIES_LIST: Rpc[ListForApp, DeliveryList] = _rpc(
    "webhooks.deliveries.list", ListForApp, DeliveryList
)
WEBHOOK_DELIVERIES_INFO: Rpc[WebhookRef, DeliveryReply] = _rpc(
    "webhooks.deliveries.info", WebhookRef, DeliveryReply
)
WEBHOOK_EVENTS_LIST: Rpc[ListForApp, EventList] = _rpc(
    "webhooks.events.list", ListForApp, EventList
)
WEBHOOK_EVENTS_INFO: Rpc[WebhookRef, EventReply] = _rpc(
    "webhooks.events.info", WebhookRef, EventReply
)
