"""The router's admin API answers only its controller: a unix socket, never a TCP port.

Caddy's admin API has no authentication; whoever reaches it can rewrite every route or
`POST /stop` the router. Each test performs the attack for real against a real Caddy
(libs/caddy.py) or a whole platform started by the supervisor: admin requests to every
TCP port the router or the platform listens on, the old default port 2019, a connection
to the socket as another user, and a folder planted before the router starts. The same
goes for network-wirer's access-log listener, where Caddy writes the router's lines: a
forged line there would land in a customer's logs.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from slipway.contracts.logs import RouterAccess
from slipway.libs.caddy import (
    CaddyServer,
    RouterAddress,
    RouterAdminError,
    admin_request,
    admin_socket_path,
    free_port,
)
from slipway.services.network_wirer.access import AccessListener
from slipway.services.network_wirer.routes import ACCESS_LOG_NAME, AppRoute
from tests.conftest import assert_eventually

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
OLD_ADMIN_PORT = 2019
NOBODY = 65534
MAX_BODY = 1 << 20
ATTACKS = (("GET", "/config/"), ("POST", "/load"), ("POST", "/stop"))


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket: its address, port and the process holding it."""

    host: str
    port: int
    pid: int


def _hex_address(field: str) -> tuple[str, int]:
    """An address of /proc/net/tcp{,6}: hex IP (host byte order per 32-bit word) and port."""
    raw, port = field.split(":")
    packed = bytes.fromhex(raw)
    # The kernel prints each 32-bit word of the address in host (little-endian) order.
    words = [packed[i : i + 4][::-1] for i in range(0, len(packed), 4)]
    return str(ipaddress.ip_address(b"".join(words))), int(port, 16)


