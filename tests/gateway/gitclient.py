"""Real `git` for the push tests: a work tree with commits, pushed over the gateway's smart HTTP.

Run as subprocesses of this event loop (the gateway serves in the same loop),
with no credential helper and no prompt: the token travels in the URL.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Run:
    code: int
    out: str


def git_env(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
        "LANG": "C.UTF-8",
    }


async def git(cwd: Path, *args: str, output: IO[bytes] | None = None) -> Run:
    """Run git in `cwd`; its exit status and combined output."""
    process = await asyncio.create_subprocess_exec(
        "git",
        "-c",
        "credential.helper=",
        *args,
        cwd=cwd,
        env=git_env(cwd),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=output or asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return Run(process.returncode or 0, (out or b"").decode(errors="replace"))


async def work_tree(path: Path, files: Mapping[str, str | bytes], branch: str = "main") -> Path:
    """A new repository at `path` with one commit of `files`."""
    path.mkdir(parents=True)
    await git(path, "init", "-q", "-b", branch)
    return await commit(path, files)


async def commit(path: Path, files: Mapping[str, str | bytes], message: str = "change") -> Path:
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    await git(path, "add", "-A")
    run = await git(path, "commit", "-q", "-m", message)
    assert run.code == 0, run.out
    return path


def push_url(api_url: str, app: str, token: str | None) -> str:
    """`http://git:<token>@host:port/<app>.git` (no credentials when `token` is None)."""
    parts = urlsplit(api_url)
    auth = f"git:{token}@" if token else ""
    return f"{parts.scheme}://{auth}{parts.netloc}/{app}.git"


async def head(path: Path) -> str:
    return (await git(path, "rev-parse", "HEAD")).out.strip()
