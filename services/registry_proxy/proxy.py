"""The registry API as Docker engines see it: every request checked, then streamed to Distribution.

    GET /v2/                       401 + `WWW-Authenticate: Basic` without a valid credential
    /v2/<name>/manifests/<ref>     <name> must be `apps/<app_id>` of the credential;
    /v2/<name>/blobs/...           pull: GET and HEAD; push: also POST, PUT and PATCH;
    /v2/<name>/tags/list           DELETE never (garbage collection deletes, inside)
    anything else (`_catalog`)     refused

Bodies stream both ways (a layer is never held in memory), `Location` headers
come back relative so upload URLs point at the proxy, and a cross-repository
blob mount from another app's repository is turned into a plain upload: knowing
a digest must not give access to another app's layers. When a manifest PUT
succeeds the image is recorded, IMAGE_PUSHED queued, and the push session closed.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from slipway.contracts.registry import ImagePushed
from slipway.services.registry_proxy.credentials import Grant, Issuer, Rejected
from slipway.services.registry_proxy.distribution import BASE_URL, Distribution
from slipway.services.registry_proxy.errors import DistributionError
from slipway.services.registry_proxy.gate import GateClosed, PushGate

log = structlog.get_logger("slipway.registry_proxy.proxy")

REALM = "Slipway registry"
API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")
CHUNK = 256 * 1024
READY_WAIT = 60.0

# The registry API's repository name grammar, then the three kinds of resource.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_ROUTE = re.compile(
    rf"^/v2/(?P<name>{_COMPONENT}(?:/{_COMPONENT})*)/(?P<kind>manifests|blobs|tags)/(?P<rest>.*)$"
)
_DIGEST_PATTERN = r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+"
_DIGEST = re.compile(rf"^{_DIGEST_PATTERN}$")
_TAG_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
# What may follow the repository name, per kind. Strict on purpose: a dot segment
# ("..") would otherwise be resolved on the way to Distribution, into another
# app's repository.
_REST = {
    "manifests": re.compile(rf"^(?:{_TAG_PATTERN}|{_DIGEST_PATTERN})$"),
    "blobs": re.compile(rf"^(?:{_DIGEST_PATTERN}|uploads/(?:[A-Za-z0-9-]+)?)$"),
    "tags": re.compile(r"^list$"),
}
# Headers that belong to one connection, not to the message being relayed.
_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Expect",
        "Content-Length",
        "Authorization",
    )
)

Recorder = Callable[[ImagePushed], Awaitable[None]]


def repository_name(app_id: str) -> str:
    """The repository (path in the registry) of an app's images."""
    return f"apps/{app_id}"


def valid_app_id(app_id: str) -> bool:
    """Whether `app_id` can be a component of a repository name."""
    return re.fullmatch(_COMPONENT, app_id) is not None


@dataclass(frozen=True)
class Target:
    """What a request addresses: a repository and a kind of resource in it."""

    name: str
    kind: str
    rest: str


def error(status: int, code: str, message: str) -> web.Response:
    """A refusal in the registry API's error format, which engines print."""
    headers = CIMultiDict([API_VERSION])
    if status == 401:
        headers["WWW-Authenticate"] = f'Basic realm="{REALM}"'
    return web.json_response(
        {"errors": [{"code": code, "message": message, "detail": None}]},
        status=status,
        headers=headers,
    )


