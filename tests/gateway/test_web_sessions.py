"""Dashboard sessions: signing in with a token or a one-time link, the cookie, its ends.

Against the real gateway + keyring + nats-server (tests/gateway/conftest.py). The browser
is played by hand: the cookie is read from `Set-Cookie` and sent back as `Cookie`, so each
test sees exactly what a browser would be told to keep.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest

from slipway.services.gateway.web.sessions import COOKIE
from tests.gateway.conftest import ACCEPT, Answer, Api, Stack, tamper
from tests.security.test_impersonation import slipway

pytestmark = pytest.mark.integration

ALICE = "alice@example.com"


@dataclass
class Browser:
    """A signed-in browser: its cookie and the CSRF token its page was given."""

    api: Api
    cookie: str
    csrf: str
    origin: str

    async def request(
        self, method: str, path: str, body: Any = None, *, csrf: bool = True, **headers: str
    ) -> Answer:
        sent = {"Cookie": f"{COOKIE}={self.cookie}", "Origin": self.origin, **headers}
        if csrf:
            sent["X-CSRF-Token"] = self.csrf
        return await self.api.as_token(None).request(method, path, body, headers=sent)


async def sign_in(stack: Stack, body: dict[str, str]) -> tuple[Answer, Browser | None]:
    answer = await stack.anonymous().post("/account/web-sessions", body)
    if answer.status != 201:
        return answer, None
    jar = SimpleCookie(answer.headers["Set-Cookie"])
    return answer, Browser(
        stack.anonymous(), jar[COOKIE].value, answer.body["csrf_token"], stack.url
    )


async def signed_in(stack: Stack, user: Api) -> Browser:
    answer, browser = await sign_in(stack, {"token": user.token or ""})
    assert browser is not None, answer.body
    return browser


async def test_a_token_signs_a_browser_in_with_a_strict_http_only_cookie(stack: Stack) -> None:
    """The cookie is HttpOnly, SameSite=Strict, for the whole site, and not the token."""
    alice = await stack.user(ALICE)
    answer, browser = await sign_in(stack, {"token": alice.token or ""})
    assert answer.status == 201, answer.body
    assert browser is not None
    morsel = SimpleCookie(answer.headers["Set-Cookie"])[COOKIE]
    assert morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/"
    assert not morsel["secure"]  # plain HTTP on loopback; see the TLS test below
    assert browser.cookie != alice.token and len(browser.cookie) >= 43
    assert answer.body["email"] == ALICE and answer.body["idle_timeout"] == 900
    apps = await browser.request("GET", "/apps")
    assert apps.status == 200
    current = await browser.request("GET", "/account/web-sessions/current")
    assert current.body["csrf_token"] == browser.csrf


async def test_the_database_keeps_only_a_hash_of_the_cookie(stack: Stack) -> None:
    """A copy of gateway.db does not sign anyone in."""
    browser = await signed_in(stack, await stack.user(ALICE))
    raw = (stack.home / "gateway" / "gateway.db").read_bytes()
    wal = stack.home / "gateway" / "gateway.db-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    assert browser.cookie.encode() not in raw and browser.csrf.encode() not in raw


async def test_bad_credentials_are_refused_without_a_cookie(stack: Stack) -> None:
    """A wrong token, a missing one, or an unknown field: 4xx and no cookie."""
    for body, status in (
        ({"token": "slp_not-a-token"}, 401),
        ({}, 401),
        ({"email": ALICE}, 401),
        ({"token": "x", "admin": "yes"}, 422),
    ):
        answer, browser = await sign_in(stack, body)
        assert (answer.status, browser) == (status, None), (body, answer.body)
        assert "Set-Cookie" not in answer.headers


async def test_a_login_link_works_once_and_only_with_its_owners_email(stack: Stack) -> None:
    """`slipway login --web`'s link: the right email signs in once; a second use fails."""
    alice = await stack.user(ALICE)
    link = await alice.ok("POST", "/account/web-login-links", status=201)
    assert link["url"] == f"{stack.url}/#/login/{link['code']}"
    answer, browser = await sign_in(stack, {"email": ALICE.upper(), "code": link["code"]})
    assert answer.status == 201 and browser is not None
    assert (await browser.request("GET", "/account")).body["email"] == ALICE
    again, _ = await sign_in(stack, {"email": ALICE, "code": link["code"]})
    assert again.status == 401


