"""One Dockerfile step on the engine: a container from the current image, then a commit.

A RUN step's container is fenced like the buildpack build container: memory (swap
included), CPU and pids limits, `no-new-privileges`, every capability dropped but
the few a package manager needs as root (no NET_RAW, MKNOD, SYS_CHROOT, SYS_ADMIN...),
an init process, no Docker socket, the builders' firewalled network, and the host
CA bundle read-only at the path buildpack builds use. The CA variables and the
build ARGs reach the step through `/usr/bin/env` on its command line, not the
container's config, because a commit merges the container's Env into the image.

COPY/ADD steps put a tar into a container that never starts (no network at all).
Every container and image made here carries the build's labels and is removed
by `Steps.clean_up`, whatever way the build ends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import tarfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import aiodocker
from aiodocker.containers import DockerContainer

from slipway.libs import dockerraw, safefs
from slipway.services.builder.container import CA_PATH, NO_LOG, read_output, stop_reader
from slipway.services.builder.dockerfile.config import NO_COMMAND, ImageConfig
from slipway.services.builder.dockerfile.errors import DockerfileError
from slipway.services.builder.errors import BuildTimedOut
from slipway.services.builder.settings import BuilderSettings

LineSink = Callable[[str], Awaitable[None]]

# What package managers need as root in an image build; nothing that reaches past the
# container (NET_RAW, NET_ADMIN, MKNOD, SYS_CHROOT, SYS_ADMIN, SETFCAP... stay dropped).
RUN_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETUID", "SETGID", "KILL")
# The same variables the buildpack build container sets (services/builder/container.py).
CA_VARIABLES = (
    "SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
    "npm_config_cafile", "GIT_SSL_CAINFO", "CURL_CA_BUNDLE",
)  # fmt: skip
_ENV = "/usr/bin/env"
# /etc/passwd and /etc/group are read for --chown: a RUN may have made them huge.
_SMALL_FILE = 1 << 20


@dataclass
class Steps:
    """The engine side of one Dockerfile build: what it made, and until when it may run."""

    docker: aiodocker.Docker
    settings: BuilderSettings
    labels: dict[str, str]  # on every container and image this build makes
    sink: LineSink
    deadline: float  # event-loop time
    containers: list[DockerContainer] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    def remaining(self) -> float:
        left = self.deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise self._timed_out()
        return left

    def _timed_out(self) -> BuildTimedOut:
        limit = self.settings.build_timeout
        return BuildTimedOut(
            f"image build timed out after {limit:g}s: a Dockerfile step did not finish and"
            " was stopped (limit: SLIPWAY_BUILD_TIMEOUT)"
        )

    async def run(
        self, image: str, config: ImageConfig, argv: list[str], extra_env: dict[str, str]
    ) -> str:
        """Run `argv` in a fenced container from `image`; commit it with `config`."""
        env = {**extra_env, **{name: CA_PATH for name in CA_VARIABLES}}
        command = [_ENV, *(f"{k}={v}" for k, v in env.items()), *argv]
        memory = self.settings.build_memory_mb * 1024 * 1024
        container = await self._create(
            {
                "Image": image,
                "Cmd": command,
                "Entrypoint": [""],  # the image's ENTRYPOINT does not wrap a RUN
                "Env": config.env_list(),
                "WorkingDir": config.workdir,
                "User": config.user,
                "Labels": self.labels,
                "HostConfig": {
                    "Binds": [f"{self.settings.ca_bundle}:{CA_PATH}:ro"],
                    "Memory": memory,
                    "MemorySwap": memory,
                    "NanoCpus": int(self.settings.build_cpus * 1e9),
                    "PidsLimit": self.settings.build_pids,
                    "CapDrop": ["ALL"],
                    "CapAdd": list(RUN_CAPABILITIES),
                    "SecurityOpt": ["no-new-privileges"],
                    "NetworkMode": self.settings.build_network,
                    "Init": True,
                    "LogConfig": NO_LOG,
                },
            }
        )
        status = await self._run_to_end(container)
        if status != 0:
            raise await self._failure(container, status, argv)
        return await self.commit(container, config)

    async def _run_to_end(self, container: DockerContainer) -> int:
        # Attached before the start (the container logs to nothing): no line is missed.
        async with container.attach(stdout=True, stderr=True) as output:
            try:
                await container.start()
            except aiodocker.DockerError as exc:  # e.g. USER names no user of the image
                raise DockerfileError(
                    f"image build failed: the step could not start: {exc.message}"
                ) from None
            reader = asyncio.create_task(read_output(output, self.sink))
            try:
                result = await asyncio.wait_for(container.wait(), self.remaining())
            except TimeoutError:
                with contextlib.suppress(aiodocker.DockerError):
                    await container.kill()
                await asyncio.wait([reader], timeout=10)  # the step's last words
                await stop_reader(reader)
                raise self._timed_out() from None
            except BaseException:
                await stop_reader(reader)  # cancelled (the app was destroyed)
                raise
            # The step ended, and with it the attach: the reader sends what is still on
            # its way (a step's output is part of the build, so it may use what is left of
            # the build's time, or 30 s).
            left = max(self.deadline - asyncio.get_running_loop().time(), 30.0)
            done, _ = await asyncio.wait([reader], timeout=left)
            if done:
                reader.result()  # the output's own failure (the build output is gone)
            else:
                await stop_reader(reader)
        return int(result.get("StatusCode", 1))

    async def _failure(
        self, container: DockerContainer, status: int, argv: list[str]
    ) -> DockerfileError:
        state = (await container.show()).get("State") or {}
        shown = " ".join(argv)[:120]
        if state.get("OOMKilled"):
            return DockerfileError(
                f"image build failed: the command '{shown}' ran out of memory (the limit is"
                f" {self.settings.build_memory_mb} MB, SLIPWAY_BUILD_MEMORY_MB): use less"
                " memory in the step, or ask the operator for a higher limit"
            )
        return DockerfileError(
            f"image build failed: the command '{shown}' returned a non-zero code: {status}"
        )

    async def put(self, image: str, config: ImageConfig, archive: BinaryIO, at: str = "/") -> str:
        """Unpack `archive` at `at` in a container of `image` (never started); commit it."""
        container = await self.idle_container(image, config)
        await self.put_archive(container, archive, at)
        return await self.commit(container, config)

    async def idle_container(self, image: str, config: ImageConfig) -> DockerContainer:
        """A container that is only written to or read from, never started."""
        return await self._create(
            {
                "Image": image,
                "Cmd": config.cmd if config.has_command() else NO_COMMAND,
                "Env": config.env_list(),
                "Labels": self.labels,
                "HostConfig": {"NetworkMode": "none", "LogConfig": NO_LOG},
            }
        )

    async def put_archive(self, container: DockerContainer, archive: BinaryIO, at: str) -> None:
        try:
            async with dockerraw.query(
                self.docker, f"containers/{container.id}/archive",
                method="PUT", params={"path": at},
                data=archive, headers={"content-type": "application/x-tar"},
            ):  # fmt: skip
                pass
        except aiodocker.DockerError as exc:
            raise DockerfileError(f"image build failed: copying into {at}: {exc.message}") from None

    async def stat(self, image: str, config: ImageConfig, path: str) -> dict[str, Any] | None:
        """What `path` is in `image` (name, mode...), or None if it does not exist."""
        container = await self.idle_container(image, config)
        try:
            async with dockerraw.query(
                self.docker,
                f"containers/{container.id}/archive",
                method="HEAD",
                params={"path": path},
            ) as response:
                header = response.headers.get("X-Docker-Container-Path-Stat", "")
        except (aiodocker.DockerError, ValueError):  # 404 to a HEAD: no body to decode
            return None
        finally:
            await self._drop(container)
        found: dict[str, Any] = json.loads(base64.b64decode(header)) if header else {}
        return found

    async def fetch(self, image: str, path: str, dest: Path, max_bytes: int) -> None:
        """The engine's tar of `path` in `image` (an earlier stage), at most `max_bytes`."""
        container = await self.idle_container(image, ImageConfig())
        size = 0
        try:
            async with dockerraw.query(
                self.docker,
                f"containers/{container.id}/archive",
                method="GET",
                params={"path": path},
            ) as response:
                with safefs.create_nofollow(dest) as out:
                    async for chunk in response.content.iter_chunked(1 << 16):
                        size += len(chunk)
                        if size > max_bytes:
                            raise DockerfileError(
                                f"image build failed: COPY --from {path} is over {max_bytes} bytes"
                            )
                        out.write(chunk)
        except aiodocker.DockerError:
            raise DockerfileError(
                f"image build failed: COPY --from: {path} does not exist in that stage"
            ) from None
        finally:
            await self._drop(container)

    async def read_file(self, image: str, path: str) -> str:
        """A small text file of `image` (empty if missing), e.g. /etc/passwd for --chown."""
        container = await self.idle_container(image, ImageConfig())
        try:
            async with dockerraw.query(
                self.docker,
                f"containers/{container.id}/archive",
                method="GET",
                params={"path": path},
            ) as response:
                data = await response.content.read(_SMALL_FILE)
        except aiodocker.DockerError:
            return ""
        finally:
            await self._drop(container)
        try:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                member = tar.next()
                extracted = tar.extractfile(member) if member is not None else None
                return extracted.read(_SMALL_FILE).decode(errors="replace") if extracted else ""
        except tarfile.TarError:
            return ""  # over the bound (cut short) or not a file: no names to look up

    async def commit(self, container: DockerContainer, config: ImageConfig) -> str:
        """The container as a new image whose config is exactly `config` (plus the labels)."""
        result = await container.commit(config=config.to_engine(self.labels), pause=False)
        image = str(result["Id"])
        self.images.append(image)
        await self._drop(container)
        return image

    async def empty_image(self) -> str:
        """An image with no files, standing in for `scratch` (it cannot be run)."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w"):
            pass
        labels = " ".join(f"{k}={v}" for k, v in self.labels.items())
        async with dockerraw.query(
            self.docker, "images/create", method="POST",
            params={"fromSrc": "-", "changes": f"LABEL {labels}"},
            data=buffer.getvalue(), headers={"content-type": "application/x-tar"},
        ) as response:  # fmt: skip
            text = await response.text()
        image = json.loads(text.strip().splitlines()[-1])["status"]
        self.images.append(str(image))
        return str(image)

    async def _create(self, config: dict[str, Any]) -> DockerContainer:
        container = await self.docker.containers.create(config)
        self.containers.append(container)
        return container

    async def _drop(self, container: DockerContainer) -> None:
        with contextlib.suppress(aiodocker.DockerError):
            await container.delete(force=True, v=True)
        with contextlib.suppress(ValueError):
            self.containers.remove(container)

    async def clean_up(self, keep: str | None) -> None:
        """Remove every container and every image of this build but `keep`."""
        for container in list(self.containers):
            await self._drop(container)
        for image in reversed(self.images):
            if image == keep:
                continue
            # An image the kept one is built on cannot go (409); it goes with the kept one.
            with contextlib.suppress(aiodocker.DockerError):
                await self.docker.images.delete(image, noprune=False)
        self.images = [keep] if keep else []


async def remove_build_images(docker: aiodocker.Docker, build_ids: list[str]) -> int:
    """Remove the untagged step images of `build_ids` (left by a builder that died mid-build)."""
    removed = 0
    for build_id in build_ids:
        found = await docker.images.list(all=True, filters={"label": [f"slipway.build={build_id}"]})
        # Newest first: a step image goes before the one it was built on.
        for image in sorted(found, key=lambda i: int(i.get("Created", 0)), reverse=True):
            if any(tag != "<none>:<none>" for tag in image.get("RepoTags") or []):
                continue  # a finished image: the build runs again and tags anew
            with contextlib.suppress(aiodocker.DockerError):
                await docker.images.delete(str(image["Id"]))
                removed += 1
    return removed
