"""The egress guard, attacked for real: every fetch the platform makes for a customer.

Each test aims a URL at a server the test runs on loopback (standing for the platform's
own services, the host, or cloud metadata) and asserts the fetch is refused with the
reason the customer sees and that the server saw nothing. Operator settings are passed
explicitly, never read from this process's environment unless the test sets it.
"""

from __future__ import annotations

import contextlib
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from slipway.contracts.builder import BuildRequested, SourceBlob
from slipway.libs import egress
from slipway.libs.egress import EgressPolicy, EgressRefused, FetchFailed
from slipway.libs.natsserver import NatsServer
from slipway.services.builder.errors import SourceRejected
from slipway.services.builder.settings import BuilderSettings
from slipway.services.builder.source import fetch
from slipway.services.gateway.app import create_service as create_gateway
from slipway.services.log_shipper.history import RawLine
from tests.builder.conftest import builder_stack
from tests.conftest import assert_eventually
from tests.gateway.conftest import Stack, gateway_settings, run_in_background
from tests.gateway.conftest import keyring_service as keyring_service
from tests.gateway.conftest import slipway_home as slipway_home
from tests.gateway.conftest import stack as stack
from tests.gateway.conftest import stop as stop_service
from tests.log_shipper.conftest import ShipperFactory, slipway
from tests.log_shipper.conftest import managed as managed
from tests.log_shipper.conftest import shipper_settings as shipper_settings
from tests.log_shipper.conftest import start_shipper as start_shipper
from tests.log_shipper.drain_servers import self_signed, server_tls, syslog_server
from tests.security.egress_servers import (
    recording_server,
    redirect,
    stall_forever,
    stream_bytes,
)

MIB = 1024 * 1024
# No operator setting at all: what a fresh install refuses.
DEFAULT = EgressPolicy.from_env({})
LOOPBACK_ALLOWED = EgressPolicy.from_env({"SLIPWAY_EGRESS_ALLOW": "127.0.0.1/32"})


async def _fetch(url: str, tmp_path: Path, policy: EgressPolicy = DEFAULT, **kw: Any) -> int:
    return await egress.fetch_to_file(
        url, tmp_path / "fetched", policy=policy, max_bytes=kw.pop("max_bytes", MIB),
        timeout=kw.pop("timeout", 10.0), **kw,
    )  # fmt: skip


# ---- addresses on this host, in every spelling ---------------------------------------------


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("http://127.0.0.1:{port}/", "127.0.0.1 is a loopback address"),
        ("http://localhost:{port}/", "localhost resolves to 127.0.0.1, a loopback address"),
        ("http://2130706433:{port}/", "2130706433 resolves to 127.0.0.1, a loopback address"),
        ("http://0x7f.0.0.1:{port}/", "0x7f.0.0.1 resolves to 127.0.0.1, a loopback address"),
        ("http://0177.0.0.1:{port}/", "0177.0.0.1 resolves to 127.0.0.1, a loopback address"),
        ("http://127.1:{port}/", "127.1 resolves to 127.0.0.1, a loopback address"),
        ("http://[::ffff:127.0.0.1]:{port}/", "a loopback address (it carries 127.0.0.1)"),
        ("http://[::1]:{port}/", "::1 is a loopback address"),
        ("http://0.0.0.0:{port}/", "0.0.0.0 is an unspecified address"),
    ],
)
async def test_this_host_is_refused_in_any_spelling(
    tmp_path: Path, template: str, reason: str
) -> None:
    """Loopback, its numeric spellings, mapped IPv6 and 0.0.0.0 never reach a local server."""
    async with recording_server(hosts=("127.0.0.1", "::1")) as server:
        with pytest.raises(EgressRefused) as refused:
            await _fetch(template.format(port=server.port), tmp_path)
    assert reason in refused.value.message
    assert "Slipway does not connect there" in refused.value.message
    assert server.hits == []
    assert not (tmp_path / "fetched").exists()


