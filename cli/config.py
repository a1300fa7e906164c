"""Where the CLI keeps its credentials, and how the environment overrides them.

The file is `${SLIPWAY_CONFIG_DIR:-~/.config/slipway}/credentials.json`, holding
`{"api_url", "token", "email"}`, readable by its owner only (0600) since the token
is a bearer credential. Like HEROKU_API_KEY, `SLIPWAY_API_KEY` replaces the stored
token and `SLIPWAY_API_URL` the stored API URL, which lets CI run without a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from slipway.cli.errors import CliError, UsageError

DEFAULT_API_URL = "http://127.0.0.1:5100"
FILE_MODE = 0o600
DIR_MODE = 0o700


@dataclass(frozen=True)
class Credentials:
    """The API to talk to and the bearer token to present to it."""

    api_url: str
    token: str | None = None
    email: str | None = None


def config_dir(env: Mapping[str, str]) -> Path:
    """The CLI's configuration directory."""
    configured = env.get("SLIPWAY_CONFIG_DIR")
    if configured:
        return Path(configured).expanduser()
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".config" / "slipway"


def credentials_path(env: Mapping[str, str]) -> Path:
    """The credentials file's path (it may not exist)."""
    return config_dir(env) / "credentials.json"


def normalize_api_url(url: str) -> str:
    """`url` without a trailing slash, after checking it is an http(s) URL with a host."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"The API URL must look like http://host:port (got {url or 'nothing'!r}).")
    return url


def load_stored(env: Mapping[str, str]) -> Credentials | None:
    """The credentials on disk, or None when there is no file."""
    path = credentials_path(env)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CliError(f"Cannot read {path}: {exc.strerror}.") from exc
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CliError(f"{path} is not valid JSON; run `slipway login` again.") from exc
    if not isinstance(data, dict):
        raise CliError(f"{path} is not a credentials object; run `slipway login` again.")
    return Credentials(
        api_url=_text(data.get("api_url")) or DEFAULT_API_URL,
        token=_text(data.get("token")),
        email=_text(data.get("email")),
    )


def effective(env: Mapping[str, str]) -> Credentials:
    """What a command uses: the stored credentials with the environment's overrides applied."""
    stored = load_stored(env) or Credentials(api_url=DEFAULT_API_URL)
    api_url = env.get("SLIPWAY_API_URL") or stored.api_url
    token = env.get("SLIPWAY_API_KEY") or stored.token
    return Credentials(api_url=normalize_api_url(api_url), token=token, email=stored.email)


def save(credentials: Credentials, env: Mapping[str, str]) -> Path:
    """Write the credentials atomically with mode 0600 and return the file's path."""
    path = credentials_path(env)
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    body = json.dumps(
        {"api_url": credentials.api_url, "token": credentials.token, "email": credentials.email},
        indent=2,
    )
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # The mode is set at creation: a chmod afterwards would leave a window in which
    # the token is readable by others under a permissive umask.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(body + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def delete(env: Mapping[str, str]) -> bool:
    """Remove the credentials file; True if there was one."""
    try:
        credentials_path(env).unlink()
    except FileNotFoundError:
        return False
    return True


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
