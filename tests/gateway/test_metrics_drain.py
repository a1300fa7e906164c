"""Metrics drains: a scrape credential per app and GET /apps/{app}/metrics/openmetrics.

The gateway is the real one. network-wirer's part is its real `RouterMetrics` (the
prometheus_client counters the router's access records feed) behind ROUTER_METRICS_GET on a
bus connected as network-wirer; the scheduler's and the log-shippers' parts answer
DYNOS_LIST and METRICS_GET on buses connected as those services, with dynos and samples
of both apps, so the scrape must pick the app's own out of them. The bodies are read
with prometheus_client's own parsers.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as prometheus_families

from slipway.contracts import scheduler as sc
from slipway.contracts.log_shipper import METRICS_GET, DynoSample, GetMetrics, Metrics
from slipway.contracts.logs import RouterAccess
from slipway.contracts.router import ROUTER_METRICS_GET, AppRouterMetrics, GetRouterMetrics
from slipway.libs.bus import Bus
from slipway.services.network_wirer.routermetrics import RouterMetrics
from tests.gateway.conftest import Stack

pytestmark = [pytest.mark.integration]

SLIPWAY = str(Path(sys.executable).parent / "slipway")
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
MIB = 1024 * 1024


@dataclass
class Platform:
    """What the other services know of the apps, answering as they do."""

    router: RouterMetrics
    dynos: list[sc.Dyno]
    samples: list[DynoSample]
    owners: dict[str, str]  # container id → app id: what a log-shipper knows of its dynos

    def request(self, app_id: str, status: int, ms: int) -> None:
        self.router.observe(
            RouterAccess(
                app_id=app_id,
                timestamp=time.time(),
                method="GET",
                path="/secret-path",
                host="h.example",
                request_id="r",
                fwd="127.0.0.1",
                dyno="web.1",
                connect_ms=0,
                service_ms=ms,
                status=status,
                bytes=1,
            )
        )

    def run(self, app_id: str, app_name: str, name: str, state: sc.DynoState, mb: float) -> None:
        self.dynos.append(
            sc.Dyno(
                app_id=app_id,
                app_name=app_name,
                team_id="t",
                name=name,
                process_type=name.split(".")[0],
                release_version=1,
                state=state,
                host_id="local",
            )
        )
        self.owners[f"{app_id}-{name}"] = app_id
        self.samples.append(
            DynoSample(
                dyno=name,
                container_id=f"{app_id}-{name}",
                at=time.time(),
                cpu_percent=25.0,
                load_avg_1m=0.5,
                memory_total_mb=mb,
                memory_rss_mb=mb,
                memory_cache_mb=0.0,
                memory_quota_mb=512.0,
                restarts=2,
            )
        )


@pytest.fixture
async def platform(bus_factory: Callable[[str], Awaitable[Bus]]) -> Platform:
    found = Platform(router=RouterMetrics(CollectorRegistry()), dynos=[], samples=[], owners={})
    wirer = await bus_factory("network-wirer")
    scheduler = await bus_factory("scheduler")
    shipper = await bus_factory("log-shipper")

    async def router(request: GetRouterMetrics) -> AppRouterMetrics:
        return found.router.snapshot(request.app_id)

    async def dynos(request: sc.ListDynos) -> sc.DynoList:
        return sc.DynoList(dynos=[d for d in found.dynos if d.app_id == request.app_id])

    async def samples(request: GetMetrics) -> Metrics:
        mine = [s for s in found.samples if found.owners[s.container_id] == request.app_id]
        return Metrics(app_id=request.app_id, dynos=mine)

    await wirer.serve(ROUTER_METRICS_GET, router)
    await scheduler.serve(sc.DYNOS_LIST, dynos)
    await shipper.serve(METRICS_GET, samples, responder="local")
    return found


async def two_apps(stack: Stack, platform: Platform) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Alice's `shop` and `other`, each with requests and dynos; alice's API client."""
    alice = await stack.user("alice@example.com")
    shop = await stack.app(alice, "shop")
    other = await stack.app(alice, "other")
    for status, ms in ((200, 3), (204, 40), (503, 30_000)):
        platform.request(shop["id"], status, ms)
    platform.request(other["id"], 404, 1)
    platform.run(shop["id"], "shop", "web.1", "up", 100.0)
    platform.run(shop["id"], "shop", "web.2", "crashed", 50.0)
    platform.run(shop["id"], "shop", "worker.1", "up", 10.0)
    platform.run(other["id"], "other", "web.1", "up", 300.0)
    return alice, shop, other


