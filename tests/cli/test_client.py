"""How the client turns HTTP failures into one readable line (no server involved)."""

from __future__ import annotations

import io
import json
import urllib.error
from email.message import Message

import pytest

from slipway.cli.client import Client, _api_error, segment
from slipway.cli.errors import CliError


def _http_error(status: int, reason: str, body: bytes) -> urllib.error.HTTPError:
    return urllib.error.HTTPError(
        "http://127.0.0.1:5100/apps/x", status, reason, Message(), io.BytesIO(body)
    )


def test_error_body_message_is_used_verbatim() -> None:
    """A Heroku error body gives its message and id."""
    body = json.dumps({"id": "not_found", "message": "Couldn't find that app."}).encode()
    error = _api_error(_http_error(404, "Not Found", body))
    assert (error.status, error.error_id, error.message) == (
        404,
        "not_found",
        "Couldn't find that app.",
    )


def test_unauthorized_adds_the_login_hint() -> None:
    """A 401 tells the user how to get a working token."""
    body = json.dumps({"id": "unauthorized", "message": "Invalid credentials provided."})
    error = _api_error(_http_error(401, "Unauthorized", body.encode()))
    assert error.message == "Invalid credentials provided. Log in again with `slipway login`."


def test_body_without_json_falls_back_to_the_status() -> None:
    """A proxy's HTML error page becomes the status line and URL."""
    error = _api_error(_http_error(502, "Bad Gateway", b"<html>oops</html>"))
    assert error.message == "HTTP 502 Bad Gateway from http://127.0.0.1:5100/apps/x."
    assert error.error_id == "http_502"


def test_multiline_message_becomes_one_line() -> None:
    """Line breaks in the API's message are flattened."""
    body = json.dumps({"id": "invalid_params", "message": "Bad\n  input."}).encode()
    assert _api_error(_http_error(422, "Unprocessable", body)).message == "Bad input."


def test_client_refuses_non_http_urls() -> None:
    """Only http(s) URLs are opened: a file: URL must never be read as the API."""
    with pytest.raises(CliError, match="must start with http:// or https://"):
        Client("file:///etc/passwd", "t")


def test_path_segments_are_quoted_but_keep_at_signs() -> None:
    """Member emails stay readable in paths; slashes cannot escape the segment."""
    assert segment("bob+ci@example.com") == "bob%2Bci@example.com"
    assert segment("a/b") == "a%2Fb"
