"""App webhooks: subscriptions, events and their deliveries, kept and sent by the monitor.

    register(service, settings)      the RPCs of contracts/webhooks.py, the event consumer
                                     `monitor-webhooks` and the delivery loop
    service[WEBHOOKS].notify(app_id, include, action, data)
                                     records one event and a delivery to every webhook of
                                     the app (app_id "": the operator's) that includes it

Entities delivered (Heroku's `include` names, plus Slipway's own):

    api:release  create   a release was made (RELEASE_CREATED)
    api:build    update   a build finished, succeeded or failed (BUILD_FINISHED)
    dyno         create / update / destroy   a dyno started, changed state, went away
                          (DYNO_CHANGED)
    alert        fire / escalate / resolve   an app's or the platform's alert (the monitor)

A webhook's URL, signing secret and Authorization value are sealed together at rest
(libs/crypto/envelope, purpose LOGS, bound to team/app/"webhook"/id) and opened into
memory when a delivery needs them. The URL must be https:// (http:// only when the
operator sets `SLIPWAY_WEBHOOK_ALLOW_HTTP=1`) and pass the egress guard when it is set,
with a 422 saying why not, and again on every attempt (services/monitor/delivery.py).

Settings (environment, besides the monitor's own):
    SLIPWAY_EGRESS_ALLOW / _DENY         the egress guard's ranges, as for drains and builds
    SLIPWAY_WEBHOOK_ALLOW_HTTP           accept http:// receivers (default 0)
    SLIPWAY_WEBHOOK_CA_FILE              an extra CA bundle receivers' certificates chain to
    SLIPWAY_WEBHOOK_TIMEOUT              seconds an attempt may take (10)
    SLIPWAY_WEBHOOK_BACKOFF / _MAX       first retry delay, cap (15 s, 3600 s)
    SLIPWAY_WEBHOOK_MAX_ATTEMPTS         attempts before a delivery fails (10)
    SLIPWAY_WEBHOOK_RETENTION_DAYS       finished deliveries and events kept (7)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from typing import Annotated, Any

import msgspec
import structlog

from slipway.contracts import builder, gateway, scheduler
from slipway.contracts import webhooks as wh
from slipway.contracts.keyring import Purpose
from slipway.libs import egress
from slipway.libs.crypto import Binding, envelope
from slipway.libs.errors import InvalidRequest, NotFound, disk_full
from slipway.libs.service import Key, ServiceApp, Settings, load_settings
from slipway.libs.storage import Database, claim
from slipway.services.monitor import webhookstore as store
from slipway.services.monitor.delivery import (
    DeliveryLoop,
    Policy,
    Target,
    attempt,
    backoff_delay,
    iso,
    render,
)
from slipway.services.monitor.settings import MonitorSettings
from slipway.services.monitor.webhookentities import (
    PLATFORM_ACTOR,
    UNKNOWN_ID,
    VERSION,
    build_data,
    dyno_action,
    dyno_data,
    release_data,
)

log = structlog.get_logger("slipway.monitor.webhooks")

# The keyring tenant that seals the operator's own webhooks (team ids are UUIDs).
PLATFORM_TEAM = "platform"
MAX_PER_APP = 10
# What a webhook whose sealed URL cannot be opened any more lists as its URL.
UNSEALABLE_URL = "https://unsealable.invalid/"
CONSUMER = "webhooks"
_PRINTABLE = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$")

Positive = Annotated[float, msgspec.Meta(gt=0)]


class WebhookSettings(Settings, frozen=True, kw_only=True):
    """How webhooks are checked and delivered; see the module docstring."""

    egress_allow: str = ""
    egress_deny: str = ""
    webhook_allow_http: bool = False
    webhook_ca_file: str = ""
    webhook_timeout: Positive = 10.0
    webhook_backoff: Positive = 15.0
    webhook_backoff_max: Positive = 3600.0
    webhook_max_attempts: Annotated[int, msgspec.Meta(ge=1)] = 10
    webhook_retention_days: Positive = 7.0


class Webhooks:
    """The webhook records of this monitor and the events that feed their deliveries."""

    def __init__(self, service: ServiceApp, db: Database, settings: WebhookSettings) -> None:
        self.service = service
        self.db = db
        self.settings = settings
        self.egress = egress.policy_for(settings.egress_allow, settings.egress_deny)
        self.schemes: tuple[str, ...] = (
            ("https", "http") if settings.webhook_allow_http else ("https",)
        )
        self.policy = Policy(
            egress=self.egress,
            schemes=self.schemes,
            tls=_tls(settings.webhook_ca_file),
            timeout=settings.webhook_timeout,
            backoff=settings.webhook_backoff,
            backoff_max=settings.webhook_backoff_max,
            max_attempts=settings.webhook_max_attempts,
        )
        self.loop = DeliveryLoop(db, self.policy, self._target)
        # Opened targets, by webhook id: plaintext in memory only, dropped on change.
        self._targets: dict[str, Target] = {}
        # Events sent from memory while the disk was full (notify), and their sends.
        self._sent_unrecorded: set[str] = set()
        self._unrecorded: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        """Stop the delivery loop's attempts and any sends from memory."""
        tasks = list(self._unrecorded)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.loop.stop()

    # ---- events -------------------------------------------------------------------------

    async def notify(
        self,
        app_id: str,
        include: str,
        action: str,
        data: dict[str, Any],
        *,
        actor: str = "",
        event_id: str = "",
    ) -> None:
        """Record one event and its deliveries to every matching webhook; return at once.

        `event_id` (a bus event's id) makes it idempotent: a second call with it does nothing.
        """
        hooks = [h for h in await store.webhooks(self.db, app_id) if include in h.include]
        if not hooks:
            return  # nothing recorded, so nothing to repeat on a redelivery
        now = time.time()
        row = store.EventRow(
            id=str(uuid.uuid4()),
            app_id=app_id,
            include=include,
            payload={
                "id": "",
                "created_at": iso(now),
                "data": data,
                "previous_data": {},
                "actor": {"email": actor or PLATFORM_ACTOR, "id": UNKNOWN_ID},
                "action": action,
                "version": VERSION,
                "resource": include.removeprefix("api:"),
                "sequence": None,
            },
            created_at=now,
        )
        row.payload["id"] = row.id
        if event_id and event_id in self._sent_unrecorded:
            return
        pairs = [(str(uuid.uuid4()), h.id) for h in hooks]
        try:
            async with self.db.transaction() as conn:
                if event_id and not await claim(conn, event_id):
                    return
                await store.add_event(conn, row, pairs)
        except Exception as exc:
            if not disk_full(exc):
                raise
            # The monitor's disk is full: the event cannot be recorded, yet an alert about
            # that very disk is what the receivers most need. Send it from memory instead:
            # retried with backoff while this process lives, listed in no delivery history.
            log.warning("webhooks.unrecorded", event_id=row.id, include=include, hooks=len(hooks))
            if event_id:
                self._sent_unrecorded.add(event_id)
            for delivery_id, hook in zip((d for d, _ in pairs), hooks, strict=True):
                self._spawn(self._send_unrecorded(row, hook, delivery_id))
            return
        self.loop.wake()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name="webhooks:unrecorded")
        self._unrecorded.add(task)
        task.add_done_callback(self._unrecorded.discard)

    async def _send_unrecorded(
        self, event: store.EventRow, hook: store.WebhookRow, delivery_id: str
    ) -> None:
        """Deliver one event to one webhook with nothing written to disk (see notify)."""
        now = time.time()
        row = store.DeliveryRow(
            id=delivery_id,
            app_id=event.app_id,
            webhook_id=hook.id,
            event_id=event.id,
            status="pending",
            num_attempts=0,
            next_attempt_at=now,
            last_attempt=None,
            created_at=now,
            updated_at=now,
            include=event.include,
            level=hook.level,
        )
        for failures in range(1, self.policy.max_attempts + 1):
            try:
                target = await self._target(hook.app_id, hook.id)
            except Exception as exc:  # the keyring is not answering: wait, not counted
                log.warning("webhooks.target_unopened", delivery=delivery_id, error=repr(exc))
                target, outcome = None, None
            else:
                if target is None:
                    return  # the webhook was removed meanwhile
                sent_at = time.time()
                body = render(event, row, str(uuid.uuid4()), sent_at)
                outcome = await attempt(target, body, delivery_id, self.policy, sent_at)
                log.info(
                    "webhooks.unrecorded_attempt",
                    delivery=delivery_id,
                    webhook=hook.id,
                    ok=outcome.ok,
                    code=outcome.code,
                    error_class=outcome.error_class,
                    attempts=failures,
                )
                if outcome.ok or hook.level == "notify":
                    return
            await asyncio.sleep(backoff_delay(self.policy, failures))

    async def drop_app(self, app_id: str, event_id: str = "") -> None:
        """The app was destroyed: its webhooks, events and deliveries go."""
        for hook in await store.webhooks(self.db, app_id):
            self._targets.pop(hook.id, None)
        async with self.db.transaction() as conn:
            if event_id and not await claim(conn, event_id):
                return
            await store.drop_app(conn, app_id)

    async def drop_team(self, team_id: str, event_id: str = "") -> None:
        """The team's key was destroyed: its apps' webhooks, events and deliveries go."""
        for hook in await store.webhooks_of_team(self.db, team_id):
            self._targets.pop(hook.id, None)
        async with self.db.transaction() as conn:
            if event_id and not await claim(conn, event_id):
                return
            await store.drop_team(conn, team_id)

    # ---- subscriptions --------------------------------------------------------------------

    async def create(self, req: wh.CreateWebhook) -> wh.WebhookCreated:
        include = self._check_include(req.app_id, req.include)
        url = await self._check_url(req.url)
        generated = req.secret is None
        secret = secrets.token_hex(32) if req.secret is None else _check_secret(req.secret)
        authorization = _check_authorization(req.authorization or "")
        existing = await store.webhooks(self.db, req.app_id)
        if len(existing) >= MAX_PER_APP:
            raise InvalidRequest(f"An app has at most {MAX_PER_APP} webhooks; remove one first.")
        now = time.time()
        hook_id = str(uuid.uuid4())
        target = Target(url=url, secret=secret, authorization=authorization)
        team = req.team_id or PLATFORM_TEAM
        row = store.WebhookRow(
            id=hook_id,
            app_id=req.app_id,
            team_id=team,
            include=include,
            level=req.level,
            sealed=await self._seal(team, req.app_id, hook_id, target),
            has_authorization=bool(authorization),
            created_at=now,
            updated_at=now,
        )
        async with self.db.transaction() as conn:
            await store.put_webhook(conn, row)
        self._targets[hook_id] = target
        return wh.WebhookCreated(webhook=_info(row, url), secret=secret if generated else "")

    async def update(self, req: wh.UpdateWebhook) -> wh.WebhookReply:
        row = await self._row(req.app_id, req.webhook_id)
        current = await self._target(row.app_id, row.id)
        if current is None:
            raise NotFound("Couldn't find that webhook.")
        target = Target(
            url=await self._check_url(req.url) if req.url is not None else current.url,
            secret=_check_secret(req.secret) if req.secret is not None else current.secret,
            authorization=(
                _check_authorization(req.authorization)
                if req.authorization is not None
                else current.authorization
            ),
        )
        include = (
            self._check_include(row.app_id, req.include) if req.include is not None else row.include
        )
        updated = store.WebhookRow(
            id=row.id,
            app_id=row.app_id,
            team_id=row.team_id,
            include=include,
            level=req.level or row.level,
            sealed=await self._seal(row.team_id, row.app_id, row.id, target),
            has_authorization=bool(target.authorization),
            created_at=row.created_at,
            updated_at=time.time(),
        )
        async with self.db.transaction() as conn:
            await store.put_webhook(conn, updated)
        self._targets[row.id] = target
        return wh.WebhookReply(webhook=_info(updated, target.url))

    async def delete(self, req: wh.WebhookRef) -> wh.WebhookReply:
        row = await self._row(req.app_id, req.id)
        shown = await self._shown_url(row)
        async with self.db.transaction() as conn:
            await store.delete_webhook(conn, row.id)
        self._targets.pop(row.id, None)
        return wh.WebhookReply(webhook=_info(row, shown))

    async def list_webhooks(self, req: wh.ListForApp) -> wh.WebhookList:
        found: list[wh.WebhookInfo] = []
        for row in await store.webhooks(self.db, req.app_id):
            found.append(_info(row, await self._shown_url(row)))
        return wh.WebhookList(webhooks=found)

    async def info(self, req: wh.WebhookRef) -> wh.WebhookReply:
        row = await self._row(req.app_id, req.id)
        return wh.WebhookReply(webhook=_info(row, await self._shown_url(row)))

    async def _shown_url(self, row: store.WebhookRow) -> str:
        """The webhook's URL; a row whose keys were shredded (or that was altered) still
        lists, and can be removed, with a URL saying so."""
        try:
            target = await self._target(row.app_id, row.id)
        except Exception as exc:
            if getattr(exc, "retryable", True):
                raise  # the keyring is down: the caller should try again
            return UNSEALABLE_URL
        return target.url if target else ""

    async def deliveries(self, req: wh.ListForApp) -> wh.DeliveryList:
        rows = await store.deliveries(self.db, req.app_id, _limit(req.limit))
        return wh.DeliveryList(deliveries=[_delivery(r) for r in rows])

    async def delivery(self, req: wh.WebhookRef) -> wh.DeliveryReply:
        row = await store.delivery(self.db, req.app_id, req.id)
        if row is None:
            raise NotFound("Couldn't find that webhook delivery.")
        return wh.DeliveryReply(delivery=_delivery(row))

    async def events(self, req: wh.ListForApp) -> wh.EventList:
        rows = await store.events(self.db, req.app_id, _limit(req.limit))
        return wh.EventList(events=[_event(r) for r in rows])

    async def event(self, req: wh.WebhookRef) -> wh.EventReply:
        row = await store.event(self.db, req.id, req.app_id)
        if row is None:
            raise NotFound("Couldn't find that webhook event.")
        return wh.EventReply(event=_event(row))

    # ---- checks and sealing --------------------------------------------------------------

    async def _row(self, app_id: str, webhook_id: str) -> store.WebhookRow:
        row = await store.webhook(self.db, app_id, webhook_id)
        if row is None:
            raise NotFound("Couldn't find that webhook.")
        return row

    def _check_include(self, app_id: str, include: list[str]) -> tuple[str, ...]:
        offered = wh.PLATFORM_INCLUDES if app_id == wh.PLATFORM else wh.INCLUDES
        if not include:
            raise InvalidRequest(f"Name at least one entity to include: {', '.join(offered)}.")
        unknown = [i for i in include if i not in offered]
        if unknown:
            shown = ", ".join(repr(i[:40]) for i in unknown[:5])
            raise InvalidRequest(
                f"Slipway does not deliver {shown}: include any of {', '.join(offered)}."
            )
        return tuple(dict.fromkeys(include))

    async def _check_url(self, url: str) -> str:
        url = url.strip()
        if len(url) > wh.MAX_URL:
            raise InvalidRequest(f"The webhook URL is longer than {wh.MAX_URL} characters.")
        if url.startswith("http://") and "http" not in self.schemes:
            raise InvalidRequest(
                "Webhook URLs must start with https://: events and their signatures never "
                "leave the platform unencrypted (the operator may allow http://)."
            )
        try:
            await egress.resolve_checked(url, self.egress, schemes=self.schemes)
        except egress.EgressRefused as exc:
            raise InvalidRequest(f"The webhook URL is refused: {exc.message}") from None
        except egress.FetchFailed:
            pass  # a name that does not resolve yet: each attempt is checked again
        return url

    async def _seal(self, team: str, app_id: str, hook_id: str, target: Target) -> bytes:
        plain = json.dumps(
            {"url": target.url, "secret": target.secret, "authorization": target.authorization}
        ).encode()
        return await envelope.encrypt(
            self.service.bus, team, Purpose.LOGS, _place(team, app_id, hook_id), plain
        )

    async def _target(self, app_id: str, hook_id: str) -> Target | None:
        cached = self._targets.get(hook_id)
        if cached is not None:
            return cached
        row = await store.webhook(self.db, app_id, hook_id)
        if row is None:
            return None
        plain = await envelope.decrypt(
            self.service.bus,
            row.team_id,
            Purpose.LOGS,
            _place(row.team_id, app_id, hook_id),
            row.sealed,
        )
        fields = json.loads(plain)
        target = Target(
            url=fields["url"], secret=fields["secret"], authorization=fields["authorization"]
        )
        self._targets[hook_id] = target
        return target

    async def prune(self) -> None:
        before = time.time() - self.settings.webhook_retention_days * 86400
        async with self.db.transaction() as conn:
            await store.prune(conn, before)