async def add_drain(api: Any, app: str) -> dict[str, Any]:
    drain: dict[str, Any] = await api.ok("POST", f"/apps/{app}/metrics-drains", status=201)
    return drain


async def scrape(
    stack: Stack, app: str, token: str | None, accept: str = PROMETHEUS_ACCEPT
) -> tuple[int, str, str]:
    """GET the scrape endpoint as a scraper does: status, content type, body."""
    headers = {"Accept": accept}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with stack.session.get(
        f"{stack.url}/apps/{app}/metrics/openmetrics", headers=headers
    ) as answer:
        return answer.status, answer.headers.get("Content-Type", ""), await answer.text()


def samples_of(body: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of an OpenMetrics body by sample name, as the library parses it."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    # The openmetrics parser carries no annotations; it yields prometheus_client Metrics.
    families: list[Metric] = list(text_string_to_metric_families(body))  # type: ignore[no-untyped-call]
    for family in families:
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


async def test_a_scrape_credential_reads_its_apps_series_and_no_other(
    stack: Stack, platform: Platform
) -> None:
    """Router counts and times, dyno memory/quota/CPU/restarts and states: shop's only."""
    alice, shop, other = await two_apps(stack, platform)
    drain = await add_drain(alice, "shop")
    assert drain["token"].startswith("slpm_")
    assert drain["url"] == f"{stack.url}/apps/shop/metrics/openmetrics"

    status, content_type, body = await scrape(stack, "shop", drain["token"])
    assert status == 200, body
    assert content_type == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    found = samples_of(body)
    responses = {
        labels["status_class"]: value
        for labels, value in found["slipway_app_router_responses_total"]
    }
    assert responses == {"2xx": 2.0, "5xx": 1.0}
    assert found["slipway_app_router_response_seconds_count"] == [({"app": "shop"}, 3.0)]
    buckets = {
        labels["le"]: value for labels, value in found["slipway_app_router_response_seconds_bucket"]
    }
    assert (buckets["0.005"], buckets["0.05"], buckets["+Inf"]) == (1.0, 2.0, 3.0)
    memory = {labels["dyno"]: value for labels, value in found["slipway_app_dyno_memory_bytes"]}
    assert memory == {"web.1": 100 * MIB, "web.2": 50 * MIB, "worker.1": 10 * MIB}
    assert {v for _, v in found["slipway_app_dyno_memory_quota_bytes"]} == {512 * MIB}
    assert {v for _, v in found["slipway_app_dyno_restarts_total"]} == {2.0}
    assert {v for _, v in found["slipway_app_dyno_load_1m"]} == {0.5}
    worker = [
        labels for labels, _ in found["slipway_app_dyno_cpu_ratio"] if labels["dyno"] == "worker.1"
    ]
    assert worker == [{"app": "shop", "dyno": "worker.1", "process_type": "worker"}]
    states = {
        (labels["process_type"], labels["state"]): v for labels, v in found["slipway_app_dynos"]
    }
    assert states == {("web", "crashed"): 1.0, ("web", "up"): 1.0, ("worker", "up"): 1.0}
    assert {labels["source"]: v for labels, v in found["slipway_app_scrape_source_up"]} == {
        "dyno_samples": 1.0,
        "router": 1.0,
        "scheduler": 1.0,
    }
    # Every series is the app's, by name; nothing of the other app or of the platform.
    assert all(labels["app"] == "shop" for series in found.values() for labels, _ in series)
    assert "other" not in body and other["id"] not in body and shop["id"] not in body
    assert "secret-path" not in body and "slipway_http" not in body
    assert not any(
        "404" in str(labels) or labels.get("status_class") == "4xx"
        for labels, _ in found["slipway_app_router_responses_total"]
    )


async def test_prometheus_text_when_the_scraper_asks_for_it(
    stack: Stack, platform: Platform
) -> None:
    """Accept: text/plain;version=0.0.4 alone gets Prometheus text, which its parser reads."""
    alice, _, _ = await two_apps(stack, platform)
    drain = await add_drain(alice, "shop")
    status, content_type, body = await scrape(
        stack, "shop", drain["token"], accept="text/plain;version=0.0.4"
    )
    assert status == 200, body
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    names = {family.name for family in prometheus_families(body)}
    assert {"slipway_app_router_responses", "slipway_app_dyno_memory_bytes"} <= names


async def test_the_credential_opens_nothing_but_its_apps_scrape_endpoint(
    stack: Stack, platform: Platform
) -> None:
    """Another app's endpoint, the app itself, its drains, a write: each a 401 in Heroku's shape."""
    alice, _, _ = await two_apps(stack, platform)
    drain = await add_drain(alice, "shop")
    await add_drain(alice, "other")  # both apps have drains: the scope is the row's app
    scraper = alice.as_token(drain["token"])

    status, _, body = await scrape(stack, "other", drain["token"])
    assert status == 401, body
    for method, path in (
        ("GET", "/apps/shop"),
        ("GET", "/apps/shop/metrics"),
        ("GET", "/apps/shop/metrics-drains"),
        ("POST", "/apps/shop/metrics-drains"),
        ("DELETE", f"/apps/shop/metrics-drains/{drain['id']}"),
        ("GET", "/account"),
    ):
        answer = await scraper.request(method, path)
        assert answer.status == 401, (method, path, answer)
        assert answer.error_id == "unauthorized" and answer.body["message"]


async def test_a_removed_credential_or_a_destroyed_app_stops_the_scrape(
    stack: Stack, platform: Platform
) -> None:
    """Removal is at once; destroying the app takes its drains with it; both audited."""
    alice, _, _ = await two_apps(stack, platform)
    kept = await add_drain(alice, "shop")
    gone = await add_drain(alice, "shop")
    listed = await alice.ok("GET", "/apps/shop/metrics-drains")
    assert {d["id"] for d in listed} == {kept["id"], gone["id"]}
    assert all(d["token"] is None for d in listed)

    removed = await alice.ok("DELETE", f"/apps/shop/metrics-drains/{gone['id']}")
    assert removed["id"] == gone["id"]
    assert (await scrape(stack, "shop", gone["token"]))[0] == 401
    assert (await scrape(stack, "shop", kept["token"]))[0] == 200
    log = await alice.ok("GET", "/apps/shop/audit")
    actions = [e["action"] for e in log["entries"]]
    assert actions.count("metrics-drain.add") == 2 and actions.count("metrics-drain.remove") == 1
    assert gone["token"] not in str(log) and kept["token"] not in str(log)

    await alice.ok("DELETE", "/apps/shop")
    async with stack.gw.reader.execute("SELECT COUNT(*) FROM metrics_drains") as cursor:
        row = await cursor.fetchone()
    assert row is not None and row[0] == 0  # the hash went with the app
    await stack.app(alice, "shop")  # a new app of the same name is not the old one
    assert (await scrape(stack, "shop", kept["token"]))[0] == 401


async def test_user_tokens_that_read_the_app_scrape_and_others_do_not(
    stack: Stack, platform: Platform
) -> None:
    """The owner and a viewer scrape; a stranger is told the app does not exist; no token 401."""
    alice, _, _ = await two_apps(stack, platform)
    assert alice.token is not None
    assert (await scrape(stack, "shop", alice.token))[0] == 200
    await alice.ok("POST", "/teams", {"name": "acme"}, status=201)
    await stack.app(alice, "teamed", team="acme")
    viewer = await stack.user("vera@example.com")
    await stack.join(alice, "acme", viewer, "viewer")
    assert viewer.token is not None
    assert (await scrape(stack, "teamed", viewer.token))[0] == 200
    refused = await viewer.request("POST", "/apps/teamed/metrics-drains")
    assert (refused.status, refused.error_id) == (403, "forbidden")

    stranger = await stack.user("mallory@example.com")
    assert stranger.token is not None
    status, _, body = await scrape(stack, "shop", stranger.token)
    assert status == 404 and '"not_found"' in body
    for token in (None, "", "slpm_forged", "slp_forged", "x" * 5000):
        status, _, body = await scrape(stack, "shop", token)
        assert status in (401, 400), (token, status)
        assert '"id"' in body and '"message"' in body


async def test_bad_drain_requests_answer_in_herokus_shape(stack: Stack, platform: Platform) -> None:
    """An unknown drain, another app's drain id, too many drains: 404, 404, 422."""
    alice, _, _ = await two_apps(stack, platform)
    mine = await add_drain(alice, "other")
    for ident in ("nope", mine["id"], "%2e%2e", "a" * 300):
        answer = await alice.request("DELETE", f"/apps/shop/metrics-drains/{ident}")
        assert (answer.status, answer.error_id) == (404, "not_found"), (ident, answer)
    for _ in range(20):
        await add_drain(alice, "shop")
    answer = await alice.request("POST", "/apps/shop/metrics-drains")
    assert (answer.status, answer.error_id) == (422, "invalid_params")
    assert "remove one" in answer.body["message"]


async def cli(stack: Stack, token: str, *args: str) -> tuple[int, str, str]:
    """`slipway ARGS` as a user runs it, against this stack."""
    env = {
        **os.environ,
        "SLIPWAY_API_URL": stack.url,
        "SLIPWAY_API_KEY": token,
        "SLIPWAY_CONFIG_DIR": str(stack.home / "cli-config"),
    }
    process = await asyncio.create_subprocess_exec(
        SLIPWAY,
        *args,
        env=env,
        cwd=stack.home,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_the_cli_adds_lists_and_removes_a_drain_whose_token_scrapes(
    stack: Stack, platform: Platform
) -> None:
    """metrics:drains:add prints URL, token and a scrape config that works; remove ends it."""
    alice, _, _ = await two_apps(stack, platform)
    assert alice.token is not None
    code, out, err = await cli(stack, alice.token, "metrics:drains:add", "-a", "shop")
    assert code == 0, err
    token = next(line.split()[-1] for line in out.splitlines() if line.startswith("Token:"))
    assert f"URL:   {stack.url}/apps/shop/metrics/openmetrics" in out
    assert "scrape_configs:" in out and f"credentials: {token}" in out
    assert "metrics_path: /apps/shop/metrics/openmetrics" in out
    assert (await scrape(stack, "shop", token))[0] == 200

    code, out, err = await cli(stack, alice.token, "metrics:drains", "-a", "shop")
    assert code == 0, err
    (drain,) = await alice.ok("GET", "/apps/shop/metrics-drains")
    assert drain["id"] in out and token not in out

    code, out, err = await cli(stack, alice.token, "metrics:drains:remove", "-a", "shop", "nope")
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    code, out, err = await cli(
        stack, alice.token, "metrics:drains:remove", "-a", "shop", drain["id"]
    )
    assert code == 0, err
    assert (await scrape(stack, "shop", token))[0] == 401
    code, out, err = await cli(stack, alice.token, "metrics:drains", "-a", "shop")
    assert code == 0 and "has no metrics drains" in out


async def test_a_silent_part_of_the_platform_is_marked_not_fatal(
    stack: Stack, bus_factory: Callable[[str], Awaitable[Bus]]
) -> None:
    """With nobody answering for the router, dynos or samples, the scrape says so in `up`."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "lonely")
    drain = await add_drain(alice, "lonely")
    status, _, body = await scrape(stack, "lonely", drain["token"])
    assert status == 200, body
    up = {labels["source"]: v for labels, v in samples_of(body)["slipway_app_scrape_source_up"]}
    assert up["router"] == 0.0 and up["scheduler"] == 0.0
