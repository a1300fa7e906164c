"""Dockerfile builds through the real builder: stages, COPY rules, config, limits, clean-up."""

from __future__ import annotations

import asyncio
import io
import tarfile
import uuid
from typing import Any

import aiodocker
import pytest

from slipway.services.builder.dockerfile.config import ImageConfig
from slipway.services.builder.dockerfile.steps import Steps, remove_build_images
from slipway.services.builder.errors import BuildTimedOut
from slipway.services.builder.settings import BuilderSettings
from tests.builder.conftest import BuildResult, Harness, tarball

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.timeout(300),
]

RUN_STACK = "slipway/stack-run:bookworm"
BUILD_STACK = "slipway/stack-build:bookworm"


async def build(harness: Harness, files: dict[str, str]) -> BuildResult:
    """Build a source made of `files` as a fresh app."""
    return await harness.build(tarball(files), app_id=harness.app_id())


async def output_of(docker: aiodocker.Docker, image: str, *argv: str) -> str:
    """What `argv` prints in a container of `image` (its entrypoint bypassed)."""
    container = await docker.containers.run(
        {"Image": image, "Entrypoint": [argv[0]], "Cmd": list(argv[1:]),
         "Labels": {"slipway.test": "builder"}}
    )  # fmt: skip
    try:
        await container.wait(timeout=60)
        return "".join(await container.log(stdout=True, stderr=True))
    finally:
        await container.delete(force=True)


async def test_multi_stage_build_copies_from_an_earlier_stage(harness: Harness) -> None:
    """`COPY --from=<stage>` brings a file and a folder; the image has the last stage's config."""
    dockerfile = (
        f"FROM {BUILD_STACK} AS compile\nENV ONLY_IN_COMPILE=1\n"
        "RUN mkdir -p /tmp/out/sub && echo built > /tmp/out/sub/a.txt\n"
        f"FROM {RUN_STACK}\nCOPY --from=compile /tmp/out /app/out\n"
        'COPY --from=0 /tmp/out/sub/a.txt /app/\nCMD ["cat", "/app/a.txt"]\n'
    )
    result = await build(harness, {"Dockerfile": dockerfile})
    assert result.status == "succeeded", result.text
    assert result.release is not None
    image = result.release.image_ref
    assert await output_of(harness.docker, image, "cat", "/app/out/sub/a.txt", "/app/a.txt") == (
        "built\nbuilt\n"
    )
    config = (await harness.docker.images.inspect(image))["Config"]
    assert not any(item.startswith("ONLY_IN_COMPILE=") for item in config["Env"])
    assert config["Cmd"] == ["cat", "/app/a.txt"]


async def test_dockerignore_leaves_files_out_with_exceptions(harness: Harness) -> None:
    """`.dockerignore` keeps matching files out of `COPY . .`; `!` brings one back."""
    files = {
        "Dockerfile": f"FROM {RUN_STACK}\nWORKDIR /app/src\nCOPY . .\n",
        ".dockerignore": "*.secret\n**/*.log\n!keep.log\n",
        "app.py": "print('hi')\n",
        "db.secret": "hunter2\n",
        "logs/debug.log": "noise\n",
        "keep.log": "kept\n",
    }
    result = await build(harness, files)
    assert result.status == "succeeded", result.text
    assert result.release is not None
    listing = await output_of(
        harness.docker, result.release.image_ref, "find", "/app/src", "-type", "f"
    )
    found = sorted(line.removeprefix("/app/src/") for line in listing.split())
    assert found == [".dockerignore", "Dockerfile", "app.py", "keep.log"]


async def test_copy_chown_by_name_uses_the_images_users(harness: Harness) -> None:
    """`COPY --chown=dyno:dyno` resolves the names in the image's /etc/passwd and group."""
    files = {
        "Dockerfile": f"FROM {RUN_STACK}\nCOPY --chown=dyno:dyno a.txt /app/a.txt\n",
        "a.txt": "a",
    }
    result = await build(harness, files)
    assert result.status == "succeeded", result.text
    assert result.release is not None
    owner = await output_of(
        harness.docker, result.release.image_ref, "stat", "-c", "%U:%G", "/app/a.txt"
    )
    assert owner == "dyno:dyno\n"


