"""A build's output is never a file under Docker's data root (issue #13, items 5-6, for builds).

A build prints what a customer may not want kept: a build script showing its
environment prints the app's config vars (ENV_DIR). Each test runs a real build
through the real builder on the real engine that prints a canary line (and, for a
buildpack build, a canary config var), then waits on a file the test creates.
While the build container still runs, and again after the build, neither
`docker inspect` of that container nor any file under Docker's data root written
since the test began holds a canary (the json-file driver would keep the lines in
`containers/<id>/<id>-json.log`), while the build output the customer sees has
them all. Each test fails when the build containers' `LogConfig` is json-file.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, cast

import aiodocker
import msgspec
import pytest
import pytest_asyncio

from slipway.contracts.builder import BuildOutput, output_subject
from slipway.contracts.gateway import CONFIG_SEALED_GET, GetSealedConfig, SealedConfig
from slipway.contracts.keyring import Purpose
from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus
from slipway.libs.crypto import Binding, envelope
from slipway.libs.natsserver import NatsServer
from tests.builder.conftest import TEAM, BuildResult, Harness, builder_stack, tarball
from tests.builder.test_builds import HELLO_APP, third_party_buildpack
from tests.conftest import assert_eventually

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.timeout(300),
]

BUILD_STACK = "slipway/stack-build:bookworm"
GO_FILE = ".go-on"  # in the build dir: the test creates it to let the build finish


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    """A builder of its own."""
    home = tmp_path_factory.mktemp("output-at-rest-home")
    nats = NatsServer(home / "nats")
    nats.start()
    try:
        async with builder_stack(nats, home) as h:
            yield h
    finally:
        nats.stop()


def printed(text: str) -> str:
    """A shell expression printing `text`, without `text` in the command (Docker keeps that)."""
    return f"echo {base64.b64encode(text.encode()).decode()} | base64 -d; echo"


def data_root() -> Path:
    found = subprocess.run(
        ["docker", "info", "--format", "{{.DockerRootDir}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(found.stdout.strip())


def files_holding(container_id: str, since: Path, needles: list[str]) -> list[str]:
    """Files under the data root written after `since`, or of the container, holding a needle."""
    root = data_root()
    found = subprocess.run(
        ["find", str(root), "-xdev", "-type", "f", "-newer", str(since), "-print0"],
        capture_output=True,
        check=False,
    ).stdout
    paths = {os.fsdecode(name) for name in found.split(b"\0") if name}
    folder = root / "containers" / container_id
    if folder.is_dir():  # every file of the container, however old
        paths |= {str(p) for p in folder.rglob("*") if p.is_file()}
    hits: list[str] = []
    ordered = sorted(paths)
    for start in range(0, len(ordered), 500):
        done = subprocess.run(
            ["grep", "-lsF", "--binary-files=text", *(f"-e{n}" for n in needles), "--",
             *ordered[start : start + 500]],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        hits += done.stdout.split()
    return hits


async def assert_nothing_at_rest(
    docker: aiodocker.Docker, container_id: str, since: Path, needles: list[str]
) -> None:
    """Neither the engine's answer about the container nor a file on disk holds a needle."""
    info = await docker.containers.container(container_id).show()
    assert info["HostConfig"]["LogConfig"]["Type"] == "none", info["HostConfig"]["LogConfig"]
    shown = json.dumps(info)
    assert [n for n in needles if n in shown] == []
    assert files_holding(container_id, since, needles) == []


async def seen_live(chunks: AsyncIterator[bytes], needles: list[str]) -> None:
    """Read the build's live output until every needle was in it."""
    decode = msgspec.json.Decoder(BuildOutput).decode
    text = ""
    async for data in chunks:
        chunk = decode(data)
        assert not chunk.final, f"the build ended before printing its canaries: {text}"
        text += chunk.text
        if all(n in text for n in needles):
            return


async def running_build_container(docker: aiodocker.Docker, build_id: str) -> dict[str, Any]:
    """The build's container that runs now (its RUN step, or its buildpacks)."""

    async def found() -> dict[str, Any]:
        listed = await docker.containers.list(
            filters={"label": [f"slipway.build={build_id}"], "status": ["running"]}
        )
        assert len(listed) == 1, listed
        shown: dict[str, Any] = await listed[0].show()
        return shown

    return await assert_eventually(found, timeout=30)


