"""One-off tests run against the real gateway stack of tests/gateway, with the scheduler's
one-off code answering `ONEOFF_RUN` on the real Docker engine."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable

import aiodocker
import msgspec
import pytest

from slipway.contracts.gateway import CONFIG_SEALED_GET, GetSealedConfig
from slipway.contracts.keyring import Purpose
from slipway.contracts.oneoff import ONEOFF_RUN, OneOffStarted, RunOneOff
from slipway.contracts.scope import Scope
from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus
from slipway.libs.crypto import Binding, envelope
from slipway.services.scheduler.oneoff import OneOffs, OneOffSettings, Placement
from tests.gateway.conftest import (  # noqa: F401
    Stack,
    gateway_service,
    keyring_service,
    slipway_home,
    stack,
)

IMAGE = "slipway-test/oneoff:1"
# A buildpack-style image: the launcher runs its one argument with bash -c.
DOCKERFILE = """\
FROM slipway/stack-run:bookworm
USER root
RUN printf '#!/bin/bash\\nexec bash -c "$1"\\n' > /usr/local/bin/slipway-launch \\
 && chmod 755 /usr/local/bin/slipway-launch
USER 10000:10000
ENTRYPOINT ["/usr/local/bin/slipway-launch"]
"""


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    context = tmp_path_factory.mktemp("oneoff-image")
    (context / "Dockerfile").write_text(DOCKERFILE)
    subprocess.run(
        ["docker", "build", "-q", "-t", IMAGE, str(context)],
        check=True,
        capture_output=True,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    return IMAGE


@pytest.fixture
async def scheduler_oneoffs(
    stack: Stack,  # noqa: F811 - the fixture imported above: the gateway answers first
    bus_factory: Callable[[str], Awaitable[Bus]],
    scope: Scope,
) -> AsyncIterator[OneOffs]:
    """The scheduler's one-off code answering ONEOFF_RUN on the local engine."""
    bus = await bus_factory(Service.SCHEDULER)
    docker = aiodocker.Docker()
    runs = OneOffs(bus, OneOffSettings(scope=scope, attach_timeout=20.0, stop_grace=1.0))
    where = Placement(docker=docker, host_id="local", address="127.0.0.1")

    async def config_env(request: RunOneOff) -> dict[str, str]:
        sealed = await bus.call(
            CONFIG_SEALED_GET,
            GetSealedConfig(app_id=request.app_id, config_version=request.config_version),
        )
        if not sealed.ciphertext:
            return {}
        binding = Binding(sealed.team_id, sealed.app_id, sealed.binding_kind, sealed.binding_record)
        plain = await envelope.decrypt(
            bus, sealed.team_id, Purpose.CONFIG, binding, sealed.ciphertext
        )
        return msgspec.json.decode(plain, type=dict[str, str])

    async def run(request: RunOneOff) -> OneOffStarted:
        return OneOffStarted(dyno=await runs.run(request, where, await config_env(request)))

    await bus.serve(ONEOFF_RUN, run)
    yield runs
    await runs.close()
    for container in await docker.containers.list(
        all=True, filters={"label": [scope.managed_label]}
    ):
        with contextlib.suppress(aiodocker.DockerError):  # removed by the one-off itself
            await container.delete(force=True)
    await docker.close()
