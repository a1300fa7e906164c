"""Webhook deliveries from the real monitor code to a real HTTPS receiver on loopback.

Real nats-server, the real keyring sealing the URL and secret, the monitor's webhooks
running in a ServiceApp as the monitor service does, and a receiver checking signatures.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import msgspec
import pytest

from slipway.contracts import webhooks as wh
from slipway.contracts.gateway import RELEASE_CREATED, TEAM_SHREDDED, ReleaseCreated, TeamShredded
from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus
from slipway.libs.errors import RemoteError
from slipway.libs.natsserver import NatsServer
from tests.conftest import assert_eventually
from tests.webhooks.conftest import Monitors, Receiver, hooks_of, signed_by

pytestmark = pytest.mark.integration

TEAM = str(uuid.uuid4())


def _create(app_id: str, url: str, **fields: object) -> wh.CreateWebhook:
    values: dict[str, object] = {"include": ["alert"], "level": "sync", **fields}
    return wh.CreateWebhook(app_id=app_id, team_id=TEAM, url=url, **values)  # type: ignore[arg-type]


async def _deliveries(bus: Bus, app_id: str) -> list[wh.DeliveryInfo]:
    found = await bus.call(wh.WEBHOOK_DELIVERIES_LIST, wh.ListForApp(app_id=app_id))
    return found.deliveries


async def test_a_delivery_is_signed_with_the_webhooks_secret(
    monitors: Monitors, receiver: Receiver, gateway_bus: Bus
) -> None:
    """The receiver gets Heroku's body and headers, and the HMAC checks out with the secret."""
    monitor = await monitors.start()
    app_id = str(uuid.uuid4())
    created = await gateway_bus.call(
        wh.WEBHOOK_CREATE,
        _create(app_id, receiver.url(), secret="s3cret-for-signing", authorization="Bearer tok"),
    )
    assert created.secret == ""  # given by the customer: never sent back
    await hooks_of(monitor).notify(app_id, "alert", "fire", {"key": "app:x:p95_ms"})
    await assert_eventually(lambda: _one(receiver), timeout=15)
    post = receiver.posts[0]
    assert signed_by("s3cret-for-signing", post)
    assert not signed_by("another-secret", post)
    assert post.headers["Authorization"] == "Bearer tok"
    assert post.headers["User-Agent"] == "Slipway-Webhooks"
    body = post.json()
    assert body["action"] == "fire" and body["resource"] == "alert"
    assert body["data"] == {"key": "app:x:p95_ms"}
    assert body["version"] == "application/vnd.heroku+json; version=3"
    assert body["webhook_metadata"]["webhook"]["id"] == created.webhook.id
    delivery_id = body["webhook_metadata"]["delivery"]["id"]
    assert post.headers["Heroku-Webhook-Id"] == delivery_id

    async def settled() -> wh.DeliveryInfo:
        (delivery,) = await _deliveries(gateway_bus, app_id)
        assert delivery.status == "succeeded", delivery
        return delivery

    delivery = await assert_eventually(settled, timeout=10)
    assert delivery.num_attempts == 1 and delivery.last_attempt is not None
    assert delivery.last_attempt.code == 204


def _one(receiver: Receiver) -> None:
    assert len(receiver.posts) == 1


async def test_a_generated_secret_is_shown_once_and_signs(
    monitors: Monitors, receiver: Receiver, gateway_bus: Bus
) -> None:
    """Without a secret one is generated, returned by create only, and used to sign."""
    monitor = await monitors.start()
    app_id = str(uuid.uuid4())
    created = await gateway_bus.call(wh.WEBHOOK_CREATE, _create(app_id, receiver.url()))
    assert len(created.secret) >= 32
    listed = await gateway_bus.call(wh.WEBHOOK_LIST, wh.ListForApp(app_id=app_id))
    assert created.secret not in repr(listed)
    await hooks_of(monitor).notify(app_id, "alert", "resolve", {})
    await assert_eventually(lambda: _one(receiver), timeout=15)
    assert signed_by(created.secret, receiver.posts[0])


