"""The README's walkthrough, for real: the supervisor starts every service as its own process.

nats-server, Caddy, the keyring, registry-proxy (with Distribution), the builder,
the scheduler, network-wirer, the log-shipper and the gateway run from one
supervisor on free ports under a temporary SLIPWAY_HOME, exactly as `scripts/up`
runs them. The test then acts as a customer, with the CLI and git only:
create an app, set a secret, push examples/python-hello, reach it through the
router, scale it, read its logs, run a one-off, and find neither the secret nor a
line the dyno printed anywhere on the machine's disk. Every container, image,
volume and network it made is removed afterwards.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from slipway.contracts.scope import Scope
from slipway.libs.caddy import admin_request, admin_socket_path
from tests.conftest import new_scope, remove_scope_objects

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SECRET = f"canary-{uuid.uuid4().hex}"
LINE_CANARY = f"line-canary-{uuid.uuid4().hex}"  # printed by the dyno (its access log)
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
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    try:
        subprocess.run(
            [sys.executable, "-m", "slipway.libs.health", "--timeout", "90", "--wait", *services],
            env=env,
            check=True,
            capture_output=True,
        )
        bootstrap = json.loads((home / "var" / "gateway" / "bootstrap.json").read_text())
        env |= {"SLIPWAY_API_URL": bootstrap["api_url"], "SLIPWAY_API_KEY": bootstrap["token"]}
        yield Platform(home, env, bootstrap["api_url"], router_port, process, started)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
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
    """The upstream addresses in Caddy's running configuration, once there are `count`."""
    # Caddy's admin API is a unix socket in the router's state folder (libs/caddy.py).
    config = admin_request(admin_socket_path(platform.home / "var" / "caddy"), "GET", "/config/")
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("dial"), str):
                found.append(node["dial"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config["apps"]["http"]["servers"]["router_http"]["routes"])
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
    # Caddy runs beside the dynos: it dials them on the app's network, not a published port.
    pool = ipaddress.ip_network(Scope(platform.env["SLIPWAY_SCOPE"]).pool)
    dials = wait_for(lambda: router_dials(platform, 2), 30, "two upstreams in Caddy")
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
    for start in range(0, len(paths), 500):
        done = subprocess.run(
            ["grep", "-lsF", "--binary-files=text", *(f"-e{n}" for n in needles), "--",
             *map(str, paths[start : start + 500])],
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
