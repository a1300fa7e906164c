"""A whole platform under its supervisor, as `scripts/up` runs it, for the end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from slipway.contracts.scope import Scope

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Platform:
    home: Path
    env: dict[str, str]
    api_url: str
    router_port: int
    process: subprocess.Popen[bytes]
    started: Path  # touched before the platform started

    def cli(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        """Run `slipway ARGS`; the output, or the test fails with both streams."""
        done = subprocess.run(
            [sys.executable, "-m", "slipway.cli.main", *args],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.home,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"slipway {' '.join(args)}: {done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    def get(self, host: str, path: str = "/") -> tuple[int, str]:
        """A request through the router, as a browser asking for `host` would make it."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.router_port}{path}", headers={"Host": host}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll `check()` until it returns something (sync: the platform runs in other processes)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            found = check()
        except (AssertionError, OSError) as exc:
            last = exc
        else:
            if found:
                return found
            last = found
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


def answered(platform: Platform, host: str) -> str | None:
    status, body = platform.get(host)
    return body if status == 200 else None


def with_text(text: str, *needles: str) -> str | None:
    return text if all(needle in text for needle in needles) else None


def own_env(var: Path, cli_home: Path, scope: Scope, **extra: str) -> dict[str, str]:
    """A platform's environment of its own: free ports, `scope`'s names, its state in `var`,
    the CLI's config and git's HOME under `cli_home` (no user git config), then `extra`."""
    router_port = str(free_port())
    return {
        **os.environ,
        "SLIPWAY_NATS_PORT": str(free_port()),
        "SLIPWAY_API_PORT": str(free_port()),
        "SLIPWAY_REGISTRY_PORT": str(free_port()),
        "SLIPWAY_ROUTER_HTTP_PORT": router_port,
        "SLIPWAY_ROUTER_PORT": router_port,
        "SLIPWAY_ROUTER_HTTPS_PORT": str(free_port()),
        "SLIPWAY_HOME": str(var),
        "SLIPWAY_SCOPE": scope.name,
        "SLIPWAY_BUILD_NETWORK": scope.build_network,
        "SLIPWAY_LOG_FORMAT": "json",
        "SLIPWAY_CONFIG_DIR": str(cli_home / "cli"),
        "HOME": str(cli_home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        **extra,
    }


def as_admin(platform: Platform, var: Path) -> None:
    """Point the platform's CLI environment at its API with the bootstrap admin's token."""
    bootstrap = json.loads((var / "gateway" / "bootstrap.json").read_text())
    platform.api_url = bootstrap["api_url"]
    platform.env |= {
        "SLIPWAY_API_URL": bootstrap["api_url"],
        "SLIPWAY_API_KEY": bootstrap["token"],
        "ADMIN_EMAIL": bootstrap["email"],
    }


def start(home: Path, env: dict[str, str], started: Path | None = None) -> Platform:
    """The supervisor on `home` (a SLIPWAY_HOME), waited for until every service answers.

    `started` is a file touched before it started (places_at_rest looks for newer files).
    """
    env = {**env, "SLIPWAY_HOME": str(home)}
    process = subprocess.Popen(
        [sys.executable, "-m", "slipway.libs.supervisor", "--grace", "10"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    services = subprocess.run(
        [sys.executable, "-m", "slipway.libs.supervisor", "--list"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    waited = subprocess.run(
        [sys.executable, "-m", "slipway.libs.health", "--timeout", "120", "--wait", *services],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if waited.returncode != 0:
        stop(process)
        pytest.fail(f"the platform did not come up: {waited.stdout}{waited.stderr}")
    api_url = env.get("SLIPWAY_API_URL") or f"http://127.0.0.1:{env['SLIPWAY_API_PORT']}"
    return Platform(home.parent, env, api_url, int(env["SLIPWAY_ROUTER_PORT"]),
                    process, started or home)  # fmt: skip


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