def _public_looking_interface_address() -> str | None:
    """An IPv4 address of this host that no default range covers (192.0.2.2 here), if any."""
    no_local = EgressPolicy()
    for address in sorted(DEFAULT.local, key=str):
        if address.version == 4 and no_local.refusal(address, 80) is None:
            return str(address)
    return None


async def test_this_hosts_own_interface_addresses_are_refused(tmp_path: Path) -> None:
    """An address on one of this host's interfaces is refused even outside every private range."""
    address = _public_looking_interface_address()
    if address is None:
        pytest.skip("this host has no interface address outside the default-denied ranges")
    async with recording_server(hosts=(address,)) as server:
        with pytest.raises(EgressRefused) as refused:
            await _fetch(f"http://{address}:{server.port}/", tmp_path)
    assert f"{address} is an address of the Slipway host itself" in refused.value.message
    assert server.hits == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.20.30.40/app.tgz", "10.20.30.40 is a private address"),
        ("http://192.168.1.1/", "192.168.1.1 is a private address"),
        ("http://172.16.0.1/", "172.16.0.1 is a private address"),
        ("http://100.64.0.1/", "a shared (carrier-grade NAT) address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://[fe80::1]/", "fe80::1 is a link-local address"),
        ("http://[fc00::1]/", "a private (unique-local) address"),
        ("http://224.0.0.1/", "a multicast address"),
        ("http://255.255.255.255/", "the broadcast address"),
        ("http://198.18.0.1/", "a benchmarking address"),
        ("http://[64:ff9b::a9fe:a9fe]/", "a link-local address (it carries 169.254.169.254)"),
        ("http://[64:ff9b::7f00:1]/", "a loopback address (it carries 127.0.0.1)"),
        ("http://[2002:a00:1::]/", "a private address (it carries 10.0.0.1)"),
        ("http://[2002:a9fe:a9fe::1]/", "a link-local address (it carries 169.254.169.254)"),
    ],
)
async def test_private_link_local_and_embedded_addresses_are_refused(
    tmp_path: Path, url: str, reason: str
) -> None:
    """Private, metadata, multicast and NAT64 / 6to4 forms of them are refused before connecting."""
    with pytest.raises(EgressRefused) as refused:
        await _fetch(url, tmp_path)
    assert reason in refused.value.message


async def test_credentials_before_the_host_are_refused(tmp_path: Path) -> None:
    """`http://good.example@127.0.0.1/` is refused for what it is, and nothing is sent."""
    async with recording_server() as server:
        with pytest.raises(EgressRefused) as refused:
            await _fetch(f"http://good.example@127.0.0.1:{server.port}/", tmp_path)
    assert "credentials before the host" in refused.value.message
    assert server.hits == []


async def test_credentials_allowed_for_drains_do_not_hide_the_real_host() -> None:
    """Where user-info is allowed (drains), `https://good@127.0.0.1/` is judged by 127.0.0.1."""
    with pytest.raises(EgressRefused) as refused:
        await egress.resolve_checked(
            "https://good@127.0.0.1/", DEFAULT, schemes=("https",), allow_userinfo=True
        )
    assert "127.0.0.1 is a loopback address" in refused.value.message


# ---- operator settings -----------------------------------------------------------------------


async def test_an_allowed_range_is_fetched(tmp_path: Path) -> None:
    """SLIPWAY_EGRESS_ALLOW=127.0.0.1/32 lets an on-premise endpoint on loopback be fetched."""
    async with recording_server() as server:
        size = await _fetch(f"http://127.0.0.1:{server.port}/app.tgz", tmp_path, LOOPBACK_ALLOWED)
    assert size == len((tmp_path / "fetched").read_bytes()) > 0
    assert server.hits == ["GET /app.tgz"]