async def test_a_failing_receiver_gets_the_delivery_on_the_third_attempt(
    monitors: Monitors, receiver: Receiver, gateway_bus: Bus
) -> None:
    """Two 500s, then 204: three attempts, one delivery id, recorded as succeeded."""
    monitor = await monitors.start()
    receiver.failures = 2
    app_id = str(uuid.uuid4())
    await gateway_bus.call(wh.WEBHOOK_CREATE, _create(app_id, receiver.url(), secret="x" * 40))
    await hooks_of(monitor).notify(app_id, "alert", "fire", {"n": 1})

    async def settled() -> wh.DeliveryInfo:
        (delivery,) = await _deliveries(gateway_bus, app_id)
        assert delivery.status == "succeeded", delivery
        return delivery

    delivery = await assert_eventually(settled, timeout=20)
    assert delivery.num_attempts == 3
    assert len(receiver.posts) == 3
    assert {p.headers["Heroku-Webhook-Id"] for p in receiver.posts} == {delivery.id}
    assert all(signed_by("x" * 40, p) for p in receiver.posts)
    info = await gateway_bus.call(
        wh.WEBHOOK_DELIVERIES_INFO, wh.WebhookRef(app_id=app_id, id=delivery.id)
    )
    assert info.delivery.last_attempt is not None and info.delivery.last_attempt.code == 204


async def test_a_notify_webhook_gets_one_attempt(
    monitors: Monitors, receiver: Receiver, gateway_bus: Bus
) -> None:
    """`level: notify` is fire-and-forget: a failed attempt is not retried."""
    monitor = await monitors.start()
    receiver.failures = 5
    app_id = str(uuid.uuid4())
    await gateway_bus.call(wh.WEBHOOK_CREATE, _create(app_id, receiver.url(), level="notify"))
    await hooks_of(monitor).notify(app_id, "alert", "fire", {})

    async def failed() -> wh.DeliveryInfo:
        (delivery,) = await _deliveries(gateway_bus, app_id)
        assert delivery.status == "failed", delivery
        return delivery

    delivery = await assert_eventually(failed, timeout=15)
    assert delivery.num_attempts == 1 and len(receiver.posts) == 1
    assert delivery.last_attempt is not None and delivery.last_attempt.code == 500


async def test_a_restart_mid_retry_still_delivers(
    monitors: Monitors, receiver: Receiver, gateway_bus: Bus
) -> None:
    """A delivery waiting for its retry when the monitor stops is made by the next monitor."""
    first = await monitors.start(webhook_backoff=2.0, webhook_backoff_max=2.0)
    receiver.failures = 1
    app_id = str(uuid.uuid4())
    await gateway_bus.call(wh.WEBHOOK_CREATE, _create(app_id, receiver.url(), secret="k" * 32))
    await hooks_of(first).notify(app_id, "alert", "fire", {})

    async def retrying() -> None:
        (delivery,) = await _deliveries(gateway_bus, app_id)
        assert delivery.status == "retrying" and delivery.num_attempts == 1, delivery

    await assert_eventually(retrying, timeout=15)
    await monitors.stop(first)
    await monitors.start()  # the secret is opened from the sealed row, through the keyring

    async def settled() -> wh.DeliveryInfo:
        (delivery,) = await _deliveries(gateway_bus, app_id)
        assert delivery.status == "succeeded", delivery
        return delivery

    delivery = await assert_eventually(settled, timeout=20)
    assert delivery.num_attempts == 2 and len(receiver.posts) == 2
    assert signed_by("k" * 32, receiver.posts[1])


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hooks",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.1.2.3/hooks",
        "https://[::ffff:127.0.0.1]/hooks",
    ],
)
async def test_a_url_the_guard_refuses_is_refused_at_create(
    monitors: Monitors, gateway_bus: Bus, url: str
) -> None:
    """Loopback, cloud metadata and private addresses: invalid_request saying why."""
    await monitors.start(egress_allow="")
    with pytest.raises(RemoteError) as refused:
        await gateway_bus.call(wh.WEBHOOK_CREATE, _create(str(uuid.uuid4()), url))
    assert refused.value.code == "invalid_request"
    assert "The webhook URL is refused" in refused.value.message
    assert "Slipway does not connect there" in refused.value.message


async def test_the_same_url_is_accepted_with_the_guard_opened(
    monitors: Monitors, gateway_bus: Bus
) -> None:
    """The control for the refusals above: with the ranges allowed, nothing else refuses."""
    await monitors.start(egress_allow="0.0.0.0/0,::/0")
    for url in ("https://10.1.2.3/hooks", "https://169.254.169.254/latest/meta-data/"):
        created = await gateway_bus.call(wh.WEBHOOK_CREATE, _create(str(uuid.uuid4()), url))
        assert created.webhook.url == url


