"""App webhooks as Heroku's clients drive them: the gateway, the real monitor's webhooks.

Each answer is checked against Heroku's `app-webhook`, `app-webhook-delivery` and
`app-webhook-event`. The monitor is tests/webhooks's (loopback allowed, the receiver's
certificate trusted), sharing this test's nats-server, keyring and home with the gateway.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.compat.conftest import cli, clients
from tests.compat.heroku_schema import schema
from tests.compat.test_platform_api import fit_list, fits, refused
from tests.conftest import assert_eventually
from tests.gateway.conftest import Answer, Stack
from tests.gateway.jsonschema_lite import errors
from tests.webhooks.conftest import (
    Monitors,
    Receiver,
    certificate,
    hooks_of,
    monitors,
    receiver,
    signed_by,
)

pytestmark = pytest.mark.integration

# Heroku's `app-webhook` keeps its answer's shape one level down, in `app_webhook`.
_WEBHOOK = schema()["definitions"]["app-webhook"]["definitions"]["app_webhook"]


def _hook_problems(body: Any) -> list[str]:
    found = errors(body, _WEBHOOK, schema())
    if isinstance(body, dict):
        found += [f"$: missing {key!r}" for key in _WEBHOOK["properties"] if key not in body]
    return found


def fits_hook(answer: Answer, status: int = 200) -> Any:
    """The body of an answer with `status` that fits Heroku's app webhook."""
    assert answer.status == status, (answer.status, answer.body)
    assert _hook_problems(answer.body) == [], answer.body
    return answer.body


def fit_hooks(answer: Answer) -> list[Any]:
    assert answer.status == 200 and isinstance(answer.body, list), answer.body
    for item in answer.body:
        assert _hook_problems(item) == [], item
    return list(answer.body)


__all__ = ["certificate", "monitors", "receiver"]  # fixtures


async def test_webhooks_create_list_info_update_delete(
    stack: Stack, monitors: Monitors, receiver: Receiver
) -> None:
    """`webhooks:add`, list, info, update, remove: every answer an `app-webhook`, no secret."""
    await monitors.start()
    alice = await stack.user("alice@example.com")
    bob = await stack.user("bob@example.com")
    await stack.app(alice, "hooked")
    client = cli(alice)
    body = {"url": receiver.url(), "include": ["api:release", "alert"], "level": "sync"}
    answer = await client.request("POST", "/apps/hooked/webhooks", body)
    created = fits_hook(answer, 201)
    secret = answer.headers["Heroku-Webhook-Secret"]  # generated: shown this once
    assert len(secret) >= 32 and "secret" not in created
    assert created["app"]["name"] == "hooked" and created["include"] == ["api:release", "alert"]
    for each in clients(alice):
        listed = fit_hooks(await each.get("/apps/hooked/webhooks"))
        assert [w["id"] for w in listed] == [created["id"]]
        one = fits_hook(await each.get(f"/apps/hooked/webhooks/{created['id']}"))
        assert secret not in str(one)
    refused(await cli(bob).get("/apps/hooked/webhooks"), 404, "not_found")
    path = f"/apps/hooked/webhooks/{created['id']}"
    updated = fits_hook(await client.request("PATCH", path, {"level": "notify"}))
    assert updated["level"] == "notify"
    removed = fits_hook(await client.request("DELETE", path))
    assert removed["id"] == created["id"]
    assert fit_hooks(await client.get("/apps/hooked/webhooks")) == []
    refused(await client.get(path), 404, "not_found")
    # Audited, with neither the secret nor the URL.
    audit = await alice.ok("GET", "/apps/hooked/audit")
    actions = [e["action"] for e in audit["entries"]]
    assert {"webhook.add", "webhook.update", "webhook.remove"} <= set(actions), actions
    assert secret not in str(audit) and receiver.url() not in str(audit)


