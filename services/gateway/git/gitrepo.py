"""The bare repositories behind git pushes, and the `git` processes that serve them.

One bare repository per app, `<SLIPWAY_HOME>/gateway/repos/<app_id>.git` (by id,
so a rename keeps it), created on the first authorised push. `git` is always
started from an argument list, never through a shell, with an environment built
from nothing but what it needs: no token, no variable of the gateway's own.

Hooks live outside the repositories (`core.hooksPath` on the command line), in
`<SLIPWAY_HOME>/gateway/run/hooks`: the only hook, `pre-receive`, runs
`slipway.services.gateway.git.githook` with this interpreter, which hands the push
to the gateway over a unix socket and prints the build (see `pushes.py`).

A push holds a per-app lock across `git receive-pack`: an asyncio lock for the
pushes of this process, and `flock` on `repos/<app_id>.lock` for other gateway
processes sharing the folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from slipway.services.gateway.core.settings import GatewaySettings

GIT = "git"
FLOCK_POLL = 0.05


def repos_dir(settings: GatewaySettings) -> Path:
    path = settings.state_dir("gateway") / "repos"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def run_dir(settings: GatewaySettings) -> Path:
    path = settings.state_dir("gateway") / "run"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def repo_path(settings: GatewaySettings, app_id: str) -> Path:
    """Where an app's bare repository lives (it may not exist yet)."""
    return settings.home_path / "gateway" / "repos" / f"{app_id}.git"


def hook_program() -> str:
    """The pre-receive hook: this interpreter, isolated, running githook's main."""
    return (
        f"#!{sys.executable} -I\n"
        "# Written by the Slipway gateway at start; edits are overwritten.\n"
        "from slipway.services.gateway.git.githook import main\n"
        "raise SystemExit(main())\n"
    )


def install_hooks(settings: GatewaySettings) -> Path:
    """Write the hooks folder (rewritten at each start, so it follows the interpreter)."""
    hooks = run_dir(settings) / "hooks"
    hooks.mkdir(mode=0o700, exist_ok=True)
    hook = hooks / "pre-receive"
    partial = hooks / ".pre-receive.part"
    partial.write_text(hook_program())
    partial.chmod(0o700)
    partial.replace(hook)
    return hooks


def base_env(settings: GatewaySettings, **extra: str) -> dict[str, str]:
    """The whole environment of a git process: nothing inherited but PATH."""
    home = run_dir(settings) / "git-home"
    home.mkdir(mode=0o700, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "LANG": "C.UTF-8",
        **extra,
    }


def git_args(settings: GatewaySettings, *args: str) -> list[str]:
    """`git` with the gateway's fixed configuration, then `args`."""
    hooks = run_dir(settings) / "hooks"
    return [
        GIT,
        "-c",
        f"core.hooksPath={hooks}",
        "-c",
        "receive.fsckObjects=true",
        "-c",
        "receive.denyDeletes=true",
        "-c",
        "gc.auto=0",
        *args,
    ]


async def run_git(
    settings: GatewaySettings, *args: str, cwd: Path | None = None
) -> tuple[int, bytes]:
    """Run git to completion; its exit status and stdout."""
    process = await asyncio.create_subprocess_exec(
        *git_args(settings, *args),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=base_env(settings),
        cwd=cwd,
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out


async def ensure_repo(settings: GatewaySettings, app_id: str) -> Path:
    """The app's bare repository, created if missing (call with the app's lock held)."""
    path = repo_path(settings, app_id)
    if (path / "HEAD").exists():
        return path
    repos_dir(settings)
    partial = path.with_name(f".{path.name}.init")
    if partial.exists():
        await asyncio.to_thread(_remove_tree, partial)
    code, _ = await run_git(
        settings, "init", "--quiet", "--bare", "--initial-branch=main", str(partial)
    )
    if code != 0:
        raise RuntimeError(f"git init failed for {app_id}")
    partial.rename(path)  # appears whole or not at all
    return path


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


async def current_ref(settings: GatewaySettings, repo: Path, ref: str) -> str | None:
    """The commit `ref` points at now, or None if it does not exist."""
    code, out = await run_git(settings, "--git-dir", str(repo), "rev-parse", "--verify", "-q", ref)
    return out.decode().strip() if code == 0 else None


@contextlib.asynccontextmanager
async def file_lock(path: Path) -> AsyncIterator[None]:
    """An exclusive flock on `path`, polled so that waiting can be cancelled."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(FLOCK_POLL)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def lock_path(settings: GatewaySettings, app_id: str) -> Path:
    return repos_dir(settings) / f"{app_id}.lock"


# ---- pkt-lines (git's framing: 4 hex digits of length, including themselves) ---------------


def pkt_line(data: bytes) -> bytes:
    return f"{len(data) + 4:04x}".encode() + data


FLUSH = b"0000"


def first_pkt(body: bytes) -> bytes:
    """The payload of the first pkt-line of `body` (empty if there is none)."""
    try:
        length = int(body[:4], 16)
    except ValueError:
        return b""
    return body[4:length] if length >= 4 else b""


def wants_sideband(body: bytes) -> bool:
    """Whether a receive-pack request asked for side-band progress (after the NUL)."""
    _, _, capabilities = first_pkt(body).partition(b"\0")
    words = capabilities.split()
    return b"side-band-64k" in words or b"side-band" in words


def progress(message: str) -> bytes:
    """A side-band progress packet: git prints it as `remote: <message>`."""
    return pkt_line(b"\x02" + message.encode())
