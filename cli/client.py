"""A small synchronous client for the Slipway Platform API (Heroku Platform API v3 shapes).

It uses urllib from the standard library: a CLI call makes a handful of requests,
and starting an event loop or importing an HTTP stack would cost more than they do.
Every failure becomes a `CliError` whose message fits on one line.
"""

from __future__ import annotations

import errno
import json
import platform
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from http.client import HTTPException
from typing import Any
from urllib.parse import quote

from slipway.cli.errors import ApiError, CliError, Unreachable

ACCEPT = "application/vnd.heroku+json; version=3"
USER_AGENT = f"slipway-cli/0.1.0 python/{platform.python_version()}"
DEFAULT_TIMEOUT = 30.0
# Heroku pages lists with Range / Next-Range; a bound keeps a broken server
# from making the CLI loop for ever.
MAX_PAGES = 1000


def segment(value: str) -> str:
    """`value` quoted for use as one path segment (emails keep their '@')."""
    return quote(value, safe="@")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would resend the bearer token to wherever they point."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Client:
    """Sends requests to one API with one token and decodes the JSON answers."""

    def __init__(
        self, api_url: str, token: str | None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        if not api_url.startswith(("http://", "https://")):
            raise CliError(f"The API URL must start with http:// or https:// (got {api_url!r}).")
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect())

    def get(self, path: str) -> Any:
        """GET `path` and return the decoded JSON."""
        return self.request("GET", path)

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """POST `body` as JSON to `path`."""
        return self.request("POST", path, body if body is not None else {})

    def patch(self, path: str, body: Mapping[str, Any]) -> Any:
        """PATCH `body` as JSON to `path`."""
        return self.request("PATCH", path, body)

    def delete(self, path: str) -> Any:
        """DELETE `path`."""
        return self.request("DELETE", path)

    def get_list(self, path: str) -> list[Any]:
        """GET a list resource, following Heroku's `Next-Range` pages until the end."""
        items: list[Any] = []
        next_range: str | None = None
        for _ in range(MAX_PAGES):
            headers = {"Range": next_range} if next_range else {}
            page, response_headers = self._send("GET", path, None, headers)
            if not isinstance(page, list):
                raise CliError(f"Unexpected answer from {path}: expected a list.")
            items.extend(page)
            next_range = response_headers.get("Next-Range")
            if not next_range or not page:
                return items
        raise CliError(f"{path} returned more than {MAX_PAGES} pages; giving up.")

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """Send one request and return the decoded JSON body (None when empty)."""
        decoded, _ = self._send(method, path, body, {})
        return decoded

    def _send(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        extra_headers: Mapping[str, str],
    ) -> tuple[Any, Mapping[str, str]]:
        url = self.api_url + path
        data = json.dumps(body).encode() if body is not None else None
        # The scheme was checked in __init__: only http(s) URLs reach urllib (S310).
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
        request.add_header("Accept", ACCEPT)
        request.add_header("User-Agent", USER_AGENT)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        for name, value in extra_headers.items():
            request.add_header(name, value)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return _decode(response.read(), url), response.headers
        except urllib.error.HTTPError as exc:
            raise _api_error(exc) from None
        except urllib.error.URLError as exc:
            raise Unreachable(
                f"cannot reach the Slipway API at {self.api_url}: {_reason(exc.reason)}"
            ) from None
        except TimeoutError:
            raise Unreachable(
                f"cannot reach the Slipway API at {self.api_url}: timed out"
            ) from None
        except (HTTPException, ConnectionError) as exc:
            raise Unreachable(
                f"cannot reach the Slipway API at {self.api_url}: {_reason(exc)}"
            ) from None


def _decode(raw: bytes, url: str) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise CliError(f"The API at {url} answered with something that is not JSON.") from None


def _api_error(exc: urllib.error.HTTPError) -> ApiError:
    """Turn an HTTP error into one line: the API's message, else the status."""
    try:
        raw = exc.read() if exc.fp is not None else b""
    except (OSError, HTTPException):
        raw = b""  # the status alone still makes a useful message
    error_id, message = "", ""
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    if isinstance(body, dict):
        error_id = str(body.get("id") or "")
        message = str(body.get("message") or "")
    if not message:
        message = f"HTTP {exc.code} {exc.reason} from {exc.url}."
    message = " ".join(message.split())  # the API may wrap lines; the user gets one
    if exc.code == 401:
        message = f"{message} Log in again with `slipway login`."
    return ApiError(exc.code, error_id or f"http_{exc.code}", message)


def _reason(reason: object) -> str:
    """A short, lower-case cause for a connection failure."""
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return "host name not found"
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.errno is not None:
        return (reason.strerror or errno.errorcode.get(reason.errno, str(reason))).lower()
    text = str(reason).strip()
    return text or type(reason).__name__
