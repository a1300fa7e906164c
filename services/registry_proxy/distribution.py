"""Distribution (Debian's `docker-registry`), run as a child process registry-proxy owns.

It listens on a unix socket in a folder only registry-proxy's user can enter, so
nothing reaches it except through the proxy (no TCP port, no debug server). It
stores under `<home>/registry`, with deletes enabled so garbage collection can
remove manifests of old releases, and relative URLs in `Location` headers so
that upload URLs point back at whichever address the engine used.

The child is started with the service and stopped with it; if it dies it is
started again after a delay that doubles up to 30 s. A child left behind by a
registry-proxy that was killed is found through its pidfile and stopped first.
`restart(read_only=True)` switches it to Distribution's read-only maintenance
mode, which garbage collection needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from slipway.services.registry_proxy.errors import DistributionError
from slipway.services.registry_proxy.settings import RegistryProxySettings

log = structlog.get_logger("slipway.registry_proxy.distribution")

# The base URL of requests to Distribution; the host part is never resolved (unix socket).
BASE_URL = "http://distribution"
READY_TIMEOUT = 30.0
STOP_GRACE = 10.0
FIRST_DELAY, MAX_DELAY = 0.5, 30.0


def render_config(
    *, storage: Path, socket: Path, secret: str, read_only: bool, level: str = "warn"
) -> str:
    """Distribution's config.yml (JSON strings are valid YAML scalars)."""
    q = json.dumps
    return f"""\
version: 0.1
log:
  level: {level}
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {q(str(storage))}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: true
      age: 168h
      interval: 24h
      dryrun: false
    readonly:
      enabled: {"true" if read_only else "false"}
http:
  net: unix
  addr: {q(str(socket))}
  secret: {q(secret)}
  relativeurls: true
  draintimeout: 10s
"""