async def test_deliveries_and_events_fit_herokus_shapes(
    stack: Stack, monitors: Monitors, receiver: Receiver
) -> None:
    """After an alert is delivered, its delivery and event read back in Heroku's shapes."""
    monitor = await monitors.start()
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "watched")
    client = cli(alice)
    body = {"url": receiver.url(), "include": ["alert"], "level": "sync", "secret": "shh-" * 8}
    fits_hook(await client.request("POST", "/apps/watched/webhooks", body), 201)
    await hooks_of(monitor).notify(app["id"], "alert", "fire", {"metric": "p95_ms"})

    async def delivered() -> list[dict[str, object]]:
        found = fit_list(
            await client.get("/apps/watched/webhook-deliveries"), "app-webhook-delivery"
        )
        assert [d["status"] for d in found] == ["succeeded"], found
        return found

    (delivery,) = await assert_eventually(delivered, timeout=15)
    assert signed_by("shh-" * 8, receiver.posts[0])
    one = fits(
        await client.get(f"/apps/watched/webhook-deliveries/{delivery['id']}"),
        "app-webhook-delivery",
    )
    assert one["num_attempts"] == 1 and one["last_attempt"]["code"] == 204
    (event,) = fit_list(await client.get("/apps/watched/webhook-events"), "app-webhook-event")
    assert event["include"] == "alert" and event["payload"]["action"] == "fire"
    fits(await client.get(f"/apps/watched/webhook-events/{event['id']}"), "app-webhook-event")


async def test_refused_webhooks_answer_in_herokus_error_shape(
    stack: Stack, monitors: Monitors
) -> None:
    """A URL the egress guard refuses, plain http and unknown entities: 422 saying why."""
    await monitors.start(egress_allow="")
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "guarded")
    client = cli(alice)
    for url, words in (
        ("https://169.254.169.254/latest/meta-data/", ("link-local",)),
        ("https://127.0.0.1:5100/apps", ("Slipway does not connect there",)),
        ("https://127.0.0.1/hook", ("loopback",)),
        ("https://10.0.0.7/hook", ("private",)),
        ("http://hooks.example.com/", ("https://",)),
    ):
        body = {"url": url, "include": ["alert"], "level": "sync"}
        answer = await client.request("POST", "/apps/guarded/webhooks", body)
        refused(answer, 422, "invalid_params", *words)
    body = {"url": "https://hooks.example.com/", "include": ["api:pipeline"], "level": "sync"}
    answer = await client.request("POST", "/apps/guarded/webhooks", body)
    refused(answer, 422, "invalid_params", "api:release")
    body = {"url": "https://hooks.example.com/", "include": ["alert"], "level": "sometimes"}
    refused(await client.request("POST", "/apps/guarded/webhooks", body), 422, "invalid_params")


async def test_members_cannot_manage_webhooks_and_only_admins_reach_the_platforms(
    stack: Stack, monitors: Monitors, receiver: Receiver
) -> None:
    """Webhooks need the app's manage permission; /admin/webhooks is platform admins' only."""
    await monitors.start()
    alice = await stack.user("alice@example.com")
    carol = await stack.user("carol@example.com")
    await stack.app(alice, "teamapp")
    await stack.join(alice, "alice", carol, "member")
    body = {"url": receiver.url(), "include": ["alert"], "level": "sync"}
    answer = await cli(carol).request("POST", "/apps/teamapp/webhooks", body)
    refused(answer, 403, "forbidden")
    refused(await cli(alice).get("/admin/webhooks"), 403, "forbidden")
    made = await stack.admin.ok("POST", "/admin/webhooks", body, status=201)
    assert made["app"] is None and made["include"] == ["alert"]
    listed = await stack.admin.ok("GET", "/admin/webhooks")
    assert [w["id"] for w in listed] == [made["id"]]
    # The platform's webhooks deliver platform alerts only.
    body = {"url": receiver.url(), "include": ["api:release"], "level": "sync"}
    answer = await cli(stack.admin).request("POST", "/admin/webhooks", body)
    refused(answer, 422, "invalid_params", "alert")
    await stack.admin.ok("DELETE", f"/admin/webhooks/{made['id']}")
    assert await stack.admin.ok("GET", "/admin/webhooks") == []
