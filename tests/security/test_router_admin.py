"""The router's admin surface answers only its controller: unix sockets, never a TCP port.

HAProxy's runtime API and master CLI have no authentication: whoever reaches them can
reroute every app (`add map`), stop the router (`shutdown frontend`) or reload it. Each
test performs the attack for real against a real HAProxy (libs/haproxy), running either
the configuration it boots with or the one network-wirer renders, or against a whole
platform started by the supervisor: runtime commands and HTTP admin requests (the stats
page) to every TCP port the router or the platform listens on and to Caddy's old admin
port 2019, in plain text and over TLS; connections to the runtime and master sockets as
another user; socket folders planted or left open before the router starts. The same goes
for the log socket where HAProxy sends its access lines: a forged datagram there would
land in a customer's logs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from slipway.libs.haproxy import (
    ACCESS_TAG,
    AccessRecord,
    HAProxyServer,
    LogReceiver,
    RouterPaths,
    RouterPorts,
    Runtime,
    UnsafeSocketFolder,
    free_port,
    haproxy_binary,
    master_command,
    parse_access,
    starting_config,
)
from slipway.services.network_wirer.haproxy.config import HAProxyOptions, Layout
from slipway.services.network_wirer.haproxy.reconcile import Reconciler, write_files
from slipway.services.network_wirer.pages import load
from slipway.services.network_wirer.routes import AppRoute, Upstream
from tests.conftest import assert_eventually, new_scope
from tests.network_wirer.haproxy.conftest import self_signed_pem
from tests.security.procnet import (
    Listener,
    descendants,
    program,
    reachable_on_loopback,
    running,
    tcp_listeners,
    udp_listeners,
)

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
OLD_ADMIN_PORT = 2019  # Caddy's default admin port, which Slipway's router once had
NOBODY = 65534
MAX_ANSWER = 1 << 20
KNOCK_TIMEOUT = 2.0
VICTIM_HOST = "victim.localhost"
# What only HAProxy's admin surfaces say: `show info`, `show stat` (and the stats page's
# CSV), `show map`, `show servers state`, `show proc`, an unknown runtime command, the
# stats page. None of these is a word a customer-facing answer of the platform contains.
ADMIN_MARKERS = (
    b"Name: HAProxy",
    b"# pxname,",
    b"# id (file)",
    b"# be_id be_name",
    b"#<PID>",
    b"Unknown command",
    b"Statistics Report for HAProxy",
)
# The stats page's HTTP requests (its admin form disables servers with a POST).
HTTP_ATTACKS = (
    ("GET", "/stats", ""),
    ("GET", "/stats;csv", ""),
    ("GET", "/haproxy?stats", ""),
    ("GET", "/;csv", ""),
    ("POST", "/stats", "s=*&action=maint&b=%23"),
    ("POST", "/stop", ""),  # Caddy's, for the old port
)


# --- attacks over TCP ------------------------------------------------------------------

# An attacker does not check certificates: the router's is its own CA's.
_NO_CHECKS = ssl.create_default_context()
_NO_CHECKS.check_hostname = False
_NO_CHECKS.verify_mode = ssl.CERT_NONE


async def knock(host: str, port: int, payload: bytes, *, tls: bool) -> bytes:
    """What `payload` sent to host:port gets back (bounded); b"" when nothing answers."""
    answer = b""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(KNOCK_TIMEOUT):
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=_NO_CHECKS if tls else None,
                server_hostname="localhost" if tls else None,
            )
            # No half-close after it: aiohttp drops a request whose client sent EOF, and an
            # admin endpoint served that way would then look silent. The runtime API
            # answers once the line ends, HTTP servers once the request does.
            writer.write(payload)
            while len(answer) < MAX_ANSWER and (chunk := await reader.read(65536)):
                answer += chunk
    except (OSError, TimeoutError):  # refused, reset, TLS refused, silent: what came is it
        pass
    finally:
        if writer is not None:
            writer.transport.abort()  # no goodbye owed to a target, nor a TLS close to wait on
    return answer


def runtime_attacks(frontends: Iterable[str], maps: Iterable[str]) -> list[str]:
    """Runtime API and master CLI commands that read, reroute, stop or reload a router."""
    attacks = ["show info", "show stat", "show map", "show servers state", "show proc"]
    for name in frontends:
        attacks += [f"disable frontend {name}", f"shutdown frontend {name}"]
    attacks += [f"add map {path} attacker.localhost be_0:up" for path in maps]
    return [*attacks, "reload"]


def http_attack(method: str, path: str, body: str) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
        f"\r\n{body}"
    ).encode()


async def attack(targets: Iterable[tuple[str, int]], commands: Iterable[str]) -> dict[str, bytes]:
    """Every attack on every target, in plain text and over TLS: label -> answer."""
    payloads = {command: f"{command}\n".encode() for command in commands}
    payloads |= {f"{m} {p}": http_attack(m, p, body) for m, p, body in HTTP_ATTACKS}
    jobs = {
        f"{'tls' if tls else 'tcp'}://{host}:{port} {label}": (host, port, payload, tls)
        for host, port in sorted(targets)
        for tls in (False, True)
        for label, payload in payloads.items()
    }
    # Concurrent: a listener that never answers costs KNOCK_TIMEOUT once, not per attack.
    gate = asyncio.Semaphore(32)

    async def one(host: str, port: int, payload: bytes, tls: bool) -> bytes:
        async with gate:
            return await knock(host, port, payload, tls=tls)

    answers = await asyncio.gather(*(one(*job) for job in jobs.values()))
    return dict(zip(jobs, answers, strict=True))


def admin_answers(answers: dict[str, bytes]) -> dict[str, str]:
    """The answers that came from a router admin surface, cut to a readable length."""
    return {
        label: answer[:200].decode(errors="replace")
        for label, answer in answers.items()
        if any(marker in answer for marker in ADMIN_MARKERS)
    }


def loopback_targets(listeners: Iterable[Listener]) -> set[tuple[str, int]]:
    """Where each listener is reached from this machine, plus Caddy's old admin port."""
    targets = {("127.0.0.1", OLD_ADMIN_PORT)}
    for listener in listeners:
        host = reachable_on_loopback(listener)
        if host is not None:
            targets.add((host, listener.port))
    return targets


