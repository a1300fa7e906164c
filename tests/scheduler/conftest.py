"""Fixtures for the scheduler on real engines: test images, extra dockerds, a stand-in gateway.

- `sched_image` (session): a tiny image FROM the run stack with a launcher like the
  builder's, an HTTP app that binds $PORT and drains on SIGTERM, and misbehaving
  commands (crash, never bind, fork bomb, memory hog).
- `docker_hosts` (session): two extra dockerd engines in their own namespaces
  (tests/dockerhosts.py) with the image loaded.
- `cluster` (per test): nats-server, the scheduler service with the main engine and
  both extra engines registered, and `cluster.gateway`, which plays the gateway's
  part of the bus: it publishes release and formation events and answers
  DESIRED_GET. Every container and network the test made is removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiodocker
import pytest

from slipway.contracts import gateway as gw
from slipway.contracts import scheduler as sc
from slipway.contracts.scope import Scope
from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from slipway.services.scheduler.app import SCHEDULER, create_service
from slipway.services.scheduler.reconcile import Scheduler
from slipway.services.scheduler.settings import SchedulerSettings
from tests.conftest import new_scope, remove_scope_objects
from tests.dockerhosts import DockerHost, extra_docker_hosts
from tests.tlsclose import settle_tls_closes

STACK = "slipway/stack-run:bookworm"

APP = r"""
import http.server, os, signal, socketserver, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{os.environ['DYNO']} v{os.environ['SLIPWAY_RELEASE_VERSION']}".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = False
    block_on_close = True
server = S(("", int(os.environ["PORT"])), H)
# Drain on SIGTERM: stop accepting, finish what is in flight, exit 0.
signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=server.shutdown).start())
server.serve_forever()
server.server_close()
"""

HOG = r"""
import os, signal, sys, time
if sys.argv[1] == "fork":
    while True:
        try:
            if os.fork() == 0:
                signal.pause(); os._exit(0)
        except OSError:
            time.sleep(0.01)
else:
    hog = []
    while True:
        hog.append(bytearray(64 * 1024 * 1024))
"""

LAUNCH = '#!/bin/bash\nexec bash -c "$1"\n'

DOCKERFILE = f"""FROM {STACK}
COPY app.py hog.py /srv/
COPY launch /usr/local/bin/slipway-launch
ENTRYPOINT ["/usr/local/bin/slipway-launch"]
CMD ["python3 /srv/app.py"]
"""

WEB = "python3 /srv/app.py"
CRASH = "sleep 0.3; exit 3"
NEVER_BIND = "sleep 600"


@pytest.fixture(scope="session")
def sched_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The test app image on the main engine (removed at the end of the session)."""
    tag = f"slipway-test/sched-app:{uuid.uuid4().hex[:8]}"
    root: Path = tmp_path_factory.mktemp("sched-image")
    (root / "app.py").write_text(APP)
    (root / "hog.py").write_text(HOG)
    (root / "launch").write_text(LAUNCH)
    (root / "launch").chmod(0o755)
    (root / "Dockerfile").write_text(DOCKERFILE)
    subprocess.run(["docker", "build", "-q", "-t", tag, str(root)], check=True, capture_output=True)
    try:
        yield tag
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], check=False, capture_output=True)


@pytest.fixture(scope="session")
def docker_hosts(sched_image: str) -> Iterator[list[DockerHost]]:
    """Two extra engines with the test image loaded, torn down at the end of the session."""
    with extra_docker_hosts(2, images=[sched_image]) as hosts:
        yield hosts


