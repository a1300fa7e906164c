"""Extra Docker engines for tests: each its own dockerd in its own network namespace.

    from tests.dockerhosts import DockerHost, extra_docker_hosts

    with extra_docker_hosts(2) as hosts:      # or the session fixture in a conftest
        hosts[0].socket        # "unix:///tmp/slw…/docker.sock"
        hosts[0].address       # "10.213.<n>.2": the engine's private address (veth in its netns)
        hosts[0].load_images(["slipway/stack-run:bookworm"])
        hosts[0].stop_engine() / hosts[0].start_engine()   # a host failure and its return

    with extra_docker_hosts(1, own_etc=True, tls=True) as hosts:
        hosts[0].tcp_endpoint  # "tcp://10.213.<n>.2:2376", TLS both ways (hosts[0].client_tls())
        hosts[0].trust_registry("10.213.<n>.1:5000", ca_pem)  # its own /etc/docker/certs.d

Why a namespace each: a second dockerd in the root namespace deletes the first one's
`docker0` bridge, and `ip netns exec` loses the cgroup mounts dockerd needs, so the
daemon is started with `nsenter --net` only. The root side of each veth pair is
`10.213.<n>.1`; the namespace side `10.213.<n>.2` is where the engine publishes ports.
Names carry a random token, so two test runs on one machine never collide; teardown
removes daemons, namespaces, veths and data roots even when a test failed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from slipway.libs.bus import tls as bus_tls


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def _used_subnets() -> set[int]:
    out = _run("ip", "-br", "-4", "addr").stdout
    return {int(part.split(".")[2]) for part in out.split() if part.startswith("10.213.")}


@dataclass
class DockerHost:
    """One extra dockerd, listening on a unix socket, publishing on its private address."""

    name: str  # the namespace's name, also the prefix of everything else
    index: int  # the third octet of 10.213.<n>.0/24
    root: Path
    process: subprocess.Popen[bytes] | None = None
    _log: list[Path] = field(default_factory=list)
    # Its own /etc/docker (`etc_docker`, bound over it in a private mount namespace), so
    # the registry CAs it trusts (certs.d) are the test's alone, as on a separate machine.
    own_etc: bool = False
    # Also listen on tcp://<address>:2376 with TLS, verifying clients (`--tlsverify`):
    # a remote host as the scheduler reaches one. The test CA, the engine's server
    # certificate and one client certificate are in `tls_dir` (libs/bus/tls.py's layout).
    tls: bool = False

    @property
    def etc_docker(self) -> Path:
        return self.root / "etc-docker"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def tcp_endpoint(self) -> str:
        return f"tcp://{self.address}:2376"

    def client_tls(self) -> tuple[str, str, str]:
        """(CA, certificate, key) paths of a client the engine accepts."""
        folder = self.tls_dir
        return str(folder / "ca.pem"), str(folder / "client.pem"), str(folder / "client.key")

    def _tls_flags(self) -> list[str]:
        if not self.tls:
            return []
        server = bus_tls.issue(self.tls_dir, "server", server_hosts=[self.address])
        bus_tls.issue(self.tls_dir, "client")
        return [
            "-H",
            self.tcp_endpoint,
            "--tlsverify",
            "--tlscacert",
            str(server.ca),
            "--tlscert",
            str(server.cert),
            "--tlskey",
            str(server.key),
        ]

    def trust_registry(self, address: str, ca_pem: bytes) -> None:
        """Trust `ca_pem` for the registry at `address` (host:port), as an operator would:
        `/etc/docker/certs.d/<host:port>/ca.crt`, read by the engine at each pull."""
        if not self.own_etc:
            raise RuntimeError(f"{self.name} shares the machine's /etc/docker: start it own_etc")
        folder = self.etc_docker / "certs.d" / address
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ca.crt").write_bytes(ca_pem)

    @property
    def socket_path(self) -> Path:
        return self.root / "docker.sock"

    @property
    def socket(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def address(self) -> str:
        return f"10.213.{self.index}.2"

    @property
    def veth(self) -> str:
        return f"v{self.name[-9:]}"  # interface names are at most 15 characters

    def setup_network(self) -> None:
        """Namespace, veth pair and addresses."""
        _run("ip", "netns", "add", self.name)
        _run("ip", "link", "add", self.veth + "a", "type", "veth", "peer", "name", self.veth + "b")
        _run("ip", "link", "set", self.veth + "b", "netns", self.name)
        _run("ip", "addr", "add", f"10.213.{self.index}.1/24", "dev", self.veth + "a")
        _run("ip", "link", "set", self.veth + "a", "up")
        inside = ("nsenter", f"--net=/var/run/netns/{self.name}")
        _run(*inside, "ip", "addr", "add", f"{self.address}/24", "dev", self.veth + "b")
        _run(*inside, "ip", "link", "set", self.veth + "b", "up")
        _run(*inside, "ip", "link", "set", "lo", "up")

    def start_engine(self, timeout: float = 60.0) -> None:
        """Start (or restart) the dockerd and wait until it answers."""
        log = (self.root / "dockerd.log").open("ab")
        private_etc: list[str] = []
        if self.own_etc:
            self.etc_docker.mkdir(exist_ok=True)
            # unshare copies the mount table (cgroups included, unlike `ip netns exec`);
            # each exec keeps the pid, so the pid stays the daemon's own.
            private_etc = [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                'mount --bind "$0" /etc/docker && exec "$@"',
                str(self.etc_docker),
            ]
        self.process = subprocess.Popen(
            [
                "nsenter",
                f"--net=/var/run/netns/{self.name}",
                *private_etc,
                "dockerd",
                "--data-root",
                str(self.root / "data"),
                "--exec-root",
                str(self.root / "exec"),
                "--pidfile",
                str(self.root / "dockerd.pid"),
                "-H",
                self.socket,
                *self._tls_flags(),
                "--bridge",
                "none",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while _run("docker", "-H", self.socket, "version", check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd {self.name} did not start: see {self.root}")
            time.sleep(0.2)

    def stop_engine(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Stop the dockerd (its containers stop with it unless live-restore is on)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        # nsenter execs dockerd, so the pid is the daemon's own; its containerd is left
        # to the daemon's own shutdown.
        os.kill(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def load_images(self, images: list[str]) -> None:
        """Copy images from the main engine: `docker save | docker load`, no registry."""
        save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
        load = subprocess.run(
            ["docker", "-H", self.socket, "load"], stdin=save.stdout, capture_output=True
        )
        if save.stdout is not None:
            save.stdout.close()
        if save.wait() != 0 or load.returncode != 0:
            raise RuntimeError(f"loading {images} into {self.name} failed: {load.stderr!r}")

    def teardown(self) -> None:
        """Remove containers, the daemon, the namespace, the veth and the data root."""
        if self.process is not None and self.process.poll() is None:
            ids = _run("docker", "-H", self.socket, "ps", "-aq", check=False).stdout.split()
            if ids:
                _run("docker", "-H", self.socket, "rm", "-f", *ids, check=False)
        self.stop_engine()
        # A containerd-shim may outlive the daemon for a moment; kill what remains in the netns.
        for pid in _run("ip", "netns", "pids", self.name, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        _run("ip", "link", "del", self.veth + "a", check=False)
        _run("ip", "netns", "del", self.name, check=False)
        for mount in (self.root / "exec", self.root / "data"):
            _run("umount", "-R", "-l", str(mount), check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def extra_docker_hosts(
    count: int, images: list[str] | None = None, *, own_etc: bool = False, tls: bool = False
) -> Iterator[list[DockerHost]]:
    """Start `count` extra engines (with `images` loaded; `own_etc`: each with its own
    /etc/docker; `tls`: each also on tcp+TLS); tear all down on exit."""
    token = uuid.uuid4().hex[:6]
    used = _used_subnets()
    free = [n for n in range(10, 250) if n not in used]
    # A random start in the free range: concurrent runs pick different subnets.
    start = int(token, 16) % max(len(free) - count, 1)
    hosts = [
        DockerHost(
            name=f"slw{token}{i}",
            index=free[start + i],
            root=Path(f"/tmp/slw{token}{i}"),
            own_etc=own_etc,
            tls=tls,
        )
        for i in range(count)
    ]
    try:
        for host in hosts:
            host.root.mkdir(parents=True)
            host.setup_network()
            host.start_engine()
            if images:
                host.load_images(images)
        yield hosts
    finally:
        for host in hosts:
            host.teardown()