# --- the router's state, read through its own sockets ----------------------------------


@dataclass(frozen=True)
class RouterState:
    """What an attack that reached the router would change."""

    processes: tuple[tuple[str, ...], ...]  # `show proc`: pid, role, reloads of each
    frontends: dict[str, str]  # name -> status (OPEN; STOP once disabled or shut down)
    maps: dict[str, dict[str, str]]
    servers: frozenset[tuple[str, str, str, int]]  # backend, server, address, admin state


async def router_state(paths: RouterPaths) -> RouterState:
    runtime = Runtime(paths.runtime_socket)
    try:
        frontends = {}
        for line in (await runtime.command("show stat -1 1 -1")).splitlines()[1:]:
            columns = line.split(",")
            if len(columns) > 17 and columns[1] == "FRONTEND":
                frontends[columns[0]] = columns[17]
        maps = {}
        for line in (await runtime.command("show map")).splitlines():
            # "-1 (/path/hosts.map) pattern loaded from file '/path/hosts.map' used by map …"
            if "(" in line and not line.startswith("#"):
                path = line.split("(", 1)[1].split(")", 1)[0]
                maps[path] = await runtime.show_map(path)
        servers = frozenset(
            (s.backend, s.name, s.dial, s.admin_state) for s in await runtime.show_servers()
        )
    finally:
        await runtime.close()
    procs = await master_command(paths.master_socket, "show proc")
    processes = tuple(
        tuple(line.split()[:3])
        for line in procs.splitlines()
        if len(line.split()) > 2 and line.split()[1] in ("master", "worker")
    )
    return RouterState(processes, frontends, maps, servers)


# --- a real router ---------------------------------------------------------------------


