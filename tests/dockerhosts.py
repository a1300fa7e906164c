"""Extra Docker engines for tests: each its own dockerd in its own network namespace.

    from tests.dockerhosts import DockerHost, extra_docker_hosts

    with extra_docker_hosts(2) as hosts:      # or the session fixture in a conftest
        hosts[0].socket        # "unix:///tmp/slw…/docker.sock"
        hosts[0].address       # "10.213.<n>.2": the engine's private address (veth in its netns)
        hosts[0].load_images(["slipway/stack-run:bookworm"])
        hosts[0].stop_engine() / hosts[0].start_engine()   # a host failure and its return

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
        self.process = subprocess.Popen(
            [
                "nsenter",
                f"--net=/var/run/netns/{self.name}",
                "dockerd",
                "--data-root",
                str(self.root / "data"),
                "--exec-root",
                str(self.root / "exec"),
                "--pidfile",
                str(self.root / "dockerd.pid"),
                "-H",
                self.socket,
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
def extra_docker_hosts(count: int, images: list[str] | None = None) -> Iterator[list[DockerHost]]:
    """Start `count` extra engines (with `images` loaded); tear all down on exit."""
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
