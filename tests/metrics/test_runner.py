"""Every ServiceApp's metrics: its private socket, the settings, bus messages and consumer lag."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import msgspec
import pytest

from slipway.contracts import gateway as gw
from slipway.contracts import keyring, subjects
from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus
from slipway.libs.haproxy.paths import free_port
from slipway.libs.metrics import socket_path
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from slipway.libs.service.settings import Settings
from tests.conftest import assert_eventually
from tests.gateway.conftest import Stack, run_in_background, stop
from tests.metrics.scrape import parse, samples, total, value

pytestmark = pytest.mark.integration

NOBODY = 65534
needs_another_user = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="switching to another user needs root and setpriv (util-linux)",
)


@pytest.fixture
def open_home() -> Iterator[Path]:
    """A home others may pass through (0711 up from /tmp), so only the socket's mode guards it."""
    root = Path(tempfile.mkdtemp(prefix="slipmet-", dir="/tmp"))
    root.chmod(0o711)
    home = root / "home"
    home.mkdir(mode=0o711)
    home.chmod(0o711)
    try:
        yield home
    finally:
        shutil.rmtree(root, ignore_errors=True)


@asynccontextmanager
async def started(service: ServiceApp) -> AsyncIterator[ServiceApp]:
    """`service` running in this loop for the block, stopped after it."""
    task = await run_in_background(service)
    try:
        yield service
    finally:
        await stop(service, task)


def bare(
    nats: NatsServer, home: Path, name: Service = Service.BACKUP, **extra: object
) -> ServiceApp:
    """A ServiceApp with no handlers of its own: what the runner alone gives every service."""
    settings = Settings(nats_url=nats.url, home=str(home), shutdown_grace=5.0, **extra)  # type: ignore[arg-type]
    return ServiceApp(name, settings=settings)


def connect_as_nobody(path: Path) -> subprocess.CompletedProcess[str]:
    """Ask for /metrics on `path` as `nobody`, as another local user would."""
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    attempt = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.connect(sys.argv[1])\n"
        "s.sendall(b'GET /metrics HTTP/1.0\\r\\n\\r\\n')\n"
        "print(s.recv(200))\n"
    )
    as_nobody = [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return subprocess.run(
        ["setpriv", *as_nobody, python, "-c", attempt, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@needs_another_user
async def test_the_socket_is_the_operators_alone(nats_server: NatsServer, open_home: Path) -> None:
    """0600 in a 0700 folder; with the folder opened up, the socket's own mode still refuses."""
    async with started(bare(nats_server, open_home)) as service:
        sock = socket_path(open_home, "backup")
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        assert value(await samples(sock), "slipway_service_start_time_seconds", service="backup")
        refused = await asyncio.to_thread(connect_as_nobody, sock)
        assert refused.returncode != 0 and "PermissionError" in refused.stderr, refused
        sock.parent.chmod(0o711)  # an operator's mistake: now only the socket's mode guards it
        refused = await asyncio.to_thread(connect_as_nobody, sock)
        assert refused.returncode != 0 and "PermissionError" in refused.stderr, refused
        # The check itself works: the operator, its owner, still reads it.
        assert (await samples(sock)) and service.started.is_set()


async def test_a_folder_open_to_others_gets_no_socket(
    nats_server: NatsServer, slipway_home: Path
) -> None:
    """A state folder others may enter is refused for the socket; the service runs on."""
    folder = slipway_home / "backup"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    async with started(bare(nats_server, slipway_home)) as service:
        assert service.started.is_set()
        assert not socket_path(slipway_home, "backup").exists()


async def test_metrics_off_serves_nothing_and_counts_nothing(
    nats_server: NatsServer, slipway_home: Path
) -> None:
    """SLIPWAY_METRICS=off: no socket, and the bus carries no instrumentation."""
    async with started(bare(nats_server, slipway_home, metrics="off")) as service:
        assert not socket_path(slipway_home, "backup").exists()
        assert service.bus.metrics is None


async def test_a_loopback_port_when_asked(nats_server: NatsServer, slipway_home: Path) -> None:
    """SLIPWAY_METRICS_PORT serves the same exposition on 127.0.0.1."""
    port = free_port()
    async with started(bare(nats_server, slipway_home, metrics_port=port)):
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as answer,
        ):
            assert answer.status == 200
            found = parse(await answer.text())
        assert value(found, "slipway_service_start_time_seconds", service="backup") > 0


async def test_a_refused_rpc_is_counted_with_its_code(stack: Stack) -> None:
    """A request the keyring refuses moves served{outcome=code} and errors{code} by exactly one."""
    sock = socket_path(stack.home, "keyring")
    verb = f"keyring.{keyring.PUBKEY_GET.name}"
    before = await samples(sock)
    # A malformed request, sent raw as a confused or hostile peer would.
    answer = await stack.bus.nc.request(keyring.PUBKEY_GET.subject, b"{not json", timeout=5)
    code = msgspec.json.decode(answer.data)["code"]
    assert code == "invalid_request"
    after = await samples(sock)
    name = "slipway_bus_requests_total"
    labels = {"direction": "served", "subject_kind": "rpc", "verb": verb, "outcome": code}
    assert value(after, name, **labels) - value(before, name, **labels) == 1
    errors = "slipway_bus_errors_total"
    assert value(after, errors, code=code) - value(before, errors, code=code) == 1


async def test_consumer_lag_and_handled_events(nats_server: NatsServer, slipway_home: Path) -> None:
    """Three events held by a busy handler show as 3 pending; released, 3 ok and lag 0."""
    service = bare(nats_server, slipway_home, Service.BUILDER)
    release = asyncio.Event()
    failed_once: set[str] = set()

    @service.event("metricslag", gw.APP_DESTROYED)
    async def destroyed(event: gw.AppDestroyed) -> None:
        if event.name == "flaky" and event.event_id not in failed_once:
            failed_once.add(event.event_id)
            raise RuntimeError("the first try fails: a retry is counted")
        await release.wait()

    durable = subjects.durable(Service.BUILDER, "metricslag")
    sock = socket_path(slipway_home, "builder")
    async with started(service):
        publisher = await Bus.connect(nats_server.url, "gateway")
        try:
            for name in ("one", "two", "flaky"):
                event = gw.AppDestroyed(app_id=name, name=name, team_id="t", actor="a")
                await publisher.publish(gw.APP_DESTROYED, event)

            async def held() -> None:
                found = await samples(sock)
                pending = value(found, "slipway_consumer_pending", stream="EVT", consumer=durable)
                assert pending == 3, pending

            await assert_eventually(held, timeout=20)
            release.set()

            async def drained() -> None:
                found = await samples(sock)
                name = "slipway_bus_messages_handled_total"
                assert value(found, name, kind=gw.APP_DESTROYED.subject, outcome="ok") == 3
                assert value(found, name, kind=gw.APP_DESTROYED.subject, outcome="retry") == 1
                assert total(found, "slipway_consumer_pending", consumer=durable) == 0

            await assert_eventually(drained, timeout=20)
        finally:
            await publisher.close()
