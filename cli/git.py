"""The few git operations the CLI needs, run through the real `git` binary.

Remotes tell the CLI which app a directory belongs to (as Heroku's `heroku`
remote does), and `git:remote` / `apps:create` set them up.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from slipway.cli.errors import CliError

DEFAULT_REMOTE = "slipway"
_TIMEOUT = 15.0


@dataclass(frozen=True)
class Remote:
    """One URL of one git remote (a remote may carry several)."""

    name: str
    url: str


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
    except FileNotFoundError:
        raise CliError("git is not installed (or not on PATH).") from None
    except subprocess.TimeoutExpired:
        raise CliError(f"git {' '.join(args)} did not finish in {_TIMEOUT:.0f}s.") from None


def is_repository(cwd: Path) -> bool:
    """Whether `cwd` is inside a git work tree or repository."""
    try:
        return _git(cwd, "rev-parse", "--git-dir").returncode == 0
    except CliError:
        return False


def remotes(cwd: Path) -> list[Remote]:
    """Every remote URL of the repository at `cwd`; empty outside a repository or without git."""
    try:
        # --local fails (128) outside a repository instead of reading the user's global config.
        result = _git(cwd, "config", "--local", "--get-regexp", r"^remote\..+\.url$")
    except CliError:
        return []
    if result.returncode != 0:
        return []
    found: list[Remote] = []
    for line in result.stdout.splitlines():
        key, _, url = line.partition(" ")
        # Remote names may contain dots: strip the fixed prefix and suffix only.
        name = key.removeprefix("remote.").removesuffix(".url")
        if name and url:
            found.append(Remote(name=name, url=url.strip()))
    return found


def app_from_url(url: str) -> str | None:
    """The app a Slipway git URL points at (`http://host/<app>.git`), else None."""
    path = urlsplit(url).path if "://" in url else ""
    last = path.rstrip("/").rpartition("/")[2]
    if not last.endswith(".git"):
        return None
    app = last.removesuffix(".git")
    return app or None


def app_git_url(api_url: str, app: str) -> str:
    """Where the gateway serves an app's repository: `<api url>/<app>.git`."""
    return f"{api_url.rstrip('/')}/{app}.git"


def host_of(url: str) -> str:
    """The host[:port] part of an http(s) URL, lower-cased."""
    return urlsplit(url).netloc.lower() if "://" in url else ""


def set_remote(cwd: Path, name: str, url: str) -> str:
    """Point remote `name` at `url`, adding it if absent; returns "added" or "updated"."""
    if not is_repository(cwd):
        raise CliError(f"{cwd} is not a git repository; run `git init` first.")
    existing = {remote.name for remote in remotes(cwd)}
    verb = "set-url" if name in existing else "add"
    result = _git(cwd, "remote", verb, name, url)
    if result.returncode != 0:
        detail = " ".join(result.stderr.split()) or f"exit status {result.returncode}"
        raise CliError(f"git remote {verb} {name} failed: {detail}")
    return "updated" if verb == "set-url" else "added"


def remove_remote(cwd: Path, name: str) -> None:
    """Remove remote `name`; a missing remote is not an error."""
    _git(cwd, "remote", "remove", name)