async def test_the_platforms_own_ports_stay_refused_in_an_allowed_range(tmp_path: Path) -> None:
    """With loopback allowed, NATS's port (from SLIPWAY_NATS_URL) is still refused, any spelling."""
    async with recording_server(hosts=("127.0.0.1", "::1")) as nats:
        policy = EgressPolicy.from_env(
            {
                "SLIPWAY_EGRESS_ALLOW": "127.0.0.0/8,::1/128",
                "SLIPWAY_NATS_URL": f"nats://127.0.0.1:{nats.port}",
            }
        )
        for host in ("127.0.0.1", "localhost", "127.0.0.2", "[::1]"):
            with pytest.raises(EgressRefused) as refused:
                await _fetch(f"http://{host}:{nats.port}/", tmp_path, policy)
            assert f"port {nats.port} of Slipway's own services" in refused.value.message
    assert nats.hits == []


async def test_the_operator_can_deny_a_range_the_default_allows() -> None:
    """203.0.113.0/24 passes by default (registries live there) and is refused when denied."""
    url = "https://203.0.113.7/app.tgz"
    checked = await egress.resolve_checked(url, DEFAULT, schemes=("https",))
    assert checked.addresses == ("203.0.113.7",)
    denied = EgressPolicy.from_env({"SLIPWAY_EGRESS_DENY": "203.0.113.0/24"})
    with pytest.raises(EgressRefused) as refused:
        await egress.resolve_checked(url, denied, schemes=("https",))
    assert "an address the operator refuses" in refused.value.message


async def test_other_schemes_are_refused() -> None:
    """file://, gopher:// and ftp:// are refused naming the schemes that are accepted."""
    for url in ("file:///etc/passwd", "gopher://127.0.0.1:70/", "ftp://example.com/x"):
        with pytest.raises(EgressRefused) as refused:
            await egress.resolve_checked(url, DEFAULT, schemes=("http", "https"))
        assert "only http://, https:// URLs are accepted here" in refused.value.message


# ---- redirects ---------------------------------------------------------------------------------


async def test_a_redirect_to_the_router_admin_api_is_refused(tmp_path: Path) -> None:
    """A `307 -> http://127.0.0.1:<router admin>/stop` hop is re-checked and refused."""
    async with recording_server() as admin:
        stop = f"http://127.0.0.1:{admin.port}/stop"
        async with recording_server({"/app.tgz": redirect(stop)}) as source:
            policy = EgressPolicy.from_env(
                {
                    "SLIPWAY_EGRESS_ALLOW": "127.0.0.1/32",
                    "SLIPWAY_ROUTER_ADMIN_PORT": str(admin.port),
                }
            )
            with pytest.raises(EgressRefused) as refused:
                await _fetch(f"http://127.0.0.1:{source.port}/app.tgz", tmp_path, policy)
    assert f"port {admin.port} of Slipway's own services" in refused.value.message
    assert source.hits == ["GET /app.tgz"]
    assert admin.hits == []


async def test_a_redirect_to_cloud_metadata_is_refused(tmp_path: Path) -> None:
    """An allowed first hop cannot lead to 169.254.169.254."""
    metadata = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    async with recording_server({"/app.tgz": redirect(metadata, 302)}) as source:
        with pytest.raises(EgressRefused) as refused:
            await _fetch(f"http://127.0.0.1:{source.port}/app.tgz", tmp_path, LOOPBACK_ALLOWED)
    assert "169.254.169.254 is a link-local address" in refused.value.message


async def test_a_redirect_from_https_to_http_is_refused(tmp_path: Path) -> None:
    """https -> http would let anyone on the path change the source: refused, not followed."""
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    async with recording_server() as plain:
        to_plain = redirect(f"http://127.0.0.1:{plain.port}/app.tgz", 301)
        async with recording_server({"/app.tgz": to_plain}, tls=server_tls(cert, key)) as tls:
            with pytest.raises(EgressRefused) as refused:
                await _fetch(
                    f"https://localhost:{tls.port}/app.tgz",
                    tmp_path,
                    EgressPolicy.from_env({"SLIPWAY_EGRESS_ALLOW": "127.0.0.1/32,::1/128"}),
                    ssl_context=trust,
                )
    assert "redirects from https to http" in refused.value.message
    assert tls.hits == ["GET /app.tgz"]
    assert plain.hits == []