async def test_dockerfile_errors_name_the_line(harness: Harness) -> None:
    """A heredoc fails the build naming its line and what to do instead."""
    result = await build(harness, {"Dockerfile": f"FROM {RUN_STACK}\nRUN <<EOF\necho\nEOF\n"})
    assert result.status == "failed"
    assert "Dockerfile line 2: heredocs (<<EOF) are not supported" in (result.finished.error or "")


async def test_image_without_a_command_says_so(harness: Harness) -> None:
    """An image whose Dockerfile sets no CMD nor ENTRYPOINT gets a command that says so."""
    result = await build(harness, {"Dockerfile": f"FROM {RUN_STACK}\nRUN true\n"})
    assert result.status == "succeeded", result.text
    assert result.release is not None
    config = (await harness.docker.images.inspect(result.release.image_ref))["Config"]
    assert "sets no CMD or ENTRYPOINT" in " ".join(config["Cmd"])
    assert "/usr/bin/env" not in " ".join(config["Cmd"])


async def test_a_step_past_the_time_limit_is_stopped() -> None:
    """A RUN still running at the build's deadline is killed and the build times out."""
    docker = aiodocker.Docker()
    settings = BuilderSettings(build_network="none", build_timeout=2.0)
    lines: list[str] = []

    async def sink(line: str) -> None:
        lines.append(line)

    labels = {"slipway.build": uuid.uuid4().hex, "slipway.app": "app-timeout-test"}
    deadline = asyncio.get_running_loop().time() + settings.build_timeout
    steps = Steps(docker, settings, labels, sink, deadline)
    info = await docker.images.inspect(RUN_STACK)
    try:
        with pytest.raises(BuildTimedOut, match="SLIPWAY_BUILD_TIMEOUT"):
            await steps.run(str(info["Id"]), ImageConfig.of_image(info), ["sleep", "60"], {})
    finally:
        await steps.clean_up(keep=None)
        await docker.close()


async def test_restart_removes_step_images_of_a_build_left_pending() -> None:
    """The untagged step images of a build left pending by a crash are removed."""
    docker = aiodocker.Docker()
    build_id = uuid.uuid4().hex
    labels: dict[str, Any] = {"slipway.build": build_id, "slipway.app": "app-leftover-test"}
    container = await docker.containers.create(
        {"Image": RUN_STACK, "Cmd": ["true"], "Labels": labels}
    )
    try:
        step = (await container.commit(config={"Labels": labels}))["Id"]
        assert await remove_build_images(docker, [build_id]) == 1
        with pytest.raises(aiodocker.DockerError):
            await docker.images.inspect(step)
    finally:
        await container.delete(force=True)
        await docker.close()


async def test_unknown_user_fails_the_step_with_the_engines_reason(harness: Harness) -> None:
    """`USER nobody-here` then RUN: the build fails saying the step could not start, and why."""
    result = await build(harness, {"Dockerfile": f"FROM {RUN_STACK}\nUSER nobody-here\nRUN true\n"})
    assert result.status == "failed"
    error = result.finished.error or ""
    assert "the step could not start" in error
    assert "nobody-here" in error


async def test_add_of_a_local_archive_unpacks_it(harness: Harness) -> None:
    """`ADD files.tar.gz /app/files/` unpacks the archive there, as Docker does."""
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tar:
        info = tarfile.TarInfo("inside/hello.txt")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"hello\n"))
    archive = tarfile.TarInfo("files.tar.gz")
    archive.size = len(inner.getvalue())
    outer = io.BytesIO()
    with tarfile.open(fileobj=outer, mode="w:gz") as tar:
        dockerfile = f"FROM {RUN_STACK}\nADD files.tar.gz /app/files/\n".encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        tar.addfile(archive, io.BytesIO(inner.getvalue()))
    result = await harness.build(outer.getvalue(), app_id=harness.app_id())
    assert result.status == "succeeded", result.text
    assert result.release is not None
    image = result.release.image_ref
    assert await output_of(harness.docker, image, "cat", "/app/files/inside/hello.txt") == "hello\n"