@dataclass
class Router:
    """A running HAProxy, its access lines, and what it should answer on its HTTP port."""

    server: HAProxyServer
    records: list[AccessRecord]
    expected_http: bytes  # the status line a request for VICTIM_HOST gets

    @property
    def paths(self) -> RouterPaths:
        return self.server.paths

    @property
    def pids(self) -> set[int]:
        """The master and its workers."""
        assert self.server.process is not None
        return descendants(self.server.process.pid)

    async def frontends_and_maps(self) -> tuple[list[str], list[str]]:
        state = await router_state(self.paths)
        return sorted(state.frontends), sorted(state.maps)

    async def answers_customers(self) -> bytes:
        request = f"GET / HTTP/1.1\r\nHost: {VICTIM_HOST}\r\nConnection: close\r\n\r\n"
        return await knock("127.0.0.1", self.server.ports.http_port, request.encode(), tls=False)


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
def needs_haproxy() -> None:
    try:
        haproxy_binary()
    except FileNotFoundError:
        pytest.skip("haproxy is not installed (apt-get install -y haproxy)")


async def _dyno() -> web.AppRunner:
    """A web dyno on a free loopback port that answers 200."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello from the victim's dyno")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


@pytest.fixture(params=["starting", "wired"])
async def router(
    request: pytest.FixtureRequest, open_folder: Path, needs_haproxy: None
) -> AsyncIterator[Router]:
    """A real HAProxy on free loopback ports, running either the configuration
    `python -m slipway.libs.haproxy` boots with or network-wirer's, routing one app."""
    server = HAProxyServer(open_folder / "haproxy", RouterPorts(0, 0, "127.0.0.1"))
    records: list[AccessRecord] = []
    receiver = LogReceiver(server.paths.log_socket, records.append)
    dyno: web.AppRunner | None = None
    reconciler: Reconciler | None = None
    options = HAProxyOptions(data_dir=server.paths.data_dir, ports=server.ports)
    wired = request.param == "wired"
    # The data folder open too: only the sockets' own folder and modes keep others out.
    server.paths.data_dir.mkdir()
    server.paths.data_dir.chmod(0o755)
    if wired:
        options.default_certificate.parent.mkdir(mode=0o700)
        options.default_certificate.write_bytes(self_signed_pem("localhost"))
        write_files(Layout(pool_size=2, hosts={}, servers={}), options, load())
    else:
        server.paths.config.write_text(starting_config(server.paths, server.ports))
    await receiver.start()
    try:
        await asyncio.to_thread(server.start)
        if wired:
            dyno = await _dyno()
            reconciler = Reconciler(server, options, load())
            upstream = Upstream("web.1", f"127.0.0.1:{dyno.addresses[0][1]}")
            victim = AppRoute("id-victim", "victim", (VICTIM_HOST,), (upstream,))
            await reconciler.reconcile([victim])
        # Before any route is loaded the router answers 503 "starting"; then the dyno's 200.
        expected = b"HTTP/1.1 200" if wired else b"HTTP/1.1 503"
        yield Router(server, records, expected)
    finally:
        if reconciler is not None:
            await reconciler.close()
        await asyncio.to_thread(server.stop)
        await receiver.close()
        if dyno is not None:
            await dyno.cleanup()


async def assert_router_unharmed(router: Router, before: RouterState) -> None:
    """The same master and worker run, no reload happened, every frontend is open, maps
    and servers are as they were, and customers still get their answer."""
    assert router.server.process is not None and running(router.server.process.pid)
    assert await router_state(router.paths) == before
    assert set(before.frontends.values()) == {"OPEN"}, before.frontends
    answer = await router.answers_customers()
    assert answer.startswith(router.expected_http), answer[:200]


async def test_router_listens_on_no_tcp_port_but_its_public_ones(router: Router) -> None:
    """HAProxy's TCP listeners are exactly the public HTTP and HTTPS ports; it binds no UDP."""
    ports = {listener.port for listener in tcp_listeners(router.pids)}
    assert ports == {router.server.ports.http_port, router.server.ports.https_port}
    # A syslog-style UDP port would take forged access lines from anyone on the machine.
    assert udp_listeners(router.pids) == []


