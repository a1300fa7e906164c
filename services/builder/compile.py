"""The buildpack path of a build: stage buildpacks, fill ENV_DIR, run the build container.

Returns the app's process types: each buildpack's `default_process_types`,
overridden by the Procfile. `config_vars` a buildpack releases become defaults
in `/app/.profile.d/000-buildpack-defaults.sh` (a config var set on the app wins).

Build code runs as the build user in `app/` and `slipway/out/`, so after it ran
the builder (root) reads and writes there only through `libs/safefs`: no link
is followed, only regular files are read, and only so many bytes. A link, a
FIFO or a device where the builder looks fails the build, saying so.
"""

from __future__ import annotations

import asyncio
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from slipway.contracts.builder import BuildRequested
from slipway.contracts.gateway import CONFIG_SEALED_GET, GetSealedConfig
from slipway.contracts.keyring import Purpose
from slipway.libs import safefs
from slipway.libs.crypto import Binding, envelope
from slipway.libs.errors import SlipwayError
from slipway.services.builder.buildpacks import (
    DRIVER,
    NAMES_FILE,
    Buildpack,
    Fetcher,
    RemoteBuildpack,
    fetch_remote,
    parse_release,
    stage,
)
from slipway.services.builder.container import (
    LABEL_APP,
    LABEL_BUILD,
    BuildMounts,
    container_config,
    ensure_cache_volume,
    run_build_container,
)
from slipway.services.builder.errors import BuildError, BuildpackFailed
from slipway.services.builder.output import OutputStream

if TYPE_CHECKING:
    from slipway.services.builder.build import Builder

_config = msgspec.json.Decoder(dict[str, str])

# What the builder reads back from /slipway/out: a one-line reason, small YAML files.
FAILURE_MAX_BYTES = 4096
RELEASE_MAX_BYTES = 64 * 1024
DEFAULTS_FILE = ".profile.d/000-buildpack-defaults.sh"


async def compile_app(
    builder: Builder,
    cmd: BuildRequested,
    out: OutputStream,
    work: Path,
    procfile: dict[str, str] | None,
) -> dict[str, str]:
    """Run the buildpacks over `work/app`; return the process types."""
    s = builder.settings
    staged, each_must_detect = await stage(
        cmd.buildpacks, work / "buildpacks", fetcher(builder, cmd, out)
    )
    config = await config_vars(builder, cmd, out)
    mounts = BuildMounts(
        app=work / "app",
        env=work / "env",
        buildpacks=work / "buildpacks",
        slipway=work / "slipway",
        cache_volume=await ensure_cache_volume(builder.docker, s, cmd.app_id, cmd.team_id),
    )
    await asyncio.to_thread(_prepare, mounts, config, staged, s.build_uid)
    env = {
        "SLIPWAY_DETECT": "each" if each_must_detect else "first",
        "STACK": cmd.stack,
        "SOURCE_VERSION": cmd.source.version or "",
        "BUILD_ID": cmd.build_id,
    }
    labels = {LABEL_BUILD: cmd.build_id, LABEL_APP: cmd.app_id}
    code = await run_build_container(
        builder.docker,
        container_config(s, mounts, env, labels),
        out.line,
        timeout=s.build_timeout,
    )
    if code != 0:
        reason = await asyncio.to_thread(_failure_reason, mounts.slipway)
        raise BuildpackFailed(reason or f"the build container exited with status {code}")
    defaults, released_vars = await asyncio.to_thread(_releases, mounts.slipway, len(staged))
    await asyncio.to_thread(_write_default_vars, mounts.app, released_vars)
    process_types = {**defaults, **(procfile or {})}
    await _report_types(out, process_types, procfile is not None)
    return process_types


def fetcher(builder: Builder, cmd: BuildRequested, out: OutputStream) -> Fetcher:
    """How this build fetches a buildpack named by URL (labelled as the build, for clean-up)."""
    labels = {LABEL_BUILD: cmd.build_id, LABEL_APP: cmd.app_id}

    async def fetch(remote: RemoteBuildpack, target: Path) -> None:
        await fetch_remote(builder.docker, builder.settings, remote, target, out.line, labels)

    return fetch