async def build_while_watching(
    stack: Harness, needles: list[str], start: Callable[[str], Coroutine[Any, Any, BuildResult]]
) -> tuple[dict[str, Any], asyncio.Task[BuildResult]]:
    """Start a build; once its live output showed `needles`, its running container's inspect."""
    build_id = uuid.uuid4().hex
    chunks = await stack.bus.live_subscribe(output_subject(build_id))
    build = asyncio.create_task(start(build_id))
    try:
        await asyncio.wait_for(seen_live(chunks, needles), 200)
        info = await running_build_container(stack.docker, build_id)
    except BaseException:
        build.cancel()
        await asyncio.wait([build])
        raise
    finally:
        await cast(AsyncGenerator[bytes, None], chunks).aclose()
    return info, build


async def serve_config(stack: Harness, app_id: str, values: dict[str, str]) -> Bus:
    """Answer CONFIG_SEALED_GET for `app_id` as the gateway would (sealed by the keyring)."""
    gateway = await Bus.connect(stack.settings.nats_url, Service.GATEWAY)
    version = uuid.uuid4().hex
    place = Binding(team=TEAM, app=app_id, kind="config", record=version)
    sealed = await envelope.encrypt(
        gateway, TEAM, Purpose.CONFIG, place, msgspec.json.encode(values)
    )

    async def sealed_config(req: GetSealedConfig) -> SealedConfig:
        if req.app_id != app_id:
            return SealedConfig(app_id=req.app_id, team_id=TEAM, config_version=None)
        return SealedConfig(
            app_id=app_id,
            team_id=TEAM,
            config_version=version,
            ciphertext=sealed,
            binding_kind="config",
            binding_record=version,
        )

    await gateway.serve(CONFIG_SEALED_GET, sealed_config)
    return gateway


async def test_buildpack_output_and_config_var_are_never_on_disk(
    stack: Harness, tmp_path: Path
) -> None:
    """A buildpack prints a canary line and config var: the customer sees both, Docker none."""
    since = tmp_path / "since"
    since.touch()
    line = f"line-canary-{uuid.uuid4().hex}"
    secret = f"config-canary-{uuid.uuid4().hex}"
    compile_script = (
        "#!/bin/bash\n"
        f"{printed(line)}\n"
        'echo "CANARY_VAR is $(cat "$3/CANARY_VAR")"\n'
        f'while [ ! -e "$1/{GO_FILE}" ]; do sleep 0.1; done\n'
        f'rm -f "$1/{GO_FILE}"\n'
    )
    buildpack = stack.buildpacks.tarball(third_party_buildpack(tmp_path / "bp", compile_script))
    app_id = stack.app_id()
    gateway = await serve_config(stack, app_id, {"CANARY_VAR": secret})
    try:
        info, build = await build_while_watching(
            stack,
            [line, f"CANARY_VAR is {secret}"],
            lambda build_id: stack.build(
                tarball(HELLO_APP), app_id=app_id, buildpacks=[buildpack], build_id=build_id
            ),
        )
        try:
            await assert_nothing_at_rest(stack.docker, info["Id"], since, [line, secret])
        finally:
            app_dir = next(m["Source"] for m in info["Mounts"] if m["Destination"] == "/app")
            (Path(app_dir) / GO_FILE).touch()  # the build goes on and ends
            result = await build
    finally:
        await gateway.close()
    assert result.status == "succeeded", result.text
    assert line in result.text
    assert f"CANARY_VAR is {secret}" in result.text
    assert files_holding(info["Id"], since, [line, secret]) == []


async def test_dockerfile_run_output_is_never_on_disk(stack: Harness, tmp_path: Path) -> None:
    """A RUN step prints a canary line: the customer sees it, Docker keeps it nowhere."""
    since = tmp_path / "since"
    since.touch()
    line = f"run-canary-{uuid.uuid4().hex}"
    dockerfile = (
        f"FROM {BUILD_STACK}\n"
        f"RUN {printed(line)}; while [ ! -e /tmp/{GO_FILE} ]; do sleep 0.1; done\n"
        'CMD ["true"]\n'
    )
    source = tarball({"Dockerfile": dockerfile})
    app_id = stack.app_id()
    info, build = await build_while_watching(
        stack, [line], lambda build_id: stack.build(source, app_id=app_id, build_id=build_id)
    )
    try:
        await assert_nothing_at_rest(stack.docker, info["Id"], since, [line])
    finally:
        go_on = await stack.docker.containers.container(info["Id"]).exec(
            ["touch", f"/tmp/{GO_FILE}"], user="0"
        )
        await go_on.start(detach=True)  # the step goes on and ends
        result = await build
    assert result.status == "succeeded", result.text
    assert line in result.text
    assert files_holding(info["Id"], since, [line]) == []
