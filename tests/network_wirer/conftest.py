"""Fixtures for network-wirer: real HAProxy, real containers, and a small stand-in world.

- `haproxy_server`: HAProxy from Debian on free loopback ports, started as the supervisor
  starts it (`libs/haproxy` on its starting configuration), its files in a short folder;
- `world`: the gateway's DESIRED_GET and the scheduler's DYNOS_LIST answered from
  in-test state (the real scheduler is not needed to route), plus helpers that
  publish DYNO_CHANGED / MAINTENANCE_CHANGED as those services would;
- `dyno_image`: a tiny web/websocket server FROM slipway/stack-run:bookworm;
- `dynos`: starts containers of that image with the scheduler's labels, published
  on 127.0.0.1, and removes them at the end;
- `wirer`: the real network-wirer ServiceApp in this event loop (`wirer.start()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import pytest
from msgspec.structs import replace
from multidict import CIMultiDictProxy

from slipway.contracts.gateway import (
    APP_FEATURE_CHANGED,
    DESIRED_GET,
    MAINTENANCE_CHANGED,
    AppDesired,
    AppFeatureChanged,
    DesiredState,
    GetDesired,
    MaintenanceChanged,
)
from slipway.contracts.scheduler import (
    DYNO_CHANGED,
    DYNOS_LIST,
    LABEL_APP,
    LABEL_APP_NAME,
    LABEL_DYNO,
    LABEL_MANAGED,
    LABEL_TYPE,
    Dyno,
    DynoChanged,
    DynoList,
    DynoState,
    ListDynos,
)
from slipway.contracts.scope import Scope
from slipway.libs.bus import Bus
from slipway.libs.haproxy import HAProxyServer, RouterPorts, haproxy_binary, starting_config
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from slipway.services.network_wirer.app import WIRER, create_service
from slipway.services.network_wirer.settings import WirerSettings
from slipway.services.network_wirer.wirer import Wirer
from tests.gateway.conftest import (  # noqa: F401 - the gateway stack, for the domains tests
    gateway_service,
    keyring_service,
    slipway_home,
    stack,
)

RUN_STACK = "slipway/stack-run:bookworm"
TEST_LABEL = "org.slipway.test.network-wirer"
DYNO_PORT = 5000
SERVER = Path(__file__).parent / "dyno" / "server.py"


@contextlib.contextmanager
def booted_haproxy(ports: RouterPorts, prefix: str = "slipway-nw-") -> Iterator[HAProxyServer]:
    """A real HAProxy started as the supervisor starts it (`libs/haproxy` on its starting
    configuration, which network-wirer replaces), in a short folder under /tmp (a unix
    socket's path is limited to 107 bytes); stopped and removed afterwards."""
    try:
        haproxy_binary()
    except FileNotFoundError:
        pytest.skip("haproxy is not installed (apt-get install -y haproxy)")
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    server = HAProxyServer(folder / "haproxy", ports)
    server.paths.data_dir.mkdir(mode=0o700)
    server.paths.config.write_text(starting_config(server.paths, server.ports))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def haproxy_server() -> Iterator[HAProxyServer]:
    """A real HAProxy on free loopback ports, as the supervisor starts it."""
    with booted_haproxy(RouterPorts(0, 0, "127.0.0.1")) as server:
        yield server


@dataclass
class World:
    """What the gateway and the scheduler would say, kept by the test."""

    gateway: Bus
    scheduler: Bus
    apps: dict[str, AppDesired] = field(default_factory=dict)
    dynos: dict[tuple[str, str], Dyno] = field(default_factory=dict)

    def app(self, name: str, *, domains: list[str] | None = None) -> AppDesired:
        app = AppDesired(
            app_id=uuid.uuid4().hex, app_name=name, team_id="team", domains=domains or []
        )
        self.apps[app.app_id] = app
        return app

    async def set_dyno(self, dyno: Dyno, *, announce: bool = True) -> None:
        """Record the dyno's state and (unless told otherwise) publish DYNO_CHANGED."""
        self.dynos[(dyno.app_id, dyno.name)] = dyno
        if announce:
            await self.scheduler.publish(DYNO_CHANGED, DynoChanged(dyno=dyno))

    async def dyno_state(self, dyno: Dyno, state: DynoState, *, announce: bool = True) -> Dyno:
        changed = replace(dyno, state=state)
        await self.set_dyno(changed, announce=announce)
        return changed

    async def hsts(self, app: AppDesired, on: bool) -> AppDesired:
        """Switch the app feature `hsts` as the gateway would (and announce it)."""
        changed = replace(app, hsts=on)
        self.apps[app.app_id] = changed
        await self.gateway.publish(
            APP_FEATURE_CHANGED,
            AppFeatureChanged(
                app_id=app.app_id,
                name=app.app_name,
                team_id="team",
                feature="hsts",
                enabled=on,
                actor="t",
            ),
        )
        return changed

    async def maintenance(self, app: AppDesired, on: bool) -> AppDesired:
        changed = replace(app, maintenance=on)
        self.apps[app.app_id] = changed
        await self.gateway.publish(
            MAINTENANCE_CHANGED,
            MaintenanceChanged(
                app_id=app.app_id, name=app.app_name, team_id="team", maintenance=on, actor="t"
            ),
        )
        return changed


@pytest.fixture
async def world(bus_factory: Callable[[str], Awaitable[Bus]]) -> World:
    """DESIRED_GET and DYNOS_LIST answered from the test's own state."""
    world = World(await bus_factory("gateway"), await bus_factory("scheduler"))

    async def desired(request: GetDesired) -> DesiredState:
        return DesiredState(apps=list(world.apps.values()))

    async def dynos(request: ListDynos) -> DynoList:
        return DynoList(dynos=[d for d in world.dynos.values() if d.process_type == "web"])

    await world.gateway.serve(DESIRED_GET, desired)
    await world.scheduler.serve(DYNOS_LIST, dynos)
    return world


@dataclass
class RunningWirer:
    """A network-wirer ServiceApp running in this loop; start/stop it at will."""

    settings: WirerSettings
    service: ServiceApp | None = None
    task: asyncio.Task[None] | None = None

    async def start(self, **overrides: Any) -> Wirer:
        settings = replace(self.settings, **overrides) if overrides else self.settings
        self.service = create_service(settings)
        self.task = asyncio.create_task(self.service.run(install_signals=False))
        started = asyncio.ensure_future(self.service.started.wait())
        await asyncio.wait({started, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if self.task.done():
            started.cancel()
            await self.task  # raises what stopped it
        return self.service[WIRER]

    async def stop(self) -> None:
        if self.service is not None and self.task is not None:
            self.service.stop()
            await self.task
        self.service = None
        self.task = None


@pytest.fixture
async def wirer(
    nats_server: NatsServer, haproxy_server: HAProxyServer, tmp_path: Path, scope: Scope
) -> AsyncIterator[RunningWirer]:
    """network-wirer's settings for this test's NATS, HAProxy and scope; not started yet."""
    settings = WirerSettings(
        scope=scope.name,
        nats_url=nats_server.url,
        home=str(tmp_path / "home"),
        router_http_port=haproxy_server.ports.http_port,
        router_https_port=haproxy_server.ports.https_port,
        router_listen_host="127.0.0.1",
        haproxy_data=str(haproxy_server.paths.data_dir),
        router_check_interval=1.0,
        reconcile_interval=60.0,  # events drive the tests; the periodic test lowers it
        probe_interval=0.0,  # uptime probes would reach the dynos; test_uptime.py turns them on
        manage_networks=False,
        isolation=False,
        shutdown_grace=5.0,
    )
    running = RunningWirer(settings)
    yield running
    await running.stop()


def _context(files: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


@pytest.fixture(scope="session")
def dyno_image() -> Iterator[str]:
    """The test dyno image, built once per session from the run stack, removed after."""
    if subprocess.run(["docker", "image", "inspect", RUN_STACK], capture_output=True).returncode:
        pytest.skip(f"{RUN_STACK} is not built (scripts/build-stack)")
    server = SERVER.read_bytes()
    tag = (
        f"slipway-test-wirer-dyno:{hashlib.sha256(server).hexdigest()[:12]}-{uuid.uuid4().hex[:6]}"
    )
    dockerfile = (
        f"FROM {RUN_STACK}\nCOPY server.py /app/server.py\nLABEL {TEST_LABEL}=1\n"
        'CMD ["python3", "/app/server.py"]\n'
    ).encode()
    context = _context({"Dockerfile": dockerfile, "server.py": server})
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, "-"],
        input=context.read(),
        check=True,
        capture_output=True,
    )
    try:
        yield tag
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


@dataclass
class Dynos:
    """Starts test dynos (containers) and removes every one at the end."""

    docker: aiodocker.Docker
    image: str
    scope: Scope
    containers: list[str] = field(default_factory=list)

    async def start(
        self, app: AppDesired, name: str = "web.1", *, network: str | None = None
    ) -> Dyno:
        """A running web dyno of `app`, published on 127.0.0.1; returns it `up`."""
        config: dict[str, Any] = {
            "Image": self.image,
            "Env": [f"PORT={DYNO_PORT}", f"DYNO={name}"],
            "ExposedPorts": {f"{DYNO_PORT}/tcp": {}},
            "Labels": {
                TEST_LABEL: "1",
                LABEL_MANAGED: self.scope.managed,
                LABEL_APP: app.app_id,
                LABEL_APP_NAME: app.app_name,
                LABEL_TYPE: name.split(".")[0],
                LABEL_DYNO: name,
            },
            "HostConfig": {
                "PortBindings": {f"{DYNO_PORT}/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]},
                "NetworkMode": network or "bridge",
                "CapDrop": ["ALL"],
                "SecurityOpt": ["no-new-privileges"],
            },
        }
        container = await self.docker.containers.create(
            config, name=f"slipway-test-wirer-{uuid.uuid4().hex[:10]}"
        )
        self.containers.append(container.id)
        await container.start()
        info = await container.show()
        port = int(info["NetworkSettings"]["Ports"][f"{DYNO_PORT}/tcp"][0]["HostPort"])
        await _wait_http(f"http://127.0.0.1:{port}/")
        return Dyno(
            app_id=app.app_id,
            app_name=app.app_name,
            team_id=app.team_id,
            name=name,
            process_type=name.split(".")[0],
            release_version=1,
            state="up",
            host_id="local",
            container_id=container.id,
            address="127.0.0.1",
            port=port,
        )

    async def kill(self, dyno: Dyno) -> None:
        """SIGKILL the dyno's container (it stays, stopped, until cleanup)."""
        assert dyno.container_id is not None
        await self.docker.containers.container(dyno.container_id).kill()

    async def ip(self, dyno: Dyno, network: str) -> str:
        assert dyno.container_id is not None
        info = await self.docker.containers.container(dyno.container_id).show()
        return str(info["NetworkSettings"]["Networks"][network]["IPAddress"])

    async def exec(self, dyno: Dyno, *argv: str) -> tuple[int, str]:
        """Run a command inside the dyno's container; its exit code and output."""
        assert dyno.container_id is not None
        process = await asyncio.create_subprocess_exec(
            "docker",
            "exec",
            dyno.container_id,
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await process.communicate()
        return process.returncode or 0, out.decode(errors="replace")

    async def cleanup(self) -> None:
        for ident in self.containers:
            with contextlib.suppress(aiodocker.DockerError):
                await self.docker.containers.container(ident).delete(force=True)


async def _wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as response:
                    await response.read()
                    return
            except (aiohttp.ClientError, TimeoutError):
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.05)


@pytest.fixture
async def dynos(dyno_image: str, scope: Scope) -> AsyncIterator[Dynos]:
    """Test dynos of this test's scope on the local engine, removed at the end."""
    docker = aiodocker.Docker()
    running = Dynos(docker, dyno_image, scope)
    try:
        yield running
    finally:
        await running.cleanup()
        await docker.close()


@dataclass
class Router:
    """A client of the router (HAProxy's public ports), choosing the Host header."""

    session: aiohttp.ClientSession
    server: HAProxyServer

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.server.ports.http_port}{path}"

    async def get(
        self, host: str, path: str = "/", headers: dict[str, str] | None = None
    ) -> tuple[int, str, CIMultiDictProxy[str]]:
        async with self.session.get(
            self.url(path), headers={"Host": host, **(headers or {})}
        ) as response:
            return response.status, await response.text(), response.headers


@pytest.fixture
async def router(haproxy_server: HAProxyServer) -> AsyncIterator[Router]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield Router(session, haproxy_server)
