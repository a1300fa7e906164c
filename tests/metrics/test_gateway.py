"""The gateway's and the bus's metrics, scraped from the real services' sockets after real work."""

from __future__ import annotations

import pytest

from slipway.libs.metrics import socket_path
from slipway.services.gateway.app import WEB
from tests.conftest import assert_eventually
from tests.gateway.conftest import Stack
from tests.metrics.scrape import Samples, label_values, parse, samples, scrape, total, value

pytestmark = pytest.mark.integration

HTTP = "slipway_http_requests_total"
BUS = "slipway_bus_requests_total"


async def test_requests_are_counted_by_route_template(stack: Stack) -> None:
    """Five GETs of one app move its route's 200 counter by exactly five, and its histogram."""
    sock = socket_path(stack.home, "gateway")
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "metered")
    before = await samples(sock)
    for _ in range(5):
        await alice.ok("GET", "/apps/metered")
    after = await samples(sock)
    labels = {"method": "GET", "route": "/apps/{app}", "status": "200"}
    assert value(after, HTTP, **labels) - value(before, HTTP, **labels) == 5
    timed = {"method": "GET", "route": "/apps/{app}"}
    name = "slipway_http_request_duration_seconds_count"
    assert value(after, name, **timed) - value(before, name, **timed) == 5


async def test_labels_never_carry_a_path_token_or_customer_string(stack: Stack) -> None:
    """A hostile app name and a token reach the API; the scrape has neither, only templates."""
    sock = socket_path(stack.home, "gateway")
    alice = await stack.user("alice@example.com")
    hostile = "x7q-hostile-name-a9f3"
    for path in (f"/apps/{hostile}", f"/apps/{hostile}/config-vars", f"/{hostile}/nothing"):
        answer = await alice.get(path)
        assert answer.status == 404, (path, answer.status)
    forged = await stack.anonymous().as_token("forged-token-z81k").get("/apps")
    assert forged.status == 401
    text, _ = await scrape(sock)
    for secret in (hostile, "forged-token-z81k", alice.token or "", alice.email):
        assert secret not in text
    routes = label_values(parse(text), HTTP, "route")
    assert {"/apps/{app}", "/apps/{app}/config-vars", "unmatched"} <= routes
    templates = {resource.canonical for resource in stack.gateway[WEB].router.resources()}
    assert routes <= templates | {"unmatched"}, routes - templates


async def test_rpcs_made_by_the_gateway_are_the_ones_the_keyring_served(stack: Stack) -> None:
    """config:set makes keyring RPCs: counted as made by the gateway and served by the keyring.

    The gateway is the keyring's only caller here, so once nothing is in flight the two
    sides' totals agree verb by verb (the checkpoint signer calls it in the background too:
    totals, not deltas over two scrapes taken at different moments).
    """
    gateway_sock = socket_path(stack.home, "gateway")
    keyring_sock = socket_path(stack.home, "keyring")
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "keyed")
    served_before = await samples(keyring_sock)
    await alice.ok("PATCH", "/apps/keyed/config-vars", {"SECRET": "value"})

    def by_verb(found: Samples, direction: str) -> dict[str, float]:
        verbs = label_values(found, BUS, "verb")
        counts = {v: total(found, BUS, direction=direction, verb=v) for v in verbs}
        return {v: n for v, n in counts.items() if v.startswith("keyring.") and n}

    async def balanced() -> dict[str, float]:
        made = by_verb(await samples(gateway_sock), "made")
        served = by_verb(await samples(keyring_sock), "served")
        assert made == served
        return served

    served = await assert_eventually(balanced)
    before = by_verb(served_before, "served")
    moved = {verb for verb, n in served.items() if n > before.get(verb, 0)}
    assert any(verb.startswith("keyring.datakey.") for verb in moved), moved


async def test_openmetrics_when_asked_else_prometheus_text(stack: Stack) -> None:
    """`Accept: application/openmetrics-text` gets OpenMetrics (with # EOF); else text 0.0.4."""
    sock = socket_path(stack.home, "gateway")
    text, kind = await scrape(sock, "application/openmetrics-text; version=1.0.0")
    assert kind.startswith("application/openmetrics-text"), kind
    assert text.rstrip().endswith("# EOF")
    text, kind = await scrape(sock)
    assert kind.startswith("text/plain"), kind
    assert "# EOF" not in text
    found = parse(text)
    assert value(found, "slipway_service_start_time_seconds", service="gateway") > 0
    assert total(found, "process_resident_memory_bytes") > 0
    assert value(found, "slipway_disk_free_bytes", folder="gateway") > 0
    assert 0 < value(found, "slipway_disk_used_ratio", folder="gateway") < 1


async def test_consumer_lag_is_reported_for_each_own_durable(stack: Stack) -> None:
    """Every durable the gateway consumes has a pending gauge; an idle gateway's are at 0."""
    sock = socket_path(stack.home, "gateway")
    durables = {consumer.durable for consumer in stack.gateway.bus.consumers()}
    assert durables

    async def settled() -> None:
        found = await samples(sock)
        assert label_values(found, "slipway_consumer_pending", "consumer") == durables
        assert total(found, "slipway_consumer_pending") == 0

    await assert_eventually(settled)
