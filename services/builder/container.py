"""The build container: where buildpacks run, fenced in.

One container per build, from the build stack image, as uid 10000 with every
capability dropped, `no-new-privileges`, memory/CPU/pids limits, no Docker
socket, on the builders' own bridge network (no inter-container traffic;
platform services bind to loopback, which a container cannot reach). Mounts:

    /app          the build folder (rw), the same path the slug has in the run image
    /cache        the app's cache volume (rw), kept between builds
    /env          ENV_DIR: one file per config var (ro)
    /buildpacks   the staged buildpacks (ro)
    /slipway      the driver script and /slipway/out for release YAML (rw)
    /etc/slipway/ca-bundle.crt   the host's CA bundle (ro), named by SSL_CERT_FILE & co.

Output is read line by line while the container runs; past the time limit
the container is killed and the build fails saying so. Docker keeps none of it:
every container the builder makes logs to nothing (`LogConfig` none, `NO_LOG`),
and its output is read from an attach opened before it starts, so a line a
build prints (a config var, a token) is never a file under Docker's data root,
not even while the build runs or after a builder crash.

A buildpack named by URL is fetched by a container of its own (`fetch_config`),
fenced in the same way, with a read-only root, the download and unpacking in a
size-capped tmpfs at /fetch, and one host folder (/buildpack, rw) to copy into.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
from aiodocker.containers import DockerContainer
from aiodocker.stream import Stream

from slipway.services.builder.errors import BuildTimedOut
from slipway.services.builder.settings import BuilderSettings

CA_PATH = "/etc/slipway/ca-bundle.crt"
LABEL_BUILD = "slipway.build"
LABEL_APP = "slipway.app"
LABEL_CACHE = "slipway.build-cache"

LineSink = Callable[[str], Awaitable[None]]
PENDING_MAX_CHARS = 64 * 1024
# No log driver: a build's output may hold a customer's secrets, and json-file (the
# engine's default) would keep it in plaintext under the data root.
NO_LOG: dict[str, Any] = {"Type": "none", "Config": {}}


@dataclass(frozen=True)
class BuildMounts:
    """Host folders and the cache volume a build container mounts."""

    app: Path
    env: Path
    buildpacks: Path
    slipway: Path
    cache_volume: str


@dataclass
class LineSplitter:
    """Turns arbitrary chunks into whole lines for `sink`."""

    sink: LineSink
    _pending: str = field(default="")

    async def feed(self, chunk: str) -> None:
        self._pending += chunk.replace("\r\n", "\n")
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            await self.sink(line)
        if len(self._pending) > PENDING_MAX_CHARS:
            # Output that never ends its line must not grow here without end: it goes on
            # in pieces, and the OutputStream cuts each one (services/builder/output.py).
            await self.sink(self._pending)
            self._pending = ""

    async def close(self) -> None:
        if self._pending:
            await self.sink(self._pending)
            self._pending = ""


def cache_volume_name(app_id: str) -> str:
    """The docker volume holding one app's build cache."""
    return f"slipway-build-cache-{app_id}"


async def ensure_network(docker: aiodocker.Docker, name: str) -> None:
    """Create the builders' bridge network if missing (no traffic between containers).

    The engine does not refuse a second network of the same name: builders starting
    together can each make one, and a name then means nothing to it. Every builder keeps
    the same one (the lowest id) and removes the others, so they agree whatever the order.
    """
    if not await _networks_named(docker, name):
        with contextlib.suppress(aiodocker.DockerError):  # another builder made it meanwhile
            await docker.networks.create(
                {
                    "Name": name,
                    "Driver": "bridge",
                    "Labels": {"slipway.network": "builds"},
                    "Options": {"com.docker.network.bridge.enable_icc": "false"},
                }
            )
    found = await _networks_named(docker, name)
    for extra in sorted(found)[1:]:
        with contextlib.suppress(aiodocker.DockerError):  # gone already, or another's to remove
            await (await docker.networks.get(extra)).delete()


async def _networks_named(docker: aiodocker.Docker, name: str) -> list[str]:
    """Ids of the networks called exactly `name` (the engine's filter matches substrings)."""
    listed = await docker.networks.list(filters={"name": [name]})
    return [n["Id"] for n in listed if n.get("Name") == name]