async def test_plain_http_is_refused_unless_the_operator_allows_it(
    monitors: Monitors, gateway_bus: Bus
) -> None:
    """http:// would send events and signatures in the clear."""
    await monitors.start()
    with pytest.raises(RemoteError) as refused:
        await gateway_bus.call(
            wh.WEBHOOK_CREATE, _create(str(uuid.uuid4()), "http://localhost:9/hooks")
        )
    assert refused.value.code == "invalid_request" and "https://" in refused.value.message


@pytest.mark.parametrize(("allow", "delivered"), [("", False), ("127.0.0.1/32,::1/128", True)])
async def test_a_url_that_now_resolves_to_a_refused_address_is_not_delivered(
    monitors: Monitors, receiver: Receiver, gateway_bus: Bus, allow: str, delivered: bool
) -> None:
    """Accepted when created, refused when delivered (as after a DNS change); the control
    case (the guard opened) delivers, so the refusal is the guard's."""
    first = await monitors.start()
    app_id = str(uuid.uuid4())
    await gateway_bus.call(wh.WEBHOOK_CREATE, _create(app_id, receiver.url(), level="notify"))
    await monitors.stop(first)
    second = await monitors.start(egress_allow=allow)
    await hooks_of(second).notify(app_id, "alert", "fire", {})

    async def settled() -> wh.DeliveryInfo:
        (delivery,) = await _deliveries(gateway_bus, app_id)
        assert delivery.status in ("failed", "succeeded"), delivery
        return delivery

    delivery = await assert_eventually(settled, timeout=15)
    assert delivery.status == ("succeeded" if delivered else "failed")
    assert len(receiver.posts) == (1 if delivered else 0)
    if not delivered:
        assert delivery.last_attempt is not None
        assert delivery.last_attempt.error_class == "EgressRefused"


async def test_a_redirect_is_not_followed(
    monitors: Monitors, receiver: Receiver, gateway_bus: Bus
) -> None:
    """A 3xx fails the attempt: the Location is never fetched."""
    monitor = await monitors.start()
    app_id = str(uuid.uuid4())
    await gateway_bus.call(
        wh.WEBHOOK_CREATE, _create(app_id, receiver.url("/moved"), level="notify")
    )
    await hooks_of(monitor).notify(app_id, "alert", "fire", {})

    async def failed() -> wh.DeliveryInfo:
        (delivery,) = await _deliveries(gateway_bus, app_id)
        assert delivery.status == "failed", delivery
        return delivery

    delivery = await assert_eventually(failed, timeout=15)
    assert delivery.last_attempt is not None and delivery.last_attempt.code == 307
    assert receiver.posts == []


async def test_secrets_are_not_in_the_database_in_plaintext(
    monitors: Monitors, gateway_bus: Bus, slipway_home: Path
) -> None:
    """Canary: the secret, the Authorization value and the URL appear nowhere on disk."""
    monitor = await monitors.start(egress_allow="0.0.0.0/0,::/0")
    canary = uuid.uuid4().hex
    url = f"https://hooks.example.com/{canary}-path"
    await gateway_bus.call(
        wh.WEBHOOK_CREATE,
        _create(
            str(uuid.uuid4()), url, secret=f"secret-{canary}", authorization=f"Bearer a-{canary}"
        ),
    )
    await monitors.stop(monitor)
    files = [p for p in (slipway_home / "monitor").rglob("*") if p.is_file()]
    assert any(p.name == "webhooks.db" for p in files)
    for path in files:
        assert canary.encode() not in path.read_bytes(), path


async def test_release_events_reach_api_release_webhooks_once(
    monitors: Monitors, receiver: Receiver, gateway_bus: Bus, nats_server: NatsServer
) -> None:
    """A RELEASE_CREATED on the bus becomes one `api:release` delivery, even if redelivered."""
    await monitors.start()
    app_id = str(uuid.uuid4())
    await gateway_bus.call(
        wh.WEBHOOK_CREATE, _create(app_id, receiver.url(), include=["api:release"])
    )
    event = ReleaseCreated(
        app_id=app_id,
        app_name="hooked",
        team_id=TEAM,
        release_id=str(uuid.uuid4()),
        version=7,
        description="Set GREETING config vars",
        actor="alice@example.com",
    )
    gateway = await Bus.connect(nats_server.url, Service.GATEWAY)
    try:
        await gateway.publish(RELEASE_CREATED, event)
        await gateway.publish(RELEASE_CREATED, event)  # the same event id: deduplicated
    finally:
        await gateway.close()
    await assert_eventually(lambda: _one(receiver), timeout=15)
    body = receiver.posts[0].json()
    assert body["resource"] == "release" and body["action"] == "create"
    assert body["data"]["version"] == 7 and body["data"]["app"]["name"] == "hooked"
    assert body["actor"]["email"] == "alice@example.com"
    events = await gateway_bus.call(wh.WEBHOOK_EVENTS_LIST, wh.ListForApp(app_id=app_id))
    assert [e.include for e in events.events] == ["api:release"]


