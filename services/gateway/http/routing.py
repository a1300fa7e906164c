"""The route table: each endpoint with the types it reads and answers, for aiohttp and OpenAPI.

    routes = Routes("apps")

    @routes.get("/apps/{app}", response=views.App, summary="Info for an app")
    async def info(request: web.Request) -> web.Response: ...

`install` adds every endpoint to an aiohttp router; `openapi.document` describes
the same list, so the served API and its document come from one source.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from slipway.services.gateway.http.errors import BadRequest, InvalidParams

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


@dataclass(frozen=True)
class Endpoint:
    """One method + path, its handler and what it takes and gives."""

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: Any = None  # a msgspec-decodable type, or None when the endpoint reads no body
    response: Any = None  # the type of a 2xx body
    status: int = 200
    public: bool = False  # answered without a token
    extension: bool = False  # Slipway's own, not part of Heroku's API
    page: bool = False  # the dashboard's HTML and assets: not JSON, not in the API document
    # Not public, but checks its own credentials (a metrics drain's scrape token or an API
    # token): the authentication middleware leaves the Authorization header to it.
    own_auth: bool = False


class Routes:
    """The endpoints of one resource."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.endpoints: list[Endpoint] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        body: Any = None,
        response: Any = None,
        status: int = 200,
        public: bool = False,
        extension: bool = False,
        page: bool = False,
        own_auth: bool = False,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.endpoints.append(
                Endpoint(
                    method,
                    path,
                    handler,
                    summary,
                    self.tag,
                    body,
                    response,
                    status,
                    public,
                    extension,
                    page,
                    own_auth,
                )
            )
            return handler

        return register

    def get(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **kw)


def install(app: web.Application, endpoints: list[Endpoint]) -> None:
    """Add every endpoint to the app's router."""
    for endpoint in endpoints:
        app.router.add_route(endpoint.method, endpoint.path, endpoint.handler)


_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
_encoder = msgspec.json.Encoder()


async def read_body(request: web.Request, kind: type[T]) -> T:
    """The request body as `kind`: malformed JSON → 400, a rule broken → 422 naming it.

    Lenient where Heroku's API is: its own clients send numbers as strings (`"quantity":
    "2"`), so a body that fails the strict decode is tried once more converting numeric
    and boolean strings; what still does not fit is refused with the strict error.
    """
    raw = await request.read()  # bounded by the application's client_max_size
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    raw = raw if raw.strip() else b"{}"
    try:
        return decoder.decode(raw)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        strict_error = exc
    except msgspec.DecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}.") from None
    try:
        return msgspec.convert(msgspec.json.decode(raw), kind, strict=False)
    except msgspec.ValidationError:
        raise InvalidParams(f"Invalid request body: {strict_error}.") from None


def reply(value: Any, status: int = 200) -> web.Response:
    """A JSON response of a view (or a plain dict / list of them)."""
    return web.Response(body=_encoder.encode(value), status=status, content_type="application/json")
