"""Heroku classic buildpacks: which ones a build runs, and the script that runs them.

A buildpack is a folder with `bin/detect`, `bin/compile` and (optionally)
`bin/release`, called exactly as Heroku calls them:

    bin/detect BUILD_DIR                     exit 0 and print a name: "this app is mine"
    bin/compile BUILD_DIR CACHE_DIR ENV_DIR  build the app in place, streaming output
    bin/release BUILD_DIR                    print YAML: default_process_types, config_vars

A request names buildpacks by built-in name ("python", "nodejs", "static"), by
local path, or by git URL (`https://...`, `file://...`, with `#ref` for a
branch or tag). Each one named must detect the app; with none named the
built-ins are tried in order and the first that detects runs.

Everything runs in one build container (see `container.py`): `DRIVER` below is
its entry point. It writes each buildpack's release YAML to /slipway/out and,
when it stops a build, a one-line reason to /slipway/out/failure.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from slipway.services.builder.errors import BuildpackFailed

BUILTIN_DIR = Path(__file__).parent / "buildpacks"
BUILTINS = ("python", "nodejs", "static")


@dataclass(frozen=True)
class Buildpack:
    """One buildpack copied into a build's work folder."""

    name: str  # how the customer named it
    folder: str  # its folder name under /buildpacks in the build container


async def stage(requested: list[str], dest: Path) -> tuple[list[Buildpack], bool]:
    """Copy or clone the buildpacks into `dest`; also say whether each must detect."""
    names = requested or list(BUILTINS)
    staged: list[Buildpack] = []
    for index, name in enumerate(names):
        folder = f"{index:02d}-{_slug(name)}"
        target = dest / folder
        if _is_git_url(name):
            await _clone(name, target)
        elif name in BUILTINS:
            shutil.copytree(BUILTIN_DIR / name, target, symlinks=True)
        elif name.startswith("/"):
            await asyncio.to_thread(_copy_local, name, target)
        else:
            raise BuildpackFailed(
                f"unknown buildpack {name!r}: use python, nodejs, static, a git URL or a path"
            )
        if not (target / "bin" / "detect").is_file() or not (target / "bin" / "compile").is_file():
            raise BuildpackFailed(f"buildpack {name!r} has no bin/detect and bin/compile")
        (target / ".slipway-name").write_text(name + "\n")
        _make_readable(target)
        staged.append(Buildpack(name=name, folder=folder))
    return staged, bool(requested)


def _copy_local(name: str, target: Path) -> None:
    if not Path(name).is_dir():
        raise BuildpackFailed(f"buildpack folder {name!r} does not exist")
    shutil.copytree(name, target, symlinks=True)


def _slug(name: str) -> str:
    tail = name.rstrip("/").split("#")[0].rsplit("/", 1)[-1].removesuffix(".git")
    return re.sub(r"[^A-Za-z0-9_.-]", "-", tail)[:40] or "buildpack"


def _is_git_url(name: str) -> bool:
    return name.startswith(("https://", "http://", "git://", "file://", "ssh://", "git@"))


async def _clone(url: str, target: Path) -> None:
    repo, _, ref = url.partition("#")
    args = ["git", "clone", "--quiet", "--depth", "1"]
    if ref:
        args += ["--branch", ref]
    # `--` keeps a URL starting with a dash from being read as an option.
    proc = await asyncio.create_subprocess_exec(
        *args,
        "--",
        repo,
        str(target),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/bin:/bin"},
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        last = out.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise BuildpackFailed(f"cloning buildpack {url!r} failed: {last[0]}")
    shutil.rmtree(target / ".git", ignore_errors=True)


def _make_readable(root: Path) -> None:
    # The build runs as an unprivileged user: it must read every file and run bin/*
    # (whose executable bits an install from a wheel or a careless git commit may drop).
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        runnable = path.is_dir() or mode & 0o100 or path.parent == root / "bin"
        extra = 0o555 if runnable else 0o444
        path.chmod((mode | extra) & ~0o022)


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


# The build container's entry point (a file of its own, so that it reads as shell).
DRIVER = (BUILTIN_DIR / "driver.sh").read_text()
