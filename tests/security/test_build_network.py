"""The build network's firewall: a build reaches public addresses, never private or link-local ones.

Real builds (Dockerfile RUN steps, in the same fenced containers and on the same
network as buildpack builds) try to reach servers the test runs in a network
namespace of its own, routed from the host through a veth pair: one address in a
private range, one link-local (the 169.254.169.254 kind, where cloud metadata
lives), one public-style address the guard allows (198.51.100.0/24). Plus the
chains themselves: named per network, rebuilt idempotently, pruned with the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiodocker
import pytest
import pytest_asyncio

from slipway.libs.egress import EgressPolicy, policy_for
from slipway.libs.natsserver import NatsServer
from slipway.services.builder.container import ensure_network
from slipway.services.builder.firewall import (
    BuildFirewall,
    chain_names,
    firewall_rules,
    resolvers,
)
from tests.builder.conftest import BuildResult, Harness, builder_stack, tarball

RUN_STACK = "slipway/stack-run:bookworm"
PORT = 8080

T = TypeVar("T", bound=Callable[..., Awaitable[None]])


def real_build(test: T) -> T:
    """The marks of a test that runs a real build (the module also has plain unit tests)."""
    for mark in (
        pytest.mark.asyncio(loop_scope="session"),
        pytest.mark.docker,
        pytest.mark.slow,
        pytest.mark.integration,
        pytest.mark.timeout(300),
    ):
        test = mark(test)
    return test


# The namespace's server: answers every GET with a fixed body and logs each path it served.
SERVER = """\
import http.server, sys
log = open(sys.argv[1], "a", buffering=1)
class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        log.write(self.path + "\\n")
        body = b"NAMESPACE-ANSWERED\\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
server = http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[2])), Answer)
print("listening", flush=True)
server.serve_forever()
"""


@dataclass(frozen=True)
class Namespace:
    """Addresses routed from the host into the test's namespace, and its server's log."""

    private: str
    link_local: str
    public: str
    log: Path

    def served(self) -> list[str]:
        return [line.lstrip("/") for line in self.log.read_text().split()]


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True)


@pytest.fixture(scope="module")
def namespace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Namespace]:
    """A network namespace behind a veth pair, with an HTTP server on all its addresses."""
    token = uuid.uuid4().hex[:8]
    octet = int(token[:2], 16) % 200 + 20
    ns, host_end, ns_end = f"slw-test-{token}", f"slwh{token}", f"slwn{token}"
    found = Namespace(
        f"10.213.{octet}.2", f"169.254.{octet}.2", f"198.51.100.{octet}",
        tmp_path_factory.mktemp("netns") / "served.log",
    )  # fmt: skip
    found.log.write_text("")
    _ip("netns", "add", ns)
    server: subprocess.Popen[bytes] | None = None
    try:
        _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        _ip("link", "set", ns_end, "netns", ns)
        _ip("addr", "add", f"10.213.{octet}.1/24", "dev", host_end)
        _ip("link", "set", host_end, "up")
        for address in (found.link_local, found.public):
            _ip("route", "add", f"{address}/32", "dev", host_end)
        inside = ("-n", ns)
        _ip(*inside, "addr", "add", f"{found.private}/24", "dev", ns_end)
        for address in (found.link_local, found.public):
            _ip(*inside, "addr", "add", f"{address}/32", "dev", ns_end)
        _ip(*inside, "link", "set", ns_end, "up")
        _ip(*inside, "link", "set", "lo", "up")
        _ip(*inside, "route", "add", "default", "via", f"10.213.{octet}.1")
        script = found.log.parent / "server.py"
        script.write_text(SERVER)
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(script), str(found.log), str(PORT)],
            stdout=subprocess.PIPE,
        )
        assert server.stdout is not None
        assert server.stdout.readline() == b"listening\n"  # bound: no request can race it
        yield found
    finally:
        if server is not None:
            server.kill()
            server.wait()
            if server.stdout is not None:
                server.stdout.close()
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", host_end)
        _ip("netns", "del", ns)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    """A builder of its own, with no address allowed beyond the guard's defaults."""
    home = tmp_path_factory.mktemp("build-network-home")
    nats = NatsServer(home / "nats")
    nats.start()
    try:
        async with builder_stack(nats, home, egress_allow="", build_timeout=150.0) as h:
            yield h
    finally:
        nats.stop()


async def curl_build(h: Harness, address: str, path: str) -> BuildResult:
    """A build whose RUN fetches http://<address>:PORT/<path>, printing REACHED-42 if it can."""
    run = f"RUN curl -sS --max-time 20 http://{address}:{PORT}/{path} && echo REACHED-$((40 + 2))"
    return await h.build(tarball({"Dockerfile": f"FROM {RUN_STACK}\n{run}\n"}), app_id=h.app_id())


