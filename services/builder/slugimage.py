"""The slug image on the engine: run stack, dependency layer (reused when unchanged), app layer.

Each of the slug's layers (`slug.py`) is put into a container that never starts
(no network, no log, nothing run) and committed with the config a slug has:
`ENTRYPOINT [LAUNCHER]`, `web` as CMD, WORKDIR /app, USER 10000, the build's
labels. The engine's classic builder is not used any more: it sent the whole
build folder as context on every build, made a container per instruction, and
could only reuse the dependencies by its own cache rules.

The dependency image is tagged `slipway/app-<app id>:deps-<key>`, the key naming
its content and the run stack it sits on (`slug.dependency_key`). A build that
finds the tag builds its app layer on that image and sends nothing else: the
layer, its blob in the registry (the engine asks the registry before pushing a
layer it pushed there before, and skips it) and the layer on a host that ran an
earlier release are the earlier build's. The tag is in the app's own repository:
an app never builds on another app's layer, whose key another customer could
compute from the same packages; it goes with the app's images when the app is
destroyed (`libs/appimages`). Without the tag (first build, other dependencies,
another builder's engine) the layer is written and committed again; the image is
the same to a dyno either way.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker

from slipway.contracts.builder import LAUNCHER
from slipway.libs import dockerraw
from slipway.services.builder import slug
from slipway.services.builder.container import LABEL_APP, NO_LOG
from slipway.services.builder.dockerfile.config import ImageConfig
from slipway.services.builder.errors import BuildTimedOut, ImageError
from slipway.services.builder.settings import BuilderSettings

DEPENDENCY_TAG_PREFIX = "deps-"


@dataclass(frozen=True)
class SlugImage:
    """The image built, and what became of the dependency layer: none, reused or built."""

    image_id: str
    dependencies: str


async def build_slug_image(
    docker: aiodocker.Docker,
    settings: BuilderSettings,
    build_dir: Path,
    work: Path,
    *,
    tag: str,
    app_id: str,
    labels: dict[str, str],
    web: str | None,
) -> SlugImage:
    """Build the slug of `build_dir` as `tag` (`repository:tag`); see the module doc."""
    layers = _Layers(docker, settings.build_timeout)
    run_info = await docker.images.inspect(settings.run_image)
    config = slug_config(run_info, web)
    parent, dependencies = str(run_info["Id"]), "none"
    key = await asyncio.to_thread(slug.dependency_key, build_dir, parent)
    if key is not None:
        repository = tag.rpartition(":")[0]
        found = await _image_id(docker, f"{repository}:{DEPENDENCY_TAG_PREFIX}{key}")
        if found is not None:
            parent, dependencies = found, "reused"
        else:
            archive = work / "dependencies.tar"
            await asyncio.to_thread(slug.write_layer, build_dir, archive, slug.Part.DEPENDENCIES)
            # Only the app's label: a build's label would have a crashed build's clean-up
            # (`remove_build_images`) take a layer later builds share.
            # No CMD: nothing runs this image; it only carries the layer.
            bare = config.copy()
            bare.cmd = None
            parent = await layers.commit(
                parent, archive, bare, {LABEL_APP: app_id},
                (repository, DEPENDENCY_TAG_PREFIX + key),
            )  # fmt: skip
            archive.unlink()
            dependencies = "built"
    archive = work / "app.tar"
    await asyncio.to_thread(slug.write_layer, build_dir, archive, slug.Part.APP)
    repository, _, version = tag.rpartition(":")
    image = await layers.commit(parent, archive, config, labels, (repository, version))
    return SlugImage(image, dependencies)


def slug_config(run_info: dict[str, Any], web: str | None) -> ImageConfig:
    """What `FROM <run stack>`, `WORKDIR /app`, `USER 10000`, `ENTRYPOINT [LAUNCHER]` and
    `CMD [web]` make of the run stack's config (ENTRYPOINT drops an inherited CMD)."""
    config = ImageConfig.of_image(run_info)
    config.workdir = "/app"
    config.user = "10000"
    config.entrypoint = [LAUNCHER]
    config.cmd = [web] if web else None
    return config


@dataclass(frozen=True)
class _Layers:
    docker: aiodocker.Docker
    timeout: float

    async def commit(
        self,
        parent: str,
        archive: Path,
        config: ImageConfig,
        labels: dict[str, str],
        name: tuple[str, str],
    ) -> str:
        """`archive` unpacked at / on `parent`, committed as `name` with `config`; the id."""
        try:
            return await asyncio.wait_for(
                self._commit(parent, archive, config, labels, name), self.timeout
            )
        except TimeoutError:
            raise BuildTimedOut(
                f"image build timed out after {self.timeout:g}s (limit: SLIPWAY_BUILD_TIMEOUT)"
            ) from None
        except aiodocker.DockerError as exc:
            raise ImageError(f"image build failed: {_one_line(str(exc.message))}") from None

    async def _commit(
        self,
        parent: str,
        archive: Path,
        config: ImageConfig,
        labels: dict[str, str],
        name: tuple[str, str],
    ) -> str:
        # The container is never started: the ENTRYPOINT is only there because an engine
        # will not create a container with no command at all.
        container = await self.docker.containers.create(
            {
                "Image": parent,
                "Entrypoint": [LAUNCHER],
                "Env": config.env_list(),
                "Labels": labels,
                "HostConfig": {"NetworkMode": "none", "LogConfig": NO_LOG},
            }
        )
        try:
            with archive.open("rb") as data:
                async with dockerraw.query(
                    self.docker, f"containers/{container.id}/archive",
                    method="PUT", params={"path": "/"},
                    data=data, headers={"content-type": "application/x-tar"},
                ):  # fmt: skip
                    pass
            result = await container.commit(
                repository=name[0], tag=name[1], config=config.to_engine(labels), pause=False
            )
            return str(result["Id"])
        finally:
            with contextlib.suppress(aiodocker.DockerError):
                await container.delete(force=True, v=True)


async def _image_id(docker: aiodocker.Docker, ref: str) -> str | None:
    try:
        return str((await docker.images.inspect(ref))["Id"])
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            return None
        raise


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]
