"""git:credential: git pushes to the platform without a token in the URL.

`slipway login` (and `scripts/up`, for the admin) registers this command as git's
credential helper for the API's origin only, in the user's global git config:

    [credential "http://127.0.0.1:5100"]
        helper = !SLIPWAY_CONFIG_DIR='…' '…/python' -m slipway.cli.main git:credential

so `git push slipway main` asks it (git's credential protocol: `get` with
`protocol=`/`host=` lines on stdin) and gets `username=git` and the stored token. It
answers only for the API's own scheme, host and port, never for another host. `slipway
logout` removes the entry; `store` and `erase` are accepted and ignored (the token lives
in the CLI's credentials file, nowhere else).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from slipway.cli import config
from slipway.cli.errors import CliError
from slipway.cli.registry import Context, arg, command

_TIMEOUT = 15.0


def origin(api_url: str) -> str:
    """`scheme://host[:port]` of the API: the only URL the helper is registered for."""
    parts = urlsplit(api_url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


def helper_command(env: Mapping[str, str]) -> str:
    """What git runs (a `!` helper is a shell command): this CLI, with its config folder."""
    folder = shlex.quote(str(config.config_dir(env)))
    python = shlex.quote(sys.executable)
    return f"!SLIPWAY_CONFIG_DIR={folder} {python} -m slipway.cli.main git:credential"


def _git_config(*args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            ["git", "config", "--global", *args],
            capture_output=True, text=True, timeout=_TIMEOUT, check=False,
        )  # fmt: skip
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None


def _global_config_is_a_file() -> bool:
    """Whether git's global config may be written: never /dev/null or another non-file.

    `git config --global` writes a lock file and renames it over the target: with
    GIT_CONFIG_GLOBAL=/dev/null (how scripts and tests say "no global config") it would
    replace the machine's /dev/null with a regular file.
    """
    target = os.environ.get("GIT_CONFIG_GLOBAL")
    if target is None:
        return True
    path = Path(target)
    if path.is_symlink():
        return False
    return path.is_file() or not path.exists()


def install(api_url: str, env: Mapping[str, str]) -> bool:
    """Register the helper for the API's origin; False when git is missing or refuses."""
    if not _global_config_is_a_file():
        return False
    key = f"credential.{origin(api_url)}.helper"
    done = _git_config("--replace-all", key, helper_command(env))
    return done is not None and done.returncode == 0


def uninstall(api_url: str) -> bool:
    """Remove the helper of the API's origin; False when there was none (or no git)."""
    if not _global_config_is_a_file():
        return False
    done = _git_config("--unset-all", f"credential.{origin(api_url)}.helper")
    return done is not None and done.returncode == 0


def answer(request: Mapping[str, str], credentials: config.Credentials) -> str:
    """The `get` reply: the token for the API's own origin, nothing for any other."""
    if not credentials.token:
        return ""
    api = urlsplit(credentials.api_url)
    asked_host = request.get("host", "").lower()
    api_host = api.netloc.rsplit("@", 1)[-1].lower()
    if request.get("protocol", "").lower() != api.scheme.lower() or asked_host != api_host:
        return ""
    return f"username=git\npassword={credentials.token}\n"


@command(
    "git:credential",
    "git's credential helper for the platform (slipway login installs it; git runs it)",
    arg("action", choices=("get", "store", "erase", "install", "uninstall")),
    description=(
        "git runs `slipway git:credential get` when a push to the API's origin needs a\n"
        "password; `install`/`uninstall` add or remove it in your global git config\n"
        "(login and logout do this for you)."
    ),
)
def credential(ctx: Context, args: argparse.Namespace) -> None:
    """Speak git's credential protocol, or (un)register the helper."""
    if args.action in ("install", "uninstall"):
        stored = config.load_stored(ctx.env)
        if stored is None:
            raise CliError("Not logged in: run `slipway login` first.")
        if args.action == "install":
            if not install(stored.api_url, ctx.env):
                raise CliError("Could not set git's credential helper (is git installed?).")
            ctx.note(f"git pushes to {origin(stored.api_url)} now use your stored token.")
        elif uninstall(stored.api_url):
            ctx.note(f"git's credential helper for {origin(stored.api_url)} removed.")
        return
    request: dict[str, str] = {}
    for line in ctx.stdin:
        key, sep, value = line.rstrip("\n").partition("=")
        if not line.strip():
            break
        if sep:
            request[key] = value
    if args.action == "get" and (reply := answer(request, ctx.credentials())):
        ctx.out(reply.rstrip("\n"))
