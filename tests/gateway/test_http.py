"""What every request goes through: API version, request ids, error bodies, body limits."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.gateway.conftest import Stack

pytestmark = pytest.mark.integration


async def test_wrong_api_version_is_refused_and_nothing_is_stored(stack: Stack) -> None:
    """`Accept: ...; version=2` answers 406 with a Heroku error body, and creates no app."""
    answer = await stack.admin.post(
        "/apps",
        {"name": "versioned"},
        headers={"Accept": "application/vnd.heroku+json; version=2"},
    )
    assert answer.status == 406
    assert answer.error_id == "not_acceptable"
    assert "version=3" in answer.body["message"]
    assert (await stack.admin.get("/apps/versioned")).status == 404


async def test_missing_accept_header_is_taken_as_version_3(stack: Stack) -> None:
    """A client that sends no Accept header is answered as version 3."""
    answer = await stack.admin.get("/account", headers={"Accept": ""})
    assert answer.status == 200
    assert answer.body["email"] == stack.admin.email


async def test_heroku_media_type_without_version_is_a_bad_request(stack: Stack) -> None:
    """The Heroku media type without a version answers 400 saying which version to send."""
    answer = await stack.admin.get("/account", headers={"Accept": "application/vnd.heroku+json"})
    assert answer.status == 400
    assert answer.error_id == "bad_request"


async def test_request_id_is_echoed(stack: Stack) -> None:
    """A client's X-Request-Id comes back as Request-Id."""
    answer = await stack.admin.get("/account", headers={"X-Request-Id": "abc-123"})
    assert answer.headers["Request-Id"] == "abc-123"


async def test_request_id_is_created_when_absent_even_on_errors(stack: Stack) -> None:
    """Without X-Request-Id the gateway makes one, on error answers too."""
    answer = await stack.anonymous().get("/account")
    assert answer.status == 401
    assert len(answer.headers["Request-Id"]) >= 32


async def test_request_id_is_recorded_in_the_audit_entry(stack: Stack) -> None:
    """The request id of a change is the one its audit entry carries."""
    await stack.admin.request(
        "POST", "/apps", {"name": "traced"}, headers={"X-Request-Id": "trace-me-42"}
    )
    log = await stack.admin.ok("GET", "/apps/traced/audit")
    assert log["entries"][0]["request_id"] == "trace-me-42"


async def test_unknown_path_answers_heroku_not_found(stack: Stack) -> None:
    """A path the API does not have answers 404 with a Heroku error body."""
    answer = await stack.admin.get("/no-such-resource")
    assert answer.status == 404
    assert answer.error_id == "not_found"


async def test_wrong_method_answers_a_heroku_body(stack: Stack) -> None:
    """A method a path does not take answers 405 with a Heroku error body."""
    answer = await stack.admin.put("/account", {})
    assert answer.status == 405
    assert answer.error_id == "method_not_allowed"


async def test_ten_megabyte_body_is_refused_and_nothing_is_stored(stack: Stack) -> None:
    """A 10 MB body answers 413 with a Heroku error body; the app is not created."""
    # Valid JSON (whitespace padding): only the size is wrong with it.
    data = b'{"name": "huge"' + b" " * (10 * 1024 * 1024) + b"}"
    answer = await stack.admin.post("/apps", data=data)
    assert answer.status == 413
    assert answer.error_id == "payload_too_large"
    assert (await stack.admin.get("/apps/huge")).status == 404


async def test_undeclared_oversized_body_is_refused(stack: Stack) -> None:
    """A chunked body (no Content-Length) over the limit answers 413 too."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "chunky"'
        for _ in range(20):
            yield b" " * (128 * 1024)
        yield b"}"

    url = stack.url + "/apps"
    headers = {"Authorization": f"Bearer {stack.admin.token}"}
    async with stack.session.post(url, data=chunks(), headers=headers) as response:
        assert response.status == 413
        assert (await response.json())["id"] == "payload_too_large"
    assert (await stack.admin.get("/apps/chunky")).status == 404


async def test_malformed_json_is_a_bad_request(stack: Stack) -> None:
    """A body that is not JSON answers 400 bad_request."""
    answer = await stack.admin.post("/apps", data=b'{"name": "broken"')
    assert answer.status == 400
    assert answer.error_id == "bad_request"
    assert "JSON" in answer.body["message"]


async def test_unknown_field_is_named_in_the_error(stack: Stack) -> None:
    """A field the endpoint does not know answers 422 naming the field."""
    answer = await stack.admin.post("/apps", {"name": "typo", "regoin": "eu"})
    assert answer.status == 422
    assert answer.error_id == "invalid_params"
    assert "regoin" in answer.body["message"]
    assert (await stack.admin.get("/apps/typo")).status == 404


async def test_wrong_field_type_is_named_in_the_error(stack: Stack) -> None:
    """A field of the wrong type answers 422 naming the field."""
    answer = await stack.admin.post("/apps", {"name": 42})
    assert answer.status == 422
    assert "name" in answer.body["message"]