def _place(team: str, app_id: str, hook_id: str) -> Binding:
    return Binding(team=team, app=app_id or "platform", kind="webhook", record=hook_id)


def _tls(ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def _check_secret(secret: str) -> str:
    if not 1 <= len(secret) <= wh.MAX_HEADER_VALUE or not _PRINTABLE.match(secret):
        raise InvalidRequest(
            f"A webhook secret is 1 to {wh.MAX_HEADER_VALUE} printable ASCII characters."
        )
    return secret


def _check_authorization(value: str) -> str:
    # A header value with CR or LF would let a customer add headers of their own choosing.
    if value and (len(value) > wh.MAX_HEADER_VALUE or not _PRINTABLE.match(value)):
        raise InvalidRequest(
            f"The authorization value is up to {wh.MAX_HEADER_VALUE} printable ASCII "
            "characters on one line."
        )
    return value


def _limit(limit: int) -> int:
    return max(1, min(limit, 1000))


def _info(row: store.WebhookRow, url: str) -> wh.WebhookInfo:
    return wh.WebhookInfo(
        id=row.id,
        app_id=row.app_id,
        include=list(row.include),
        level="sync" if row.level == "sync" else "notify",
        url=url,
        has_authorization=row.has_authorization,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _delivery(row: store.DeliveryRow) -> wh.DeliveryInfo:
    last = row.last_attempt
    return wh.DeliveryInfo(
        id=row.id,
        app_id=row.app_id,
        webhook_id=row.webhook_id,
        level="sync" if row.level == "sync" else "notify",
        event_id=row.event_id,
        include=row.include,
        status=msgspec.convert(row.status, wh.DeliveryStatus),
        num_attempts=row.num_attempts,
        next_attempt_at=row.next_attempt_at,
        last_attempt=(
            wh.AttemptInfo(
                id=last["id"],
                code=last.get("code"),
                error_class=last.get("error_class"),
                status=last["status"],
                created_at=last["created_at"],
                updated_at=last["updated_at"],
            )
            if last
            else None
        ),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _event(row: store.EventRow) -> wh.EventInfo:
    keys = ("action", "actor", "data", "previous_data", "resource", "version")
    return wh.EventInfo(
        id=row.id,
        app_id=row.app_id,
        include=row.include,
        payload=json.dumps({k: row.payload.get(k) for k in keys}),
        created_at=row.created_at,
        updated_at=row.created_at,
    )


WEBHOOKS = Key("webhooks", Webhooks)


def register(
    service: ServiceApp, settings: MonitorSettings, webhooks: WebhookSettings | None = None
) -> None:
    """Serve the webhook RPCs, consume the platform's events and run the delivery loop.

    `webhooks` defaults to the `SLIPWAY_*` environment (tests pass their own).
    """
    own = webhooks if webhooks is not None else load_settings(WebhookSettings)

    def hooks() -> Webhooks:
        return service[WEBHOOKS]

    @service.cleanup_ctx
    async def resources(app: ServiceApp) -> AsyncIterator[None]:
        db = await store.open_store(settings.monitor_dir() / "webhooks.db")
        made = Webhooks(app, db, own)
        app[WEBHOOKS] = made
        stopping = asyncio.Event()
        loop = asyncio.create_task(made.loop.run(stopping), name="webhooks:deliveries")
        sweep = asyncio.create_task(_sweep(made, stopping), name="webhooks:prune")
        try:
            yield
        finally:
            stopping.set()
            made.loop.wake()
            for task in (sweep, loop):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await made.stop()
            await db.close()

    service.rpc(wh.WEBHOOK_CREATE)(lambda r: hooks().create(r))
    service.rpc(wh.WEBHOOK_LIST)(lambda r: hooks().list_webhooks(r))
    service.rpc(wh.WEBHOOK_INFO)(lambda r: hooks().info(r))
    service.rpc(wh.WEBHOOK_UPDATE)(lambda r: hooks().update(r))
    service.rpc(wh.WEBHOOK_DELETE)(lambda r: hooks().delete(r))
    service.rpc(wh.WEBHOOK_DELIVERIES_LIST)(lambda r: hooks().deliveries(r))
    service.rpc(wh.WEBHOOK_DELIVERIES_INFO)(lambda r: hooks().delivery(r))
    service.rpc(wh.WEBHOOK_EVENTS_LIST)(lambda r: hooks().events(r))
    service.rpc(wh.WEBHOOK_EVENTS_INFO)(lambda r: hooks().event(r))

    @service.event(CONSUMER, gateway.RELEASE_CREATED)
    async def release_created(evt: gateway.ReleaseCreated) -> None:
        await hooks().notify(
            evt.app_id,
            "api:release",
            "create",
            release_data(evt),
            actor=evt.actor,
            event_id=evt.event_id,
        )

    @service.event(CONSUMER, builder.BUILD_FINISHED)
    async def build_finished(evt: builder.BuildFinished) -> None:
        await hooks().notify(
            evt.app_id, "api:build", "update", build_data(evt), event_id=evt.event_id
        )

    @service.event(CONSUMER, scheduler.DYNO_CHANGED)
    async def dyno_changed(evt: scheduler.DynoChanged) -> None:
        await hooks().notify(
            evt.dyno.app_id, "dyno", dyno_action(evt), dyno_data(evt), event_id=evt.event_id
        )

    @service.event(CONSUMER, gateway.APP_DESTROYED)
    async def app_destroyed(evt: gateway.AppDestroyed) -> None:
        await hooks().drop_app(evt.app_id, evt.event_id)

    @service.event(CONSUMER, gateway.TEAM_SHREDDED)
    async def team_shredded(evt: gateway.TeamShredded) -> None:
        await hooks().drop_team(evt.team_id, evt.event_id)


async def _sweep(made: Webhooks, stopping: asyncio.Event) -> None:
    while not stopping.is_set():
        try:
            await made.prune()
        except Exception as exc:  # pruning is housekeeping: log and go on
            log.warning("webhooks.prune_failed", error=repr(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), 3600)
