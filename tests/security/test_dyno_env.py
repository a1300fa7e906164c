"""Config vars never sit in Docker's container config (issue #13, item 4).

A canary config value is handed to a web dyno, a release-phase container and a
one-off the way the scheduler does it (the real runtime, release phase and one-off
runner on the local engine). Each dyno proves it has the value (it prints it, and
the dyno init relays the line to a receiver socket), while neither `docker inspect`
nor the container's files under Docker's data root (`config.v2.json`,
`hostconfig.json`) hold it: the value travelled in the env frame on stdin only.
Each test fails when the config is put back into the container's `Env`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiodocker
import pytest

from slipway.contracts import scheduler as sc
from slipway.contracts.gateway import AppDesired
from slipway.contracts.oneoff import RunOneOff
from slipway.contracts.scope import Scope
from slipway.libs.bus import Bus
from slipway.services.scheduler import deploy
from slipway.services.scheduler.containers import DynoSpec
from slipway.services.scheduler.hosts import Engine, connect
from slipway.services.scheduler.oneoff import OneOffs, OneOffSettings, Placement
from slipway.services.scheduler.runtime import Runtime
from slipway.services.scheduler.settings import SchedulerSettings
from slipway.services.scheduler.store import HostRow, SchedulerStore
from tests.conftest import assert_eventually, new_scope, remove_scope_objects
from tests.dynoinit.receiver import Receiver
from tests.scheduler import conftest as scheduler_fixtures

pytestmark = [pytest.mark.integration, pytest.mark.docker]

sched_image = scheduler_fixtures.sched_image

PRINTS_IT = 'echo "canary=$CANARY"; '


@dataclass
class Scheduler:
    runtime: Runtime
    store: SchedulerStore
    bus: Bus
    scope: Scope
    receiver: Receiver


@pytest.fixture
async def scheduler(
    bus_factory: Callable[[str], Awaitable[Bus]], tmp_path: Path
) -> AsyncIterator[Scheduler]:
    """The scheduler's real runtime on the local engine, and a receiver for its dynos' output."""
    scope = new_scope()
    settings = SchedulerSettings(
        nats_url="", home=str(tmp_path / "sched"), scope=scope.name, stop_grace=1.0
    )
    store = await SchedulerStore.open(tmp_path / "scheduler.db")
    bus = await bus_factory("scheduler")
    runtime = Runtime(settings, store, bus)
    row = HostRow(
        info=sc.HostInfo(
            id="main", endpoint="unix:///var/run/docker.sock", address="127.0.0.1", memory_mb=4096
        )
    )
    runtime.engines["main"] = Engine(row, connect(row, 5.0))
    runtime.start()
    receiver = Receiver(Path(settings.log_dir("main")))
    await receiver.start()
    try:
        yield Scheduler(runtime, store, bus, scope, receiver)
    finally:
        for tracked in list(runtime.dynos.values()):
            await runtime.stop(tracked, "Test over", drain=False)
        await runtime.close()
        await runtime.engines["main"].docker.close()
        await store.close()
        await receiver.close()
        remove_scope_objects(scope)


def canary() -> str:
    return f"canary-{uuid.uuid4().hex}"


def data_root() -> Path:
    found = subprocess.run(
        ["docker", "info", "--format", "{{.DockerRootDir}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(found.stdout.strip())


async def assert_not_stored(container_id: str, value: str) -> None:
    """Neither the engine's answer nor its files on disk hold `value`."""
    async with aiodocker.Docker() as docker:
        info = await docker.containers.container(container_id).show()
    assert not [e for e in info["Config"]["Env"] if value in e]
    assert info["HostConfig"]["LogConfig"]["Type"] == "none"  # and no output on disk either
    assert value not in json.dumps(info)  # Args, Cmd, Entrypoint, Labels, HostConfig...
    folder = data_root() / "containers" / container_id
    for name in ("config.v2.json", "hostconfig.json"):
        assert value.encode() not in (folder / name).read_bytes(), name


async def saw(receiver: Receiver, value: str, times: int = 1) -> None:
    """The dyno printed the value (so it had it), `times` times."""

    async def printed() -> None:
        assert receiver.lines().count(f"canary={value}") >= times

    await assert_eventually(printed, timeout=30)