async def ensure_cache_volume(
    docker: aiodocker.Docker, settings: BuilderSettings, app_id: str, team_id: str
) -> str:
    """The app's cache volume, created on first use and handed to the build user."""
    name = cache_volume_name(app_id)
    # aiodocker's volume API carries no annotations; the calls are plain engine requests.
    with contextlib.suppress(aiodocker.DockerError):
        await docker.volumes.get(name)  # type: ignore[no-untyped-call]
        return name
    await docker.volumes.create(  # type: ignore[no-untyped-call]
        {"Name": name, "Labels": {LABEL_CACHE: app_id, LABEL_APP: app_id, "slipway.team": team_id}}
    )
    # A new volume belongs to root; a short root container with only CAP_CHOWN hands it over.
    config: dict[str, Any] = {
        "Image": settings.build_image,
        "User": "0:0",
        "Cmd": ["chown", f"{settings.build_uid}:{settings.build_uid}", "/cache"],
        "Labels": {LABEL_CACHE: app_id},
        "HostConfig": {
            "Binds": [f"{name}:/cache"],
            "NetworkMode": "none",
            "CapDrop": ["ALL"],
            "CapAdd": ["CHOWN"],
            "SecurityOpt": ["no-new-privileges"],
            "LogConfig": NO_LOG,
        },
    }
    prep = await docker.containers.create(config)
    try:
        await prep.start()
        await prep.wait()
    finally:
        await prep.delete(force=True)
    return name


async def remove_leftovers(docker: aiodocker.Docker, build_ids: list[str]) -> int:
    """Remove build containers of `build_ids` (left running by a builder that died)."""
    removed = 0
    for build_id in build_ids:
        found = await docker.containers.list(
            all=True, filters={"label": [f"{LABEL_BUILD}={build_id}"]}
        )
        for container in found:
            with contextlib.suppress(aiodocker.DockerError):
                await container.delete(force=True)
                removed += 1
    return removed


def _hardening(settings: BuilderSettings, memory: int) -> dict[str, Any]:
    """HostConfig parts every container running customer-chosen code gets."""
    return {
        "Memory": memory,
        "MemorySwap": memory,
        "NanoCpus": int(settings.build_cpus * 1e9),
        "PidsLimit": settings.build_pids,
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
        "NetworkMode": settings.build_network,
        "Init": True,
        "LogConfig": NO_LOG,
    }


def fetch_config(
    settings: BuilderSettings,
    target: Path,
    script: str,
    env: dict[str, str],
    labels: dict[str, str],
) -> dict[str, Any]:
    """The engine API body of a buildpack fetch container writing into host folder `target`."""
    cap = settings.buildpack_max_bytes
    # tmpfs pages count against the memory limit: leave room for git and curl themselves.
    memory = 2 * cap + 256 * 1024 * 1024
    full_env = {"HOME": "/tmp", "GIT_SSL_CAINFO": CA_PATH, "CURL_CA_BUNDLE": CA_PATH, **env}  # noqa: S108
    return {
        "Image": settings.build_image,
        "Cmd": ["/bin/bash", "-c", script],
        "User": f"{settings.build_uid}:{settings.build_uid}",
        "WorkingDir": "/tmp",  # noqa: S108
        "Env": [f"{k}={v}" for k, v in full_env.items()],
        "Labels": labels,
        "HostConfig": {
            "Binds": [f"{target}:/buildpack:rw", f"{settings.ca_bundle}:{CA_PATH}:ro"],
            "ReadonlyRootfs": True,
            "Tmpfs": {
                "/fetch": f"rw,nosuid,nodev,noexec,size={cap},mode=1777",
                "/tmp": "rw,nosuid,nodev,noexec,size=16m,mode=1777",  # noqa: S108
            },
            **_hardening(settings, memory),
        },
    }


