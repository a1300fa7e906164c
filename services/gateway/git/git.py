"""git smart HTTP: `git push http://<gateway>/<app>.git main` deploys the app.

    GET  /<app>.git/info/refs?service=git-receive-pack   refs, for a push
    POST /<app>.git/git-receive-pack                     the push itself
    GET  /<app>.git/info/refs?service=git-upload-pack    refs, for a clone or fetch
    POST /<app>.git/git-upload-pack                      the clone or fetch

The API token is the password of HTTP Basic (any user name; a token given as
the user name with no password works too). Every request is authenticated and
checked against the caller's role in the app's team (deploy for a push, read
for a fetch) before any byte of its body is read: 401 with
`WWW-Authenticate: Basic` makes git ask for credentials, another team's app is
404 as everywhere in the API, a viewer's push is 403. Refusals are plain text,
which git shows as `remote: ...` lines.

A push's body is kept in a spool file (at most `git_push_max_bytes`, else 413
naming the limit) while it waits for the app's lock; a second pusher sees
"waiting for another push to finish". Under the lock `git receive-pack
--stateless-rpc` runs with the pre-receive hook that builds and releases the
app (`pushes.py`); the ref moves only if the build succeeded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import signal
import tempfile
import time
from typing import IO

import structlog
from aiohttp import web

from slipway.libs.errors import InsufficientStorage
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import REQUEST_ID
from slipway.services.gateway.git import gitrepo
from slipway.services.gateway.git.passthrough import raw
from slipway.services.gateway.git.pushes import STATE, PushState
from slipway.services.gateway.http import diskpressure
from slipway.services.gateway.http.auth import ALLOWED, Action, Role, disabled_at, token_hash
from slipway.services.gateway.http.routing import Routes
from slipway.services.gateway.outbox.changes import Actor

log = structlog.get_logger("slipway.gateway.git")

routes = Routes("git")

SERVICES = {"git-receive-pack": Action.DEPLOY, "git-upload-pack": Action.READ}
_CHUNK = 64 * 1024
_SPOOL_IN_MEMORY = 1024 * 1024  # per push: fifty at once stay ~50 MiB, the rest on disk


class Refusal(Exception):
    """A git request answered with an HTTP error and a line git shows to the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> web.Response:
        headers = {"WWW-Authenticate": 'Basic realm="Slipway"'} if self.status == 401 else {}
        return web.Response(
            status=self.status, text=self.message + "\n", content_type="text/plain", headers=headers
        )


def refuse_push_when_full(request: web.Request) -> None:
    """A push starts a build: refused above the disk's high-water mark, with git showing
    the reason as a `remote:` line (git prints a text/plain error body that way)."""
    try:
        diskpressure.refuse_new_work(request, "push (a push starts a build)")
    except InsufficientStorage as exc:
        raise Refusal(507, exc.message) from None


def basic_token(header: str | None) -> str:
    """The token in an HTTP Basic header: the password, or the user name if none."""
    if not header:
        raise Refusal(401, "Authentication required: use your Slipway API token as the password.")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        raise Refusal(401, "Use HTTP Basic authentication with your API token as the password.")
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise Refusal(401, "Malformed Basic credentials.") from None
    token = password or user
    if not token:
        raise Refusal(401, "Authentication required: use your Slipway API token as the password.")
    return token


async def authorize(request: web.Request, action: Action) -> tuple[store.App, Actor]:
    """The app of the URL and the caller, if the caller's token and role allow `action`."""
    state = request.app[STATE]
    repo = request.match_info["repo"]
    if not repo.endswith(".git") or len(repo) <= 4:
        raise Refusal(404, "Not an app's git URL: use <api url>/<app>.git.")
    found = await store.user_by_token_hash(
        state.gw.reader, token_hash(basic_token(request.headers.get("Authorization")))
    )
    if found is None:
        raise Refusal(401, "Invalid credentials: use a valid Slipway API token as the password.")
    user, token = found
    if await disabled_at(state.gw.reader, user.id) is not None:
        raise Refusal(401, "This account is disabled: ask your platform admin to enable it.")
    if token.revoked_at is not None or (
        token.expires_at is not None and token.expires_at <= time.time()
    ):
        raise Refusal(401, "This token was revoked or has expired: create a new one.")
    member = await store.app_for_user(state.gw.reader, repo[:-4], user.id)
    if member is None:
        raise Refusal(404, f"Couldn't find that app ({repo[:-4][:60]}).")
    app, role = member
    if action not in ALLOWED[Role(role)]:
        doing = "push to" if action is Action.DEPLOY else "read"
        raise Refusal(403, f"Your role in team {app.team_name} ({role}) cannot {doing} {app.name}.")
    if app.shredded_at is not None:
        raise Refusal(
            410, f"The key of team {app.team_name} was destroyed; {app.name} cannot deploy."
        )
    who = Actor(
        email=user.email,
        user_id=user.id,
        source_ip=request.remote,
        request_id=request.get(REQUEST_ID),
    )
    return app, who