def web_spec(image: str) -> DynoSpec:
    return DynoSpec(
        app_id=uuid.uuid4().hex,
        app_name="canary",
        team_id="team-test",
        release=1,
        process_type="web",
        index=1,
        size="standard-1x",
        image=image,
        command=PRINTS_IT + "exec python3 /srv/app.py",
        host_id="main",
    )


async def test_a_web_dyno_has_its_config_but_docker_stores_none_of_it(
    scheduler: Scheduler, sched_image: str
) -> None:
    """The dyno prints the canary; inspect and config.v2.json/hostconfig.json lack it."""
    value = canary()
    tracked = await scheduler.runtime.create(web_spec(sched_image), {"CANARY": value})
    assert (await scheduler.runtime.await_health(tracked)).ok
    await saw(scheduler.receiver, value)
    await assert_not_stored(tracked.container_id, value)


async def test_a_restarted_dyno_gets_its_config_again(
    scheduler: Scheduler, sched_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ps:restart` starts the same container again: the frame is delivered anew."""
    value = canary()
    spec = web_spec(sched_image)
    # The stored release the restart reads its config from; the config itself stands in
    # for the gateway and keyring (CONFIG_SEALED_GET), which this test does not run.
    desired = AppDesired(
        app_id=spec.app_id,
        app_name=spec.app_name,
        team_id=spec.team_id,
        release_version=1,
        image_ref=sched_image,
        config_version="c1",
    )
    await scheduler.store.put_desired(desired)

    async def config_env(app: AppDesired) -> dict[str, str]:
        assert app.release_version == spec.release
        return {"CANARY": value}

    monkeypatch.setattr(scheduler.runtime, "config_env", config_env)
    tracked = await scheduler.runtime.create(spec, {"CANARY": value})
    assert (await scheduler.runtime.await_health(tracked)).ok
    await scheduler.runtime.restart(tracked)
    assert tracked.state == "up"
    await saw(scheduler.receiver, value, times=2)
    await assert_not_stored(tracked.container_id, value)


async def test_the_release_phase_has_its_config_but_docker_stores_none_of_it(
    scheduler: Scheduler, sched_image: str
) -> None:
    """Inspected while the release command runs: the canary is in its env only."""
    value = canary()
    app = AppDesired(
        app_id=uuid.uuid4().hex,
        app_name="canary",
        team_id="team-test",
        release_version=1,
        image_ref=sched_image,
        process_types={"release": PRINTS_IT + "sleep 60"},
    )
    phase = asyncio.create_task(
        deploy.release_phase(scheduler.runtime, app, "main", {"CANARY": value}, 120)
    )
    try:
        await saw(scheduler.receiver, value)
        [container_id] = scheduler.runtime.one_offs
        await assert_not_stored(container_id, value)
        async with aiodocker.Docker() as docker:
            await docker.containers.container(container_id).kill()
        assert "status 137" in (await phase or "")
    finally:
        phase.cancel()


async def test_a_one_off_has_its_config_but_docker_stores_none_of_it(
    scheduler: Scheduler, sched_image: str
) -> None:
    """A detached `slipway run`: config and `-e` values reach it through the frame only."""
    value, extra = canary(), canary()
    log_root = Path(scheduler.runtime.settings.log_root())
    runs = OneOffs(
        scheduler.bus,
        OneOffSettings(scope=scheduler.scope, dyno_log_dir=str(log_root), stop_grace=1.0),
    )
    request = RunOneOff(
        app_id=uuid.uuid4().hex,
        app_name="canary",
        team_id="team-test",
        release_version=1,
        image=sched_image,
        command=PRINTS_IT + 'echo "canary=$EXTRA"; sleep 60',
        env={"EXTRA": extra},
    )
    async with aiodocker.Docker() as docker:
        try:
            dyno = await runs.run(
                request, Placement(docker, "main", "127.0.0.1"), {"CANARY": value}
            )
            await saw(scheduler.receiver, value)
            await saw(scheduler.receiver, extra)
            assert dyno.container_id is not None
            await assert_not_stored(dyno.container_id, value)
            await assert_not_stored(dyno.container_id, extra)
        finally:
            await runs.close()