async def test_no_tcp_port_of_the_router_answers_admin_requests(router: Router) -> None:
    """Runtime commands and stats-page requests to every TCP port and 2019 get no admin."""
    before = await router_state(router.paths)
    frontends, maps = await router.frontends_and_maps()
    commands = runtime_attacks(frontends, maps)
    targets = loopback_targets(tcp_listeners(router.pids))
    answers = await attack(targets, commands)
    assert not admin_answers(answers)
    # The attacks were heard: the public HTTP port answered each as the router does.
    http = f"tcp://127.0.0.1:{router.server.ports.http_port} "
    public = [answer for label, answer in answers.items() if label.startswith(http)]
    assert public and all(answer.startswith(b"HTTP/1.1 ") for answer in public), public
    await assert_router_unharmed(router, before)


async def test_the_same_attacks_find_a_tcp_admin_when_one_is_open(
    open_folder: Path, needs_haproxy: None
) -> None:
    """The same attacks find and harm a router given a TCP runtime socket and a stats page."""
    # So a clean result in the tests above means closed doors, not blind attacks.
    server = HAProxyServer(open_folder / "haproxy", RouterPorts(0, 0, "127.0.0.1"))
    server.paths.data_dir.mkdir(mode=0o700)
    runtime_port, stats_port = free_port(), free_port()
    server.paths.config.write_text(
        starting_config(server.paths, server.ports)
        + f"global\n    stats socket ipv4@127.0.0.1:{runtime_port} level admin\n"
        f"listen stats\n    mode http\n    bind 127.0.0.1:{stats_port}\n"
        "    stats enable\n    stats uri /stats\n    stats admin if TRUE\n"
    )
    receiver = LogReceiver(server.paths.log_socket, lambda record: None)
    await receiver.start()
    try:
        await asyncio.to_thread(server.start)
        assert server.process is not None
        router = Router(server, [], b"HTTP/1.1 503")
        before = await router_state(server.paths)
        frontends, maps = await router.frontends_and_maps()
        targets = loopback_targets(tcp_listeners(router.pids))
        # Not the stats page's own frontend: shut down mid-scan, it would answer some
        # attacks and not others.
        commands = runtime_attacks([name for name in frontends if name != "stats"], maps)
        found = admin_answers(await attack(targets, commands))
        assert {label.split(" ")[0] for label in found} == {
            f"tcp://127.0.0.1:{runtime_port}",
            f"tcp://127.0.0.1:{stats_port}",
        }
        # And they harm it: its public frontend was disabled or shut down over TCP.
        after = await router_state(server.paths)
        assert before.frontends["starting_http"] == "OPEN"
        assert after.frontends.get("starting_http") != "OPEN", after.frontends
    finally:
        await asyncio.to_thread(server.stop)
        await receiver.close()


async def test_router_sockets_are_0600_in_a_0700_folder(router: Router) -> None:
    """The runtime, master and log sockets are their owner's alone, and so is their folder."""
    paths = router.paths
    modes = {path.name: path.stat().st_mode & 0o777 for path in _sockets(paths)}
    assert modes == {"admin.sock": 0o600, "master.sock": 0o600, "log.sock": 0o600}
    folder = paths.sockets.stat()
    assert (folder.st_mode & 0o777, folder.st_uid) == (0o700, os.geteuid())


def _sockets(paths: RouterPaths) -> tuple[Path, ...]:
    return (paths.runtime_socket, paths.master_socket, paths.log_socket)


needs_another_user = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="switching to another user needs root and setpriv (util-linux)",
)