async def test_redirects_past_the_hop_limit_fail(tmp_path: Path) -> None:
    """A redirect loop stops after max_redirects hops with a reason."""
    async with recording_server({"/loop": redirect("/loop")}) as loop:
        with pytest.raises(FetchFailed) as failed:
            await _fetch(
                f"http://127.0.0.1:{loop.port}/loop", tmp_path, LOOPBACK_ALLOWED, max_redirects=3
            )
    assert "more than 3 redirects" in failed.value.message
    assert len(loop.hits) == 4


# ---- connecting to what was checked, within bounds --------------------------------------------


async def test_the_connection_goes_to_the_checked_address_without_a_second_lookup(
    tmp_path: Path,
) -> None:
    """A name that cannot resolve, pinned to a checked address, is fetched from that address."""
    async with recording_server() as server:
        checked = egress.Destination(
            scheme="http",
            host="checked.invalid",  # .invalid never resolves: a second lookup would fail
            port=server.port,
            addresses=("127.0.0.1",),
            url=f"http://checked.invalid:{server.port}/app.tgz",
        )
        await egress.fetch_once_to_file(checked, tmp_path / "fetched", max_bytes=MIB, timeout=10)
    assert server.hits == ["GET /app.tgz"]
    assert server.hosts == [f"checked.invalid:{server.port}"]


async def test_tls_verifies_the_name_not_the_pinned_address(tmp_path: Path) -> None:
    """Pinned to 127.0.0.1, a name the certificate does not carry fails TLS verification."""
    cert, key = self_signed(tmp_path)  # valid for localhost and 127.0.0.1 only
    async with recording_server(tls=server_tls(cert, key)) as server:
        impostor = egress.Destination(
            scheme="https",
            host="impostor.invalid",
            port=server.port,
            addresses=("127.0.0.1",),
            url=f"https://impostor.invalid:{server.port}/app.tgz",
        )
        with pytest.raises(FetchFailed) as failed:
            await egress.fetch_once_to_file(
                impostor, tmp_path / "fetched", max_bytes=MIB, timeout=10,
                ssl_context=ssl.create_default_context(cafile=str(cert)),
            )  # fmt: skip
    assert "certificate" in failed.value.message.lower()
    assert server.hits == []


@pytest.mark.parametrize("declare", [True, False], ids=["content-length", "chunked"])
async def test_a_source_over_the_byte_limit_is_cut_off(tmp_path: Path, declare: bool) -> None:
    """More than max_bytes fails the fetch, declared or not, without writing past the limit."""
    routes = {"/big.tgz": stream_bytes(3 * MIB, declare=declare)}
    async with recording_server(routes) as server:
        with pytest.raises(FetchFailed) as failed:
            await _fetch(f"http://127.0.0.1:{server.port}/big.tgz", tmp_path, LOOPBACK_ALLOWED)
    assert f"larger than the limit of {MIB} bytes" in failed.value.message
    fetched = tmp_path / "fetched"
    assert not fetched.exists() or fetched.stat().st_size <= MIB


async def test_a_source_that_never_finishes_is_cut_off_in_time(tmp_path: Path) -> None:
    """A server that stalls mid-answer fails the fetch once the time bound passes."""
    async with recording_server({"/slow.tgz": stall_forever}) as server:
        with pytest.raises(FetchFailed) as failed:
            await _fetch(
                f"http://127.0.0.1:{server.port}/slow.tgz", tmp_path, LOOPBACK_ALLOWED, timeout=0.5
            )
    assert "took longer than 0.5 s" in failed.value.message


# ---- the builder's source fetch ---------------------------------------------------------------


