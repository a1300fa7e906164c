"""One-off dynos: `slipway run` and `POST /apps/{app}/dynos`.

A one-off is a container of the release's image with the command asked for,
hardened like every dyno (`containers.container_config`), never published to
the router. Attached ones get a TTY: the scheduler attaches to the container
before starting it, waits for the gateway's `ready` frame (the client is
connected), starts it, waits for the init's `TTY_READY` marker (its terminal is
raw, without echo), writes the env frame, waits for `TTY_GO` (the terminal is
back in its mode), then relays bytes both ways over the session's live subjects
(the markers are not relayed; typed input waits for `TTY_GO`) and ends with an
`exit` frame carrying the process's status. Detached ones start at once with the
env frame on stdin; their output reaches the logs like any dyno's, through the init.
Attached ones without a TTY (`tty=False`) run the init with `--pipe`: the scheduler
starts the container, writes the env frame (no markers: nothing echoes), then relays
raw bytes both ways; an `eof` frame half-closes the attach connection, which closes
the command's stdin (`StdinOnce`), so `cat` or `wc -l` end as they would locally.

`time_to_live` is a deadline label on the container, so a restarted scheduler
still enforces it (`adopt`). An attached one-off whose relay is gone (the
scheduler restarted) is killed: nobody can type into it any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiodocker
import msgspec
import structlog

from slipway.contracts import builder, dynoinit, oneoff
from slipway.contracts import scheduler as sc
from slipway.contracts.base import encode
from slipway.contracts.oneoff import RunOneOff, TtyFrame
from slipway.contracts.scope import Scope
from slipway.libs import appnet
from slipway.libs.bus import Bus
from slipway.services.scheduler import containers
from slipway.services.scheduler.containers import DynoSpec
from slipway.services.scheduler.settings import built_init

log = structlog.get_logger("slipway.scheduler.oneoff")

_frame = msgspec.json.Decoder(TtyFrame)
ONE_OFF_TYPE = "run"
TERM = "xterm-256color"


@dataclass(frozen=True)
class Placement:
    """Where a one-off runs: the engine, its host id and private address."""

    docker: aiodocker.Docker
    host_id: str
    address: str


@dataclass
class OneOffSettings:
    port: int = 5000
    tmp_size: str = "64m"
    # The dyno init on the hosts, and the folder of per-host log folders ("": none is
    # mounted, and a detached one-off's output goes nowhere; the service always sets it).
    dyno_init: str = field(default_factory=lambda: str(built_init()))
    dyno_log_dir: str = ""
    # The installation's scope and app network pool (contracts/scope.py; "": its own),
    # and the size of each app's subnet (libs/appnet.py).
    scope: Scope = field(default_factory=Scope)
    app_network_pool: str = ""
    app_subnet_prefix: int = appnet.DEFAULT_SUBNET_PREFIX
    # How long an attached one-off waits for its client before it is removed unstarted.
    attach_timeout: float = 60.0
    # SIGTERM, then SIGKILL after this long, when the time to live is over.
    stop_grace: float = 10.0


@dataclass
class _Session:
    dyno: sc.Dyno
    container: aiodocker.containers.DockerContainer
    where: Placement  # its engine: the app's network there is released after it
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    size: tuple[int, int] | None = None  # the client's (rows, cols), applied once started
    started: bool = False
    frame: bytes = b""  # the env frame, written once the init is ready for it
    frame_sent: bool = False
    before: bytes = b""  # output during the init's handshake (markers not yet found)
    env_sent: asyncio.Event = field(default_factory=asyncio.Event)  # typed input may go
    announced: bool = False  # its DYNO_CHANGED went out: its end goes out too


class OneOffs:
    """The one-offs this scheduler started, each with its relay and its deadline timer."""

    def __init__(
        self, bus: Bus, settings: OneOffSettings, networks: appnet.AppNetworks | None = None
    ) -> None:
        self.bus = bus
        self.settings = settings
        # The scheduler passes its runtime's: one set of network locks for every creator.
        self.networks = networks or appnet.AppNetworks(
            settings.scope, settings.app_network_pool, settings.app_subnet_prefix
        )
        self.sessions: dict[str, _Session] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, request: RunOneOff, where: Placement, env: dict[str, str]) -> sc.Dyno:
        """Create (and, unless attached, start) the one-off; answer its dyno."""
        number = 1000 + secrets.randbelow(9000)
        spec = DynoSpec(
            app_id=request.app_id,
            app_name=request.app_name,
            team_id=request.team_id,
            release=request.release_version,
            process_type=ONE_OFF_TYPE,
            index=number,
            size=request.size,
            image=request.image,
            command=request.command,
            host_id=where.host_id,
        )
        extra = {"TERM": TERM} if request.attach and request.tty else {}
        frame = containers.env_frame(spec, {**env, **request.env}, self.settings.port, extra)
        async with self.networks.held(where.docker, where.host_id, request.app_id):
            config = await self._config(request, spec, where)
            container = await where.docker.containers.create(
                config, name=containers.container_name(spec, self.settings.scope)
            )
        dyno = sc.Dyno(
            app_id=request.app_id,
            app_name=request.app_name,
            team_id=request.team_id,
            name=spec.name,
            process_type=ONE_OFF_TYPE,
            release_version=request.release_version,
            state="starting",
            host_id=where.host_id,
            container_id=container.id,
            size=request.size,
            command=request.command,
            one_off=True,
            updated_at=time.time(),
        )
        session = _Session(dyno=dyno, container=container, where=where, frame=frame)
        self.sessions[container.id] = session
        self._spawn(session, self._expire(session, time.time() + request.time_to_live))
        if request.attach:
            ready = asyncio.Event()
            stream = container.attach(stdin=True, stdout=True, stderr=True)
            await stream._init()  # attached before the process starts: no output is lost
            frames = await self.bus.live_subscribe(oneoff.tty_in(request.session))
            self._spawn(session, self._relay(session, request, stream, frames, ready))
        else:
            # Its output goes to the log-shipper's socket, which takes announced dynos only.
            await self.bus.publish(sc.DYNO_CHANGED, sc.DynoChanged(dyno=dyno), retry_for=5.0)
            session.announced = True
            await containers.start_with_env(container, frame)
            self._spawn(session, self._reap(session))
        log.info(
            "oneoff.created",
            app=request.app_name,
            dyno=spec.name,
            attach=request.attach,
            tty=request.attach and request.tty,
        )
        return dyno

    async def _config(self, request: RunOneOff, spec: DynoSpec, where: Placement) -> dict[str, Any]:
        root = self.settings.dyno_log_dir
        tty = request.attach and request.tty
        piped = request.attach and not request.tty
        config = containers.container_config(
            spec,
            argv=await self._command(where.docker, request),
            port=self.settings.port,
            address=where.address,
            publish=False,
            tmp_size=self.settings.tmp_size,
            scope=self.settings.scope,
            init=self.settings.dyno_init,
            # Piped output goes to the attached client, never to the log socket.
            log_dir=f"{root.rstrip('/')}/{where.host_id}" if root and not piped else "",
            tty=tty,
        )
        deadline = int(time.time() + request.time_to_live)
        config["Labels"] |= {
            oneoff.LABEL_DEADLINE: str(deadline),
            oneoff.LABEL_ATTACHED: "true" if request.attach else "false",
        }
        config.pop("ExposedPorts", None)
        # The init stays PID 1 (it forwards signals) and puts the command's group in the
        # terminal's foreground: Ctrl-C interrupts it (PID 1 itself would ignore SIGINT).
        if piped:
            config["Entrypoint"] = [dynoinit.INIT_PATH, "--pipe", "--"]
            config |= {"AttachStdout": True, "AttachStderr": True}
        elif tty:
            config |= {
                "Tty": True,
                "AttachStdout": True,
                "AttachStderr": True,
                "Env": [*config["Env"], f"TERM={TERM}"],
            }
            config["HostConfig"]["ConsoleSize"] = [request.tty_rows, request.tty_cols]
        return config

    @staticmethod
    async def _command(docker: aiodocker.Docker, request: RunOneOff) -> list[str]:
        # Buildpack images run their one argument through the launcher (.profile.d first);
        # an image from a Dockerfile gets a shell, as `heroku run` gives one. The init runs
        # what Docker would have: the image's entrypoint, then that.
        image = await docker.images.inspect(request.image)
        entrypoint = image.get("Config", {}).get("Entrypoint") or []
        if entrypoint == [builder.LAUNCHER]:
            return [*entrypoint, request.command]
        return [*entrypoint, "/bin/sh", "-c", request.command]

    # ---- attached sessions --------------------------------------------------------------

    async def _relay(
        self,
        session: _Session,
        request: RunOneOff,
        stream: aiodocker.stream.Stream,
        frames: AsyncIterator[bytes],
        ready: asyncio.Event,
    ) -> None:
        out_subject = oneoff.tty_out(request.session)
        inbound = asyncio.create_task(self._inbound(session, request, stream, frames, ready))
        try:
            try:
                await asyncio.wait_for(ready.wait(), self.settings.attach_timeout)
            except TimeoutError:
                await self._send(out_subject, TtyFrame(kind="error", message="nobody attached"))
                return
            await session.container.start()
            session.started = True
            if request.tty:
                await _resize(session)
                while (data := await self._read_past_markers(session, stream)) is not None:
                    await self._send(out_subject, TtyFrame(kind="data", data=data))
            else:
                # No terminal, no markers: the frame goes first, then the client's bytes.
                await stream.write_in(session.frame)
                session.frame_sent = True
                session.env_sent.set()
                while (message := await stream.read_out()) is not None:
                    await self._send(out_subject, TtyFrame(kind="data", data=message.data))
            status = await session.container.wait()
            code = int(status.get("StatusCode", 1))
            await self._send(out_subject, TtyFrame(kind="exit", exit_code=code))
            log.info("oneoff.exited", dyno=session.dyno.name, exit_code=code)
        finally:
            inbound.cancel()
            with contextlib.suppress(Exception):
                await stream.close()
            await self._remove(session)

    @staticmethod
    async def _read_past_markers(
        session: _Session, stream: aiodocker.stream.Stream
    ) -> bytes | None:
        """The command's next output: the init's handshake is consumed here, never relayed.

        `TTY_READY`: the terminal is raw, the frame goes in. `TTY_GO`: the frame was read
        and the terminal is back in its mode; typed input may follow. Whatever the init
        prints before a marker (a refusal) still reaches the user.
        """
        while (message := await stream.read_out()) is not None:
            if session.env_sent.is_set():
                return message.data
            session.before += message.data
            marker = dynoinit.TTY_GO if session.frame_sent else dynoinit.TTY_READY
            at = session.before.find(marker)
            if at < 0:
                continue
            rest = session.before[at + len(marker) :]
            session.before = b""
            if not session.frame_sent:
                session.frame_sent = True
                await stream.write_in(session.frame)
                session.before = rest
                continue
            session.env_sent.set()
            if rest:
                return rest
        if session.before:  # the init ended during the handshake: say what it said
            said = session.before.replace(dynoinit.TTY_READY, b"")
            session.before = b""
            return said or None
        return None

    async def _inbound(
        self,
        session: _Session,
        request: RunOneOff,
        stream: aiodocker.stream.Stream,
        frames: AsyncIterator[bytes],
        ready: asyncio.Event,
    ) -> None:
        input_closed = False
        async for raw in frames:
            try:
                frame = _frame.decode(raw)
            except msgspec.DecodeError:
                continue
            match frame.kind:
                case "ready":
                    ready.set()
                case "data" if ready.is_set() and not input_closed:
                    await session.env_sent.wait()  # typed input comes after the env frame
                    await stream.write_in(frame.data)
                case "eof" if ready.is_set() and not request.tty and not input_closed:
                    await session.env_sent.wait()
                    input_closed = True
                    _close_input(stream)
                case "resize" if frame.cols > 0 and frame.rows > 0:
                    session.size = (frame.rows, frame.cols)
                    await _resize(session)
                case "close":
                    # The client went away: hang up, as a closed terminal would.
                    with contextlib.suppress(aiodocker.DockerError):
                        await session.container.kill(signal="SIGHUP")
                    if not ready.is_set():
                        await self._remove(session)

    async def _send(self, subject: str, frame: TtyFrame) -> None:
        await self.bus.live_publish(subject, encode(frame))

    # ---- lifetimes ----------------------------------------------------------------------

    async def _reap(self, session: _Session) -> None:
        with contextlib.suppress(aiodocker.DockerError):
            await session.container.wait()
        await self._remove(session)

    async def _expire(self, session: _Session, deadline: float) -> None:
        await asyncio.sleep(max(deadline - time.time(), 0))
        log.info("oneoff.time_to_live_over", dyno=session.dyno.name)
        await _stop(session.container, self.settings.stop_grace)

    async def _remove(self, session: _Session) -> None:
        self.sessions.pop(session.container.id, None)
        with contextlib.suppress(aiodocker.DockerError):
            await session.container.delete(force=True)
        try:  # the app's last container on this host: its network goes too
            await self.networks.release(
                session.where.docker, session.where.host_id, session.dyno.app_id
            )
        except Exception as exc:  # a silent engine: the scheduler's sweep removes it later
            log.warning("oneoff.network_not_released", dyno=session.dyno.name, error=repr(exc))
        if session.announced:
            session.announced = False
            down = msgspec.structs.replace(session.dyno, state="down", updated_at=time.time())
            change = sc.DynoChanged(dyno=down, previous_state=session.dyno.state)
            try:
                await self.bus.publish(sc.DYNO_CHANGED, change, retry_for=5.0)
            except Exception as exc:  # the log-shipper forgets it after a while anyway
                log.warning("oneoff.down_unpublished", dyno=down.name, error=repr(exc))
        for task in session.tasks:
            if task is not asyncio.current_task():
                task.cancel()

    async def adopt(self, where: Placement) -> None:
        """After a restart: enforce the deadlines of one-offs found on `where`."""
        # This scope's one-offs only: another installation's are not ours to expire.
        filters = {"label": [f"{sc.LABEL_TYPE}={ONE_OFF_TYPE}", self.settings.scope.managed_label]}
        found = await where.docker.containers.list(all=True, filters=filters)
        for container in found:
            labels: dict[str, str] = container["Labels"] or {}
            if container.id in self.sessions:
                continue
            deadline = float(labels.get(oneoff.LABEL_DEADLINE, "0") or 0)
            orphaned_tty = labels.get(oneoff.LABEL_ATTACHED) == "true"
            if orphaned_tty or deadline <= time.time() or container["State"] != "running":
                with contextlib.suppress(aiodocker.DockerError):
                    await container.delete(force=True)
                continue
            spec = containers.spec_from_labels(labels)
            if spec is None:
                continue
            dyno = sc.Dyno(
                app_id=spec.app_id,
                app_name=spec.app_name,
                team_id=spec.team_id,
                name=spec.name,
                process_type=ONE_OFF_TYPE,
                release_version=spec.release,
                state="up",
                host_id=where.host_id,
                container_id=container.id,
                one_off=True,
            )
            session = _Session(dyno=dyno, container=container, where=where)
            session.announced = labels.get(oneoff.LABEL_ATTACHED) == "false"
            self.sessions[container.id] = session
            self._spawn(session, self._expire(session, deadline))
            self._spawn(session, self._reap(session))

    def _spawn(self, session: _Session, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work)
        session.tasks.add(task)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(session.tasks.discard)

    async def close(self) -> None:
        """Stop relaying (containers keep running; `adopt` finds them after a restart)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _resize(session: _Session) -> None:
    # Docker resizes only a running container's TTY: before the start, the size waits.
    if session.started and session.size:
        rows, cols = session.size
        with contextlib.suppress(aiodocker.DockerError):
            await session.container.resize(h=rows, w=cols)


def _close_input(stream: aiodocker.stream.Stream) -> None:
    """Half-close the attach connection: Docker closes the dyno's stdin (`StdinOnce`).

    aiodocker only closes both ways at once (its `close`), and the output is still to
    be read, so the write side of its connection is shut here.
    """
    response = stream._resp  # aiodocker has no public half-close
    transport = response.connection.transport if response and response.connection else None
    if transport is not None and transport.can_write_eof():
        transport.write_eof()


async def _stop(container: aiodocker.containers.DockerContainer, grace: float) -> None:
    with contextlib.suppress(aiodocker.DockerError):
        await container.stop(t=int(grace))