def send_as_nobody(
    socket_path: Path, payload: bytes, *, datagram: bool = False
) -> subprocess.CompletedProcess[str]:
    """Send `payload` to a unix socket as `nobody`, as a local attacker would; the answer
    is printed, a refusal is the exception's traceback on stderr."""
    # The system's python3: the venv's interpreter may sit under /root, closed to nobody.
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    attack = (
        "import socket, sys\n"
        "path, payload = sys.argv[1], sys.argv[2].encode()\n"
        "if sys.argv[3] == 'datagram':\n"
        "    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(payload, path)\n"
        "    print('sent')\n"
        "else:\n"
        "    s = socket.socket(socket.AF_UNIX)\n"
        "    s.connect(path)\n"
        "    s.sendall(payload)\n"
        "    s.shutdown(socket.SHUT_WR)\n"
        "    print(s.recv(200))\n"
    )
    kind = "datagram" if datagram else "stream"
    as_nobody = [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return subprocess.run(
        ["setpriv", *as_nobody, python, "-c", attack, str(socket_path), payload.decode(), kind],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@needs_another_user
async def test_another_user_cannot_reach_the_runtime_or_master_socket(router: Router) -> None:
    """`nobody` is refused the runtime and master sockets; the router is left as it was."""
    before = await router_state(router.paths)
    frontends, _ = await router.frontends_and_maps()
    attacks = {
        router.paths.runtime_socket: f"disable frontend {frontends[0]}\n",
        router.paths.master_socket: "reload\n",
    }
    for path, command in attacks.items():
        done = await asyncio.to_thread(send_as_nobody, path, command.encode())
        assert done.returncode != 0, (path, done.stdout)
        assert "PermissionError" in done.stderr, done.stderr
    await assert_router_unharmed(router, before)


def forged_line(path: str) -> bytes:
    """An access line in HAProxy's format, for a request the victim's app never had."""
    b64 = [base64.b64encode(text.encode()).decode() for text in (path, VICTIM_HOST, "f" * 36)]
    fields = [ACCESS_TAG, "1764720000.000", "203.0.113.7", "GET", *b64, "up", "be_0"]
    return " ".join([*fields, "web.1--0000000000", "1", "2", "3", "200", "5", "----", "0"]).encode()


@needs_another_user
async def test_another_user_cannot_forge_access_lines(router: Router) -> None:
    """A forged access datagram from `nobody` is refused; the owner's same datagram lands."""
    forged = forged_line("/forged")
    assert parse_access(forged) is not None
    done = await asyncio.to_thread(send_as_nobody, router.paths.log_socket, forged, datagram=True)
    assert done.returncode != 0, done.stdout
    assert "PermissionError" in done.stderr, done.stderr
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as owner:
        owner.sendto(forged, str(router.paths.log_socket))

    async def received_once() -> None:
        assert [r.path for r in router.records if r.host == VICTIM_HOST] == ["/forged"]

    await assert_eventually(received_once)


async def test_the_log_receiver_opens_no_network_port(open_folder: Path) -> None:
    """The log receiver binds a 0600 unix socket in a 0700 folder, no TCP or UDP port."""
    pids = {os.getpid()}
    before = (set(tcp_listeners(pids)), set(udp_listeners(pids)))
    receiver = LogReceiver(open_folder / "run" / "log.sock", lambda record: None)
    await receiver.start()
    try:
        assert (set(tcp_listeners(pids)), set(udp_listeners(pids))) == before
        modes = (receiver.socket_path.stat().st_mode, receiver.socket_path.parent.stat().st_mode)
        assert tuple(mode & 0o777 for mode in modes) == (0o600, 0o700)
    finally:
        await receiver.close()


# --- socket folders made unsafe before the router starts --------------------------------


def _haproxy_processes_under(folder: Path) -> list[int]:
    """HAProxy processes whose command line names `folder` (none should have started)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            named = (
                entry.name.isdigit() and str(folder).encode() in (entry / "cmdline").read_bytes()
            )
            if named and program(int(entry.name)) == "haproxy":
                found.append(int(entry.name))
    return found


def run_router_module(data: Path) -> tuple[int, str]:
    """`python -m slipway.libs.haproxy --data DATA`, as the supervisor runs it (free
    ports): its exit status and stderr. One that keeps running has started a router."""
    env = {
        **os.environ,
        "SLIPWAY_ROUTER_HTTP_PORT": "0",
        "SLIPWAY_ROUTER_HTTPS_PORT": "0",
        "SLIPWAY_ROUTER_LISTEN_HOST": "127.0.0.1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "slipway.libs.haproxy", "--data", str(data)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # HAProxy stays in its group: one kill stops both
    )
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise AssertionError(f"the router started on {data} and kept running") from None
    return process.returncode, stderr


@needs_another_user
def test_a_planted_socket_folder_stops_the_router_from_starting(
    open_folder: Path, needs_haproxy: None
) -> None:
    """A socket folder another user made stops the router, saying what to do about it."""
    data = open_folder / "haproxy"
    planted = RouterPaths(data).sockets
    planted.mkdir(parents=True)
    planted.chmod(0o777)  # mkdir's mode is cut by the umask
    os.chown(planted, NOBODY, NOBODY)
    server = HAProxyServer(data, RouterPorts(0, 0, "127.0.0.1"))
    # A valid configuration: the folder is all that stands between HAProxy and its start.
    server.paths.config.write_text(starting_config(server.paths, server.ports))
    refusal = r"belongs to uid 65534.*remove it, or choose another path"
    try:
        with pytest.raises(UnsafeSocketFolder, match=refusal):
            server.start()
        assert server.process is None
    finally:
        server.stop()
    with pytest.raises(UnsafeSocketFolder, match=refusal):
        asyncio.run(LogReceiver(server.paths.log_socket, lambda record: None).start())
    status, stderr = run_router_module(data)
    assert "Traceback" not in stderr, stderr  # one readable line for the operator
    assert status != 0 and f"{planted} belongs to uid 65534" in stderr, stderr
    assert _haproxy_processes_under(data) == []
    assert list(planted.iterdir()) == []  # nothing of the router's went into it


def test_a_socket_folder_open_to_others_is_refused(open_folder: Path, needs_haproxy: None) -> None:
    """A socket folder other users may enter (say, one an operator named) is refused."""
    data = open_folder / "haproxy"
    folder = RouterPaths(data).sockets
    folder.mkdir(parents=True)
    folder.chmod(0o755)
    server = HAProxyServer(data, RouterPorts(0, 0, "127.0.0.1"))
    server.paths.config.write_text(starting_config(server.paths, server.ports))
    try:
        with pytest.raises(
            UnsafeSocketFolder, match=rf"{folder} is open to other users .*chmod 700"
        ):
            server.start()
        assert server.process is None
    finally:
        server.stop()
    status, stderr = run_router_module(data)
    assert "Traceback" not in stderr, stderr  # one readable line for the operator
    assert status != 0 and f"chmod 700 {folder}" in stderr, stderr
    assert _haproxy_processes_under(data) == []
    assert folder.stat().st_mode & 0o777 == 0o755  # refused, not silently repaired


@needs_another_user
def test_a_data_folder_of_another_user_stops_the_router(
    open_folder: Path, needs_haproxy: None
) -> None:
    """The router's folder owned by another user (who could swap haproxy.cfg for the next
    reload) stops the router from starting, saying what to do."""
    data = open_folder / "haproxy"
    data.mkdir()
    server = HAProxyServer(data, RouterPorts(0, 0, "127.0.0.1"))
    server.paths.config.write_text(starting_config(server.paths, server.ports))
    os.chown(data, NOBODY, NOBODY)
    try:
        with pytest.raises(UnsafeSocketFolder, match=r"belongs to uid 65534.*remove it"):
            server.start()
        assert server.process is None
    finally:
        server.stop()
    assert _haproxy_processes_under(data) == []


def test_a_data_folder_others_may_write_stops_the_router(
    open_folder: Path, needs_haproxy: None
) -> None:
    """A router folder group- or world-writable is refused, and left as it was."""
    data = open_folder / "haproxy"
    data.mkdir()
    data.chmod(0o777)
    server = HAProxyServer(data, RouterPorts(0, 0, "127.0.0.1"))
    server.paths.config.write_text(starting_config(server.paths, server.ports))
    try:
        with pytest.raises(UnsafeSocketFolder, match=r"may be written by other users.*go-w"):
            server.start()
        assert server.process is None
    finally:
        server.stop()
    status, stderr = run_router_module(data)
    assert status != 0 and "go-w" in stderr and "Traceback" not in stderr, stderr
    assert _haproxy_processes_under(data) == []
    assert data.stat().st_mode & 0o777 == 0o777  # refused, not silently repaired


# --- a whole platform --------------------------------------------------------------------


@dataclass
class Platform:
    """The supervisor's process tree, started on free ports under a throwaway home."""

    home: Path
    process: subprocess.Popen[bytes]
    http_port: int

    @property
    def router_paths(self) -> RouterPaths:
        return RouterPaths(self.home / "haproxy")  # SLIPWAY_HOME's default

    def router_master(self) -> int:
        """The HAProxy master the supervisor's `haproxy` child started."""
        tree = descendants(self.process.pid)
        for pid in sorted(tree):
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                if program(pid) == "haproxy" and program(int(stat[1])) != "haproxy":
                    return pid
        raise AssertionError("the platform runs no haproxy process")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """Every service of the platform, as scripts/up runs them (firewall and networks off)."""
    try:
        haproxy_binary()
    except FileNotFoundError:
        pytest.skip("haproxy is not installed (apt-get install -y haproxy)")
    home = tmp_path_factory.mktemp("platform") / "var"
    scope = new_scope().name
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
        yield Platform(home, process, router_port)
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
async def test_no_loopback_listener_of_the_platform_is_the_router_admin(
    platform: Platform,
) -> None:
    """Admin attacks on every loopback TCP listener of a running platform get no admin."""
    master = platform.router_master()
    paths = platform.router_paths
    before = await router_state(paths)
    listeners = tcp_listeners(descendants(platform.process.pid))
    targets = loopback_targets(listeners)
    # 2019, nats-server, the gateway, registry-proxy and the router's two ports at least.
    assert len(targets) >= 6, listeners
    commands = runtime_attacks(before.frontends, before.maps)
    answers = await attack(targets, commands)
    assert not admin_answers(answers)
    assert running(master)
    assert await router_state(paths) == before
    assert set(before.frontends.values()) == {"OPEN"}, before.frontends


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.timeout(300)
def test_only_authenticating_services_listen_on_loopback_tcp(platform: Platform) -> None:
    """TCP listeners belong to NATS (users), the gateway (tokens), registry-proxy, the router."""
    # The gateway's second port is the one-off rendezvous (TLS, then a one-time secret);
    # registry-proxy: per-app HMAC credentials; the router's own ports are public anyway.
    # Distribution, the router's runtime API and master CLI, git hooks and access lines
    # are unix sockets.
    allowed = {
        "nats-server",
        "haproxy",
        "slipway.services.gateway",
        "slipway.services.registry_proxy",
    }
    tree = descendants(platform.process.pid)
    holders = {program(listener.pid) for listener in tcp_listeners(tree)}
    assert holders <= allowed, holders
    # The router is among them: the check above ran against the platform as it serves.
    router = {
        listener.port for listener in tcp_listeners(tree) if program(listener.pid) == "haproxy"
    }
    assert platform.http_port in router, router


@needs_another_user
@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.timeout(300)
async def test_the_platform_router_sockets_refuse_another_user(platform: Platform) -> None:
    """A running platform's router sockets are 0600 in a 0700 folder and refuse `nobody`."""
    paths = platform.router_paths
    modes = {path.name: path.stat().st_mode & 0o777 for path in _sockets(paths)}
    assert modes == {"admin.sock": 0o600, "master.sock": 0o600, "log.sock": 0o600}
    assert paths.sockets.stat().st_mode & 0o777 == 0o700
    attempts = [
        (paths.runtime_socket, b"show info\n", False),
        (paths.master_socket, b"reload\n", False),
        (paths.log_socket, forged_line("/forged"), True),
    ]
    for path, payload, datagram in attempts:
        done = await asyncio.to_thread(send_as_nobody, path, payload, datagram=datagram)
        assert done.returncode != 0, (path, done.stdout)
        assert "PermissionError" in done.stderr, done.stderr
