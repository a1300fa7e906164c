"""The hardened container a dyno runs in, and the Docker calls that make and end one.

Every dyno container (DESIGN.md §5): all capabilities dropped, no-new-privileges,
read-only root with a tmpfs /tmp, user 10000:10000, memory, CPU weight and pids by
dyno size, no Docker socket and no host namespaces
(no host mode is asked), the app's own network, and `$PORT` published only on the
host's private address, on a port Docker picks.

Memory as Heroku meters it: the size's memory is the dyno's quota, set as the
container's reservation (`MemoryReservation`, the cgroup's soft limit, which the
log-shipper reads as `sample#memory_quota` and checks for R14); the hard limit
(`Memory`) is `MEMORY_HARD_LIMIT_FACTOR` times it, swap equal (none extra), so a
dyno can go over its quota and the kernel kills it only past the hard limit, which
the scheduler reports as R15 (Docker's `State.OOMKilled`). A hard limit equal to the
quota would hide every R14: usage could never show above it.

It starts through the dyno init (`dynoinit/`, contracts/dynoinit.py), bind-mounted
read-only at `/.slipway/init`, which runs the image's own entrypoint and command.
Config values never enter the container's config: `Env` holds the platform's
values only (PORT, DYNO, HOME, SLIPWAY_RELEASE_VERSION), and the config travels in
the env frame the scheduler writes on the container's stdin at every start
(`start_with_env`). Docker keeps no output either (`LogConfig` none): the init
relays it to the log-shipper's socket in the host's log folder, mounted read-only
at `/.slipway/log`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import aiodocker
import msgspec

from slipway.contracts import dynoinit
from slipway.contracts import scheduler as sc
from slipway.contracts.gateway import DYNO_SIZES, DynoSize
from slipway.contracts.registry import Credentials
from slipway.contracts.scope import Scope
from slipway.libs import appnet


class DynoSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything that names and shapes one dyno's container (no config values)."""

    app_id: str
    app_name: str
    team_id: str
    release: int
    process_type: str
    index: int
    size: str
    image: str
    command: str
    host_id: str

    @property
    def name(self) -> str:
        return f"{self.process_type}.{self.index}"

    @property
    def dyno_size(self) -> DynoSize:
        return DYNO_SIZES[self.size]


def container_name(spec: DynoSpec, scope: Scope) -> str:
    """Scope, app, release and dyno, and a suffix: a replacement never collides with its
    predecessor."""
    app = spec.app_name[:30]
    suffix = secrets.token_hex(3)
    return scope.container(f"{app}-v{spec.release}-{spec.process_type}.{spec.index}-{suffix}")


def labels(spec: DynoSpec, scope: Scope) -> dict[str, str]:
    """The labels every other service reads a container by (the managed one: its scope)."""
    return {
        sc.LABEL_MANAGED: scope.managed,
        sc.LABEL_APP: spec.app_id,
        sc.LABEL_APP_NAME: spec.app_name,
        sc.LABEL_TEAM: spec.team_id,
        sc.LABEL_RELEASE: str(spec.release),
        sc.LABEL_TYPE: spec.process_type,
        sc.LABEL_DYNO: spec.name,
        sc.LABEL_HOST: spec.host_id,
        sc.LABEL_SIZE: spec.size,
    }


def spec_from_labels(found: dict[str, str], image: str = "") -> DynoSpec | None:
    """The spec a container was made from, or None when its labels are not ours or broken."""
    try:
        process_type, index = found[sc.LABEL_DYNO].rsplit(".", 1)
        return DynoSpec(
            app_id=found[sc.LABEL_APP],
            app_name=found.get(sc.LABEL_APP_NAME, ""),
            team_id=found.get(sc.LABEL_TEAM, ""),
            release=int(found[sc.LABEL_RELEASE]),
            process_type=process_type,
            index=int(index),
            size=found.get(sc.LABEL_SIZE, "standard-1x")
            if found.get(sc.LABEL_SIZE) in DYNO_SIZES
            else "standard-1x",
            image=image,
            command="",
            host_id=found.get(sc.LABEL_HOST, ""),
        )
    except (KeyError, ValueError):
        return None


def platform_env(spec: DynoSpec, port: int) -> dict[str, str]:
    """The values the platform sets for every dyno: no secret among them."""
    return {
        "PORT": str(port),
        "DYNO": spec.name,
        "HOME": "/app",
        "SLIPWAY_RELEASE_VERSION": str(spec.release),
    }


def env_frame(
    spec: DynoSpec, config: Mapping[str, str], port: int, extra: Mapping[str, str] | None = None
) -> bytes:
    """The env frame of one start: config vars, then the platform's values over them."""
    return dynoinit.encode_env({**config, **platform_env(spec, port), **(extra or {})})


def command_line(image: dict[str, Any], command: str) -> list[str]:
    """What Docker would run: the image's Entrypoint, then `command` (or the image's Cmd)."""
    config = image.get("Config") or {}
    entrypoint = list(config.get("Entrypoint") or [])
    return entrypoint + ([command] if command else list(config.get("Cmd") or []))