@real_build
async def test_private_address_is_unreachable_from_a_build(
    stack: Harness, namespace: Namespace
) -> None:
    """A RUN step cannot reach a server on a private (10/8) address routed from the host."""
    path = "private-" + uuid.uuid4().hex
    result = await curl_build(stack, namespace.private, path)
    assert result.status == "failed"
    assert "REACHED-42" not in result.text
    assert "NAMESPACE-ANSWERED" not in result.text
    assert path not in namespace.served()


@real_build
async def test_link_local_address_is_unreachable_from_a_build(
    stack: Harness, namespace: Namespace
) -> None:
    """A RUN step cannot reach a link-local (169.254/16, the metadata kind) server."""
    path = "link-local-" + uuid.uuid4().hex
    result = await curl_build(stack, namespace.link_local, path)
    assert result.status == "failed"
    assert "REACHED-42" not in result.text
    assert path not in namespace.served()


@real_build
async def test_public_address_is_reachable_from_a_build(
    stack: Harness, namespace: Namespace
) -> None:
    """A RUN step reaches a server on a non-private address (as it would a package registry)."""
    path = "public-" + uuid.uuid4().hex
    result = await curl_build(stack, namespace.public, path)
    assert result.status == "succeeded", result.text
    assert "NAMESPACE-ANSWERED" in result.text
    assert "REACHED-42" in result.text
    assert path in namespace.served()


def _rules() -> str:
    return subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout


def test_chains_are_named_per_network() -> None:
    """Two build networks get different chains; names fit iptables' 28 characters."""
    builds, other = chain_names("slipway-builds"), chain_names("slipway-test-builds-x")
    assert not set(builds) & set(other)
    assert all(len(name) <= 28 for name in (*builds, *other))


def test_operator_allow_comes_before_the_default_deny() -> None:
    """SLIPWAY_EGRESS_ALLOW lets a private range through; SLIPWAY_EGRESS_DENY refuses first."""
    policy = policy_for(allow="10.9.0.0/16", deny="8.8.8.0/24")
    rules = firewall_rules("slipway-builds", policy)
    _, forward = chain_names("slipway-builds")
    allow = rules.index(f"-A {forward} -d 10.9.0.0/16 -j RETURN")
    deny = next(i for i, rule in enumerate(rules) if rule.startswith(f"-A {forward} -d 8.8.8.0/24"))
    private = next(
        i for i, rule in enumerate(rules) if rule.startswith(f"-A {forward} -d 10.0.0.0/8")
    )
    assert deny < allow < private
    assert rules[-1] == f"-A {forward} -j RETURN"


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.docker
async def test_apply_twice_leaves_one_jump_and_remove_takes_all(unique: str) -> None:
    """Applying again keeps one jump per chain; `remove` leaves no trace of the network."""
    network = f"slipway-test-fw-{unique}"
    docker = aiodocker.Docker()
    firewall = BuildFirewall(network, EgressPolicy())
    try:
        await ensure_network(docker, network)
        await firewall.apply(docker)
        await firewall.apply(docker)
        listing = await asyncio.to_thread(_rules)
        for chain in chain_names(network):
            assert sum(line.endswith(f"-j {chain}") for line in listing.splitlines()) == 1
    finally:
        await firewall.remove()
        with contextlib.suppress(aiodocker.DockerError):
            await (await docker.networks.get(network)).delete()
        await docker.close()
    listing = await asyncio.to_thread(_rules)
    assert not any(chain in listing for chain in chain_names(network))


@real_build
async def test_add_url_on_a_public_address_is_fetched(stack: Harness, namespace: Namespace) -> None:
    """`ADD http://<public address>/file` passes the egress guard and lands in the image."""
    path = "added-" + uuid.uuid4().hex
    url = f"http://{namespace.public}:{PORT}/{path}"
    dockerfile = f"FROM {RUN_STACK}\nADD --chmod=644 {url} /app/added.txt\nRUN cat /app/added.txt\n"
    result = await stack.build(tarball({"Dockerfile": dockerfile}), app_id=stack.app_id())
    assert result.status == "succeeded", result.text
    assert "NAMESPACE-ANSWERED\n" in result.lines
    assert path in namespace.served()


def test_host_resolvers_are_reachable_on_port_53_only(tmp_path: Path) -> None:
    """A private resolver from resolv.conf passes on port 53 (udp, tcp) and nothing else."""
    conf = tmp_path / "resolv.conf"
    conf.write_text("search example\nnameserver 10.255.255.53\nnameserver 127.0.0.53\n")
    servers = resolvers([str(conf), str(tmp_path / "missing.conf")])
    assert servers == ["10.255.255.53"]  # loopback resolvers are the host's own business
    rules = firewall_rules("slipway-builds", EgressPolicy(), servers)
    inbound, forward = chain_names("slipway-builds")
    for chain in (inbound, forward):
        allowed = [rule for rule in rules if rule.startswith(f"-A {chain} -d 10.255.255.53/32")]
        assert allowed == [
            f"-A {chain} -d 10.255.255.53/32 -p udp --dport 53 -j RETURN",
            f"-A {chain} -d 10.255.255.53/32 -p tcp --dport 53 -j RETURN",
        ]