@dataclass
class StandInGateway:
    """The gateway's side of the bus for these tests: events out, DESIRED_GET answered."""

    bus: Bus
    image: str
    apps: dict[str, gw.AppDesired] = field(default_factory=dict)
    # config version → the ciphertext CONFIG_SEALED_GET answers (absent: no config vars)
    sealed: dict[str, bytes] = field(default_factory=dict)

    async def serve(self) -> None:
        async def desired(request: gw.GetDesired) -> gw.DesiredState:
            chosen = [a for a in self.apps.values() if request.app_id in (None, a.app_id)]
            return gw.DesiredState(apps=chosen)

        async def sealed_config(request: gw.GetSealedConfig) -> gw.SealedConfig:
            return gw.SealedConfig(
                app_id=request.app_id,
                team_id="team-test",
                config_version=request.config_version,
                ciphertext=self.sealed.get(request.config_version or "", b""),
                binding_record=request.config_version or "",
            )

        await self.bus.serve(gw.DESIRED_GET, desired)
        await self.bus.serve(gw.CONFIG_SEALED_GET, sealed_config)

    async def release(
        self,
        app_id: str,
        version: int,
        formation: dict[str, int],
        process_types: dict[str, str] | None = None,
        *,
        size: str = "standard-1x",
        image: str | None = None,
        config_version: str | None = None,
    ) -> None:
        types = process_types or {"web": WEB}
        desired = gw.AppDesired(
            app_id=app_id,
            app_name=f"app-{app_id[:8]}",
            team_id="team-test",
            release_version=version,
            image_ref=image or self.image,
            config_version=config_version,
            process_types=types,
            formation=[
                gw.ProcessFormation(type=t, quantity=q, size=size, command=types.get(t, ""))
                for t, q in formation.items()
            ],
        )
        self.apps[app_id] = desired
        await self.bus.publish(
            gw.RELEASE_CREATED,
            gw.ReleaseCreated(
                app_id=app_id,
                app_name=desired.app_name,
                team_id=desired.team_id,
                release_id=uuid.uuid4().hex,
                version=version,
                description=f"v{version}",
                image_ref=desired.image_ref,
                config_version=config_version,
                process_types=types,
                formation=desired.formation,
                actor="test",
            ),
        )

    async def scale(self, app_id: str, formation: dict[str, int]) -> None:
        current = self.apps[app_id]
        sizes = {f.type: f.size for f in current.formation}
        new = [
            gw.ProcessFormation(
                type=t,
                quantity=q,
                size=sizes.get(t, "standard-1x"),
                command=current.process_types.get(t, ""),
            )
            for t, q in formation.items()
        ]
        self.apps[app_id] = gw.AppDesired(
            **{f: getattr(current, f) for f in current.__struct_fields__ if f != "formation"},
            formation=new,
        )
        await self.bus.publish(
            gw.FORMATION_CHANGED,
            gw.FormationChanged(
                app_id=app_id,
                app_name=current.app_name,
                team_id=current.team_id,
                release_version=current.release_version or 0,
                formation=new,
                actor="test",
            ),
        )


