"""Services that need no root run as their own users: one broken into cannot read another's.

A real supervisor (nats-server, keyring, registry-proxy, gateway and log-shipper as
their own processes, as `scripts/up` runs them) under a throwaway home; each attack
is made for real, by a forked process that switches to one service's uid and opens
another's files or the Docker socket. The log-shipper still takes a real dyno's lines
through its socket, learning of the dyno from the scheduler's event on the bus.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from slipway.contracts.scheduler import DYNO_CHANGED, Dyno, DynoChanged
from slipway.libs.bus import Bus
from slipway.libs.natsauth import stored_password
from slipway.libs.natsserver import NatsServer
from slipway.libs.serviceusers import TLS_FOLDER
from slipway.libs.supervisor import Supervisor, service_specs
from slipway.services.gateway.logs.shippers import history
from tests.conftest import assert_eventually
from tests.log_shipper.conftest import dyno_config, sender_cmd

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ACCEPT = "application/vnd.heroku+json; version=3"

if os.geteuid() != 0:
    pytest.skip("switching users needs root", allow_module_level=True)

# Run as another uid: try to open each path, print what happened to each.
ATTEMPT = """
import json, sys
outcome = {}
for path in sys.argv[1:]:
    try:
        with open(path, "rb") as f:
            f.read(1)
        outcome[path] = "read"
    except PermissionError:
        outcome[path] = "denied"
    except OSError as exc:
        outcome[path] = type(exc).__name__
print(json.dumps(outcome))
"""

# Run as another uid: ask the Docker Engine for its version through its socket.
DOCKER_VERSION = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
    s.sendall(b"GET /version HTTP/1.0\\r\\n\\r\\n")
    print("answered" if s.recv(12).startswith(b"HTTP/") else "silent")
except PermissionError:
    print("denied")
except OSError as exc:
    print(type(exc).__name__)
finally:
    s.close()
"""
DOCKER_SOCKET = "/var/run/docker.sock"
SERVICES = ("gateway", "keyring", "registry-proxy", "log-shipper")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def attempt_as(uid: int, gid: int, *paths: Path | str) -> dict[str, str]:
    """Open each path from a forked process running as uid/gid (no other group)."""
    done = subprocess.run(
        [sys.executable, "-I", "-c", ATTEMPT, *map(str, paths)],
        user=uid,
        group=gid,
        extra_groups=[],
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    )
    outcome: dict[str, str] = json.loads(done.stdout)
    return outcome


def ids_of(pid: int) -> tuple[list[int], list[int], list[int]]:
    """Real, effective, saved and filesystem uids and gids, and supplementary groups."""
    fields: dict[str, list[int]] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            fields[key] = [int(part) for part in value.split()]
    return fields["Uid"], fields["Gid"], fields["Groups"]


def private_home() -> Path:
    # Not under pytest's tmp_path: that sits in a root-only folder no service user may pass.
    home = Path(tempfile.mkdtemp(prefix="slipway-users-"))
    home.chmod(0o711)
    return home


