"""Heroku classic buildpacks: which ones a build runs, and the script that runs them.

A buildpack is a folder with `bin/detect`, `bin/compile` and (optionally)
`bin/release`, called exactly as Heroku calls them:

    bin/detect BUILD_DIR                     exit 0 and print a name: "this app is mine"
    bin/compile BUILD_DIR CACHE_DIR ENV_DIR  build the app in place, streaming output
    bin/release BUILD_DIR                    print YAML: default_process_types, config_vars

A request names a buildpack by built-in name ("python", "nodejs", "static") or
by an `https://` URL: a git repository (with `#ref` for a branch or tag) or a
`.tgz`/`.tar.gz` tarball. Anything else (`http://`, `file://`, `ssh://`,
`git://`, `git@host:`, a host path) fails the build: a customer's name must
never make the builder read the host or reach the platform's network. Each
buildpack named must detect the app; with none named the built-ins are tried
in order and the first that detects runs.

A URL is checked on the host by the egress guard (`libs/egress`: resolved
once, every address checked) and then fetched by a short, hardened container
(`container.fetch_config`) pinned to the checked addresses (`curl --resolve`,
git's `http.curloptResolve`), with no redirects, within a time limit and into a
size-capped tmpfs. The host never reads the fetched tree: the build container
mounts it read-only.

Everything runs in one build container (see `container.py`): `DRIVER` below is
its entry point. It writes each buildpack's release YAML to /slipway/out and,
when it stops a build, a one-line reason to /slipway/out/failure. The names
the customer gave are in /slipway/names (root-owned), never in a buildpack folder.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import stat
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiodocker

from slipway.libs import safefs
from slipway.libs.egress import Destination, EgressError, policy_for, resolve_checked
from slipway.services.builder.container import LineSink, fetch_config, run_build_container
from slipway.services.builder.errors import BuildpackFailed
from slipway.services.builder.settings import BuilderSettings

BUILTIN_DIR = Path(__file__).parent / "buildpacks"
BUILTINS = ("python", "nodejs", "static")
NAMES_FILE = "names"  # in /slipway: "<folder>\t<name>" per staged buildpack
_TARBALL_SUFFIXES = (".tgz", ".tar.gz")
_USERINFO = re.compile(r"//[^/@]*@")
# A branch or tag name as git allows it, minus what could read as an option or a path trick.
_REF = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}$")
ALLOWED_FORMS = (
    f"name a built-in buildpack ({', '.join(BUILTINS)}) or an https:// URL of a git"
    " repository (optionally with #branch or #tag) or of a .tgz/.tar.gz tarball"
)


@dataclass(frozen=True)
class Buildpack:
    """One buildpack staged into a build's work folder."""

    name: str  # how the customer named it
    folder: str  # its folder name under /buildpacks in the build container


@dataclass(frozen=True)
class RemoteBuildpack:
    """A buildpack named by an https:// URL: what to fetch and how."""

    url: str  # without the #ref
    ref: str | None
    kind: Literal["git", "tarball"]


Fetcher = Callable[[RemoteBuildpack, Path], Awaitable[None]]


async def stage(requested: list[str], dest: Path, fetch: Fetcher) -> tuple[list[Buildpack], bool]:
    """Copy or fetch the buildpacks into `dest`; also say whether each must detect."""
    names = requested or list(BUILTINS)
    # Every name is checked before anything is fetched: one refused name fails fast.
    remotes = {name: parse_remote(name) for name in names if name not in BUILTINS}
    await asyncio.to_thread(dest.mkdir, parents=True, exist_ok=True)
    staged: list[Buildpack] = []
    for index, name in enumerate(names):
        folder = f"{index:02d}-{_slug(name)}"
        target = dest / folder
        remote = remotes.get(name)
        if remote is None:
            await asyncio.to_thread(_copy_builtin, name, target)
        else:
            await fetch(remote, target)
        staged.append(Buildpack(name=name, folder=folder))
    return staged, bool(requested)


def parse_remote(name: str) -> RemoteBuildpack:
    """The URL buildpack `name` names; BuildpackFailed for any form that is not allowed."""
    shown = _shown(name)
    if not name.startswith("https://"):
        raise BuildpackFailed(f"buildpack {shown!r} is not allowed: {ALLOWED_FORMS}")
    url, _, ref = name.partition("#")
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc:
        # Credentials would be printed in the build output and kept with it.
        raise BuildpackFailed(
            "buildpack URLs cannot carry credentials ('user@'): name a public repository"
        )
    path = parts.path
    kind: Literal["git", "tarball"] = "tarball" if path.endswith(_TARBALL_SUFFIXES) else "git"
    if ref and kind == "tarball":
        raise BuildpackFailed(f"buildpack {shown!r}: a tarball URL takes no #ref; remove it")
    if ref and not _REF.match(ref):
        raise BuildpackFailed(
            f"buildpack {shown!r}: {ref!r} is not a branch or tag name (letters, digits, . _ / -)"
        )
    return RemoteBuildpack(url=url, ref=ref or None, kind=kind)