@dataclass
class Cluster:
    """One test's scheduler, engines and stand-in gateway."""

    nats: NatsServer
    bus: Bus
    gateway: StandInGateway
    hosts: list[DockerHost]
    scope: Scope
    home: Path
    service: ServiceApp | None = None
    task: asyncio.Task[None] | None = None
    settings: SchedulerSettings | None = None

    @property
    def sched(self) -> Scheduler:
        assert self.service is not None
        return self.service[SCHEDULER]

    async def start(self, **overrides: object) -> None:
        """Start (or start again) the scheduler service in this event loop."""
        base = {
            "nats_url": self.nats.url,
            "home": str(self.home),
            "local_engine": "",
            "boot_timeout": 10.0,
            "stop_grace": 5.0,
            "deregister_delay": 0.5,
            "backoff_base": 0.5,
            "backoff_cap": 4.0,
            "healthy_reset": 60.0,
            "poll_interval": 0.25,
            "reconcile_interval": 3.0,
            "host_down_grace": 3.0,
            "engine_timeout": 5.0,
            "scope": self.scope.name,
            "shutdown_grace": 5.0,
        }
        self.settings = SchedulerSettings(**{**base, **overrides})  # type: ignore[arg-type]
        self.service = create_service(self.settings)
        self.task = asyncio.create_task(self.service.run(install_signals=False))
        await asyncio.wait_for(self.service.started.wait(), 30)

    async def stop(self) -> None:
        """Stop the service gracefully."""
        if self.service is not None and self.task is not None:
            self.service.stop()
            await asyncio.wait_for(self.task, 30)
        self.service = None
        self.task = None

    async def crash(self) -> None:
        """Stop the scheduler the hard way: cancel it mid-work (like kill -9 of its process)."""
        assert self.task is not None and self.service is not None
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task
        self.service = None
        self.task = None

    async def add_hosts(self, main: bool = True) -> list[str]:
        """Register the main engine (host `main`) and the extra ones (`x0`, `x1`)."""
        added = []
        if main:
            await self.bus.call(
                sc.HOSTS_ADD,
                sc.AddHost(id="main", endpoint="unix:///var/run/docker.sock", memory_mb=8192),
                timeout=10,
            )
            added.append("main")
        for i, host in enumerate(self.hosts):
            await self.bus.call(
                sc.HOSTS_ADD,
                sc.AddHost(id=f"x{i}", endpoint=host.socket, address=host.address, memory_mb=8192),
                timeout=10,
            )
            added.append(f"x{i}")
        return added

    async def dynos(self, app_id: str) -> list[sc.Dyno]:
        answer = await self.bus.call(sc.DYNOS_LIST, sc.ListDynos(app_id=app_id), timeout=10)
        return answer.dynos

    def engines(self) -> dict[str, str]:
        """host id → engine socket URL."""
        found = {"main": "unix:///var/run/docker.sock"}
        found.update({f"x{i}": host.socket for i, host in enumerate(self.hosts)})
        return found

    async def containers(self, app_id: str) -> dict[str, list[dict[str, object]]]:
        """host id → the app's containers there (all states), straight from the engines."""
        found: dict[str, list[dict[str, object]]] = {}
        for host_id, url in self.engines().items():
            docker = aiodocker.Docker(url=url)
            try:
                listed = await docker.containers.list(
                    all=True, filters={"label": [f"{sc.LABEL_APP}={app_id}"]}
                )
                found[host_id] = [c._container for c in listed]
            except aiodocker.DockerError:
                found[host_id] = []
            finally:
                await docker.close()
        return found


@pytest.fixture
async def cluster(
    nats_server: NatsServer,
    docker_hosts: list[DockerHost],
    sched_image: str,
    tmp_path: Path,
) -> AsyncIterator[Cluster]:
    """A running scheduler over three engines, and the stand-in gateway."""
    for host in docker_hosts:
        if host.process is None:
            host.start_engine()  # a previous test stopped it
    bus = await Bus.connect(nats_server.url, "gateway")
    await bus.ensure_streams()
    gateway = StandInGateway(bus=bus, image=sched_image)
    await gateway.serve()
    scope = new_scope()
    made = Cluster(
        nats=nats_server,
        bus=bus,
        gateway=gateway,
        hosts=docker_hosts,
        scope=scope,
        home=tmp_path / "home",
    )
    try:
        yield made
    finally:
        try:
            await made.stop()
            # Its connections to tcp+TLS engines finish closing inside this loop.
            await settle_tls_closes()
        finally:
            await bus.close()
            # Every engine: this test's containers, then its networks (by its scope's label).
            for url in ["unix:///var/run/docker.sock", *(h.socket for h in docker_hosts)]:
                remove_scope_objects(scope, url)


def remove_scope_networks(scope: str, url: str = "unix:///var/run/docker.sock") -> None:
    """Remove the app networks one scope made on one engine (by its managed label)."""
    ids = subprocess.run(
        [
            "docker",
            "-H",
            url,
            "network",
            "ls",
            "-q",
            "--filter",
            f"label={Scope(scope).managed_label}",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if ids:
        subprocess.run(
            ["docker", "-H", url, "network", "rm", *ids], capture_output=True, check=False
        )
