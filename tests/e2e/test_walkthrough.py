"""The README's walkthrough, for real: the supervisor starts every service as its own process.

nats-server, HAProxy, the keyring, registry-proxy (with Distribution), the builder,
the scheduler, network-wirer, the log-shipper and the gateway run from one
supervisor on free ports under a temporary SLIPWAY_HOME, exactly as `scripts/up`
runs them. The test then acts as a customer, with the CLI and git only:
create an app, set a secret, push examples/python-hello, reach it through the
router, scale it, read its logs, run a one-off, and find neither the secret nor a
line the dyno printed anywhere on the machine's disk. Every container, image,
volume and network it made is removed afterwards.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from slipway.contracts.scope import Scope
from slipway.libs.haproxy import Runtime
from tests.conftest import new_scope, remove_scope_objects
from tests.e2e.supervised import (
    ROOT,
    Platform,
    answered,
    free_port,
    start,
    stop,
    wait_for,
    with_text,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.slow, pytest.mark.alone]

SECRET = f"canary-{uuid.uuid4().hex}"
LINE_CANARY = f"line-canary-{uuid.uuid4().hex}"  # printed by the dyno (its access log)
T = TypeVar("T")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    home = tmp_path_factory.mktemp("walkthrough")
    started = home / "started"
    started.touch()
    time.sleep(0.01)  # files written from now on are newer than the mark
    scope = new_scope()  # nothing of a `scripts/up` on this machine is touched, nor ours by it
    router_port = free_port()
    ports = {
        "SLIPWAY_NATS_PORT": free_port(),
        "SLIPWAY_API_PORT": free_port(),
        "SLIPWAY_REGISTRY_PORT": free_port(),
        "SLIPWAY_ROUTER_HTTP_PORT": router_port,
        "SLIPWAY_ROUTER_PORT": router_port,
        "SLIPWAY_ROUTER_HTTPS_PORT": free_port(),
    }
    env = {
        **os.environ,
        **{name: str(port) for name, port in ports.items()},
        "SLIPWAY_HOME": str(home / "var"),
        "SLIPWAY_SCOPE": scope.name,
        "SLIPWAY_LOG_FORMAT": "json",
        "SLIPWAY_METRICS_INTERVAL": "2",
        "SLIPWAY_BUILD_NETWORK": scope.build_network,
        "SLIPWAY_CONFIG_DIR": str(home / "cli"),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    platform = start(home / "var", env, started)
    try:
        bootstrap = json.loads((home / "var" / "gateway" / "bootstrap.json").read_text())
        platform.env |= {
            "SLIPWAY_API_URL": bootstrap["api_url"],
            "SLIPWAY_API_KEY": bootstrap["token"],
        }
        yield platform
    finally:
        stop(platform.process)
        remove_docker_leftovers(scope)


def remove_docker_leftovers(scope: Scope) -> None:
    """Containers and app networks of this run (its scope), its build network and chain."""
    remove_scope_objects(scope)
    subprocess.run(
        ["docker", "network", "rm", scope.build_network], capture_output=True, check=False
    )
    for argv in (["-D", "INPUT", "-j", scope.chain], ["-F", scope.chain], ["-X", scope.chain]):
        subprocess.run(["iptables", *argv], capture_output=True, check=False)


def dynos(platform: Platform, app: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(platform.cli("ps", "-a", app, "--json"))
    return listed


def web_dynos_up(platform: Platform, app: str, count: int, release: int | None = None) -> bool:
    """Exactly `count` web dynos, all up (and all of `release`, when given)."""
    web = [d for d in dynos(platform, app) if d.get("type") == "web"]
    return len(web) == count and all(
        d.get("state") == "up" and (release is None or d["release"]["version"] == release)
        for d in web
    )


def release_of(platform: Platform, app: str) -> int:
    releases = json.loads(platform.cli("releases", "-a", app, "--json"))
    return max(int(r["version"]) for r in releases)


class LoadLoop:
    """Requests through the router, one after another in a thread, until the block ends."""

    def __init__(self, platform: Platform, host: str) -> None:
        self.platform, self.host = platform, host
        self.statuses: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.statuses.append(self.platform.get(self.host)[0])
            except OSError as exc:
                self.statuses.append(0)  # the connection itself failed
                self.errors.append(f"{time.strftime('%H:%M:%S')} {exc!r}")
            time.sleep(0.02)

    def __enter__(self) -> LoadLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def push(platform: Platform, app: str, example: str) -> str:
    """git push examples/<example> to `app`: what the pusher sees."""
    tree = platform.home / f"src-{app}"
    shutil.copytree(ROOT / "examples" / example, tree)
    git = ["git", "-C", str(tree), "-c", "user.email=e2e@example.com", "-c", "user.name=e2e"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "deploy"]):
        subprocess.run([*git, *args], check=True, capture_output=True, env=platform.env)
    url = platform.api_url.replace("://", f"://git:{platform.env['SLIPWAY_API_KEY']}@")
    done = subprocess.run(
        [*git, "push", f"{url}/{app}.git", "main"],
        capture_output=True,
        text=True,
        env=platform.env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


@pytest.mark.timeout(900)
def router_dials(platform: Platform, count: int) -> list[str] | None:
    """The dyno addresses HAProxy routes to (read through its runtime API), once there are
    `count` (servers being drained are in maintenance and left out)."""
    # The runtime API is a unix socket in the router's folder (libs/haproxy).
    socket = platform.home / "var" / "haproxy" / "run" / "admin.sock"

    async def read() -> list[str]:
        runtime = Runtime(socket)
        try:
            return [s.dial for s in await runtime.show_servers() if not s.in_maintenance]
        finally:
            await runtime.close()

    found = asyncio.run(read())
    return found if len(found) == count else None


def test_the_walkthrough(platform: Platform) -> None:
    """Create, configure, push, route, scale, log, run: what a customer does on day one."""
    platform.cli("apps:create", "hello")
    platform.cli("config:set", "-a", "hello", f"SECRET_KEY={SECRET}")

    pushed = push(platform, "hello", "python-hello")
    assert "remote: -----> Python app detected" in pushed or "Python" in pushed
    assert "Released v" in pushed

    body = wait_for(lambda: answered(platform, "hello.localhost"), 90, "the app via the router")
    assert "Hello from python-hello" in body

    platform.cli("ps:scale", "-a", "hello", "web=2")
    wait_for(lambda: web_dynos_up(platform, "hello", 2), 90, "two web dynos up")
    for _ in range(10):
        assert platform.get("hello.localhost")[0] == 200
    # HAProxy runs beside the dynos: it dials them on the app's network, not a published port.
    pool = ipaddress.ip_network(Scope(platform.env["SLIPWAY_SCOPE"]).pool)
    dials = wait_for(lambda: router_dials(platform, 2), 30, "two dyno servers in HAProxy")
    assert all(ipaddress.ip_address(d.rsplit(":", 1)[0]) in pool for d in dials), dials

    # A new release (a config change) rolls out under load: no request fails meanwhile.
    with LoadLoop(platform, "hello.localhost") as load:
        before = release_of(platform, "hello")
        platform.cli("config:set", "-a", "hello", "GREETING=rolled")
        wait_for(
            lambda: web_dynos_up(platform, "hello", 2, release=before + 1),
            120,
            "the new release's dynos up",
        )
    failed = [status for status in load.statuses if status != 200]
    assert load.statuses and not failed, (len(load.statuses), failed, load.errors)

    logs = wait_for(
        lambda: with_text(platform.cli("logs", "-a", "hello", "-n", "300"), "heroku[router]"),
        30,
        "router lines in the logs",
    )
    assert "status=200" in logs and "State changed from starting to up" in logs

    table = wait_for(
        lambda: with_text(platform.cli("ps", "-a", "hello"), "MB/512MB", "%"),
        60,
        "CPU and memory in slipway ps",
    )
    assert "web.1" in table and "web.2" in table

    ran = platform.cli("run", "-a", "hello", "--", 'echo "from one-off: ${SECRET_KEY:0:7}"')
    assert "from one-off: canary-" in ran

    assert platform.get("nothing-here.localhost")[0] == 404


def places_at_rest(platform: Platform) -> list[Path]:
    """Every place the platform or Docker could have written to since the platform started.

    SLIPWAY_HOME holds the services' state, nats-server's store, the router's storage, the
    registry and the platform's log files; Docker's data root holds container configs and
    any on-disk log driver's files; /tmp and /var/log hold whatever else a process dropped.
    Only files modified since the platform started can hold a canary made after it.
    """
    docker_root = subprocess.run(
        ["docker", "info", "--format", "{{.DockerRootDir}}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    found = subprocess.run(
        ["find", str(platform.home), docker_root, "/tmp", "/var/log", "-xdev", "-type", "f",
         "-newer", str(platform.started), "-print0"],
        capture_output=True, check=False,
    ).stdout  # fmt: skip
    return [Path(os.fsdecode(name)) for name in found.split(b"\0") if name]


def files_holding(paths: list[Path], *needles: str) -> list[str]:
    """The paths among `paths` whose bytes contain any needle (read as grep would)."""
    hits: list[str] = []
    for first in range(0, len(paths), 500):
        done = subprocess.run(
            ["grep", "-lsF", "--binary-files=text", *(f"-e{n}" for n in needles), "--",
             *map(str, paths[first : first + 500])],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        hits += done.stdout.split()
    return hits


def test_the_secret_and_the_output_are_nowhere_at_rest(platform: Platform) -> None:
    """A config var and a line the dyno printed are in no file on the machine (#13 item 6)."""
    status, _ = platform.get("hello.localhost", f"/{LINE_CANARY}")
    assert status == 200
    # The line really was printed and shipped: finding it nowhere on disk means something.
    wait_for(
        lambda: with_text(platform.cli("logs", "-a", "hello", "-n", "500"), LINE_CANARY),
        30,
        "the dyno's canary line in the logs",
    )
    ran = platform.cli("run", "-a", "hello", "--", 'echo "secret: $SECRET_KEY"')
    assert f"secret: {SECRET}" in ran  # the dyno does have the value, in memory
    paths = places_at_rest(platform)
    assert len(paths) > 10, paths  # the walk saw the platform's files
    assert files_holding(paths, SECRET, LINE_CANARY) == []
