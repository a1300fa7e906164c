"""Heroku's `Range` pagination on every list endpoint.

    Range: version ..; max=10, order=desc        the 10 newest releases
    Range: name ]hello..; max=200                the apps after `hello`, by name
    HTTP/1.1 206 Partial Content                 more follow: ask again with Next-Range
    Next-Range: name ]zeta..; max=200

A list is sorted by the range's field (ties by `id`), in `order` (asc by default), and
cut to `max` items (default 200, at most 1000: a larger max is taken as 1000, as Heroku
does). `first..last` bounds are positions in that order, `]` making the first one
exclusive. A list with more items than the page answers 206 with `Next-Range`; every list
says which fields it sorts by in `Accept-Ranges`. The fields are the resource's own
(`Heroku's schema `ranges`, and `version` for releases); an unknown field or a malformed
header answers 416 `requested_range_not_satisfiable`.

Handlers build the whole list (an app has hundreds of releases, not millions); the page
is cut here, once, for every GET endpoint whose response is a list (`middleware`).
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from slipway.services.gateway.http.errors import ApiError

DEFAULT_MAX = 200
MAX_MAX = 1000
# What a list may be sorted by, in Heroku's preference order (the first present is the
# default): the schema's `ranges` for apps (id, name, updated_at), builds (id,
# started_at), team members (email), releases' version, and id for everything else.
FIELDS: tuple[str, ...] = (
    "id", "name", "version", "email", "created_at", "updated_at", "started_at",
)  # fmt: skip
_HEADER = re.compile(
    r"^\s*(?P<field>[a-z_]+)\s*(?P<first>\]?[^.;\s]*)\.\.(?P<last>[^;\s]*)"
    r"\s*(?:;\s*(?P<params>.*))?$"
)


class RangeNotSatisfiable(ApiError):
    status: ClassVar[int] = 416
    heroku_id: ClassVar[str] = "requested_range_not_satisfiable"


@dataclass(frozen=True)
class Range:
    field: str
    first: str = ""
    exclusive: bool = False
    last: str = ""
    max: int = DEFAULT_MAX
    descending: bool = False

    def header(self, first: str) -> str:
        """This range starting after `first` (the Next-Range value)."""
        order = ", order=desc" if self.descending else ""
        return f"{self.field} ]{first}..; max={self.max}{order}"


def parse(text: str, allowed: Sequence[str]) -> Range:
    """The Range header, checked against the fields the list sorts by."""
    found = _HEADER.match(text)
    if found is None:
        raise RangeNotSatisfiable(
            f"Invalid Range header {text[:100]!r}: use e.g. `{allowed[0]} ..; max=200, order=asc`."
        )
    field = found["field"]
    if field not in allowed:
        raise RangeNotSatisfiable(
            f"This list cannot be ranged by {field!r}: use one of {', '.join(allowed)}."
        )
    size, descending = DEFAULT_MAX, False
    for param in filter(None, (p.strip() for p in (found["params"] or "").split(","))):
        key, _, value = param.partition("=")
        key, value = key.strip().lower(), value.strip().lower()
        if key == "max" and value.isdigit() and int(value) > 0:
            size = min(int(value), MAX_MAX)
        elif key == "order" and value in ("asc", "desc"):
            descending = value == "desc"
        else:
            raise RangeNotSatisfiable(
                f"Invalid Range parameter {param[:60]!r}: max=1..{MAX_MAX}, order=asc|desc."
            )
    first = found["first"]
    return Range(
        field,
        first.removeprefix("]"),
        first.startswith("]"),
        found["last"],
        size,
        descending,
    )


def fields_of(items: Sequence[Any]) -> list[str]:
    """The range fields these items have (every one of FIELDS when the list is empty)."""
    if not items or not isinstance(items[0], dict):
        return list(FIELDS)
    return [f for f in FIELDS if isinstance(items[0].get(f), (str, int)) or f == "id"]


def _key(value: Any) -> tuple[int, Any]:
    # Numbers before strings, each in its own order: versions sort 2 < 10, not "10" < "2".
    return (0, value) if isinstance(value, int) else (1, str(value))


def _bound(value: str, sample: Any) -> tuple[int, Any]:
    if isinstance(sample, int) and value.lstrip("-").isdigit():
        return (0, int(value))
    return (1, value)


def page(items: list[Any], wanted: Range) -> tuple[list[Any], bool]:
    """The items of the range, in its order, and whether more follow."""
    ordered = sorted(
        items,
        key=lambda i: (_key(i.get(wanted.field)), str(i.get("id", ""))),
        reverse=wanted.descending,
    )
    sample = ordered[0].get(wanted.field) if ordered else None

    def after_first(item: Any) -> bool:
        if not wanted.first:
            return True
        here, bound = _key(item.get(wanted.field)), _bound(wanted.first, sample)
        if wanted.descending:
            return here < bound or (here == bound and not wanted.exclusive)
        return here > bound or (here == bound and not wanted.exclusive)

    def before_last(item: Any) -> bool:
        if not wanted.last:
            return True
        here, bound = _key(item.get(wanted.field)), _bound(wanted.last, sample)
        return here >= bound if wanted.descending else here <= bound

    chosen = [i for i in ordered if after_first(i) and before_last(i)]
    return chosen[: wanted.max], len(chosen) > wanted.max


def paginate(request: web.Request, response: web.Response) -> web.Response:
    """Cut a list response to the request's Range (or the default page)."""
    if response.status != 200 or response.body is None:
        return response
    items = json.loads(bytes(response.body))  # type: ignore[arg-type]
    if not isinstance(items, list):
        return response
    allowed = fields_of(items)
    asked = request.headers.get("Range")
    wanted = parse(asked, allowed) if asked else Range(allowed[0])
    chosen, more = page(items, wanted)
    headers = {"Accept-Ranges": ", ".join(allowed)}
    if chosen:
        first, last = chosen[0].get(wanted.field), chosen[-1].get(wanted.field)
        headers["Content-Range"] = f"{wanted.field} {first}..{last}"
    if more:
        headers["Next-Range"] = wanted.header(str(chosen[-1].get(wanted.field)))
    if not asked and not more:
        # No Range and nothing cut: the handler's own order stands (a plain list).
        response.headers.update(headers)
        return response
    kept = {k: v for k, v in response.headers.items() if k.lower() not in _REPLACED}
    return web.Response(
        body=json.dumps(chosen, separators=(",", ":")).encode(),
        status=206 if more else 200,
        content_type="application/json",
        headers={**kept, **headers},
    )


_REPLACED = {"content-type", "content-length"}


def is_list(kind: Any) -> bool:
    """Whether an endpoint's response type is a list (`list[views.App]`)."""
    return typing.get_origin(kind) is list


def middleware(list_handlers: Iterable[Handler]) -> Middleware:
    """Paginate the answers of these handlers (the GET endpoints answering lists)."""
    lists = set(list_handlers)

    @web.middleware
    async def ranged(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if request.match_info.handler in lists and isinstance(response, web.Response):
            return paginate(request, response)
        return response

    return ranged
