"""Fixtures for log-shipper tests: the real keyring, a real log-shipper, dyno-like containers.

Dynos here are containers of the run stack carrying the scheduler's labels. The
log-shipper reads no labels: as the scheduler does, each test's `Dynos` creates
the container, publishes its `DYNO_CHANGED` (state starting, this host) as the
scheduler's NATS user, then starts it. Containers whose managed label is not
the test's are left unannounced: strangers the log-shipper must refuse. Like
real dynos they log to nothing on disk (`LogConfig: none`) and send their output
through the dyno init's socket protocol, spoken by dynosender.py (a Python
stand-in for the init's relay) with the host's socket folder mounted read-only
at /.slipway/log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from slipway.contracts import dynoinit
from slipway.contracts.scheduler import (
    DYNO_CHANGED,
    LABEL_APP,
    LABEL_DYNO,
    LABEL_MANAGED,
    LABEL_TEAM,
    Dyno,
    DynoChanged,
)
from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from slipway.services.gateway.app import create_service as create_gateway
from slipway.services.log_shipper.app import SHIPPER, create_service
from slipway.services.log_shipper.settings import LogShipperSettings
from slipway.services.log_shipper.shipper import Shipper
from tests.cli.conftest import Result
from tests.gateway.conftest import (  # noqa: F401 - fixtures
    Api,
    gateway_settings,
    keyring_service,
    run_in_background,
    slipway_home,
    stack,
    stop,
)

IMAGE = "slipway/stack-run:bookworm"
# Drain servers in these tests listen on loopback, which the egress guard refuses unless the
# operator allows it: these tests are that operator (tests/security/test_egress.py is not).
LOOPBACK_ALLOWED = "127.0.0.1/32,::1/128"


@pytest.fixture
async def gateway_service(
    nats_server: NatsServer,
    slipway_home: Path,  # noqa: F811 - a fixture
    keyring_service: ServiceApp,  # noqa: F811 - a fixture
) -> AsyncIterator[ServiceApp]:
    """The real gateway, allowing drains on loopback (the tests' drain servers)."""
    settings = gateway_settings(nats_server.url, slipway_home, egress_allow=LOOPBACK_ALLOWED)
    service = create_gateway(settings)
    task = await run_in_background(service)
    yield service
    await stop(service, task)


SLIPWAY = str(Path(sys.executable).parent / "slipway")


async def slipway(api: Api, home: Path, *args: str) -> Result:
    env = {
        **os.environ,
        "HOME": str(home),
        "SLIPWAY_CONFIG_DIR": str(home / "config"),
        "SLIPWAY_API_URL": api.url,
        "SLIPWAY_API_KEY": api.token or "",
    }
    env.pop("SLIPWAY_APP", None)
    process = await asyncio.create_subprocess_exec(
        SLIPWAY,
        *args,
        cwd=home,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


TEST_LABEL = "org.slipway.test"
SENDER = Path(__file__).with_name("dynosender.py")
CONTRACT = Path(dynoinit.__file__)
LIB = "/.slipway/lib"


def dyno_config(
    folder: Path, labels: dict[str, str], cmd: list[str], binds: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A dyno-like container: run stack, uid 10000, no log driver, the host's socket folder."""
    return {
        "Image": IMAGE,
        "User": "10000:10000",
        "Cmd": cmd,
        "Labels": {**labels, TEST_LABEL: "log-shipper"},
        "HostConfig": {
            "NetworkMode": "none",
            "LogConfig": {"Type": "none"},
            "Binds": [
                f"{SENDER}:{LIB}/dynosender.py:ro",
                f"{CONTRACT}:{LIB}/dynoinit.py:ro",
                f"{folder}:{dynoinit.LOG_DIR}:ro",
                *binds,
            ],
        },
    }


def sender_cmd(script: str, *, buffer: int | None = None) -> list[str]:
    """`python3 -c script` under the Python stand-in of the init's relay."""
    options = ["--buffer", str(buffer)] if buffer is not None else []
    return ["python3", f"{LIB}/dynosender.py", *options, "--", "python3", "-u", "-c", script]


@dataclass
class Dynos:
    """Starts dyno-like containers for one test and removes them all at the end."""

    docker: aiodocker.Docker
    managed: str
    folder: Path  # the host's dyno socket folder (`LogShipperSettings.socket_folder()`)
    scheduler: Bus | None = None  # connected as the scheduler: announces the dynos it starts
    host_id: str = "h1"
    created: list[str] = field(default_factory=list)

    def labels(self, app_id: str, team_id: str, dyno: str) -> dict[str, str]:
        return {
            LABEL_MANAGED: self.managed,
            LABEL_APP: app_id,
            LABEL_TEAM: team_id,
            LABEL_DYNO: dyno,
        }

    async def run(
        self,
        app_id: str,
        team_id: str,
        dyno: str,
        script: str,
        *,
        buffer: int | None = None,
        binds: tuple[str, ...] = (),
    ) -> str:
        """Start a dyno running `python3 -c script`, its output relayed to log-shipper; its id."""
        cmd = sender_cmd(script, buffer=buffer)
        labels = self.labels(app_id, team_id, dyno)
        return await self.start(dyno_config(self.folder, labels, cmd, binds))

    async def raw(self, labels: dict[str, str], script: str) -> str:
        """A container running `script` itself (no relay): it speaks to the socket as it likes."""
        cmd = ["python3", "-c", f"import sys; sys.path.insert(0, {LIB!r})\n{script}"]
        return await self.start(dyno_config(self.folder, labels, cmd))

    async def start(self, config: dict[str, Any]) -> str:
        """Create, announce as the scheduler does (if the test's), then start; the id."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"slw-logtest-{uuid.uuid4().hex[:10]}"
        container = await self.docker.containers.create(config, name=name)
        self.created.append(container.id)
        labels: dict[str, str] = config["Labels"]
        if labels.get(LABEL_MANAGED) == self.managed:
            await self.announce(str(container.id), labels)
        await container.start()
        return str(container.id)

    async def announce(
        self, container_id: str, labels: dict[str, str], host_id: str | None = None
    ) -> None:
        """Publish the container's DYNO_CHANGED as the scheduler (on `host_id`, else ours)."""
        assert self.scheduler is not None, "announcing needs the scheduler's bus"
        dyno = labels[LABEL_DYNO]
        change = DynoChanged(
            dyno=Dyno(
                app_id=labels[LABEL_APP],
                app_name="test",
                team_id=labels[LABEL_TEAM],
                name=dyno,
                process_type=dyno.split(".")[0],
                release_version=1,
                state="starting",
                host_id=host_id or self.host_id,
                container_id=container_id,
                updated_at=time.time(),
            ),
            # No transition and no reason: the dyno is known, and no platform line joins
            # the history the tests compare.
            previous_state="starting",
        )
        await self.scheduler.publish(DYNO_CHANGED, change)

    async def exit_code(self, container_id: str) -> int:
        """Wait for the container to exit; its status."""
        result = await self.docker.containers.container(container_id).wait()
        return int(result["StatusCode"])

    async def wait(self, container_id: str) -> None:
        await self.docker.containers.container(container_id).wait()

    async def remove_all(self) -> None:
        for container_id in self.created:
            with contextlib.suppress(aiodocker.DockerError):
                await self.docker.containers.container(container_id).delete(force=True)


@pytest.fixture
async def gateway_bus(bus_factory: Callable[[str], Any]) -> Bus:
    """A bus connected as the gateway: the only service declared to read history."""
    bus: Bus = await bus_factory("gateway")
    return bus


@pytest.fixture
def managed() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


def socket_folder(home: Path, host_id: str) -> Path:
    """Where a test log-shipper of `home` listens as `host_id` (default dyno_log_dir)."""
    return dynoinit.host_log_dir("", home, host_id)


@pytest.fixture
async def dynos(
    managed: str,
    slipway_home: Path,  # noqa: F811 - a fixture
    bus_factory: Callable[[str], Any],
) -> AsyncIterator[Dynos]:
    docker = aiodocker.Docker()
    scheduler: Bus = await bus_factory("scheduler")
    made = Dynos(docker, managed, socket_folder(slipway_home, "h1"), scheduler, "h1")
    try:
        yield made
    finally:
        await made.remove_all()
        await docker.close()


ShipperFactory = Callable[..., LogShipperSettings]


@pytest.fixture
def shipper_settings(
    nats_server: NatsServer,
    slipway_home: Path,  # noqa: F811 - a fixture
    managed: str,
) -> ShipperFactory:
    """Settings for a test's log-shipper: quick batches, its own managed label."""

    def make(**overrides: Any) -> LogShipperSettings:
        values: dict[str, Any] = {
            "nats_url": nats_server.url,
            "home": str(slipway_home),
            "host_id": "h1",
            "managed_value": managed,
            "batch_seconds": 0.2,
            "metrics_interval": 0.0,
            "shutdown_grace": 5.0,
            "egress_allow": LOOPBACK_ALLOWED,
            **overrides,
        }
        return LogShipperSettings(**values)

    return make


@dataclass
class RunningShipper:
    service: ServiceApp

    @property
    def shipper(self) -> Shipper:
        return self.service[SHIPPER]

    @property
    def bus(self) -> Bus:
        return self.service.bus


@pytest.fixture
async def start_shipper(
    keyring_service: ServiceApp,  # noqa: F811 - a fixture
) -> AsyncIterator[Callable[[LogShipperSettings], Any]]:
    """Start log-shippers in this event loop; all are stopped at the end of the test."""
    running: list[tuple[ServiceApp, asyncio.Task[None]]] = []

    async def start(settings: LogShipperSettings) -> RunningShipper:
        service = create_service(settings)
        running.append((service, await run_in_background(service)))
        return RunningShipper(service)

    yield start
    for service, task in reversed(running):
        await stop(service, task)


def new_id() -> str:
    return uuid.uuid4().hex
