"""Cross-site request forgery against the dashboard's session cookie, performed for real.

Two ports of one host are one *site*, so SameSite=Strict still sends the cookie from a page
on another loopback port: the CSRF token and the Origin check are what stand in the way.
Each test forges a request as such a page would (the cookie rides along, the attacker cannot
read our answers, so has no CSRF token) against the real gateway + keyring + nats-server,
and checks nothing changed. The browser-level versions (a real form and a credentialed
fetch from another origin in Chromium) are in tests/dashboard.
"""

from __future__ import annotations

import pytest

from tests.gateway import conftest as gateway_fixtures
from tests.gateway.conftest import Stack
from tests.gateway.test_web_sessions import Browser, signed_in

pytestmark = pytest.mark.integration

slipway_home = gateway_fixtures.slipway_home
keyring_service = gateway_fixtures.keyring_service
gateway_service = gateway_fixtures.gateway_service
stack = gateway_fixtures.stack

ALICE = "alice@example.com"
EVIL = "http://127.0.0.1:1"  # another port of the same host: the same site, another origin


async def app_names(stack: Stack) -> list[str]:
    alice = await stack.user(ALICE)
    return [a["name"] for a in (await alice.ok("GET", "/apps"))]


async def test_a_change_without_the_csrf_token_is_refused(stack: Stack) -> None:
    """A form post from the attacker's page: cookie sent, no token; 403 and no app."""
    browser = await signed_in(stack, await stack.user(ALICE))
    answer = await browser.request(
        "POST",
        "/apps",
        csrf=False,
        Origin=EVIL,
        **{"Content-Type": "text/plain"},  # what a form with enctype=text/plain sends
    )
    assert answer.status == 403 and answer.error_id == "forbidden"
    forged = await browser.request("POST", "/apps", {"name": "pwned"}, csrf=False)
    assert forged.status == 403 and "forgery" in forged.body["message"]
    assert "pwned" not in await app_names(stack)


async def test_a_wrong_or_anothers_csrf_token_is_refused(stack: Stack) -> None:
    """A made-up token, or the attacker's own session's token, does not pass for the victim's."""
    victim = await signed_in(stack, await stack.user(ALICE))
    attacker = await signed_in(stack, await stack.user("mallory@example.com"))
    for token in ("0" * 64, attacker.csrf, ""):
        answer = await victim.request(
            "POST", "/apps", {"name": "pwned"}, csrf=False, **{"X-CSRF-Token": token}
        )
        assert answer.status == 403, token
    assert "pwned" not in await app_names(stack)


async def test_a_change_from_another_origin_is_refused_even_with_the_token(stack: Stack) -> None:
    """Should the token leak, a request the browser marks as from elsewhere still fails."""
    browser = await signed_in(stack, await stack.user(ALICE))
    moved = Browser(browser.api, browser.cookie, browser.csrf, EVIL)
    answer = await moved.request("POST", "/apps", {"name": "pwned"})
    assert answer.status == 403 and "Cross-origin" in answer.body["message"]
    assert "pwned" not in await app_names(stack)


async def test_every_kind_of_change_needs_the_token(stack: Stack) -> None:
    """PATCH, PUT and DELETE are guarded as POST is: config, members, the app itself."""
    alice = await stack.user(ALICE)
    await stack.app(alice, "kept")
    browser = await signed_in(stack, alice)
    team = (await alice.ok("GET", "/account"))["default_team"]["name"]
    for method, path, body in (
        ("PATCH", "/apps/kept/config-vars", {"STOLEN": "1"}),
        ("PUT", f"/teams/{team}/members", {"email": "mallory@example.com", "role": "admin"}),
        ("DELETE", "/apps/kept", None),
        ("DELETE", "/account/web-sessions", None),
    ):
        answer = await browser.request(method, path, body, csrf=False)
        assert answer.status == 403, (method, path, answer.body)
    assert "kept" in await app_names(stack)
    assert (await alice.ok("GET", "/apps/kept/config-vars")) == {}
    assert (await browser.request("GET", "/apps")).status == 200  # still signed in


async def test_the_dashboards_own_change_passes(stack: Stack) -> None:
    """With its token and its own origin, the same request is the user's, and audited."""
    browser = await signed_in(stack, await stack.user(ALICE))
    answer = await browser.request("POST", "/apps", {"name": "mine"})
    assert answer.status == 201, answer.body
    entries = (await browser.request("GET", "/apps/mine/audit")).body["entries"]
    assert [(e["action"], e["actor"]) for e in entries][:1] == [("app.create", ALICE)]


async def test_nobody_signs_a_visitor_in_from_another_origin(stack: Stack) -> None:
    """Login CSRF: a page elsewhere posting the attacker's token gets no session made."""
    mallory = await stack.user("mallory@example.com")
    answer = await stack.anonymous().post(
        "/account/web-sessions", {"token": mallory.token}, headers={"Origin": EVIL}
    )
    assert answer.status == 403 and "Set-Cookie" not in answer.headers
