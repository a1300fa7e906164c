"""What happens between `git receive-pack` taking a push and git moving the branch.

The pre-receive hook (`githook.py`) connects to the gateway's hook channel, a
unix socket `<SLIPWAY_HOME>/gateway/run/git-<pid>.sock` (0600, in a 0700
folder), and names its push by the unguessable id the gateway put in its
environment when it started `receive-pack`; that id, not anything the hook
says, decides the app and the pusher. Then:

1. the gateway checks the ref updates: only `main` or `master`, no deletion,
   and the branch must still be where the pusher saw it (else another push
   landed first: nothing is built);
2. the hook streams `git archive --format=tar.gz <rev>` (it runs inside git's
   quarantine, where the pushed objects are); the gateway stores it as an
   encrypted source;
3. the gateway subscribes to the build's output, then records the build and
   sends `BUILD_REQUEST`; each output chunk goes back to the hook, which prints
   it (git shows `remote: ` lines);
4. on success it waits for the build's release and says `Released vN`; the
   hook exits 0 and git moves the branch. Any failure exits 1: git refuses the
   push and the branch stays.

Frames on the socket are a 4-byte big-endian length and a payload: JSON
messages, and the archive as raw frames ending with an empty one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import struct
import tempfile
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog
from aiohttp import web

from slipway.contracts.builder import SourceBlob
from slipway.libs.errors import SlipwayError
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import Gateway
from slipway.services.gateway.core.store import new_uuid
from slipway.services.gateway.git import builds, gitrepo, sources
from slipway.services.gateway.git.buildoutput import Follower
from slipway.services.gateway.http.errors import PayloadTooLarge
from slipway.services.gateway.outbox.changes import Actor

log = structlog.get_logger("slipway.gateway.pushes")

DEPLOY_BRANCHES = ("refs/heads/main", "refs/heads/master")
ZERO = "0" * 40
FRAME = struct.Struct(">I")
MAX_FRAME = 1024 * 1024
RELEASE_POLL = 0.1
_SUN_PATH_MAX = 100  # sockaddr_un holds 108 bytes; keep a margin


class Refused(Exception):
    """A push the gateway will not build; the message is shown to the pusher."""


@dataclass(frozen=True)
class Push:
    id: str
    app: store.App
    actor: Actor
    repo: Path


class AppLock:
    """One push at a time per app: this process's asyncio lock, then a flock for the others."""

    def __init__(self, lock: asyncio.Lock, path: Path) -> None:
        self.lock = lock
        self.path = path
        self._flock: contextlib.AbstractAsyncContextManager[None] | None = None

    def locked(self) -> bool:
        return self.lock.locked()

    async def __aenter__(self) -> None:
        await self.lock.acquire()
        try:
            self._flock = gitrepo.file_lock(self.path)
            await self._flock.__aenter__()
        except BaseException:
            self.lock.release()
            raise

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._flock is not None:
                await self._flock.__aexit__(kind, exc, tb)
        finally:
            self.lock.release()


@dataclass
class PushState:
    """The gateway's pushes in flight and its hook channel."""

    gw: Gateway
    socket_path: Path = Path()
    pushes: dict[str, Push] = field(default_factory=dict)
    locks: weakref.WeakValueDictionary[str, asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )

    def app_lock(self, app_id: str) -> AppLock:
        lock = self.locks.get(app_id)
        if lock is None:
            lock = self.locks[app_id] = asyncio.Lock()
        return AppLock(lock, gitrepo.lock_path(self.gw.settings, app_id))

    def expect_push(self, app: store.App, actor: Actor, repo: Path) -> Push:
        """Register a push about to run receive-pack; its id goes into the hook's environment."""
        push = Push(secrets.token_urlsafe(24), app, actor, repo)
        self.pushes[push.id] = push
        return push

    def forget_push(self, push_id: str) -> None:
        self.pushes.pop(push_id, None)


STATE = web.AppKey("pushes", PushState)


# ---- the ref updates ------------------------------------------------------------------------


def check_updates(updates: list[list[str]]) -> tuple[str, str, str]:
    """The one deployable update (old, new, ref) of a push, or Refused saying why not."""
    if len(updates) != 1:
        raise Refused("Push one branch at a time: main (or master) deploys the app.")
    old, new, ref = updates[0]
    if ref not in DEPLOY_BRANCHES:
        short = ref.removeprefix("refs/heads/")
        raise Refused(
            f"Pushed to {short}: only main or master deploys."
            f" Use `git push slipway {short}:main` to deploy this branch."
        )
    if new == ZERO:
        raise Refused(f"Deleting {ref.removeprefix('refs/heads/')} is not allowed.")
    return old, new, ref


async def _check_not_moved(gw: Gateway, push: Push, old: str, ref: str) -> None:
    now = await gitrepo.current_ref(gw.settings, push.repo, ref)
    if (now or ZERO) != old:
        raise Refused(
            f"{ref.removeprefix('refs/heads/')} moved while you were pushing (another push"
            " landed first): pull, then push again."
        )