def container_config(
    settings: BuilderSettings,
    mounts: BuildMounts,
    env: dict[str, str],
    labels: dict[str, str],
) -> dict[str, Any]:
    """The engine API body of a build container."""
    ca_env = {
        name: CA_PATH
        for name in (
            "SSL_CERT_FILE",
            "PIP_CERT",
            "REQUESTS_CA_BUNDLE",
            "NODE_EXTRA_CA_CERTS",
            "npm_config_cafile",
            "GIT_SSL_CAINFO",
            "CURL_CA_BUNDLE",
        )
    }
    # HOME is inside the build container, away from /app so nothing lands in the slug.
    full_env = {"HOME": "/tmp", **ca_env, **env}  # noqa: S108
    memory = settings.build_memory_mb * 1024 * 1024
    return {
        "Image": settings.build_image,
        "Cmd": ["/bin/bash", "/slipway/run"],
        "User": f"{settings.build_uid}:{settings.build_uid}",
        "WorkingDir": "/app",
        "Env": [f"{k}={v}" for k, v in full_env.items()],
        "Labels": labels,
        "HostConfig": {
            "Binds": [
                f"{mounts.app}:/app:rw",
                f"{mounts.cache_volume}:/cache:rw",
                f"{mounts.env}:/env:ro",
                f"{mounts.buildpacks}:/buildpacks:ro",
                f"{mounts.slipway}:/slipway:rw",
                f"{settings.ca_bundle}:{CA_PATH}:ro",
            ],
            **_hardening(settings, memory),
        },
    }


async def run_build_container(
    docker: aiodocker.Docker,
    config: dict[str, Any],
    sink: LineSink,
    *,
    timeout: float,
    timeout_message: str | None = None,
) -> int:
    """Run the container, send its output to `sink` line by line; return its exit code."""
    container = await docker.containers.create(config)
    try:
        # Attached before the start: the first line printed is already on its way to us.
        async with container.attach(stdout=True, stderr=True) as output:
            await container.start()
            reader = asyncio.create_task(read_output(output, sink))
            try:
                result = await _wait(container, reader, timeout, timeout_message)
            except BaseException:
                await stop_reader(reader)  # before its stream closes
                raise
            # The attach ends when the container's output does: nothing is left unread.
            await asyncio.wait_for(reader, 30)
            return int(result.get("StatusCode", 1))
    finally:
        with contextlib.suppress(aiodocker.DockerError):
            await container.delete(force=True)


async def read_output(output: Stream, sink: LineSink) -> None:
    """Send a container's attached stdout and stderr to `sink` line by line, to the end.

    Each stream has its own decoder and splitter (a frame may end mid-character or
    mid-line, and the other stream's next frame must not land inside that line); lines go
    to `sink` in the order they are completed. If `sink` fails, the rest is still read
    (and dropped) so that the container, which waits on its reader, runs to its end; then
    the failure is raised.
    """
    streams: dict[int, tuple[codecs.IncrementalDecoder, LineSplitter]] = {}
    failure: Exception | None = None
    while (message := await output.read_out()) is not None:
        if failure is not None:
            continue
        found = streams.get(message.stream)
        if found is None:
            found = streams[message.stream] = (_utf8(), LineSplitter(sink))
        decoder, splitter = found
        try:
            await splitter.feed(decoder.decode(message.data))
        except Exception as exc:  # raised once the output has ended
            failure = exc
    if failure is not None:
        raise failure
    for decoder, splitter in streams.values():
        await splitter.feed(decoder.decode(b"", final=True))
        await splitter.close()


async def _wait(
    container: DockerContainer,
    reader: asyncio.Task[None],
    timeout: float,
    timeout_message: str | None,
) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(container.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(aiodocker.DockerError):
            await container.kill()
        await asyncio.wait([reader], timeout=10)  # the container's last words
        raise BuildTimedOut(
            timeout_message
            or f"build timed out after {timeout:g}s: a buildpack did not finish and was"
            " stopped (limit: SLIPWAY_BUILD_TIMEOUT)"
        ) from None


async def stop_reader(reader: asyncio.Task[None]) -> None:
    """Stop a `read_output` task that is no longer wanted (the build ended another way)."""
    reader.cancel()
    await asyncio.wait([reader])
    if not reader.cancelled():
        reader.exception()  # the build's own error is the one that matters now


def _utf8() -> codecs.IncrementalDecoder:
    # Undecodable bytes are dropped, as the engine's logs API reader (aiodocker) did.
    return codecs.getincrementaldecoder("utf-8")(errors="ignore")