class Distribution:
    """The real registry behind the proxy: its config, its process, its restarts."""

    def __init__(self, settings: RegistryProxySettings) -> None:
        self.binary = settings.registry_distribution_bin
        self.storage = settings.storage_path()
        self.socket = settings.socket_path()
        folder = settings.proxy_dir()
        self.config_path = folder / "distribution.yml"
        self.readonly_config_path = folder / "distribution-readonly.yml"
        self.pidfile = folder / "distribution.pid"
        self.logfile = folder / "distribution.log"
        self.secret_path = folder / "distribution.secret"
        self.read_only = False
        self.ready = asyncio.Event()
        self.starts = 0
        self._process: asyncio.subprocess.Process | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._stopping = False
        self._switch = False  # a restart we asked for: no back-off

    @property
    def pid(self) -> int | None:
        """The running child's pid."""
        return self._process.pid if self._process and self._process.returncode is None else None

    def connector(self) -> aiohttp.UnixConnector:
        """A connector for aiohttp clients talking to Distribution."""
        return aiohttp.UnixConnector(path=str(self.socket))

    async def start(self) -> None:
        """Write the configs, stop a stale child, start ours and wait until it answers."""
        if not os.access(self.binary, os.X_OK):
            raise DistributionError(
                f"{self.binary} is not an executable: install Debian's docker-registry"
                " (apt-get install docker-registry) or set SLIPWAY_REGISTRY_DISTRIBUTION_BIN"
            )
        self._write_configs()
        await asyncio.to_thread(self._stop_stale)
        self._monitor = asyncio.create_task(self._keep_running(), name="distribution")
        await self.wait_ready(READY_TIMEOUT)

    async def stop(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL after a grace period) and the monitor."""
        self._stopping = True
        self.ready.clear()
        await self._terminate()
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        self.pidfile.unlink(missing_ok=True)
        self.socket.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: leave it
            self.socket.parent.rmdir()

    async def restart(self, *, read_only: bool) -> None:
        """Restart the child in read-write or read-only mode and wait until it answers."""
        self.read_only = read_only
        self._switch = True
        self.ready.clear()
        await self._terminate()
        await self.wait_ready(READY_TIMEOUT)

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the child answers; raise DistributionError if it does not in time."""
        ready = asyncio.create_task(self.ready.wait())
        # The monitor ending means the child can no longer become ready: stop waiting.
        waiting: set[asyncio.Task[Any]] = {ready}
        if self._monitor is not None:
            waiting.add(self._monitor)
        await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            raise DistributionError(
                f"the registry did not answer within {timeout:g}s; see {self.logfile}"
            )

    async def garbage_collect(self) -> str:
        """Run `docker-registry garbage-collect`; its output, or DistributionError."""
        if not (self.storage / "docker/registry/v2/repositories").is_dir():
            # Nothing was ever pushed; the collector would fail to find its starting point.
            return "nothing stored yet"
        proc = await asyncio.create_subprocess_exec(
            self.binary,
            "garbage-collect",
            str(self.config_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await proc.communicate()
        text = output.decode(errors="replace")
        if proc.returncode != 0:
            raise DistributionError(f"garbage-collect failed ({proc.returncode}): {text[-2000:]}")
        return text

    # ---- the child -------------------------------------------------------------------------

    def _write_configs(self) -> None:
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        # Only registry-proxy's user may reach the socket, the keys and the apps' layers.
        for folder in (self.socket.parent, self.config_path.parent, self.storage):
            os.chmod(folder, 0o700)
        secret = self._secret()
        for path, read_only in ((self.config_path, False), (self.readonly_config_path, True)):
            text = render_config(
                storage=self.storage, socket=self.socket, secret=secret, read_only=read_only
            )
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(text)

    def _secret(self) -> str:
        # Signs upload state: it must survive restarts for uploads in progress to resume.
        if self.secret_path.exists():
            return self.secret_path.read_text().strip()
        secret = secrets.token_hex(32)
        fd = os.open(self.secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secret)
        return secret

    def _stop_stale(self) -> None:
        """Stop a child a killed registry-proxy left running on our socket."""
        try:
            pid = int(self.pidfile.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            cmdline = []
        if str(self.config_path).encode() in cmdline or (
            str(self.readonly_config_path).encode() in cmdline
        ):
            log.warning("distribution.stale_child", pid=pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + STOP_GRACE
                while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
                os.kill(pid, signal.SIGKILL)
        self.socket.unlink(missing_ok=True)

    async def _keep_running(self) -> None:
        delay = FIRST_DELAY
        while not self._stopping:
            started = time.monotonic()
            try:
                code = await self._run_once()
            except OSError as exc:  # could not even start it (binary gone, no space)
                log.error("distribution.spawn_failed", error=repr(exc))
                code = None
            if self._stopping:
                return
            if self._switch:
                self._switch = False
                continue
            if time.monotonic() - started > 60:
                delay = FIRST_DELAY
            log.error("distribution.died", returncode=code, restart_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)

    async def _run_once(self) -> int | None:
        self.socket.unlink(missing_ok=True)
        config = self.readonly_config_path if self.read_only else self.config_path
        logfile = os.open(self.logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            self._process = await asyncio.create_subprocess_exec(
                self.binary,
                "serve",
                str(config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logfile,
                stderr=logfile,
                # Its own session: a Ctrl-C on our terminal is ours to handle, not its.
                start_new_session=True,
            )
        finally:
            os.close(logfile)
        self.starts += 1
        self.pidfile.write_text(f"{self._process.pid}\n")
        log.info("distribution.started", pid=self._process.pid, read_only=self.read_only)
        if await self._answering():
            self.ready.set()
        code = await self._process.wait()
        self.ready.clear()
        return code

    async def _answering(self) -> bool:
        """Poll the socket until Distribution answers `/v2/` or the child exits."""
        assert self._process is not None
        deadline = time.monotonic() + READY_TIMEOUT
        async with aiohttp.ClientSession(connector=self.connector()) as session:
            while self._process.returncode is None and time.monotonic() < deadline:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"{BASE_URL}/v2/") as resp:
                        if resp.status == 200:
                            return True
                await asyncio.sleep(0.05)
        return False

    async def _terminate(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE)
        except TimeoutError:
            process.kill()
            await process.wait()