class Proxy:
    """Checks each request against its credential and relays it to Distribution."""

    def __init__(
        self, issuer: Issuer, distribution: Distribution, gate: PushGate, record: Recorder
    ) -> None:
        self.issuer = issuer
        self.distribution = distribution
        self.gate = gate
        self.record = record
        self.registry = ""  # host:port engines use; set once the server is bound
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        """Open the client session to Distribution."""
        self._session = aiohttp.ClientSession(
            connector=self.distribution.connector(),
            # Pass bytes through untouched (digests are over the stored bytes).
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=600),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def web_app(self) -> web.Application:
        """The aiohttp application serving the registry API."""
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Authenticate, authorize, relay; one log line per request."""
        started = time.perf_counter()
        grant: Grant | None = None
        response: web.StreamResponse
        try:
            grant = self._authenticate(request)
            response = await self._dispatch(request, grant)
        except Rejected as exc:
            response = error(401, "UNAUTHORIZED", str(exc))
        log.info(
            "registry.request",
            method=request.method,
            path=request.path,
            status=response.status,
            app_id=grant.app_id if grant else None,
            access=grant.access if grant else None,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return response

    def _authenticate(self, request: web.Request) -> Grant | None:
        header = request.headers.get("Authorization")
        if not header:
            return None
        return self.issuer.check(basic_password(header))

    async def _dispatch(self, request: web.Request, grant: Grant | None) -> web.StreamResponse:
        if request.path in ("/v2", "/v2/"):
            if grant is None:
                return error(401, "UNAUTHORIZED", "registry credentials required")
            return web.json_response({}, headers=CIMultiDict([API_VERSION]))
        match = _ROUTE.match(request.path)
        if match is None or not _REST[match["kind"]].match(match["rest"]):
            if request.path.startswith("/v2/_catalog"):
                return error(403, "DENIED", "the catalog is not served")
            return error(404, "NOT_FOUND", f"no such registry endpoint: {request.path}")
        if grant is None:
            return error(401, "UNAUTHORIZED", "registry credentials required")
        target = Target(match["name"], match["kind"], match["rest"])
        if target.name != repository_name(grant.app_id):
            return error(403, "DENIED", f"this credential is for {repository_name(grant.app_id)}")
        if not grant.allows(request.method):
            return error(403, "DENIED", f"{grant.access} credentials may not {request.method}")
        if grant.access != "push":
            return await self._relay(request, target, grant)
        try:
            async with self.gate.request(grant.token_id):
                return await self._relay(request, target, grant)
        except GateClosed as exc:
            return error(503, "UNAVAILABLE", str(exc))

    async def _relay(
        self, request: web.Request, target: Target, grant: Grant
    ) -> web.StreamResponse:
        assert self._session is not None
        if not self.distribution.ready.is_set():
            # Restarting (a crash, or the switch to read-only for garbage collection).
            try:
                await self.distribution.wait_ready(READY_WAIT)
            except DistributionError:
                return error(503, "UNAVAILABLE", "the registry is restarting; try again")
        path = f"/v2/{target.name}/{target.kind}/{target.rest}"  # validated: no dot segments
        url = URL(BASE_URL).with_path(path).with_query(self._query(request, target))
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _HOP)
        if "Content-Length" in request.headers:
            headers["Content-Length"] = request.headers["Content-Length"]
        body = request.content if request.body_exists else None
        try:
            async with self._session.request(
                request.method, url, headers=headers, data=body, allow_redirects=False
            ) as upstream:
                if (
                    request.method == "PUT"
                    and target.kind == "manifests"
                    and upstream.status == 201
                ):
                    await self._landed(target, grant, upstream)
                return await self._respond(request, upstream)
        except (aiohttp.ClientError, OSError) as exc:
            # Before a response started: Distribution went away, or the engine did.
            log.warning("registry.upstream_failed", error=repr(exc))
            return error(503, "UNAVAILABLE", "the registry is restarting; try again")

    def _query(self, request: web.Request, target: Target) -> dict[str, str]:
        query = dict(request.query)
        mount_from = query.get("from")
        if mount_from is not None and mount_from != target.name:
            # Mounting a blob from another repository would hand out its layers.
            query.pop("from", None)
            query.pop("mount", None)
        return query

    async def _landed(self, target: Target, grant: Grant, upstream: aiohttp.ClientResponse) -> None:
        digest = upstream.headers.get("Docker-Content-Digest", "")
        reference = target.rest
        tag = "" if _DIGEST.match(reference) else reference
        event = ImagePushed(
            app_id=grant.app_id,
            repository=f"{self.registry}/{target.name}",
            tag=tag,
            digest=digest or reference,
        )
        await self.record(event)
        await self.gate.finish(grant.token_id)
        log.info("registry.image_pushed", app_id=grant.app_id, tag=tag, digest=event.digest)

    async def _respond(
        self, request: web.Request, upstream: aiohttp.ClientResponse
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for key, value in upstream.headers.items():
            if key.lower() in _HOP:
                continue
            if key.lower() == "location":
                value = _relative(value)
            response.headers.add(key, value)
        length = upstream.headers.get("Content-Length")
        if length is not None:
            response.content_length = int(length)
        await response.prepare(request)
        try:
            if request.method != "HEAD":
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    await response.write(chunk)
            await response.write_eof()
        except (aiohttp.ClientError, OSError) as exc:
            # Headers are gone already: all that is left is to cut the connection, so
            # the engine sees a short body (and retries) rather than a truncated blob.
            log.warning("registry.stream_broken", error=repr(exc))
            if request.transport is not None:
                request.transport.close()
        return response


def basic_password(header: str) -> str:
    """The password of a `Basic` Authorization header; Rejected if it is not one."""
    scheme, _, encoded = header.partition(" ")
    try:
        if scheme.lower() != "basic":
            raise ValueError(scheme)
        _, colon, password = (
            base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        )
    except (ValueError, UnicodeDecodeError):
        raise Rejected("malformed Authorization header: use basic authentication") from None
    if not colon:
        raise Rejected("malformed Authorization header: use basic authentication")
    return password


def _relative(location: str) -> str:
    """An absolute Location made relative, so the engine resolves it against the proxy."""
    url = URL(location)
    if not url.is_absolute():
        return location
    return str(url.relative())