def _builder_settings(tmp_path: Path, **overrides: Any) -> BuilderSettings:
    return BuilderSettings(home=str(tmp_path / "home"), source_max_bytes=MIB, **overrides)


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("http://localhost:{port}/app.tgz", "localhost resolves to 127.0.0.1, a loopback address"),
        ("http://127.0.0.1:{port}/app.tgz", "127.0.0.1 is a loopback address"),
        ("http://10.0.0.8:{port}/app.tgz", "10.0.0.8 is a private address"),
        ("http://169.254.169.254:{port}/", "169.254.169.254 is a link-local address"),
    ],
)
async def test_a_customer_source_url_on_the_platform_fails_the_fetch(
    tmp_path: Path, template: str, reason: str
) -> None:
    """The builder refuses a customer's source URL to loopback, private or metadata addresses."""
    async with recording_server() as server:
        blob = SourceBlob(url=template.format(port=server.port))
        with pytest.raises(SourceRejected) as rejected:
            await fetch(blob, tmp_path / "source.tgz", _builder_settings(tmp_path))
    assert rejected.value.message.startswith("the source URL is refused: ")
    assert reason in rejected.value.message
    assert server.hits == []


async def test_a_platform_source_is_fetched_only_from_the_gateway(tmp_path: Path) -> None:
    """A `platform` source naming anything but the gateway's /sources/ is refused unfetched."""
    async with recording_server() as gateway, recording_server() as elsewhere:
        settings = _builder_settings(tmp_path, gateway_url=f"http://127.0.0.1:{gateway.port}")
        ok = SourceBlob(url=f"http://127.0.0.1:{gateway.port}/sources/s1/blob", platform=True)
        assert await fetch(ok, tmp_path / "source.tgz", settings) > 0
        for url in (
            f"http://127.0.0.1:{elsewhere.port}/sources/s1/blob",
            f"http://127.0.0.1:{gateway.port}/apps/other/config-vars",
        ):
            with pytest.raises(SourceRejected) as rejected:
                await fetch(SourceBlob(url=url, platform=True), tmp_path / "x.tgz", settings)
            assert "platform source that is not on the gateway" in rejected.value.message
    assert gateway.hits == ["GET /sources/s1/blob"]
    assert elsewhere.hits == []


async def test_without_a_configured_gateway_a_platform_source_must_be_on_loopback(
    tmp_path: Path,
) -> None:
    """With no gateway_url, a `platform` source off loopback (here 10.x) is refused."""
    blob = SourceBlob(url="http://10.0.0.1:5100/sources/s1/blob", platform=True)
    with pytest.raises(SourceRejected) as rejected:
        await fetch(blob, tmp_path / "source.tgz", _builder_settings(tmp_path))
    assert "platform source that is not on the gateway" in rejected.value.message