# ---- the channel ----------------------------------------------------------------------------


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (length,) = FRAME.unpack(await reader.readexactly(FRAME.size))
    if length > MAX_FRAME:
        raise Refused("Malformed message from the hook.")
    return await reader.readexactly(length)


class Channel:
    """The gateway's end of one hook connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.open = True

    async def send(self, message: dict[str, Any]) -> None:
        if not self.open:
            return
        data = json.dumps(message).encode()
        try:
            self.writer.write(FRAME.pack(len(data)) + data)
            await self.writer.drain()
        except (ConnectionError, OSError):
            self.open = False  # the pusher went away; the build goes on

    async def say(self, text: str) -> None:
        await self.send({"say": text})

    async def receive(self) -> dict[str, Any]:
        decoded = json.loads(await read_frame(self.reader))
        if not isinstance(decoded, dict):
            raise Refused("Malformed message from the hook.")
        return decoded

    async def archive_frames(self) -> AsyncIterator[bytes]:
        """The archive's frames as the hook sends them, until the empty one."""
        while frame := await read_frame(self.reader):
            yield frame


async def handle(
    state: PushState, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """One hook connection: build the push and tell the hook how it went."""
    channel = Channel(reader, writer)
    code = 1
    try:
        hello = await channel.receive()
        push = state.pushes.pop(str(hello.get("push_id", "")), None)
        if push is None:
            raise Refused("This push is unknown to the gateway.")
        code = await deploy(state.gw, push, hello.get("updates", []), channel)
    except Refused as refusal:
        await channel.say(f" !     {refusal}\n")
    except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
        log.warning("push.channel_failed", error=repr(exc))
    except SlipwayError as exc:
        log.error("push.failed", error=repr(exc))
        await channel.say(f" !     The deploy failed: {exc.message}\n")
    finally:
        await channel.send({"exit": code})
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def deploy(gw: Gateway, push: Push, updates: list[list[str]], channel: Channel) -> int:
    """Build the pushed revision and wait for its release; the hook's exit status."""
    old, rev, ref = check_updates(updates)
    await _check_not_moved(gw, push, old, ref)
    await channel.send({"archive": rev})
    app = push.app
    # Streamed to an encrypted file frame by frame: a push is never held whole in memory.
    limit = gw.settings.source_max_bytes
    try:
        source, url, checksum = await sources.store_stream(
            gw, app, push.actor.user_id or "", channel.archive_frames(), limit
        )
    except PayloadTooLarge:
        raise Refused(f"The source is over the limit of {limit} bytes.") from None
    await channel.say(f"-----> Building {app.name} at {rev[:12]}\n")
    build_id = new_uuid()
    follower = await Follower.open(gw, build_id)  # before the command: no chunk is missed
    try:
        build = await builds.start_build(
            gw,
            app,
            push.actor,
            SourceBlob(url=url, checksum=checksum, version=rev, platform=True),
            source_id=source.id,
            build_id=build_id,
        )
        deadline = time.monotonic() + gw.settings.build_timeout
        idle = "-----> Waiting for a builder to take the build...\n"
        async for text in follower.chunks(deadline, idle_notice=idle):
            await channel.say(text)
    finally:
        await follower.close()
    if not follower.done:
        await channel.say(
            f" !     The build did not finish within {gw.settings.build_timeout:g}s;"
            " push rejected.\n"
        )
        return 1
    if follower.status != "succeeded":
        await channel.say(
            " !     Build failed: the push was rejected and the app was not changed.\n"
        )
        return 1
    release = await _wait_release(gw, build)
    if release is None:
        await channel.say(" !     The build succeeded but no release was made; push rejected.\n")
        return 1
    await channel.say(
        f"-----> Released v{release.version}\n       {gw.web_url(app.name)} deployed to Slipway\n"
    )
    return 0


async def _wait_release(gw: Gateway, build: builds.Build) -> store.Release | None:
    deadline = time.monotonic() + gw.settings.release_wait
    while time.monotonic() < deadline:
        found = await builds.get_build(gw.reader, build.id)
        if found is not None:
            release = await builds.release_of(gw, found)
            if release is not None:
                return release
            if found.status == "failed":
                return None
        await asyncio.sleep(RELEASE_POLL)
    return None


def socket_path(settings: Any) -> Path:
    """Where this process listens for hooks (a short private folder if the path is too long)."""
    path = gitrepo.run_dir(settings) / f"git-{os.getpid()}.sock"
    if len(str(path).encode()) <= _SUN_PATH_MAX:
        return path
    return Path(tempfile.mkdtemp(prefix="slipway-git-")) / "git.sock"


@contextlib.asynccontextmanager
async def channel(state: PushState) -> AsyncIterator[None]:
    """Listen for hooks while the gateway runs; hooks are (re)written at start."""
    gitrepo.install_hooks(state.gw.settings)
    path = socket_path(state.gw.settings)
    path.unlink(missing_ok=True)
    # The folder is 0700 already; the socket itself is narrowed to 0600 at once.
    server = await asyncio.start_unix_server(lambda r, w: handle(state, r, w), path=str(path))
    path.chmod(0o600)
    state.socket_path = path
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()
        path.unlink(missing_ok=True)
