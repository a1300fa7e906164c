"""Secrets never reach a log file, and nothing under SLIPWAY_HOME is readable by others.

The first test runs Slipway's real logging set-up in a child Python process and
logs an exception raised where a local variable holds a secret. The others start
the real supervisor (nats-server, keyring, gateway as their own processes) in a
temporary SLIPWAY_HOME, act as a customer over HTTP, stop it, and read what it
left on disk.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import assert_eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ACCEPT = "application/vnd.heroku+json; version=3"

CRASHING_HANDLER = """
import structlog
from slipway.libs.service.logging import configure_logging

configure_logging("gateway", fmt="{fmt}")
log = structlog.get_logger("slipway.gateway.http")

def handler(body):
    database_url = body["DATABASE_URL"]
    raise ValueError("the handler failed")

try:
    handler({{"DATABASE_URL": "{secret}"}})
except ValueError:
    log.exception("http.crashed")
"""


def logged_crash(fmt: str, secret: str) -> str:
    """What a real service's logging writes for a crash whose frame holds `secret`."""
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_HANDLER.format(fmt=fmt, secret=secret)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=60,
    )
    return done.stderr


def test_logged_traceback_carries_no_local_variables() -> None:
    """A crash whose frame holds a secret logs the traceback (JSON) without the secret."""
    secret = f"postgres://u:canary-{uuid.uuid4().hex}@db/x"
    output = logged_crash("json", secret)
    assert "the handler failed" in output
    assert "handler" in output  # the frames are still there
    assert secret not in output


# ---- the real platform ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Platform:
    home: Path
    api_url: str
    token: str

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One API request as the admin; the status and the decoded body."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 (the test's own loopback http URL)
            self.api_url + path,
            data=data,
            method=method,
            headers={
                "Accept": ACCEPT,
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")


def start_platform(home: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    env = {
        **os.environ,
        "SLIPWAY_HOME": str(home),
        "SLIPWAY_NATS_PORT": str(free_port()),
        "SLIPWAY_API_PORT": str(free_port()),
        "SLIPWAY_LOG_FORMAT": "json",
    }
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "slipway.libs.supervisor", "--grace", "10"),
            *("--only", "keyring", "--only", "gateway"),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return process, env


def stop_platform(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture
async def used_platform(tmp_path: Path) -> tuple[Path, list[str]]:
    """A platform that was used (an app, a secret config var), then stopped: its home."""
    home = tmp_path / "var"
    # What an older Slipway (or a umask-ignoring child) left readable by others.
    legacy = home / "legacy"
    legacy.mkdir(parents=True)
    legacy.chmod(0o755)
    (legacy / "old.log").write_text("left by an older version\n")
    (legacy / "old.log").chmod(0o644)
    process, _ = start_platform(home)
    try:

        async def serving() -> Platform:
            bootstrap = json.loads((home / "gateway" / "bootstrap.json").read_text())
            platform = Platform(home, bootstrap["api_url"], bootstrap["token"])
            status, _ = await asyncio.to_thread(platform.call, "GET", "/account")
            assert status == 200
            return platform

        platform = await assert_eventually(
            lambda: serving_or_fail(serving), timeout=60, interval=0.2
        )
        secrets = [platform.token, *await asyncio.to_thread(exercise, platform)]
    finally:
        await asyncio.to_thread(stop_platform, process)
    return home, secrets


async def serving_or_fail(check: Callable[[], Awaitable[Platform]]) -> Platform:
    """`check()`, with "not there yet" (no file, refused connection) as an AssertionError."""
    try:
        return await check()
    except (OSError, ValueError, KeyError) as exc:
        raise AssertionError(f"not serving yet: {exc!r}") from None


def exercise(platform: Platform) -> list[str]:
    """Create an app and set a secret config var, once accepted and once refused."""
    name = f"sec{uuid.uuid4().hex[:8]}"
    status, _ = platform.call("POST", "/apps", {"name": name})
    assert status == 201
    secret = f"canary-config-{uuid.uuid4().hex}"
    status, _ = platform.call("PATCH", f"/apps/{name}/config-vars", {"SECRET_KEY": secret})
    assert status == 200
    refused = f"canary-refused-{uuid.uuid4().hex}"
    status, _ = platform.call("PATCH", f"/apps/{name}/config-vars", {"bad name": refused})
    assert status in (400, 422)
    return [secret, refused]


def files_under(home: Path) -> list[Path]:
    return [Path(root, name) for root, dirs, files in os.walk(home) for name in [*dirs, *files]]


def test_no_config_value_or_token_in_any_log_file(used_platform: tuple[Path, list[str]]) -> None:
    """Neither the bearer token nor a config value is in any log file the platform wrote."""
    home, secrets = used_platform
    logs = [path for path in files_under(home) if path.suffix == ".log" and path.is_file()]
    assert any(path.name == "gateway.log" for path in logs), logs
    for path in logs:
        text = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in text, f"{secret[:12]}... found in {path}"


def test_every_file_under_home_is_owner_only(used_platform: tuple[Path, list[str]]) -> None:
    """Every file the services made under SLIPWAY_HOME is 0600-like and every folder 0700."""
    home, _ = used_platform
    loose = []
    for path in [home, *files_under(home)]:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue
        # The home lets the services' own users pass to their folders: search, never list.
        passable = stat.S_IXOTH if path == home else 0
        if info.st_mode & 0o077 & ~passable:
            loose.append(f"{oct(stat.S_IMODE(info.st_mode))} {path.relative_to(home.parent)}")
    assert loose == []
