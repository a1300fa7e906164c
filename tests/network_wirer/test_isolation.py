"""Isolation, tested from inside app A's dyno: only the router's public port answers.

The platform binds to loopback, which a container cannot reach anyway; to prove
the firewall itself, stand-ins for the gateway and the registry and a real NATS
listen on *every* address here, so only the isolation chain (the test scope's
own, `SLIPWAY-ISO-TST…`) stands between them and the dyno.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import aiodocker
import pytest

from slipway.contracts.gateway import APP_DESTROYED, AppDestroyed
from slipway.contracts.scope import Scope
from slipway.libs import appnet
from slipway.libs.haproxy import HAProxyServer, RouterPorts
from slipway.libs.natsserver import NatsServer
from tests.conftest import assert_eventually
from tests.network_wirer.conftest import Dynos, RunningWirer, World, booted_haproxy

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]

PROBE = """
import json, socket, sys
out = {}
for name, host, port in json.loads(sys.argv[1]):
    s = socket.socket()
    s.settimeout(1.5)
    try:
        s.connect((host, port))
        out[name] = "open"
    except OSError as exc:
        out[name] = type(exc).__name__
    finally:
        s.close()
print(json.dumps(out))
"""


async def _listener() -> tuple[asyncio.Server, int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "0.0.0.0", 0)  # noqa: S104 - on purpose
    return server, int(server.sockets[0].getsockname()[1])


async def _iptables(*argv: str, stdin: bytes | None = None) -> str | None:
    process = await asyncio.create_subprocess_exec(
        "iptables" if stdin is None else "iptables-restore",
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await process.communicate(stdin)
    return out.decode() if process.returncode == 0 else None


async def remove_chain(chain: str) -> None:
    """Remove a test scope's chain and its jump (network-wirer leaves them in place)."""
    await _iptables("-D", "INPUT", "-j", chain)
    await _iptables("-F", chain)
    await _iptables("-X", chain)


@pytest.fixture
def public_router() -> Iterator[HAProxyServer]:
    """HAProxy with its public ports on every address, as in production."""
    with booted_haproxy(RouterPorts(http_port=0, https_port=0), "slipway-iso-") as server:
        yield server


async def test_dyno_reaches_only_the_router(
    world: World,
    dynos: Dynos,
    wirer: RunningWirer,
    public_router: HAProxyServer,
    tmp_path: Path,
    scope: Scope,
) -> None:
    """From app A: app B, NATS, the gateway and the registry are unreachable."""
    nats = NatsServer(tmp_path / "open-nats", host="0.0.0.0")  # noqa: S104 - on purpose
    await asyncio.to_thread(nats.start)
    gateway, gateway_port = await _listener()
    registry, registry_port = await _listener()
    docker = aiodocker.Docker()
    a, b = world.app("iso-a"), world.app("iso-b")
    ports = public_router.ports
    try:
        await wirer.start(
            router_http_port=ports.http_port,
            router_https_port=ports.https_port,
            router_listen_host="",
            haproxy_data=str(public_router.paths.data_dir),
            manage_networks=True,
            isolation=True,
        )
        # network-wirer makes no network; the scheduler makes each with the app's first
        # dyno, after this wirer's last pass: the chain holds known apps' bridges already.
        names = [n["Name"] for n in await docker.networks.list()]
        assert scope.network(a.app_id) not in names and scope.network(b.app_id) not in names
        for app in (a, b):
            await appnet.ensure_app_network(docker, app.app_id, scope=scope)
        dyno_a = await dynos.start(a, network=scope.network(a.app_id))
        dyno_b = await dynos.start(b, network=scope.network(b.app_id))
        network_a = await docker.networks.get(scope.network(a.app_id))
        host_ip = (await network_a.show())["IPAM"]["Config"][0]["Gateway"]
        b_ip = await dynos.ip(dyno_b, scope.network(b.app_id))
        targets = [
            ("app-b", b_ip, 5000),
            ("nats", host_ip, nats.port),
            ("gateway", host_ip, gateway_port),
            ("registry", host_ip, registry_port),
            ("router", host_ip, ports.http_port),
        ]
        code, out = await dynos.exec(dyno_a, "python3", "-c", PROBE, json.dumps(targets))
        assert code == 0, out
        reached = json.loads(out)
        assert reached["router"] == "open"
        for name in ("app-b", "nats", "gateway", "registry"):
            assert reached[name] != "open", (name, reached)

        # Destroying app B removes its network once its dynos are gone.
        await dynos.cleanup()
        await world.gateway.publish(
            APP_DESTROYED, AppDestroyed(app_id=b.app_id, name="iso-b", team_id="team", actor="t")
        )

        async def b_network_gone() -> None:
            names = [n["Name"] for n in await docker.networks.list()]
            assert scope.network(b.app_id) not in names

        await assert_eventually(b_network_gone, timeout=20)
    finally:
        await wirer.stop()
        await dynos.cleanup()
        for app in (a, b):
            with contextlib.suppress(aiodocker.DockerError):
                await (await docker.networks.get(scope.network(app.app_id))).delete()
        await remove_chain(scope.chain)
        await docker.close()
        gateway.close()
        registry.close()
        await asyncio.to_thread(nats.stop)