@routes.get(
    "/{repo}/info/refs",
    summary="git smart HTTP: the refs of an app's repository",
    response=str,
    public=True,
    extension=True,
)
@raw
async def info_refs(request: web.Request) -> web.Response:
    state = request.app[STATE]
    service = request.query.get("service", "")
    try:
        if service not in SERVICES:
            raise Refusal(403, "Only git's smart HTTP protocol is served (git 1.6.6 or later).")
        app, _ = await authorize(request, SERVICES[service])
        if service == "git-receive-pack":
            refuse_push_when_full(request)
        repo = gitrepo.repo_path(state.gw.settings, app.id)
        if not (repo / "HEAD").exists():
            if service == "git-upload-pack":
                raise Refusal(404, f"Nothing was pushed to {app.name} yet.")
            async with state.app_lock(app.id):
                repo = await gitrepo.ensure_repo(state.gw.settings, app.id)
    except Refusal as refusal:
        return refusal.response()
    code, out = await gitrepo.run_git(
        state.gw.settings,
        service.removeprefix("git-"),
        "--stateless-rpc",
        "--advertise-refs",
        str(repo),
    )
    if code != 0:
        log.error("git.advertise_failed", app=app.name, service=service)
        return Refusal(500, "The repository could not be read.").response()
    body = gitrepo.pkt_line(f"# service={service}\n".encode()) + gitrepo.FLUSH + out
    return web.Response(
        body=body,
        headers={
            "Content-Type": f"application/x-{service}-advertisement",
            "Cache-Control": "no-cache",
        },
    )


async def spool_body(request: web.Request, limit: int, run_dir: str) -> tuple[IO[bytes], bytes]:
    """The request body in a spool file (rewound) and its first bytes; Refusal(413) past `limit`."""
    over = f"This push is over the limit of {limit // (1024 * 1024)} MiB ({limit} bytes)."
    if request.content_length is not None and request.content_length > limit:
        raise Refusal(413, over)
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY, dir=run_dir)  # noqa: SIM115
    head = b""
    size = 0
    try:
        while chunk := await request.content.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise Refusal(413, over)
            if len(head) < 4096:
                head += chunk[: 4096 - len(head)]
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool, head


async def run_service(
    state: PushState,
    args: list[str],
    env: dict[str, str],
    spool: IO[bytes],
    response: web.StreamResponse,
) -> int:
    """Run one stateless git service: the spool to its stdin, its stdout to the response."""
    process = await asyncio.create_subprocess_exec(
        *gitrepo.git_args(state.gw.settings, *args),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,  # its own process group: the hook goes down with it
    )
    assert process.stdin is not None
    assert process.stdout is not None
    assert process.stderr is not None

    async def feed() -> None:
        assert process.stdin
        try:
            while chunk := await asyncio.to_thread(spool.read, _CHUNK):
                process.stdin.write(chunk)
                await process.stdin.drain()
            process.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # git stopped reading: its exit status says why

    feeder = asyncio.create_task(feed())
    errors = asyncio.create_task(process.stderr.read())
    try:
        while chunk := await process.stdout.read(_CHUNK):
            await response.write(chunk)
        await feeder
        code = await process.wait()
        if code != 0:
            log.warning(
                "git.failed",
                command=args[0],
                code=code,
                stderr=(await errors)[-500:].decode(errors="replace"),
            )
        return code
    finally:
        feeder.cancel()
        errors.cancel()
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


@routes.post(
    "/{repo}/git-receive-pack",
    summary="git smart HTTP: push (builds and releases the app)",
    response=str,
    public=True,
    extension=True,
)
@raw
async def receive_pack(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    settings = state.gw.settings
    try:
        app, who = await authorize(request, Action.DEPLOY)
        refuse_push_when_full(request)
        spool, head = await spool_body(
            request, settings.git_push_max_bytes, str(gitrepo.run_dir(settings))
        )
    except Refusal as refusal:
        return refusal.response()
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-git-receive-pack-result",
            "Cache-Control": "no-cache",
        }
    )
    await response.prepare(request)
    with spool:
        lock = state.app_lock(app.id)
        if lock.locked() and gitrepo.wants_sideband(head):
            await response.write(gitrepo.progress("waiting for another push to finish\n"))
        async with lock:
            repo = await gitrepo.ensure_repo(settings, app.id)
            push = state.expect_push(app, who, repo)
            env = gitrepo.base_env(
                settings, SLIPWAY_GIT_SOCKET=str(state.socket_path), SLIPWAY_PUSH_ID=push.id
            )
            try:
                await run_service(
                    state, ["receive-pack", "--stateless-rpc", str(repo)], env, spool, response
                )
            finally:
                state.forget_push(push.id)
    await response.write_eof()
    return response


@routes.post(
    "/{repo}/git-upload-pack",
    summary="git smart HTTP: clone or fetch",
    response=str,
    public=True,
    extension=True,
)
@raw
async def upload_pack(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    settings = state.gw.settings
    try:
        app, _ = await authorize(request, Action.READ)
        repo = gitrepo.repo_path(settings, app.id)
        if not (repo / "HEAD").exists():
            raise Refusal(404, f"Nothing was pushed to {app.name} yet.")
        spool, _ = await spool_body(
            request, settings.git_push_max_bytes, str(gitrepo.run_dir(settings))
        )
    except Refusal as refusal:
        return refusal.response()
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-git-upload-pack-result",
            "Cache-Control": "no-cache",
        }
    )
    await response.prepare(request)
    with spool:
        await run_service(
            state,
            ["upload-pack", "--stateless-rpc", str(repo)],
            gitrepo.base_env(settings),
            spool,
            response,
        )
    await response.write_eof()
    return response
