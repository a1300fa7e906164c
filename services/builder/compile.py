"""The buildpack path of a build: stage buildpacks, fill ENV_DIR, run the build container.

Returns the app's process types: each buildpack's `default_process_types`,
overridden by the Procfile. `config_vars` a buildpack releases become defaults
in `/app/.profile.d/000-buildpack-defaults.sh` (a config var set on the app wins).
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
from slipway.libs.crypto import Binding, envelope
from slipway.libs.errors import SlipwayError
from slipway.services.builder.buildpacks import DRIVER, parse_release, stage
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


async def compile_app(
    builder: Builder,
    cmd: BuildRequested,
    out: OutputStream,
    work: Path,
    procfile: dict[str, str] | None,
) -> dict[str, str]:
    """Run the buildpacks over `work/app`; return the process types."""
    s = builder.settings
    staged, each_must_detect = await stage(cmd.buildpacks, work / "buildpacks")
    config = await config_vars(builder, cmd, out)
    mounts = BuildMounts(
        app=work / "app",
        env=work / "env",
        buildpacks=work / "buildpacks",
        slipway=work / "slipway",
        cache_volume=await ensure_cache_volume(builder.docker, s, cmd.app_id, cmd.team_id),
    )
    await asyncio.to_thread(_prepare, mounts, config, s.build_uid)
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
        failure = mounts.slipway / "out" / "failure"
        reason = failure.read_text().strip() if failure.is_file() else ""
        raise BuildpackFailed(reason or f"the build container exited with status {code}")
    defaults, released_vars = _releases(mounts.slipway / "out", len(staged))
    _write_default_vars(mounts.app, released_vars)
    process_types = {**defaults, **(procfile or {})}
    await _report_types(out, process_types, procfile is not None)
    return process_types


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


def _prepare(mounts: BuildMounts, config: dict[str, str], uid: int) -> None:
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
    # The build user owns what it may write: the app folder and the output folder.
    for root in (mounts.app, mounts.slipway / "out"):
        os.chown(root, uid, uid)
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                os.lchown(os.path.join(dirpath, name), uid, uid)
    for folder in (mounts.env, mounts.slipway, mounts.buildpacks):
        folder.chmod(0o755)


def _releases(out_dir: Path, count: int) -> tuple[dict[str, str], dict[str, str]]:
    types: dict[str, str] = {}
    config: dict[str, str] = {}
    for index in range(count):
        path = out_dir / f"release-{index}.yml"
        if path.is_file():
            more_types, more_config = parse_release(path.read_text(errors="replace"))
            types.update(more_types)
            config.update(more_config)
    return types, config


def _write_default_vars(app_dir: Path, config: dict[str, str]) -> None:
    if not config:
        return
    profile = app_dir / ".profile.d"
    profile.mkdir(exist_ok=True)
    lines = [
        f'[ -n "${{{name}+set}}" ] || export {name}={shlex.quote(value)}'
        for name, value in config.items()
        if name.isidentifier()
    ]
    (profile / "000-buildpack-defaults.sh").write_text("\n".join(lines) + "\n")


async def _report_types(out: OutputStream, types: dict[str, str], from_procfile: bool) -> None:
    await out.line("-----> Discovering process types")
    source = "Procfile declares" if from_procfile else "Default"
    shown = ", ".join(sorted(types)) or "(none)"
    await out.line(f"       {source} types -> {shown}")
    if "web" not in types:
        await out.line("       No web process: add a Procfile with `web: <command>` to serve HTTP")
