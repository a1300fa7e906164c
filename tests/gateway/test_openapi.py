"""GET /openapi.json describes exactly the routes served, and answers fit its schemas."""

from __future__ import annotations

from typing import Any

import pytest

from slipway.services.gateway.app import ENDPOINTS, WEB
from tests.gateway.conftest import Api, Stack
from tests.gateway.jsonschema_lite import errors
from tests.gateway.test_releases import deploy

pytestmark = pytest.mark.integration

METHODS = {"get", "post", "put", "patch", "delete"}


def served_routes(stack: Stack) -> set[tuple[str, str]]:
    """(METHOD, path template) of every API route the running aiohttp app has.

    The dashboard's pages (HTML and assets) are served beside the API, not part of it.
    """
    pages = {e.handler for e in ENDPOINTS if e.page}
    return {
        (route.method, route.resource.canonical)
        for route in stack.gateway[WEB].router.routes()
        if route.resource is not None and route.method != "HEAD" and route.handler not in pages
    }


async def document(api: Api) -> dict[str, Any]:
    doc: dict[str, Any] = await api.ok("GET", "/openapi.json")
    return doc


async def test_document_is_served_without_a_token(stack: Stack) -> None:
    """/openapi.json is public and says OpenAPI 3.1."""
    doc = await document(stack.anonymous())
    assert doc["openapi"].startswith("3.1")


async def test_every_served_route_is_documented_and_back(stack: Stack) -> None:
    """The router's routes and the document's operations are the same set."""
    doc = await document(stack.admin)
    documented = {
        (method.upper(), path)
        for path, operations in doc["paths"].items()
        for method in operations
        if method in METHODS
    }
    assert documented == served_routes(stack)


async def test_path_parameters_are_documented(stack: Stack) -> None:
    """Each {param} of a path is a documented, required path parameter."""
    doc = await document(stack.admin)
    for path, operations in doc["paths"].items():
        wanted = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        for operation in operations.values():
            declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert declared == wanted, (path, declared)


async def test_extensions_are_marked(stack: Stack) -> None:
    """Slipway's own endpoints carry x-slipway-extension; Heroku's do not."""
    doc = await document(stack.admin)
    assert doc["paths"]["/users"]["post"]["x-slipway-extension"] is True
    assert doc["paths"]["/audit/keys"]["get"]["x-slipway-extension"] is True
    assert "x-slipway-extension" not in doc["paths"]["/apps"]["post"]


def check(doc: dict[str, Any], method: str, path: str, status: int, body: Any) -> None:
    operation = doc["paths"][path][method.lower()]
    schema = operation["responses"][str(status)]["content"]["application/json"]["schema"]
    assert errors(body, schema, doc) == [], (method, path)


async def test_answers_fit_the_documented_schemas(stack: Stack) -> None:
    """Real answers of most endpoints validate against their documented response schema."""
    doc = await document(stack.admin)
    alice = await stack.user("alice@example.com")
    bob = await stack.user("bob@example.com")
    app = await alice.ok("POST", "/apps", {"name": "hello"}, 201)
    check(doc, "POST", "/apps", 201, app)
    await deploy(stack, alice, app, 2)
    answers = [
        ("GET", "/account", "/account", 200, None),
        ("GET", "/apps", "/apps", 200, None),
        ("GET", "/apps/hello", "/apps/{app}", 200, None),
        ("PATCH", "/apps/hello/config-vars", "/apps/{app}/config-vars", 200, {"A": "b"}),
        ("GET", "/apps/hello/releases", "/apps/{app}/releases", 200, None),
        ("GET", "/apps/hello/releases/2", "/apps/{app}/releases/{release}", 200, None),
        ("GET", "/apps/hello/formation", "/apps/{app}/formation", 200, None),
        (
            "PATCH",
            "/apps/hello/formation/web",
            "/apps/{app}/formation/{type}",
            200,
            {"quantity": 2},
        ),
        ("GET", "/teams", "/teams", 200, None),
        (
            "PUT",
            "/teams/alice/members",
            "/teams/{team}/members",
            200,
            {"email": bob.email, "role": "viewer"},
        ),
        ("GET", "/teams/alice/members", "/teams/{team}/members", 200, None),
        ("GET", "/teams/alice/audit", "/teams/{team}/audit", 200, None),
        ("GET", "/apps/hello/audit", "/apps/{app}/audit", 200, None),
        ("GET", "/audit/keys", "/audit/keys", 200, None),
        ("POST", "/oauth/authorizations", "/oauth/authorizations", 201, {"description": "x"}),
        ("GET", "/oauth/authorizations", "/oauth/authorizations", 200, None),
    ]
    for method, url, template, status, body in answers:
        answer = await alice.request(method, url, body)
        assert answer.status == status, (method, url, answer.body)
        check(doc, method, template, status, answer.body)


async def test_error_answers_fit_the_error_schema(stack: Stack) -> None:
    """A 404 answer validates against the documented error body."""
    doc = await document(stack.admin)
    answer = await stack.admin.get("/apps/nope")
    check(doc, "GET", "/apps/{app}", 404, answer.body)