@pytest.mark.docker
@pytest.mark.integration
@pytest.mark.slow
async def test_a_refused_source_fails_the_build_with_the_reason(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """The real builder fails the build with a ` !     ` line naming the refused address."""
    async with recording_server() as server, builder_stack(nats_server, tmp_path) as harness:
        source = SourceBlob(url=f"http://localhost:{server.port}/app.tgz")
        cmd = _build_command(harness.app_id(), source)
        result = await harness.send(cmd)
    assert result.status == "failed"
    line = " !     the source URL is refused: localhost resolves to 127.0.0.1, a loopback address"
    assert line in result.text
    assert server.hits == []


def _build_command(app_id: str, source: SourceBlob) -> BuildRequested:
    return BuildRequested(
        build_id=uuid.uuid4().hex,
        app_id=app_id,
        app_name=f"name-{app_id}",
        team_id="team-egress-tests",
        source=source,
        actor="user:tester@example.com",
    )


# ---- the API: sources and drains refused with a 422 -------------------------------------------

ATTACKS = [
    ("http://127.0.0.1:2019/stop", "127.0.0.1 is port 2019 of Slipway's own services"),
    ("http://localhost/app.tgz", "localhost resolves to 127.0.0.1, a loopback address"),
    ("http://10.1.1.1/app.tgz", "10.1.1.1 is a private address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://2130706433/app.tgz", "2130706433 resolves to 127.0.0.1, a loopback address"),
    ("http://0x7f.0.0.1/app.tgz", "0x7f.0.0.1 resolves to 127.0.0.1, a loopback address"),
    ("http://[::ffff:127.0.0.1]/", "a loopback address (it carries 127.0.0.1)"),
    ("http://[::1]/app.tgz", "::1 is a loopback address"),
    ("http://0.0.0.0/app.tgz", "0.0.0.0 is an unspecified address"),
    ("http://[64:ff9b::a00:1]/", "a private address (it carries 10.0.0.1)"),
    ("http://[2002:7f00:1::]/", "a loopback address (it carries 127.0.0.1)"),
    ("https://good@127.0.0.1/app.tgz", "credentials before the host"),
]


@pytest.mark.integration
async def test_the_api_refuses_source_urls_the_guard_refuses(stack: Stack) -> None:
    """POST /apps/{app}/builds answers 422 in Heroku's error body for every attack URL."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "sourced")
    for url, reason in ATTACKS:
        answer = await alice.post("/apps/sourced/builds", {"source_blob": {"url": url}})
        assert (answer.status, answer.error_id) == (422, "invalid_params"), (url, answer.body)
        assert answer.body["message"].startswith("source_blob.url is refused: "), answer.body
        assert reason in answer.body["message"], (url, answer.body)
    assert await alice.ok("GET", "/apps/sourced/builds") == []


@pytest.mark.integration
@pytest.mark.parametrize("gateway_egress_allow", ["127.0.0.1/32"])
async def test_the_api_refuses_a_source_url_naming_the_gateway_itself(stack: Stack) -> None:
    """With loopback allowed, the gateway's own API as a customer source is still refused."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "selfish")
    own = f"{stack.admin.url}/apps/selfish/config-vars"
    answer = await alice.post("/apps/selfish/builds", {"source_blob": {"url": own}})
    assert (answer.status, answer.error_id) == (422, "invalid_params"), answer.body
    assert "of Slipway's own services" in answer.body["message"], answer.body


@pytest.mark.integration
async def test_the_api_refuses_drains_the_guard_refuses(stack: Stack) -> None:
    """POST /apps/{app}/log-drains answers 422 for a drain on loopback, private or metadata."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "drained")
    drains = [(url.replace("http://", "https://"), reason) for url, reason in ATTACKS[:-1]] + [
        ("syslog+tls://127.0.0.1:6514", "127.0.0.1 is a loopback address"),
        ("syslog+tls://localhost:6514", "localhost resolves to 127.0.0.1"),
        ("syslog+tls://[fe80::1]:6514", "fe80::1 is a link-local address"),
        ("https://good@127.0.0.1/logs", "127.0.0.1 is a loopback address"),
    ]
    for url, reason in drains:
        answer = await alice.post("/apps/drained/log-drains", {"url": url})
        assert (answer.status, answer.error_id) == (422, "invalid_params"), (url, answer.body)
        assert answer.body["message"].startswith("The drain URL is refused: "), answer.body
        assert reason in answer.body["message"], (url, answer.body)


# ---- drains refused when they connect ---------------------------------------------------------


@pytest.fixture
def gateway_egress_allow() -> str:
    """The gateway's SLIPWAY_EGRESS_ALLOW; a test parametrizes it to let a drain be added."""
    return ""


@pytest.fixture
async def gateway_service(
    nats_server: NatsServer,
    slipway_home: Path,
    keyring_service: Any,
    gateway_egress_allow: str,
) -> AsyncIterator[Any]:
    """The real gateway with the test's egress setting."""
    settings = gateway_settings(nats_server.url, slipway_home, egress_allow=gateway_egress_allow)
    service = create_gateway(settings)
    task = await run_in_background(service)
    yield service
    await stop_service(service, task)


@pytest.mark.docker
@pytest.mark.integration
@pytest.mark.parametrize("gateway_egress_allow", ["127.0.0.1/32,::1/128"])
@pytest.mark.parametrize("scheme", ["https", "syslog+tls"])
async def test_a_drain_that_now_resolves_to_loopback_shows_why_it_is_refused(
    stack: Stack,
    shipper_settings: ShipperFactory,
    start_shipper: Any,
    tmp_path: Path,
    scheme: str,
) -> None:
    """Accepted when added, refused when it connects: `slipway drains` and the log say why."""
    # The gateway allowed loopback when the drain was added; the log-shipper, like DNS that
    # changed since, does not: the drain's name now resolves to a refused address.
    cert, key = self_signed(tmp_path)
    running = await start_shipper(shipper_settings(drain_ca_file=str(cert), egress_allow=""))
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "rebound")
    async with _drain_endpoint(scheme, server_tls(cert, key)) as (url, received):
        drain = await alice.ok("POST", "/apps/rebound/log-drains", {"url": url}, 201)
        line: RawLine = (time.time(), "app", "web.1", "a line for the drain", False)
        await running.shipper.add(app["id"], [line], app["team"]["id"])

        async def refused() -> str:
            listed = await slipway(alice, tmp_path, "drains", "-a", "rebound")
            assert "refused: localhost resolves to 127.0.0.1, a loopback address" in listed.out
            return listed.out

        await assert_eventually(refused, timeout=20, interval=0.3)

        async def logged() -> None:
            logs = await slipway(alice, tmp_path, "logs", "-a", "rebound", "-n", "50")
            notice = f"heroku[logplex]: drain {drain['token']} is not shipping, refused:"
            assert notice in logs.out, logs.out

        await assert_eventually(logged, timeout=20, interval=0.3)
        assert received() == []