async def test_a_sealed_target_moved_to_another_webhook_does_not_open(
    monitors: Monitors, receiver: Receiver, gateway_bus: Bus, slipway_home: Path
) -> None:
    """The sealed URL and secret are bound to their webhook: copied onto another app's
    webhook row (by someone with the file), they do not open and nothing is sent."""
    first = await monitors.start()
    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    await gateway_bus.call(wh.WEBHOOK_CREATE, _create(mine, receiver.url(), level="notify"))
    victim = await gateway_bus.call(
        wh.WEBHOOK_CREATE, _create(theirs, "https://hooks.example.com/", level="notify")
    )
    await monitors.stop(first)
    db = sqlite3.connect(slipway_home / "monitor" / "webhooks.db")
    with db:
        db.execute(
            "UPDATE webhooks SET sealed = (SELECT sealed FROM webhooks WHERE app_id = ?)"
            " WHERE id = ?",
            (mine, victim.webhook.id),
        )
    db.close()
    second = await monitors.start()
    await hooks_of(second).notify(theirs, "alert", "fire", {})

    async def failed() -> wh.DeliveryInfo:
        (delivery,) = await _deliveries(gateway_bus, theirs)
        assert delivery.status == "failed", delivery
        return delivery

    delivery = await assert_eventually(failed, timeout=15)
    assert delivery.last_attempt is not None
    assert delivery.last_attempt.error_class == "Unsealable"
    assert receiver.posts == []
    # It still lists, saying so, and can be removed.
    listed = await gateway_bus.call(wh.WEBHOOK_LIST, wh.ListForApp(app_id=theirs))
    assert [h.url for h in listed.webhooks] == ["https://unsealable.invalid/"]
    ref = wh.WebhookRef(app_id=theirs, id=victim.webhook.id)
    await gateway_bus.call(wh.WEBHOOK_DELETE, ref)


async def test_a_shredded_teams_webhooks_and_events_are_forgotten(
    monitors: Monitors, receiver: Receiver, gateway_bus: Bus, nats_server: NatsServer
) -> None:
    """TEAM_SHREDDED: the team's webhooks, their events (plain payloads) and deliveries
    go; another team's webhook and the operator's stay."""
    monitor = await monitors.start()
    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    await gateway_bus.call(wh.WEBHOOK_CREATE, _create(mine, receiver.url()))
    other = _create(theirs, receiver.url())
    other = wh.CreateWebhook(**{**msgspec.structs.asdict(other), "team_id": str(uuid.uuid4())})
    await gateway_bus.call(wh.WEBHOOK_CREATE, other)
    operator = wh.CreateWebhook(
        **{**msgspec.structs.asdict(_create("", receiver.url())), "team_id": ""}
    )
    await gateway_bus.call(wh.WEBHOOK_CREATE, operator)
    await hooks_of(monitor).notify(mine, "alert", "fire", {"summary": "the team's app"})
    await assert_eventually(lambda: _one(receiver), timeout=15)
    events = await gateway_bus.call(wh.WEBHOOK_EVENTS_LIST, wh.ListForApp(app_id=mine))
    assert len(events.events) == 1

    shredded = TeamShredded(team_id=TEAM, name="t", actor="owner@example.com")
    gateway = await Bus.connect(nats_server.url, Service.GATEWAY)
    try:
        await gateway.publish(TEAM_SHREDDED, shredded)
    finally:
        await gateway.close()

    async def forgotten() -> None:
        hooks = await gateway_bus.call(wh.WEBHOOK_LIST, wh.ListForApp(app_id=mine))
        assert hooks.webhooks == []

    await assert_eventually(forgotten, timeout=15)
    events = await gateway_bus.call(wh.WEBHOOK_EVENTS_LIST, wh.ListForApp(app_id=mine))
    assert events.events == [] and await _deliveries(gateway_bus, mine) == []
    for app_id in (theirs, ""):
        kept = await gateway_bus.call(wh.WEBHOOK_LIST, wh.ListForApp(app_id=app_id))
        assert len(kept.webhooks) == 1, app_id