async def config_vars(builder: Builder, cmd: BuildRequested, out: OutputStream) -> dict[str, str]:
    """The app's config vars for ENV_DIR; empty (with a note) when the gateway cannot say."""
    try:
        sealed = await builder.bus.call(
            CONFIG_SEALED_GET,
            GetSealedConfig(app_id=cmd.app_id),
            timeout=builder.settings.config_timeout,
        )
    except SlipwayError as exc:
        await out.line(
            f"       Config vars unavailable (the gateway did not answer: {exc.code});"
            " building with an empty ENV_DIR"
        )
        return {}
    if not sealed.ciphertext:
        return {}
    binding = Binding(
        team=sealed.team_id, app=sealed.app_id, kind=sealed.binding_kind,
        record=sealed.binding_record,
    )  # fmt: skip
    try:
        plaintext = await envelope.decrypt(
            builder.bus, sealed.team_id, Purpose.CONFIG, binding, sealed.ciphertext
        )
    except SlipwayError as exc:
        # Building without the config the app has would make a different app: stop.
        raise BuildError(f"could not read the app's config vars: {exc.message}") from None
    return _config.decode(plaintext)


def _prepare(
    mounts: BuildMounts, config: dict[str, str], staged: list[Buildpack], uid: int
) -> None:
    for folder in (mounts.env, mounts.slipway / "out"):
        folder.mkdir(parents=True, exist_ok=True)
    for name, value in config.items():
        if "/" in name or name.startswith(".") or not name:
            continue  # not a file name; config var names never look like this
        path = mounts.env / name
        path.write_text(value)
        os.chown(path, uid, uid)
        path.chmod(0o400)
    (mounts.slipway / "run").write_text(DRIVER)
    # The names the customer gave, for the driver's messages: in the root-owned /slipway,
    # not in the buildpack folders (whose content a fetched buildpack controls).
    names = "".join(f"{bp.folder}\t{bp.name}\n" for bp in staged)
    (mounts.slipway / NAMES_FILE).write_text(names)
    # The builder runs under umask 077 (libs/service/private.py): the build user reads these.
    (mounts.slipway / "run").chmod(0o644)
    (mounts.slipway / NAMES_FILE).chmod(0o644)
    # The build user owns what it may write: the app folder and the output folder. No build
    # code ran in them yet; the walk still follows no link.
    for root in (mounts.app, mounts.slipway / "out"):
        os.chown(root, uid, uid)
        for entry in safefs.walk(root):
            os.chown(entry.name, uid, uid, dir_fd=entry.parent, follow_symlinks=False)
    for folder in (mounts.env, mounts.slipway, mounts.buildpacks):
        folder.chmod(0o755)


def _failure_reason(slipway: Path) -> str:
    """The reason the driver wrote to /slipway/out/failure ("" if none), read safely."""
    data = _read_out(slipway, "out/failure", FAILURE_MAX_BYTES)
    lines = (data or b"").decode(errors="replace").strip().splitlines()
    return lines[0] if lines else ""


def _releases(slipway: Path, count: int) -> tuple[dict[str, str], dict[str, str]]:
    types: dict[str, str] = {}
    config: dict[str, str] = {}
    for index in range(count):
        data = _read_out(slipway, f"out/release-{index}.yml", RELEASE_MAX_BYTES)
        if data is not None:
            more_types, more_config = parse_release(data.decode(errors="replace"))
            types.update(more_types)
            config.update(more_config)
    return types, config


def _read_out(slipway: Path, rel: str, max_bytes: int) -> bytes | None:
    try:
        return safefs.read_optional(slipway, rel, max_bytes=max_bytes, label="/slipway/")
    except safefs.SafePathError as exc:
        raise BuildpackFailed(f"{exc.message} (the build left it there)") from None


def _write_default_vars(app_dir: Path, config: dict[str, str]) -> None:
    if not config:
        return
    lines = [
        f'[ -n "${{{name}+set}}" ] || export {name}={shlex.quote(value)}'
        for name, value in config.items()
        if name.isidentifier()
    ]
    data = ("\n".join(lines) + "\n").encode()
    try:
        # A `.profile.d` the build made a link to a host folder must not be written through.
        safefs.write_regular(app_dir, DEFAULTS_FILE, data, mode=0o644, label="/app/")
    except safefs.SafePathError as exc:
        raise BuildpackFailed(f"{exc.message} (the build left it there)") from None


async def _report_types(out: OutputStream, types: dict[str, str], from_procfile: bool) -> None:
    await out.line("-----> Discovering process types")
    source = "Procfile declares" if from_procfile else "Default"
    shown = ", ".join(sorted(types)) or "(none)"
    await out.line(f"       {source} types -> {shown}")
    if "web" not in types:
        await out.line("       No web process: add a Procfile with `web: <command>` to serve HTTP")