async def test_a_login_link_with_the_wrong_email_is_spent(stack: Stack) -> None:
    """Someone who saw the link but not whose it is gets one guess."""
    alice = await stack.user(ALICE)
    link = await alice.ok("POST", "/account/web-login-links", status=201)
    wrong, _ = await sign_in(stack, {"email": "mallory@example.com", "code": link["code"]})
    assert wrong.status == 401
    right, _ = await sign_in(stack, {"email": ALICE, "code": link["code"]})
    assert right.status == 401


async def test_an_expired_login_link_is_refused(stack: Stack) -> None:
    """A link older than its ten minutes does nothing."""
    alice = await stack.user(ALICE)
    link = await alice.ok("POST", "/account/web-login-links", status=201)
    await tamper(stack.home / "gateway" / "gateway.db", "UPDATE web_login_links SET expires_at = 1")
    answer, _ = await sign_in(stack, {"email": ALICE, "code": link["code"]})
    assert answer.status == 401


async def test_an_idle_session_ends(stack: Stack) -> None:
    """Fifteen minutes without a request and the cookie is refused, saying why."""
    browser = await signed_in(stack, await stack.user(ALICE))
    idle_since = time.time() - 901
    await tamper(
        stack.home / "gateway" / "gateway.db",
        "UPDATE web_sessions SET last_seen = ?",
        (idle_since,),
    )
    answer = await browser.request("GET", "/apps")
    assert answer.status == 401 and "idle for 15 minutes" in answer.body["message"]
    fresh = await browser.request("GET", "/apps")  # and it stays ended
    assert fresh.status == 401


async def test_requests_keep_a_session_alive(stack: Stack) -> None:
    """A request refreshes the idle clock (written at most every 30 seconds)."""
    browser = await signed_in(stack, await stack.user(ALICE))
    await tamper(
        stack.home / "gateway" / "gateway.db",
        "UPDATE web_sessions SET last_seen = ?",
        (time.time() - 600,),
    )
    assert (await browser.request("GET", "/apps")).status == 200
    await tamper(
        stack.home / "gateway" / "gateway.db",
        "UPDATE web_sessions SET last_seen = last_seen - 400 WHERE last_seen > ?",
        (time.time() - 60,),
    )  # had the request not refreshed it, this would be 1000 s idle
    assert (await browser.request("GET", "/apps")).status == 200


async def test_a_session_never_outlives_its_token(stack: Stack) -> None:
    """Revoking the token the browser signed in with ends the session at once."""
    alice = await stack.user(ALICE)
    created = await alice.ok(
        "POST", "/oauth/authorizations", {"description": "for the browser"}, status=201
    )
    token = created["access_token"]["token"]
    browser = await signed_in(stack, alice.as_token(token))
    assert (await browser.request("GET", "/apps")).status == 200
    await alice.ok("DELETE", f"/oauth/authorizations/{created['id']}")
    answer = await browser.request("GET", "/apps")
    assert answer.status == 401 and "revoked" in answer.body["message"]


async def test_a_session_expires_with_its_token(stack: Stack) -> None:
    """A short-lived token makes a session no longer-lived than itself."""
    alice = await stack.user(ALICE)
    created = await alice.ok(
        "POST", "/oauth/authorizations", {"description": "short", "expires_in": 120}, status=201
    )
    answer, browser = await sign_in(stack, {"token": created["access_token"]["token"]})
    assert browser is not None
    max_age = int(SimpleCookie(answer.headers["Set-Cookie"])[COOKIE]["max-age"])
    assert 0 < max_age <= 120


