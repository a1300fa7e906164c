"""A small process supervisor: nats-server first, then every service, restarted when they crash.

    python -m slipway.libs.supervisor                  # every service found under services/
    python -m slipway.libs.supervisor --only keyring   # some of them
    python -m slipway.libs.supervisor --list           # the services it would start

State lives in `$SLIPWAY_HOME` (default `var/`):

    nats/                JetStream store, nats-server's config and log
    nats/streams.jsonl   a restored snapshot's undelivered messages: replayed into the
                         fresh nats-server before any service starts, then renamed
                         streams.jsonl.replayed-<time> (libs/snapshot/streams.py)
    logs/<name>.log      each child's stdout and stderr, appended
    run/supervisor.pid   this process, locked while it runs; a second supervisor exits 0
    run/<name>.pid       each running child: "<pid> <start time>", for scripts/down

All of it is owner-only: the supervisor and its children run with umask 077, and at
start anything under the home with group or other bits loses them
(libs/service/private.py).

Run as root, it starts the services that need neither root nor Docker (gateway, keyring,
registry-proxy, log-shipper) as their own system users `slipway-<service>`, each owning its state
folder `<home>/<service>` alone (libs/serviceusers.py); the home then lets others
search it (x, never list) so they reach their folders. `--same-user` (or
SLIPWAY_SERVICE_USERS=0) keeps every child as the supervisor's user, for development;
a supervisor that is not root cannot switch users and says so once.

A child that exits is started again after a delay that doubles (0.5s, 1s, ... up to 30s)
and falls back to the first delay once a run has lasted 60s. SIGTERM or SIGINT stops the
children one by one in reverse start order (SIGTERM, then SIGKILL after a grace period),
then nats-server, removes the pidfile and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import fcntl
import os
import shlex
import signal
import sys
import time
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats as nats_client
import structlog

import slipway.services
from slipway.contracts import subjects
from slipway.contracts.backup import addon_run_root
from slipway.contracts.subjects import Service
from slipway.libs import serviceusers
from slipway.libs.bus.provision import prune_undeclared
from slipway.libs.bus.tls import TLS_DIR_ENV
from slipway.libs.natsauth import OPERATOR
from slipway.libs.natsserver import NatsServer
from slipway.libs.service.logging import configure_logging
from slipway.libs.service.private import private_dir, private_umask, tighten
from slipway.libs.serviceusers import Account
from slipway.libs.snapshot import streams

log = structlog.get_logger("slipway.supervisor")

# Start order. The keyring comes first because every service that stores a secret asks it
# for keys; the gateway, the customers' door, opens last, once what stands behind it runs.
# Services not named here start between the two. Shutdown runs in reverse, so the gateway
# stops taking requests first and the keyring outlives everything that might still call it.
STARTS_FIRST: tuple[Service, ...] = (
    Service.KEYRING,
    Service.REGISTRY_PROXY,
    Service.BUILDER,
    Service.SCHEDULER,
    Service.NETWORK_WIRER,
    Service.LOG_SHIPPER,
    Service.BACKUP,
)
STARTS_LAST: tuple[Service, ...] = (Service.GATEWAY,)

NATS_NAME = "nats-server"
ROUTER_NAME = "haproxy"  # HAProxy, the router (libs/haproxy); ports from SLIPWAY_ROUTER_*
PIDFILE_NAME = "supervisor.pid"
NATS_START_TIMEOUT = 10.0
REPLAY_TIMEOUT = 900.0  # a restored snapshot's messages are published before services start


@dataclass(frozen=True)
class ChildSpec:
    """One process to keep running: its name (logs, pidfile), command and account.

    With `user`, the child runs as that system user (made if missing), which then owns
    the state folder `<home>/<name>` alone; without, as the supervisor's own user.
    """

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name in (NATS_NAME, "supervisor"):
            raise ValueError(f"not a usable child name: {self.name!r}")
        if not self.argv:
            raise ValueError(f"child {self.name!r} has no command")


@dataclass
class Backoff:
    """Restart delays for one process: doubling from `initial` to `maximum`, reset by health.

    A run that lasted at least `reset_after` seconds counts as healthy, so the crash that
    ends it is treated as a first crash again rather than the next of a series.
    """

    initial: float = 0.5
    maximum: float = 30.0
    reset_after: float = 60.0
    _next: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._next = self.initial

    def delay_after(self, ran_for: float) -> float:
        """The delay before the next start, given how long the run that just ended lasted."""
        if ran_for >= self.reset_after:
            self._next = self.initial
        delay = self._next
        self._next = min(delay * 2, self.maximum)
        return delay


def service_module(name: str) -> str:
    """The module that runs service `name` ("registry-proxy" -> slipway.services.registry_proxy)."""
    return f"{slipway.services.__name__}.{name.replace('-', '_')}"


def discover_services(folders: Iterable[str] | None = None) -> list[str]:
    """Names of the services that can run (a package with `__main__.py`), in start order."""
    found: set[str] = set()
    for folder in folders if folders is not None else slipway.services.__path__:
        for entry in Path(folder).iterdir():
            if entry.name.startswith(("_", ".")) or not (entry / "__main__.py").is_file():
                continue
            found.add(entry.name.replace("_", "-"))
    first = [str(s) for s in STARTS_FIRST if s in found]
    last = [str(s) for s in STARTS_LAST if s in found]
    middle = sorted(found - set(first) - set(last))
    return [*first, *middle, *last]


def service_specs(names: Iterable[str], *, own_users: bool = False) -> list[ChildSpec]:
    """Child specs running each named service with this interpreter.

    With `own_users`, services that need neither root nor Docker run as their own users.
    """
    names = list(names)
    env: dict[str, dict[str, str]] = {}
    if own_users and Service.BACKUP in names:
        # The scheduler makes each database's run folder the backup account's.
        env[Service.SCHEDULER] = {"SLIPWAY_BACKUP_USER": serviceusers.user_name(Service.BACKUP)}
    return [
        ChildSpec(
            name,
            (sys.executable, "-m", service_module(name)),
            user=serviceusers.user_name(name)
            if own_users and name in serviceusers.OWN_USER_SERVICES
            else None,
            env=env.get(name, {}),
        )
        for name in names
    ]


def process_start_time(pid: int) -> str:
    """The kernel's start time of `pid` (clock ticks since boot): with the pid, a unique identity.

    Pidfiles carry it so that scripts/down never signals an unrelated process that was
    given a recycled pid.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may contain spaces and parentheses; fields after it do not.
    return stat.rsplit(")", 1)[1].split()[19]