def docker_as(uid: int, gid: int) -> str:
    """What a forked process running as uid/gid gets from the Docker socket."""
    done = subprocess.run(
        [sys.executable, "-I", "-c", DOCKER_VERSION, DOCKER_SOCKET],
        user=uid,
        group=gid,
        extra_groups=[],
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@dataclass
class Platform:
    home: Path
    api_url: str
    token: str
    nats_url: str

    def pid(self, service: str) -> int:
        return int((self.home / "run" / f"{service}.pid").read_text().split()[0])

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(  # noqa: S310 - our own loopback API
            self.api_url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
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
            with exc:
                return exc.code, exc.read().decode(errors="replace")


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    """The supervisor with the keyring, registry-proxy and gateway, as root."""
    base = private_home()
    home = base / "var"
    # What a run as root left: handed over to the keyring's user at start.
    (home / "keyring").mkdir(parents=True)
    (home / "keyring" / "left-by-root.txt").write_text("older\n")
    env = {
        **os.environ,
        "SLIPWAY_HOME": str(home),
        "SLIPWAY_NATS_PORT": str(free_port()),
        "SLIPWAY_API_PORT": str(free_port()),
        "SLIPWAY_REGISTRY_PORT": str(free_port()),
        "SLIPWAY_LOG_FORMAT": "json",
        "SLIPWAY_SERVICE_USERS": "1",
    }
    command = [sys.executable, "-m", "slipway.libs.supervisor", "--grace", "10"]
    services = ["keyring", "registry-proxy", "log-shipper", "gateway"]
    process = subprocess.Popen(
        [*command, *(arg for name in services for arg in ("--only", name))],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    health = [sys.executable, "-m", "slipway.libs.health", "--timeout", "60"]
    try:
        subprocess.run(
            [*health, "--wait", *services],
            env=env,
            check=True,
            capture_output=True,
        )
        bootstrap = json.loads((home / "gateway" / "bootstrap.json").read_text())
        nats_url = f"nats://127.0.0.1:{env['SLIPWAY_NATS_PORT']}"
        yield Platform(home, bootstrap["api_url"], bootstrap["token"], nats_url)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(base, ignore_errors=True)


def test_services_without_docker_run_as_their_own_non_root_users(platform: Platform) -> None:
    """Gateway, keyring, registry-proxy, log-shipper: own uid and gid, not root, no other group."""
    seen = {}
    for service in SERVICES:
        uids, gids, groups = ids_of(platform.pid(service))
        account = pwd.getpwnam(f"slipway-{service}")
        assert uids == [account.pw_uid] * 4, (service, uids)
        assert gids == [account.pw_gid] * 4, (service, gids)
        assert groups == [], (service, groups)
        seen[service] = (account.pw_uid, account.pw_gid)
    assert 0 not in {number for ids in seen.values() for number in ids}
    assert len({uid for uid, _ in seen.values()}) == len({gid for _, gid in seen.values()}) == 4


@pytest.mark.parametrize(
    ("intruder", "victim"),
    [("gateway", "keyring"), ("keyring", "gateway"), ("log-shipper", "keyring")],
)
def test_one_service_cannot_read_anothers_database_keys_or_password(
    platform: Platform, intruder: str, victim: str
) -> None:
    """As the intruder's uid: the victim's database, master key and environment are refused."""
    uids, gids, _ = ids_of(platform.pid(intruder))
    folder = platform.home / victim
    targets = [
        folder / f"{victim}.db",
        folder / f"{victim}.db-wal",
        # The victim's environment holds its NATS password.
        Path(f"/proc/{platform.pid(victim)}/environ"),
    ]
    # The keyring's master key; the gateway's first admin token.
    targets.append(folder / ("master.key" if victim == "keyring" else "bootstrap.json"))
    for path in targets:
        assert path.exists(), path

    outcome = attempt_as(uids[0], gids[0], *targets)

    assert outcome == {str(path): "denied" for path in targets}
    # The same process as the victim's own uid reads them: the refusal is the uids' doing.
    own_uids, own_gids, _ = ids_of(platform.pid(victim))
    mine = attempt_as(own_uids[0], own_gids[0], *targets)
    assert set(mine.values()) == {"read"}, mine


def test_state_folders_belong_to_their_services_alone(platform: Platform) -> None:
    """`<home>/<service>` is 0700 and its service's; nats-server's and the logs stay root's."""
    for folder, service in [
        ("gateway", "gateway"),
        ("keyring", "keyring"),
        ("keyring/left-by-root.txt", "keyring"),
        ("registry-proxy", "registry-proxy"),
        ("registry", "registry-proxy"),  # Distribution's storage, outside its state folder
        ("log-shipper", "log-shipper"),
    ]:
        info = (platform.home / folder).stat()
        assert info.st_uid == ids_of(platform.pid(service))[0][0], folder
        assert info.st_mode & 0o077 == 0, folder
    for folder in ("nats", "logs"):
        info = (platform.home / folder).stat()
        assert (info.st_uid, info.st_mode & 0o777) == (0, 0o700), folder
    # Searchable, never listable: the log-shipper passes it to reach its socket folder.
    info = (platform.home / "run").stat()
    assert (info.st_uid, info.st_mode & 0o777) == (0, 0o701)
    shipper_uids, shipper_gids, _ = ids_of(platform.pid("log-shipper"))
    pidfile = platform.home / "run" / "keyring.pid"
    assert attempt_as(shipper_uids[0], shipper_gids[0], pidfile) == {str(pidfile): "denied"}
    uids, gids, _ = ids_of(platform.pid("gateway"))
    nats_users = platform.home / "nats" / "users.json"
    assert attempt_as(uids[0], gids[0], nats_users) == {str(nats_users): "denied"}
    # The dyno socket's folder: the log-shipper's, open to dynos (uid 10000) to connect.
    sockets = platform.home / "run" / "dynolog" / "local"
    info = sockets.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (ids_of(platform.pid("log-shipper"))[0][0], 0o755)
    assert (sockets / "logs.sock").stat().st_mode & 0o777 == 0o666


def test_the_log_shipper_cannot_reach_docker_nor_another_services_folder(
    platform: Platform,
) -> None:
    """As the log-shipper's uid: the Docker socket and the gateway's and keyring's files refuse."""
    uids, gids, _ = ids_of(platform.pid("log-shipper"))
    assert docker_as(uids[0], gids[0]) == "denied"
    targets = [
        platform.home / "gateway" / "gateway.db",
        platform.home / "gateway" / "bootstrap.json",
        platform.home / "keyring" / "master.key",
        platform.home / "registry-proxy",
    ]
    outcome = attempt_as(uids[0], gids[0], *targets[:3])
    assert outcome == {str(path): "denied" for path in targets[:3]}
    listing = subprocess.run(
        [sys.executable, "-I", "-c", "import os, sys; os.listdir(sys.argv[1])", str(targets[3])],
        user=uids[0],
        group=gids[0],
        extra_groups=[],
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
    )
    assert "PermissionError" in listing.stderr
    # Root, as the log-shipper was before, gets an answer: the refusal is the uid's doing.
    assert docker_as(0, 0) == "answered"


async def test_the_log_shipper_as_its_own_user_still_receives_a_dynos_lines(
    platform: Platform,
) -> None:
    """A dyno the scheduler announced prints; its line is read back from encrypted history."""
    users = platform.home / "nats"
    scheduler = await Bus.connect(
        platform.nats_url,
        "scheduler",
        user="scheduler",
        password=stored_password(users, "scheduler"),
    )
    gateway = await Bus.connect(
        platform.nats_url, "gateway", user="gateway", password=stored_password(users, "gateway")
    )
    docker = aiodocker.Docker()
    app_id, team_id = uuid.uuid4().hex, uuid.uuid4().hex
    line = f"hello from a dyno {uuid.uuid4().hex}"
    folder = platform.home / "run" / "dynolog" / "local"
    labels = {"org.slipway.test": "service-users"}
    config = dyno_config(folder, labels, sender_cmd(f"print({line!r})"))
    container = await docker.containers.create(config, name=f"slw-users-{uuid.uuid4().hex[:10]}")
    try:
        change = DynoChanged(
            dyno=Dyno(
                app_id=app_id,
                app_name="users",
                team_id=team_id,
                name="web.1",
                process_type="web",
                release_version=1,
                state="starting",
                host_id="local",
                container_id=container.id,
                updated_at=time.time(),
            )
        )
        await scheduler.publish(DYNO_CHANGED, change)
        await container.start()

        async def arrived() -> None:
            found = await history(gateway, app_id, team_id, 50)
            assert [e.text for e in found if e.source == "app"] == [line]

        await assert_eventually(arrived, timeout=60)
    finally:
        await container.delete(force=True)
        await docker.close()
        await gateway.close()
        await scheduler.close()


def test_the_platform_still_works_end_to_end(platform: Platform) -> None:
    """The bootstrap token creates an app; a config var is sealed and read back via the keyring."""
    name = f"usr{uuid.uuid4().hex[:8]}"
    status, _ = platform.call("POST", "/apps", {"name": name})
    assert status == 201
    secret = f"value-{uuid.uuid4().hex}"
    status, _ = platform.call("PATCH", f"/apps/{name}/config-vars", {"SECRET_KEY": secret})
    assert status == 200
    status, config = platform.call("GET", f"/apps/{name}/config-vars")
    assert (status, config.get("SECRET_KEY")) == (200, secret)


@pytest.fixture
async def tls_supervisor() -> AsyncIterator[Supervisor]:
    """The supervisor in this process, keyring and gateway under a TLS bus."""
    base = private_home()
    nats = NatsServer(base / "var" / "nats", hardened=True, tls=True)
    children = [
        dataclasses.replace(spec, env={"SLIPWAY_API_PORT": "0", "SLIPWAY_LOG_FORMAT": "json"})
        for spec in service_specs(["keyring", "gateway"], own_users=True)
    ]
    supervisor = Supervisor(base / "var", children, nats=nats, grace=10)
    running = asyncio.create_task(supervisor.run(install_signals=False))
    try:
        await asyncio.wait(
            {running, asyncio.create_task(supervisor.started.wait())},
            return_when=asyncio.FIRST_COMPLETED,
        )
        if running.done():
            running.result()  # the start failed: say why
        yield supervisor
    finally:
        supervisor.stop()
        await running
        shutil.rmtree(base, ignore_errors=True)


async def test_on_a_tls_bus_each_service_reads_only_its_own_client_key(
    tls_supervisor: Supervisor,
) -> None:
    """Each service connects with its own certificate copy; the other's key is refused."""
    home = tls_supervisor.home

    def connected() -> None:
        for service in ("keyring", "gateway"):
            assert '"service.started"' in (home / "logs" / f"{service}.log").read_text()

    await assert_eventually(connected, timeout=60)
    pids = {
        service: int((home / "run" / f"{service}.pid").read_text().split()[0])
        for service in ("keyring", "gateway")
    }
    keyring_key = home / "keyring" / TLS_FOLDER / "keyring.key"
    gateway_key = home / "gateway" / TLS_FOLDER / "gateway.key"
    shared = home / "nats" / "tls" / "keyring.key"
    uids, gids, _ = ids_of(pids["gateway"])

    outcome = attempt_as(uids[0], gids[0], keyring_key, shared, gateway_key)

    assert outcome == {
        str(keyring_key): "denied",
        str(shared): "denied",
        str(gateway_key): "read",
    }