def _listening_inodes() -> dict[int, tuple[str, int]]:
    """Socket inode -> (address, port) of every TCP socket in LISTEN state (0A)."""
    found: dict[int, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                found[int(fields[9])] = _hex_address(fields[1])
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def _descendants(root: int) -> set[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def tcp_listeners(pids: set[int]) -> list[Listener]:
    """Every TCP socket the processes `pids` listen on."""
    listening = _listening_inodes()
    return [
        Listener(*listening[inode], pid)
        for pid in sorted(pids)
        for inode in _socket_inodes(pid)
        if inode in listening
    ]


def reachable_on_loopback(listener: Listener) -> str | None:
    """The loopback address that reaches `listener`, or None if it is bound elsewhere."""
    address = ipaddress.ip_address(listener.host)
    if address.is_loopback:
        return listener.host
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "::1"
    return None


def admin_attempt(host: str, port: int, method: str, path: str) -> str:
    """What an admin request to host:port gets: status and body, or the connection error."""
    conn = http.client.HTTPConnection(host, port, timeout=3)
    # A /load that would move the admin API to a TCP port of the attacker's choosing.
    body = json.dumps({"admin": {"listen": f"127.0.0.1:{free_port()}"}}) if path == "/load" else ""
    try:
        conn.request(method, path, body=body or None, headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        # Whole bodies (bounded): a configuration cut short would not parse as one.
        return f"{answer.status} {answer.read(MAX_BODY).decode(errors='replace')}"
    except (OSError, http.client.HTTPException) as exc:
        return f"no HTTP answer: {exc!r}"
    finally:
        conn.close()


def short(answers: dict[tuple[str, int, str, str], str]) -> dict[str, str]:
    """The answers, cut to a readable length for an assertion message."""
    return {" ".join(map(str, key)): answer[:120] for key, answer in answers.items()}


def is_caddy_admin(answer: str) -> bool:
    """Whether an answer to `GET /config/` is Caddy's running configuration."""
    status, _, body = answer.partition(" ")
    if status != "200":
        return False
    try:
        config = json.loads(body)
    except ValueError:
        return False
    return isinstance(config, dict) and ("apps" in config or "admin" in config)


def _running(pid: int) -> bool:
    """Whether `pid` exists and has not exited (a zombie has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def assert_router_unharmed(caddy_pid: int, admin_socket: Path, before: Any) -> None:
    """The router still runs, and its configuration is the one it had before the attacks."""
    assert _running(caddy_pid), "POST /stop reached the router"
    assert admin_request(admin_socket, "GET", "/config/") == before, "POST /load reached it"


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder every user may enter (pytest's are root's alone), so only the defence holds."""
    folder = Path(tempfile.mkdtemp(prefix="slipway-sec-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def caddy(open_folder: Path) -> Iterator[CaddyServer]:
    """A real Caddy with its public ports on free loopback ports."""
    server = CaddyServer(
        open_folder / "caddy", RouterAddress(http_port=0, https_port=0, listen_host="127.0.0.1")
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_router_listens_on_no_tcp_port_but_its_public_ones(caddy: CaddyServer) -> None:
    """Caddy's TCP listeners are exactly the public HTTP and HTTPS ports."""
    assert caddy.process is not None
    ports = {listener.port for listener in tcp_listeners({caddy.process.pid})}
    assert ports == {caddy.address.http_port, caddy.address.https_port}


def test_no_tcp_port_of_the_router_answers_admin_requests(caddy: CaddyServer) -> None:
    """GET /config/, POST /load and POST /stop on every TCP port and 2019 get no admin."""
    assert caddy.process is not None
    before = caddy.admin("GET", "/config/")
    targets = {("127.0.0.1", OLD_ADMIN_PORT)}
    for listener in tcp_listeners({caddy.process.pid}):
        host = reachable_on_loopback(listener)
        if host is not None:
            targets.add((host, listener.port))
    answers = {
        (host, port, method, path): admin_attempt(host, port, method, path)
        for host, port in sorted(targets)
        for method, path in ATTACKS
    }
    admins = [k for k, a in answers.items() if k[3] == "/config/" and is_caddy_admin(a)]
    assert not admins, (admins, short(answers))
    # The public port answers as the router does before network-wirer loads any route.
    public = [a for (_, port, _, _), a in answers.items() if port == caddy.address.http_port]
    assert public and all(a.startswith("503 The router is starting") for a in public), public
    assert_router_unharmed(caddy.process.pid, caddy.admin_socket, before)


def test_admin_socket_is_0600_in_a_0700_folder(caddy: CaddyServer) -> None:
    """The socket is its owner's alone, and so is the folder that holds it."""
    socket_mode = caddy.admin_socket.stat().st_mode & 0o777
    folder = caddy.admin_socket.parent.stat()
    assert (socket_mode, folder.st_mode & 0o777) == (0o600, 0o700)
    assert folder.st_uid == os.geteuid()


needs_another_user = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="switching to another user needs root and setpriv (util-linux)",
)


def send_as_nobody(socket_path: Path, payload: bytes) -> subprocess.CompletedProcess[str]:
    """Connect to a unix socket as `nobody` and send `payload`, as a local attacker would."""
    # The system's python3: the venv's interpreter may sit under /root, closed to nobody.
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    attack = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.connect(sys.argv[1])\n"
        "s.sendall(sys.argv[2].encode())\n"
        "s.shutdown(socket.SHUT_WR)\n"
        "print(s.recv(200))\n"
    )
    as_nobody = [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return subprocess.run(
        ["setpriv", *as_nobody, python, "-c", attack, str(socket_path), payload.decode()],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@needs_another_user
def test_another_user_cannot_connect_to_the_admin_socket(caddy: CaddyServer) -> None:
    """A process running as `nobody` is refused the connection (permission denied)."""
    done = send_as_nobody(caddy.admin_socket, b"POST /stop HTTP/1.1\r\nHost:\r\n\r\n")
    assert done.returncode != 0, done.stdout
    assert "PermissionError" in done.stderr, done.stderr
    assert caddy.process is not None and caddy.process.poll() is None


@needs_another_user
def test_a_planted_admin_folder_stops_the_router_from_starting(tmp_path: Path) -> None:
    """A folder another user made for the socket is refused, with what to do about it."""
    server = CaddyServer(
        tmp_path / "caddy", RouterAddress(http_port=0, https_port=0, listen_host="127.0.0.1")
    )
    planted = server.admin_socket.parent
    planted.mkdir(parents=True, mode=0o777)
    os.chown(planted, NOBODY, NOBODY)
    try:
        with pytest.raises(
            RouterAdminError, match=r"belongs to uid 65534.*remove it, or choose another path"
        ):
            server.start()
        assert server.process is None
    finally:
        server.stop()


def test_an_admin_folder_open_to_others_is_refused(open_folder: Path) -> None:
    """A socket folder other users may enter (say, one an operator named) is refused."""
    server = CaddyServer(
        open_folder / "caddy", RouterAddress(http_port=0, https_port=0, listen_host="127.0.0.1")
    )
    server.admin_socket.parent.mkdir(parents=True)
    server.admin_socket.parent.chmod(0o755)
    try:
        with pytest.raises(RouterAdminError, match=r"open to other users .*chmod 700"):
            server.start()
        assert server.process is None
    finally:
        server.stop()


# --- network-wirer's access-log listener ------------------------------------------------

VICTIM = AppRoute("id-victim", "victim", ("victim.localhost",))
FORGED = json.dumps(
    {
        "logger": ACCESS_LOG_NAME,
        "msg": "handled request",
        "request": {"method": "GET", "uri": "/forged", "host": "victim.localhost"},
        "status": 200,
    }
)


@pytest.fixture
async def access_listener(open_folder: Path) -> AsyncIterator[tuple[AccessListener, list[str]]]:
    """network-wirer's access-log listener, knowing one app; the paths it published."""
    published: list[str] = []

    async def publish(access: RouterAccess) -> None:
        published.append(access.path)

    listener = AccessListener(publish, open_folder / "wirer" / "run" / "access.sock")
    listener.joiner.update([VICTIM])
    await listener.start()
    try:
        yield listener, published
    finally:
        await listener.close()


@needs_another_user
async def test_another_user_cannot_forge_router_lines(
    access_listener: tuple[AccessListener, list[str]],
) -> None:
    """A forged access line sent as `nobody` is refused; the same line from Caddy's uid lands."""
    listener, published = access_listener
    done = await asyncio.to_thread(send_as_nobody, listener.socket_path, f"{FORGED}\n".encode())
    assert "PermissionError" in done.stderr, done.stderr
    # The line itself is one the listener takes: sent by its owner, it is published.
    _, writer = await asyncio.open_unix_connection(listener.socket_path)
    writer.write(f"{FORGED}\n".encode())
    await writer.drain()

    async def published_once() -> None:
        assert published == ["/forged"]

    await assert_eventually(published_once)
    writer.close()


async def test_access_listener_opens_no_tcp_port(open_folder: Path) -> None:
    """The listener is a 0600 unix socket in a 0700 folder; this process gains no TCP listener."""

    async def publish(access: RouterAccess) -> None:
        raise AssertionError("nothing is sent in this test")

    before = set(tcp_listeners({os.getpid()}))
    listener = AccessListener(publish, open_folder / "wirer" / "run" / "access.sock")
    address = await listener.start()
    try:
        assert set(tcp_listeners({os.getpid()})) == before
        assert address == f"unix/{listener.socket_path}"
        modes = (listener.socket_path.stat().st_mode, listener.socket_path.parent.stat().st_mode)
        assert tuple(mode & 0o777 for mode in modes) == (0o600, 0o700)
    finally:
        await listener.close()


# --- a whole platform --------------------------------------------------------------------


@dataclass
class Platform:
    """The supervisor's process tree, started on free ports under a throwaway home."""

    home: Path
    process: subprocess.Popen[bytes]

    @property
    def admin_socket(self) -> Path:
        return admin_socket_path(self.home / "caddy")  # SLIPWAY_HOME's default

    def caddy_pid(self) -> int:
        for pid in _descendants(self.process.pid):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "caddy":
                    return pid
            except OSError:
                continue
        raise AssertionError("the platform runs no caddy process")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """Every service of the platform, as scripts/up runs them (firewall and networks off)."""
    home = tmp_path_factory.mktemp("platform") / "var"
    scope = f"sec{uuid.uuid4().hex[:8]}"
    router_port = free_port()
    env = {
        **os.environ,
        "SLIPWAY_HOME": str(home),
        "SLIPWAY_SCOPE": scope,
        "SLIPWAY_BUILD_NETWORK": f"slipway-builds-{scope}",
        "SLIPWAY_NATS_PORT": str(free_port()),
        "SLIPWAY_API_PORT": str(free_port()),
        "SLIPWAY_REGISTRY_PORT": str(free_port()),
        "SLIPWAY_ROUTER_HTTP_PORT": str(router_port),
        "SLIPWAY_ROUTER_PORT": str(router_port),
        "SLIPWAY_ROUTER_HTTPS_PORT": str(free_port()),
        "SLIPWAY_ROUTER_LISTEN_HOST": "127.0.0.1",
        # Other tests share this machine's firewall and Docker networks: leave them alone.
        "SLIPWAY_ISOLATION": "false",
        "SLIPWAY_MANAGE_NETWORKS": "false",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "slipway.libs.supervisor", "--grace", "10"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        services = subprocess.run(
            [sys.executable, "-m", "slipway.libs.supervisor", "--list"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        subprocess.run(
            [sys.executable, "-m", "slipway.libs.health", "--timeout", "90", "--wait", *services],
            env=env,
            check=True,
            capture_output=True,
        )
        yield Platform(home, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        subprocess.run(
            ["docker", "network", "rm", f"slipway-builds-{scope}"],
            capture_output=True,
            check=False,
        )


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.timeout(300)
def test_no_loopback_listener_of_the_platform_is_the_router_admin(platform: Platform) -> None:
    """Admin requests to every loopback TCP listener of a running platform do nothing."""
    caddy_pid = platform.caddy_pid()
    before = admin_request(platform.admin_socket, "GET", "/config/")
    listeners = tcp_listeners(_descendants(platform.process.pid))
    targets = {
        (host, listener.port)
        for listener in listeners
        if (host := reachable_on_loopback(listener)) is not None
    }
    # nats-server, the gateway, registry-proxy and the router at least.
    assert len(targets) >= 4, listeners
    answers = {
        (host, port, method, path): admin_attempt(host, port, method, path)
        for host, port in sorted(targets)
        for method, path in ATTACKS
    }
    admins = [k for k, a in answers.items() if k[3] == "/config/" and is_caddy_admin(a)]
    assert not admins, (admins, short(answers))
    assert_router_unharmed(caddy_pid, platform.admin_socket, before)


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.timeout(300)
def test_only_authenticating_services_listen_on_loopback_tcp(platform: Platform) -> None:
    """TCP listeners belong to NATS (users), the gateway (tokens), registry-proxy, the router."""
    # registry-proxy: per-app HMAC credentials; the router's own ports are public anyway.
    # Distribution, the router's admin API, git hooks and access lines are unix sockets.
    allowed = {
        "nats-server",
        "caddy",
        "slipway.services.gateway",
        "slipway.services.registry_proxy",
    }
    holders = {
        _program(listener.pid) for listener in tcp_listeners(_descendants(platform.process.pid))
    }
    assert holders <= allowed, holders


def _program(pid: int) -> str:
    """A process's name: its module for `python -m`, else its executable's name."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    words = [word.decode() for word in argv if word]
    if "-m" in words:
        return words[words.index("-m") + 1]
    return Path(words[0]).name