class AlreadyRunning(Exception):
    """Another supervisor holds the pidfile lock."""

    def __init__(self, pid: int | None) -> None:
        super().__init__(f"supervisor already running (pid {pid})")
        self.pid = pid


class PidFile:
    """The supervisor's pidfile, locked (flock) for as long as the supervisor lives.

    The lock, not the pid, decides whether a supervisor runs: it disappears with the
    process however that ends, so a stale file never blocks a new start.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock the file and write our pid, or raise AlreadyRunning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.read(fd, 64).decode(errors="replace").strip()
                os.close(fd)
                raise AlreadyRunning(int(text) if text.isdigit() else None) from None
            # A supervisor that was exiting may have unlinked the file we just locked;
            # the lock only counts if it is on the file that is at the path now.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Remove the file, then drop the lock."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


@dataclass
class _Child:
    spec: ChildSpec
    backoff: Backoff
    log_path: Path
    pid_path: Path
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    starts: int = 0
    account: Account | None = None
    account_env: dict[str, str] = field(default_factory=dict)


class Supervisor:
    """Runs nats-server (optionally) and a list of children, restarting whatever exits."""

    def __init__(
        self,
        home: Path,
        children: Sequence[ChildSpec],
        *,
        nats: NatsServer | None = None,
        grace: float = 30.0,
        backoff: Backoff | None = None,
    ) -> None:
        names = [spec.name for spec in children]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique: {names}")
        self.home = home.resolve()
        self.nats = nats
        self.grace = grace
        self.backoff = backoff or Backoff()
        self.children = [
            _Child(
                spec,
                dataclasses.replace(self.backoff),
                self.logs_dir / f"{spec.name}.log",
                self.run_dir / f"{spec.name}.pid",
            )
            for spec in children
        ]
        self.stopping = asyncio.Event()
        self.started = asyncio.Event()
        if nats is not None:
            nats.before_provision = self._before_provision

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    def stop(self) -> None:
        """Ask the supervisor to stop everything (what SIGTERM and SIGINT do)."""
        self.stopping.set()

    def child_env(self) -> dict[str, str]:
        """The environment every child starts with: ours, plus where NATS and the state are."""
        env = dict(os.environ)
        env["SLIPWAY_HOME"] = str(self.home)
        if self.nats is not None:
            env["SLIPWAY_NATS_URL"] = self.nats.url
            if self.nats.tls:  # each child finds its own client certificate there
                env[TLS_DIR_ENV] = str(self.nats.tls_dir)
        # A service should give up on in-flight work before we give up on the service,
        # so it still closes its resources and NATS connection cleanly.
        env.setdefault("SLIPWAY_SHUTDOWN_GRACE", str(max(self.grace - 5.0, self.grace / 2)))
        return env

    def _nats_user(self, name: str) -> dict[str, str]:
        """A service child's own NATS user, when nats-server runs hardened (else nothing)."""
        if self.nats is None or name not in self.nats.users or name == OPERATOR:
            return {}
        return {"SLIPWAY_NATS_USER": name, "SLIPWAY_NATS_PASSWORD": self.nats.users[name]}

    async def run(self, *, install_signals: bool = True) -> None:
        """Start everything, keep it running until stopped, then stop it in reverse order."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if install_signals else ()
        for signum in signals:
            loop.add_signal_handler(signum, self.stop)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        watchers: list[asyncio.Task[None]] = []
        try:
            if self.nats is not None:
                await self._start_nats(self.nats)
                watchers.append(asyncio.create_task(self._watch_nats(self.nats)))
            env = self.child_env()
            await self._prepare_accounts(env)
            # Started one after another, so the order above holds even if spawning is slow.
            for child in self.children:
                await self._spawn(child, env)
            watchers.extend(
                asyncio.create_task(self._keep_running(child, env)) for child in self.children
            )
            log.info("supervisor.started", home=str(self.home), children=len(self.children))
            self.started.set()
            await self.stopping.wait()
        finally:
            self.stopping.set()
            await self._shutdown(watchers)
            for signum in signals:
                loop.remove_signal_handler(signum)

    # ---- children ----------------------------------------------------------------------------

    async def _prepare_accounts(self, env: Mapping[str, str]) -> None:
        """Make each child's account and hand it its folders, before any child runs."""
        owned = [child for child in self.children if child.spec.user is not None]
        if not owned:
            return
        opened = await asyncio.to_thread(
            serviceusers.open_path_to, *serviceusers.needed_folders(self.home)
        )
        # The home loses that bit at each start (tighten) and gets it back here: not news.
        outside = [str(path) for path in opened if path != self.home]
        if outside:
            log.warning("folders.opened_for_search", folders=outside)
        for child in owned:
            assert child.spec.user is not None
            account = await asyncio.to_thread(self._hand_over, child.spec, env)
            child.account, child.account_env = account, self._account_env(account)
            await serviceusers.probe(account, {**env, **child.account_env})
            log.info("child.account", child=child.spec.name, user=account.name, uid=account.uid)

    def _hand_over(self, spec: ChildSpec, env: Mapping[str, str]) -> Account:
        assert spec.user is not None
        account = serviceusers.ensure_account(spec.user, self.home / spec.name)
        # Only while no child runs: the walk goes by path (serviceusers.give_folder).
        serviceusers.give_folder(account.state, account)
        serviceusers.give_outside(
            serviceusers.outside_paths(spec.name, self.home, {**env, **spec.env}), account
        )
        if self.nats is not None and self.nats.tls:
            # The certificates stay in nats-server's folder, which only root may enter;
            # the child gets copies of its own, which only its account may read.
            serviceusers.hand_over_tls(self.nats.tls_dir, spec.name, account)
        return account

    def _account_env(self, account: Account) -> dict[str, str]:
        extra = account.env()
        if self.nats is not None and self.nats.tls:
            extra[TLS_DIR_ENV] = str(account.state / serviceusers.TLS_FOLDER)
        return extra

    async def _spawn(self, child: _Child, env: Mapping[str, str]) -> None:
        spec = child.spec
        # As its own account: a child that still had root could undo the separation.
        as_account: dict[str, Any] = {}
        if child.account is not None:
            as_account = {
                "user": child.account.uid,
                "group": child.account.gid,
                "extra_groups": [],
                "cwd": child.account.state,
            }
        try:
            with child.log_path.open("ab") as out:
                process = await asyncio.create_subprocess_exec(
                    *spec.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    env={**env, **self._nats_user(spec.name), **spec.env, **child.account_env},
                    # Its own session: a Ctrl-C on the terminal reaches only the supervisor,
                    # which then stops the children in order; and the process group lets
                    # us kill whatever a child left behind.
                    start_new_session=True,
                    **as_account,
                )
        except OSError as exc:
            child.process = None
            child.started_at = time.monotonic()
            log.error("child.spawn_failed", child=spec.name, error=str(exc))
            return
        child.process = process
        child.started_at = time.monotonic()
        child.starts += 1
        _write_child_pidfile(child.pid_path, process.pid)
        log.info("child.started", child=spec.name, pid=process.pid, start=child.starts)

    async def _keep_running(self, child: _Child, env: Mapping[str, str]) -> None:
        while True:
            process = child.process
            code: int | None = None
            if process is not None:
                if await self._first_of(process.wait()):
                    return
                code = process.returncode
                _kill_group(process.pid)
                child.pid_path.unlink(missing_ok=True)
            ran_for = time.monotonic() - child.started_at
            delay = child.backoff.delay_after(ran_for)
            log.warning(
                "child.exited",
                child=child.spec.name,
                code=code,
                ran_for=round(ran_for, 3),
                restart_in=delay,
            )
            if await self._first_of(asyncio.sleep(delay)):
                return
            await self._spawn(child, env)

    async def _terminate(self, child: _Child) -> None:
        process = child.process
        if process is not None and process.returncode is None:
            log.info("child.stopping", child=child.spec.name, pid=process.pid)
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self.grace)
            except TimeoutError:
                log.warning(
                    "child.killed", child=child.spec.name, pid=process.pid, grace=self.grace
                )
                _kill_group(process.pid)
                await process.wait()
            log.info("child.stopped", child=child.spec.name, code=process.returncode)
        if process is not None:
            _kill_group(process.pid)
        child.pid_path.unlink(missing_ok=True)

    # ---- nats-server -------------------------------------------------------------------------

    async def _start_nats(self, nats: NatsServer) -> None:
        pending = (nats.data_dir / streams.FILE_NAME).exists()
        if pending and not nats.hardened:
            # Services provision their own consumers on an open server, from the start of
            # the streams: the replayed positions would not survive them.
            log.error("nats.replay_refused", file=str(nats.data_dir / streams.FILE_NAME))
            raise streams.StreamsReplayError(
                "a restored snapshot's NATS messages wait to be replayed, which needs the "
                "hardened bus: start without --open-nats"
            )
        await asyncio.to_thread(nats.start, REPLAY_TIMEOUT if pending else NATS_START_TIMEOUT)
        assert nats.process is not None
        _write_child_pidfile(self.run_dir / f"{NATS_NAME}.pid", nats.process.pid)
        log.info("nats.started", url=nats.url, pid=nats.process.pid, data=str(nats.data_dir))

    async def _before_provision(self) -> None:
        await self._replay_restored_streams()
        await self._prune_undeclared_consumers()

    async def _prune_undeclared_consumers(self) -> None:
        """Delete durable consumers an upgrade renamed or dropped (libs/bus/provision.py),
        as the operator; a failure is logged and the start goes on (they only lag)."""
        assert self.nats is not None
        try:
            nc = await nats_client.connect(
                self.nats.url,
                user=OPERATOR,
                password=self.nats.users.get(OPERATOR),
                tls=self.nats.client_tls(OPERATOR),
                inbox_prefix=subjects.inbox_prefix(OPERATOR),
                allow_reconnect=False,
                max_reconnect_attempts=1,
            )
        except Exception as exc:
            log.warning("nats.prune_skipped", error=repr(exc))
            return
        try:
            gone = await prune_undeclared(nc.jetstream(timeout=10.0), self.nats.instances)
        except Exception as exc:
            log.warning("nats.prune_failed", error=repr(exc))
        else:
            for stream, name in gone:
                log.info("nats.consumer_pruned", stream=stream, consumer=name)
        finally:
            await nc.close()

    async def _replay_restored_streams(self) -> None:
        """Replay `<home>/nats/streams.jsonl` (a restore put it there) before provisioning.

        Runs inside NatsServer.start(), once the server is up: the consumers it creates
        start where they were, and provisioning keeps them there. A failure stops the
        start, so no service ever runs on a bus missing its restored commands.
        """
        assert self.nats is not None
        path = self.nats.data_dir / streams.FILE_NAME
        if not path.exists():
            return
        try:
            # As the operator: replaying publishes commands, which the provisioner may not.
            done = await streams.replay_file(
                path,
                self.nats.url,
                user=OPERATOR,
                password=self.nats.users.get(OPERATOR),
                tls=self.nats.client_tls(OPERATOR),
                instances=self.nats.instances,
            )
        except (streams.StreamsError, OSError, UnicodeDecodeError) as exc:
            log.error(
                "nats.replay_failed",
                file=str(path),
                error=str(exc),
                hint="the file is kept; services are not started",
            )
            raise streams.StreamsReplayError(f"replaying {path} failed: {exc}") from exc
        if done is not None:
            log.info(
                "nats.replayed",
                messages=done.messages,
                consumers=done.starts,
                skipped=done.skipped,
            )

    async def _watch_nats(self, nats: NatsServer) -> None:
        # nats-server is a plain Popen (libs/natsserver); polling it keeps this cancellable.
        backoff = dataclasses.replace(self.backoff)
        started_at = time.monotonic()
        while True:
            while nats.process is not None and nats.process.poll() is None:
                if await self._first_of(asyncio.sleep(0.5)):
                    return
            code = nats.process.returncode if nats.process is not None else None
            ran_for = time.monotonic() - started_at
            delay = backoff.delay_after(ran_for)
            log.error("nats.exited", code=code, ran_for=round(ran_for, 3), restart_in=delay)
            if await self._first_of(asyncio.sleep(delay)):
                return
            started_at = time.monotonic()
            try:
                await self._start_nats(nats)
            except (OSError, RuntimeError, TimeoutError) as exc:
                log.error("nats.start_failed", error=str(exc), log=str(nats.log_path))

    # ---- stopping ----------------------------------------------------------------------------

    async def _first_of(self, work: Awaitable[object]) -> bool:
        """Wait for `work` or for a stop request; True if stopping won."""
        work_task = asyncio.ensure_future(work)
        stop_task = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({work_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        for task in (work_task, stop_task):
            task.cancel()
        return self.stopping.is_set()

    async def _shutdown(self, watchers: list[asyncio.Task[None]]) -> None:
        log.info("supervisor.stopping")
        # Watchers return as soon as stopping is set; after that nothing restarts a child.
        await asyncio.gather(*watchers, return_exceptions=True)
        for child in reversed(self.children):
            await self._terminate(child)
        if self.nats is not None:
            await asyncio.to_thread(self.nats.stop)
            (self.run_dir / f"{NATS_NAME}.pid").unlink(missing_ok=True)
            log.info("nats.stopped")
        log.info("supervisor.stopped")


def _write_child_pidfile(path: Path, pid: int) -> None:
    try:
        started = process_start_time(pid)
    except (OSError, IndexError):
        return  # already gone: nothing to record
    path.write_text(f"{pid} {started}\n")


def _kill_group(pgid: int) -> None:
    # Children lead their own process group; this takes down anything they left running.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _parse_child(text: str) -> ChildSpec:
    name, sep, command = text.partition("=")
    if not sep or not command.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=COMMAND, got {text!r}")
    try:
        return ChildSpec(name.strip(), tuple(shlex.split(command)))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="python -m slipway.libs.supervisor",
        description="Run nats-server and Slipway's services, restarting them when they crash.",
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=Path(env.get("SLIPWAY_HOME", "var")),
        help="state folder (default $SLIPWAY_HOME or var)",
    )
    parser.add_argument(
        "--nats-port",
        type=int,
        default=int(env.get("SLIPWAY_NATS_PORT", "4222")),
        help="0 picks a free port (default $SLIPWAY_NATS_PORT or 4222)",
    )
    parser.add_argument(
        "--only", action="append", metavar="SERVICE", help="run only this service (repeatable)"
    )
    parser.add_argument(
        "--child",
        action="append",
        type=_parse_child,
        metavar="NAME=COMMAND",
        help="run this command instead of the services (repeatable)",
    )
    parser.add_argument("--list", action="store_true", help="print the services found and exit")
    parser.add_argument(
        "--open-nats",
        action="store_true",
        default=env.get("SLIPWAY_NATS_OPEN") == "1",
        help="one NATS user for all (debugging); default: a user per service ($SLIPWAY_NATS_OPEN)",
    )
    parser.add_argument(
        "--same-user",
        action="store_true",
        default=not serviceusers.enabled(env),
        help="run every service as this user, not as its own (development;"
        f" ${serviceusers.SWITCH_ENV}=0); default: own users when run as root",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds a child gets to exit after SIGTERM before SIGKILL",
    )
    parser.add_argument("--backoff-initial", type=float, default=0.5)
    parser.add_argument("--backoff-max", type=float, default=30.0)
    parser.add_argument(
        "--backoff-reset", type=float, default=60.0, help="a run this long resets the restart delay"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the supervisor until SIGTERM/SIGINT; 0 also when another one already runs."""
    parser = _parser()
    args = parser.parse_args(argv)
    services = discover_services()
    if args.list:
        print("\n".join(services))
        return 0
    if args.child:
        children: list[ChildSpec] = list(args.child)
    else:
        wanted = [name.replace("_", "-") for name in args.only or services]
        unknown = sorted(set(wanted) - set(services))
        if unknown:
            found = ", ".join(services) or "none"
            parser.error(f"no such service: {', '.join(unknown)} (found: {found})")
        own_users = not args.same_user and serviceusers.is_root()
        children = service_specs((name for name in services if name in wanted), own_users=own_users)
        if str(Service.NETWORK_WIRER) in wanted:
            # The router is infrastructure, like nats-server: it starts before the services.
            router = ChildSpec(ROUTER_NAME, (sys.executable, "-m", "slipway.libs.haproxy"))
            children.insert(0, router)

    home: Path = args.home.resolve()
    # Owner-only from here on, for this process and every child it starts; and whatever an
    # older version or a umask-ignoring child left readable by others is narrowed now.
    private_umask()
    private_dir(home)
    # The add-on databases' run folders are shared by group with each database's postgres.
    run_folders = addon_run_root(os.environ.get("SLIPWAY_ADDON_RUN_DIR", ""), home)
    tightened = tighten(home, keep=[run_folders])
    pidfile = PidFile(home / "run" / PIDFILE_NAME)
    try:
        pidfile.acquire()
    except AlreadyRunning as running:
        print(
            f"slipway supervisor already running (pid {running.pid or '?'}) for {home}; "
            f"logs in {home / 'logs'}"
        )
        return 0
    configure_logging("supervisor", fmt=os.environ.get("SLIPWAY_LOG_FORMAT", "auto"))
    if tightened:
        log.warning("home.tightened", home=str(home), files=tightened)
    if not args.same_user and not args.child and not serviceusers.is_root():
        log.warning(
            "service_users.unavailable",
            reason="not root: every service runs as this user",
            hint=f"run as root for a user per service, or set {serviceusers.SWITCH_ENV}=0",
        )
    supervisor = Supervisor(
        home,
        children,
        # Hardened by default: each service its own NATS user, subscribing only to its own
        # subjects (libs/natsauth.py); the keyring's policy relies on that to know callers.
        nats=NatsServer(home / "nats", port=args.nats_port, hardened=not args.open_nats),
        grace=args.grace,
        backoff=Backoff(args.backoff_initial, args.backoff_max, args.backoff_reset),
    )
    try:
        asyncio.run(supervisor.run())
    except (OSError, RuntimeError, TimeoutError) as exc:
        # nats-server would not start (port taken, binary missing) or the state folder is
        # unusable: without the bus nothing can run, so say why and fail.
        log.error("supervisor.failed", error=str(exc))
        return 1
    finally:
        pidfile.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