async def test_signing_out_ends_this_browser_only(stack: Stack) -> None:
    """Sign-out clears this cookie; another browser of the same user stays in."""
    alice = await stack.user(ALICE)
    laptop, phone = await signed_in(stack, alice), await signed_in(stack, alice)
    answer = await laptop.request("DELETE", "/account/web-sessions/current")
    assert answer.status == 204
    assert SimpleCookie(answer.headers["Set-Cookie"])[COOKIE].value == ""
    assert (await laptop.request("GET", "/apps")).status == 401
    assert (await phone.request("GET", "/apps")).status == 200


async def test_signing_out_everywhere_ends_every_browser_of_the_user(stack: Stack) -> None:
    """Every session of the user ends; another user's does not; tokens keep working."""
    alice, bob = await stack.user(ALICE), await stack.user("bob@example.com")
    laptop, phone, bobs = (
        await signed_in(stack, alice),
        await signed_in(stack, alice),
        await signed_in(stack, bob),
    )
    assert (await phone.request("DELETE", "/account/web-sessions")).status == 204
    assert (await laptop.request("GET", "/apps")).status == 401
    assert (await phone.request("GET", "/apps")).status == 401
    assert (await bobs.request("GET", "/apps")).status == 200
    assert (await alice.get("/apps")).status == 200


async def test_a_session_has_its_users_role_and_no_more(stack: Stack) -> None:
    """A viewer's browser reads the app and is refused a change, as the viewer's token is."""
    owner, viewer = await stack.user(ALICE), await stack.user("vera@example.com")
    team = (await owner.ok("GET", "/account"))["default_team"]["name"]
    await stack.app(owner, "shared-app", team)
    await stack.join(owner, team, viewer, "viewer")
    browser = await signed_in(stack, viewer)
    assert (await browser.request("GET", "/apps/shared-app")).status == 200
    answer = await browser.request("PATCH", "/apps/shared-app/config-vars", {"A": "1"})
    assert answer.status == 403 and answer.error_id == "forbidden"


async def test_sign_in_and_out_are_audited(stack: Stack) -> None:
    """The user's team chain records each sign-in and sign-out, with the user."""
    alice = await stack.user(ALICE)
    browser = await signed_in(stack, alice)
    await browser.request("DELETE", "/account/web-sessions")
    team = (await alice.ok("GET", "/account"))["default_team"]["name"]
    entries = (await alice.ok("GET", f"/teams/{team}/audit"))["entries"]
    actions = [e["action"] for e in entries if e["action"].startswith("session.")]
    assert actions == ["session.create", "session.end_all"]
    assert all(e["actor"] == ALICE for e in entries if e["action"].startswith("session."))


async def test_the_cookie_is_secure_when_the_api_is_served_over_tls(stack: Stack) -> None:
    """Behind TLS (an https api_url) the browser is told never to send it in the clear."""
    stack.gw.api_url = "https://dashboard.example.test"
    alice = await stack.user(ALICE)
    answer = await stack.anonymous().post(
        "/account/web-sessions", {"token": alice.token}, headers={"Accept": ACCEPT}
    )
    assert SimpleCookie(answer.headers["Set-Cookie"])[COOKIE]["secure"]


async def test_slipway_login_web_prints_a_link_that_signs_in(stack: Stack, tmp_path: Path) -> None:
    """The CLI's `login --web` prints the link on stdout; its code signs the browser in."""
    alice = await stack.user(ALICE)
    config = tmp_path / "cli"
    config.mkdir()
    code, _, err = await slipway(config, "login", "--api-url", stack.url, stdin=alice.token or "")
    assert code == 0, err
    code, out, err = await slipway(config, "login", "--web")
    assert code == 0 and "works once" in err, err
    url = out.strip()
    assert url.startswith(f"{stack.url}/#/login/")
    answer, browser = await sign_in(stack, {"email": ALICE, "code": url.rsplit("/", 1)[1]})
    assert answer.status == 201 and browser is not None


async def test_slipway_login_web_needs_a_login_first(tmp_path: Path) -> None:
    """Without stored credentials the CLI says so in one line and exits non-zero."""
    code, out, err = await slipway(tmp_path, "login", "--web")
    assert code != 0 and out == "" and len(err.strip().splitlines()) == 1, err