def _shown(name: str) -> str:
    # A name is echoed in the output, which is kept: never with the credentials it carries.
    name = _USERINFO.sub("//***@", name)
    return name if len(name) <= 200 else name[:200] + "..."


async def fetch_remote(
    docker: aiodocker.Docker,
    settings: BuilderSettings,
    remote: RemoteBuildpack,
    target: Path,
    sink: LineSink,
    labels: dict[str, str],
) -> None:
    """Fetch `remote` into `target` in a fetch container pinned to the guard's addresses."""
    destination = await _checked(settings, remote)
    await sink(f"-----> Fetching buildpack {remote.url}")
    await asyncio.to_thread(_make_target, target, settings.build_uid)
    pin = (
        f"{destination.host}:{destination.port}:{','.join(map(_bracketed, destination.addresses))}"
    )
    env = {
        "SLIPWAY_KIND": remote.kind,
        "SLIPWAY_URL": remote.url,
        "SLIPWAY_REF": remote.ref or "",
        "SLIPWAY_PIN": pin,
        "SLIPWAY_MAX_BYTES": str(settings.buildpack_max_bytes),
    }
    last: list[str] = []

    async def show(line: str) -> None:
        last[:] = [line]
        await sink(f"       {line}")

    limit = settings.buildpack_fetch_timeout
    code = await run_build_container(
        docker,
        fetch_config(settings, target, FETCH_SCRIPT, env, labels),
        show,
        timeout=limit,
        timeout_message=(
            f"fetching buildpack {remote.url} took longer than {limit:g}s and was stopped"
            " (limit: SLIPWAY_BUILDPACK_FETCH_TIMEOUT): make it smaller or serve it faster"
        ),
    )
    if code != 0:
        reason = last[0].removeprefix("slipway-fetch: ") if last else f"exit status {code}"
        raise BuildpackFailed(f"fetching buildpack {remote.url} failed: {reason}")


async def _checked(settings: BuilderSettings, remote: RemoteBuildpack) -> Destination:
    """The URL's host resolved once and checked by the egress guard."""
    policy = await asyncio.to_thread(policy_for, settings.egress_allow, settings.egress_deny)
    try:
        return await resolve_checked(remote.url, policy, schemes=("https",))
    except EgressError as exc:
        raise BuildpackFailed(f"buildpack {remote.url} refused: {exc.message}") from None


def _make_target(target: Path, uid: int) -> None:
    target.mkdir(mode=0o755)
    os.chown(target, uid, uid)


def _bracketed(address: str) -> str:
    # curl's --resolve (and git's http.curloptResolve) want IPv6 addresses in brackets.
    return f"[{address}]" if ":" in address else address


def _copy_builtin(name: str, target: Path) -> None:
    shutil.copytree(BUILTIN_DIR / name, target, symlinks=True)
    _make_readable(target)


def _slug(name: str) -> str:
    tail = name.rstrip("/").split("#")[0].rsplit("/", 1)[-1].removesuffix(".git")
    return re.sub(r"[^A-Za-z0-9_.-]", "-", tail)[:40] or "buildpack"


def _make_readable(root: Path) -> None:
    # The build runs as an unprivileged user: it must read every file and run bin/*
    # (whose executable bits an install from a wheel may drop). Only built-ins come
    # here (fetched buildpacks are made readable inside their fetch container); the walk
    # still follows no link.
    for entry in safefs.walk(root):
        mode = entry.info.st_mode
        if stat.S_ISLNK(mode):
            continue
        runnable = stat.S_ISDIR(mode) or mode & 0o100 or entry.rel.startswith("bin/")
        extra = 0o555 if runnable else 0o444
        os.chmod(entry.name, (mode | extra) & ~0o022 & 0o7777, dir_fd=entry.parent)
    root.chmod(0o755)


def parse_release(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """`default_process_types` and `config_vars` from `bin/release` YAML (the flat subset)."""
    sections: dict[str, dict[str, str]] = {"default_process_types": {}, "config_vars": {}}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#") or line.strip() == "---":
            continue
        if not line[0].isspace():
            key, _, rest = line.partition(":")
            current = sections.get(key.strip())
            if current is not None and rest.strip() not in ("", "{}"):
                raise BuildpackFailed(f"bin/release printed {key.strip()} in a form not understood")
            continue
        if current is None:
            continue
        key, sep, value = line.strip().partition(":")
        if not sep:
            raise BuildpackFailed(f"bin/release printed a line that is not YAML: {line.strip()!r}")
        current[_unquote(key.strip())] = _unquote(value.strip())
    return sections["default_process_types"], sections["config_vars"]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        inner = value[1:-1]
        return inner.replace("''", "'") if value[0] == "'" else inner.replace('\\"', '"')
    return value


# The build container's entry point, and the fetch container's script (files of their
# own, so that they read as shell).
DRIVER = (BUILTIN_DIR / "driver.sh").read_text()
FETCH_SCRIPT = (BUILTIN_DIR / "fetch.sh").read_text()