def takes_env_frame(info: dict[str, Any]) -> bool:
    """Whether a container (from an inspect) starts through the init and waits for its env."""
    config = info.get("Config") or {}
    entrypoint = config.get("Entrypoint") or []
    return bool(config.get("OpenStdin")) and entrypoint[:1] == [dynoinit.INIT_PATH]


def container_config(
    spec: DynoSpec,
    *,
    argv: list[str],
    port: int,
    address: str,
    publish: bool,
    tmp_size: str,
    scope: Scope,
    init: str,
    log_dir: str,
    tty: bool = False,
    quota_mb: int = 0,
) -> dict[str, Any]:
    """The Docker create body of one dyno (`publish`: web dynos get a host port).

    `argv` is what the init runs (`command_line`); `init` the init binary on the host;
    `log_dir` the host's folder of the log-shipper's socket (not mounted with `tty`: the
    output of an attached one-off goes to its terminal only); `quota_mb` a memory quota
    in place of the size's (0: the size's; tests make small dynos with it).
    """
    size = spec.dyno_size
    quota = (quota_mb or size.memory_mb) * 1024 * 1024
    memory = quota * sc.MEMORY_HARD_LIMIT_FACTOR
    port_key = f"{port}/tcp"
    host_config: dict[str, Any] = {
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
        "ReadonlyRootfs": True,
        "Tmpfs": {"/tmp": f"rw,nosuid,nodev,size={tmp_size}"},  # noqa: S108 (in the container)
        "Memory": memory,
        "MemoryReservation": quota,
        "MemorySwap": memory,
        "PidsLimit": size.pids_limit,
        "CpuShares": size.cpu_shares,
        # Output is the init's to relay: Docker keeps none of it on disk.
        "LogConfig": {"Type": "none", "Config": {}},
        "NetworkMode": scope.network(spec.app_id),
        "RestartPolicy": {"Name": "no"},
        # A mount (not a bind) of the init: a host without the file fails the create
        # instead of getting an empty folder made in its place.
        "Mounts": [
            {"Type": "bind", "Source": init, "Target": dynoinit.INIT_PATH, "ReadOnly": True}
        ],
        "Binds": [f"{log_dir}:{dynoinit.LOG_DIR}:ro"] if log_dir and not tty else [],
        "Privileged": False,
    }
    if publish:
        host_config["PortBindings"] = {port_key: [{"HostIp": address, "HostPort": ""}]}
    return {
        "Image": spec.image,
        "User": "10000:10000",
        "Entrypoint": [dynoinit.INIT_PATH, *(["--tty"] if tty else []), "--"],
        "Cmd": argv,
        "Env": [f"{key}={value}" for key, value in platform_env(spec, port).items()],
        # The env frame arrives on stdin; a dyno's stdin closes after it, a one-off's
        # terminal stays open.
        "OpenStdin": True,
        "StdinOnce": not tty,
        "AttachStdin": True,
        "Labels": labels(spec, scope),
        "ExposedPorts": {port_key: {}},
        "HostConfig": host_config,
        "StopSignal": "SIGTERM",
    }


async def start_with_env(container: aiodocker.containers.DockerContainer, frame: bytes) -> None:
    """Start a container whose init waits for its env, and write the frame on its stdin.

    Attached before the start, so the init reads the frame from this connection; closing
    it closes the dyno's stdin (`StdinOnce`).
    """
    async with container.attach(stdin=True) as stream:
        await container.start()
        await stream.write_in(frame)


async def ensure_network(
    docker: aiodocker.Docker, app_id: str, scope: Scope, pool: str = ""
) -> None:
    """Create the app's network if missing, as network-wirer would (`libs.appnet`)."""
    await appnet.ensure_app_network(docker, app_id, scope=scope, pool=pool)


def has_registry_host(image: str) -> bool:
    """Whether `image` names a registry ("host:port/…" or "a.b/…"), so it may need a pull."""
    first, _, rest = image.partition("/")
    return bool(rest) and ("." in first or ":" in first or first == "localhost")


async def ensure_image(
    docker: aiodocker.Docker, image: str, credentials: Credentials | None
) -> None:
    """Pull `image` unless the engine has it already (locally built images are never pulled)."""
    try:
        await docker.images.inspect(image)
        return
    except aiodocker.DockerError as exc:
        if exc.status != 404:
            raise
    auth = None
    if credentials is not None:
        auth = {
            "username": credentials.username,
            "password": credentials.password,
            "serveraddress": credentials.registry,
        }
    await docker.images.pull(image, auth=auth)


def private_address(info: dict[str, Any], app_id: str, scope: Scope) -> str | None:
    """The container's address on its app's network, from an inspect (None: not attached)."""
    networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
    found = (networks.get(scope.network(app_id)) or {}).get("IPAddress")
    return str(found) if found else None


def published_port(info: dict[str, Any], port: int) -> int | None:
    """The host port Docker picked for the container's `$PORT`, from an inspect."""
    bindings = (info.get("NetworkSettings") or {}).get("Ports") or {}
    for binding in bindings.get(f"{port}/tcp") or []:
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    return None