@pytest.mark.integration
@pytest.mark.parametrize("gateway_egress_allow", ["127.0.0.1/32,::1/128"])
async def test_a_drain_redirect_to_the_router_admin_is_not_followed(
    stack: Stack,
    shipper_settings: ShipperFactory,
    start_shipper: Any,
    tmp_path: Path,
) -> None:
    """An HTTPS drain answering `307 -> http://127.0.0.1:<router admin>/stop` is a failure."""
    cert, key = self_signed(tmp_path)
    running = await start_shipper(shipper_settings(drain_ca_file=str(cert)))
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "bounced")
    async with recording_server() as admin:
        stop = redirect(f"http://127.0.0.1:{admin.port}/stop")
        async with recording_server({"/logs": stop}, tls=server_tls(cert, key)) as drain_end:
            url = f"https://localhost:{drain_end.port}/logs"
            await alice.ok("POST", "/apps/bounced/log-drains", {"url": url}, 201)
            line: RawLine = (time.time(), "app", "web.1", "a line for the drain", False)
            await running.shipper.add(app["id"], [line], app["team"]["id"])

            async def failing() -> None:
                listed = await alice.ok("GET", "/apps/bounced/log-drains")
                assert "answered 307 (a redirect)" in listed[0]["status"], listed

            await assert_eventually(failing, timeout=20)
    assert drain_end.hits and set(drain_end.hits) == {"POST /logs"}
    assert admin.hits == []


@contextlib.asynccontextmanager
async def _drain_endpoint(
    scheme: str, tls: ssl.SSLContext
) -> AsyncIterator[tuple[str, Callable[[], list[str]]]]:
    """A drain endpoint of `scheme` on localhost: its URL, and what it has received."""
    if scheme == "https":
        async with recording_server(tls=tls) as server:
            yield f"https://localhost:{server.port}/logs", lambda: list(server.hits)
        return
    async with syslog_server(tls) as (collector, port):
        yield f"syslog+tls://localhost:{port}", lambda: list(collector.messages)
