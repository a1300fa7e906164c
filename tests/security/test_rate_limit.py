"""API rate limits: a token that floods the API is stopped with Heroku's 429, and only it.

Each test runs the real gateway (with real NATS and keyring) with a limit of
`LIMIT` requests an hour, floods it over loopback and reads what the customer
sees: the status, Heroku's error body, `RateLimit-Remaining`, and
`GET /account/rate-limits`.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from slipway.cli.main import main as cli_main
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from slipway.services.gateway.app import create_service
from tests.gateway import conftest as gateway_fixtures
from tests.gateway.conftest import Answer, Api, Stack, gateway_settings, run_in_background, stop

pytestmark = pytest.mark.integration

LIMIT = 20
MESSAGE = (
    "Your account reached the API rate limit\nPlease wait a few minutes before making new requests"
)

slipway_home = gateway_fixtures.slipway_home
keyring_service = gateway_fixtures.keyring_service
stack = gateway_fixtures.stack


@pytest.fixture
async def gateway_service(
    nats_server: NatsServer, slipway_home: Path, keyring_service: ServiceApp
) -> AsyncIterator[ServiceApp]:
    """The real gateway allowing `LIMIT` requests an hour per caller."""
    service = create_service(gateway_settings(nats_server.url, slipway_home, api_rate_limit=LIMIT))
    task = await run_in_background(service)
    yield service
    await stop(service, task)


async def flood(api: Api, path: str = "/account", **kw: Any) -> list[Answer]:
    """Requests until the first 429 (at most twice the limit); every answer, in order."""
    answers: list[Answer] = []
    for _ in range(2 * LIMIT):
        answers.append(await api.get(path, **kw))
        if answers[-1].status == 429:
            break
    return answers


async def test_an_exhausted_token_gets_heroku_s_429(stack: Stack) -> None:
    """Past its limit a token is answered 429 with Heroku's rate_limit body and headers."""
    alice = await stack.user("alice@example.com")

    answers = await flood(alice)

    assert [a.status for a in answers[:-1]] == [200] * (len(answers) - 1)
    refused = answers[-1]
    assert refused.status == 429
    assert refused.body == {"id": "rate_limit", "message": MESSAGE}
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["Request-Id"]
    counted = [int(a.headers["RateLimit-Remaining"]) for a in answers[:-1]]
    assert counted == sorted(counted, reverse=True) and counted[-1] == 0


async def test_rate_limits_endpoint_says_what_is_left(stack: Stack) -> None:
    """GET /account/rate-limits answers {"remaining": N}, costs nothing, and works at 0."""
    alice = await stack.user("alice@example.com")
    await alice.ok("GET", "/account")
    before = await alice.ok("GET", "/account/rate-limits")
    again = await alice.ok("GET", "/account/rate-limits")
    assert before == again == {"remaining": LIMIT - 1}

    await flood(alice)

    assert await alice.ok("GET", "/account/rate-limits") == {"remaining": 0}


async def test_one_token_s_flood_leaves_another_token_alone(stack: Stack) -> None:
    """When alice's token is exhausted, bob's token still gets answers."""
    alice, bob = await stack.user("alice@example.com"), await stack.user("bob@example.com")
    assert (await flood(alice))[-1].status == 429

    answer = await bob.get("/account")

    assert answer.status == 200
    assert int(answer.headers["RateLimit-Remaining"]) == LIMIT - 1


async def test_git_requests_count_against_the_token(stack: Stack) -> None:
    """git smart HTTP with the token in Basic auth spends the same bucket and gets 429."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    basic = base64.b64encode(f"git:{alice.token}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}"}

    answers = await flood(alice, "/hello.git/info/refs?service=git-upload-pack", headers=headers)

    assert answers[-1].status == 429
    assert (await alice.get("/account")).status == 429


async def test_anonymous_requests_are_limited_per_address(stack: Stack) -> None:
    """Requests without a token are counted by client address and stopped with 429."""
    answers = await flood(stack.anonymous(), "/openapi.json")

    assert answers[-1].status == 429
    assert answers[-1].error_id == "rate_limit"


async def test_dashboard_files_spend_no_bucket(stack: Stack) -> None:
    """Loading the dashboard's page and files costs no API request: an office behind one
    address opening it many times still has its API hour left."""
    for _ in range(2 * LIMIT):
        assert (await stack.anonymous().get("/", headers={"Accept": "text/html"})).status == 200
        assert (await stack.anonymous().get("/dashboard/app.js")).status == 200
    left = await stack.anonymous().get("/openapi.json")
    assert left.status == 200 and int(left.headers["RateLimit-Remaining"]) == LIMIT - 1


async def test_invented_tokens_cannot_escape_the_limit(stack: Stack) -> None:
    """Each unknown token spends the client address's bucket, so a stream of them hits 429."""
    statuses = []
    for _ in range(2 * LIMIT):
        answer = await stack.anonymous().as_token("slp_" + secrets.token_urlsafe(32)).get("/apps")
        statuses.append(answer.status)
        if answer.status == 429:
            break

    assert statuses[-1] == 429
    assert set(statuses[:-1]) == {401}


async def test_cli_shows_a_429_as_one_line(
    stack: Stack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CLI prints the rate-limit refusal as one readable line and exits non-zero."""
    alice = await stack.user("alice@example.com")
    await flood(alice)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SLIPWAY_CONFIG_DIR", str(tmp_path / "slipway-config"))
    monkeypatch.setenv("SLIPWAY_API_KEY", alice.token or "")
    monkeypatch.setenv("SLIPWAY_API_URL", stack.url)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()

    # In a thread: the CLI blocks, and the gateway answering it runs in this event loop.
    status = await asyncio.to_thread(cli_main, ["apps"])

    err = capsys.readouterr().err.strip()
    assert status != 0
    assert len(err.splitlines()) == 1
    assert "reached the API rate limit" in err and "Please wait a few minutes" in err
