"""Images on the engine: build a customer's Dockerfile, and publish (slugs: slugimage.py).

A customer's Dockerfile never goes to the engine's classic builder: `build_dockerfile`
runs it step by step (services/builder/dockerfile/), every RUN in a fenced
container, and removes every container and intermediate image it made, however
the build ends (failure, time limit, cancellation).

`publish` is where an image leaves the builder. In "registry" mode it asks
registry-proxy for push credentials scoped to the app, tags the image
`<repository>:<build_id>`, pushes it with those credentials (basic auth; an
engine treats a 127.0.0.0/8 registry as insecure, so plain HTTP works there)
and returns `<repository>@<digest>`. In "local" mode the image stays on this
engine and its id is the digest.
"""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker

from slipway.contracts.registry import CREDENTIALS_ISSUE, IssueCredentials
from slipway.libs.bus import Bus
from slipway.libs.egress import policy_for
from slipway.libs.errors import SlipwayError
from slipway.services.builder.dockerfile.errors import DockerfileError
from slipway.services.builder.dockerfile.executor import DockerfileBuild
from slipway.services.builder.dockerfile.parser import parse
from slipway.services.builder.dockerfile.steps import Steps
from slipway.services.builder.errors import ImageError
from slipway.services.builder.settings import BuilderSettings

LineSink = Callable[[str], Awaitable[None]]
DOCKERFILE_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class PublishedImage:
    """What a release points at."""

    ref: str
    digest: str


async def build_dockerfile(
    docker: aiodocker.Docker,
    settings: BuilderSettings,
    app_dir: Path,
    work: Path,
    *,
    tag: str,
    labels: dict[str, str],
    sink: LineSink,
) -> str:
    """Build the app's root Dockerfile (context: `app_dir`) as `tag`; return the image id."""
    dockerfile = parse(await asyncio.to_thread(_read_dockerfile, app_dir / "Dockerfile"))
    deadline = asyncio.get_running_loop().time() + settings.build_timeout
    steps = Steps(docker, settings, labels, sink, deadline)
    policy = policy_for(settings.egress_allow, settings.egress_deny)
    final: str | None = None
    try:
        state = await DockerfileBuild(steps, app_dir, work, policy, dockerfile).build()
        # One last commit puts the labels on the result even when it is a bare FROM.
        container = await steps.idle_container(state.image, state.config)
        final = await steps.commit(container, state.config)
        repository, _, version = tag.rpartition(":")
        await docker.images.tag(final, repository, tag=version)
        return final
    finally:
        await steps.clean_up(keep=final)


def _read_dockerfile(path: Path) -> str:
    # The source is the customer's: no link to follow, no endless file to read.
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode) or info.st_size > DOCKERFILE_MAX_BYTES:
        raise DockerfileError(
            f"the Dockerfile must be a regular file (not a link) of at most"
            f" {DOCKERFILE_MAX_BYTES // 1024} KiB"
        )
    return path.read_text(errors="replace")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


async def publish(
    docker: aiodocker.Docker,
    bus: Bus,
    *,
    mode: str,
    local_tag: str,
    image_id: str,
    app_id: str,
    build_id: str,
    sink: LineSink,
) -> PublishedImage:
    """Put the built image where dynos can run it; see the module doc."""
    if mode == "local":
        return PublishedImage(ref=local_tag, digest=image_id)
    try:
        creds = await bus.call(CREDENTIALS_ISSUE, IssueCredentials(app_id=app_id, access="push"))
    except SlipwayError as exc:
        raise ImageError(f"no push credentials from registry-proxy: {exc.message}") from None
    await sink(f"-----> Pushing image to {creds.repository}")
    await docker.images.tag(local_tag, creds.repository, tag=build_id)
    auth = {"username": creds.username, "password": creds.password}
    digest = await _push(docker, f"{creds.repository}:{build_id}", creds.registry, auth)
    return PublishedImage(ref=f"{creds.repository}@{digest}", digest=digest)


async def _push(docker: aiodocker.Docker, name: str, registry: str, auth: dict[str, str]) -> str:
    repository, _, tag = name.rpartition(":")
    digest = ""
    try:
        push = docker.images.push(
            repository, tag=tag, auth={**auth, "serveraddress": registry}, stream=True
        )
        async for item in push:
            if "error" in item:
                raise ImageError(f"image push failed: {_one_line(str(item['error']))}")
            digest = _digest_of(item) or digest
    except aiodocker.DockerError as exc:
        raise ImageError(f"image push failed: {_one_line(str(exc.message))}") from None
    if not digest:
        raise ImageError("image push finished without a digest from the registry")
    return digest


def _digest_of(item: dict[str, Any]) -> str | None:
    aux = item.get("aux")
    if isinstance(aux, dict) and isinstance(aux.get("Digest"), str):
        return str(aux["Digest"])
    return None


def image_labels(app_id: str, build_id: str) -> dict[str, str]:
    """Labels every built image carries."""
    return {"slipway.app": app_id, "slipway.build": build_id}


def json_list(values: list[str]) -> str:
    """A Dockerfile exec-form list."""
    return json.dumps(values)
