"""Heroku's Range pagination on list endpoints (#17 item 1), against the real gateway."""

from __future__ import annotations

from typing import Any

from tests.gateway.conftest import Api, Stack

# The `ranges` Heroku's Platform API schema gives the app list (its link `/apps`).
APP_RANGES = {"id", "name", "updated_at"}


async def ranged(who: Api, path: str, range_header: str) -> tuple[int, list[Any], Any]:
    answer = await who.request("GET", path, headers={"Range": range_header})
    assert answer.status in (200, 206), (answer.status, answer.body)
    return answer.status, answer.body, answer.headers


async def test_the_newest_releases_come_first_when_asked_and_pages_chain(stack: Stack) -> None:
    """`Range: version ..; max=2, order=desc`: v5, v4 (206, Next-Range), then v3, v2, then v1."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "paged")
    for n in range(4):  # v2..v5
        await alice.ok("PATCH", "/apps/paged/config-vars", {"N": str(n)})
    status, first, headers = await ranged(
        alice, "/apps/paged/releases", "version ..; max=2, order=desc"
    )
    assert status == 206 and [r["version"] for r in first] == [5, 4]
    assert headers["Next-Range"] == "version ]4..; max=2, order=desc"
    assert headers["Content-Range"] == "version 5..4"
    status, second, headers = await ranged(alice, "/apps/paged/releases", headers["Next-Range"])
    assert status == 206 and [r["version"] for r in second] == [3, 2]
    status, last, headers = await ranged(alice, "/apps/paged/releases", headers["Next-Range"])
    assert status == 200 and [r["version"] for r in last] == [1]
    assert "Next-Range" not in headers
    # Versions sort as numbers: v10 would come after v9, not after v1.
    _, ascending, _ = await ranged(alice, "/apps/paged/releases", "version 2..4")
    assert [r["version"] for r in ascending] == [2, 3, 4]


async def test_apps_page_by_name_with_the_schemas_fields(stack: Stack) -> None:
    """/apps sorts by the schema's ranges (id, name, updated_at); a page of one chains by name."""
    alice = await stack.user("alice@example.com")
    for name in ("charlie", "alpha", "bravo"):
        await stack.app(alice, name)
    status, page, headers = await ranged(alice, "/apps", "name ..; max=1")
    assert status == 206 and [a["name"] for a in page] == ["alpha"]
    assert headers["Next-Range"] == "name ]alpha..; max=1"
    _, rest, _ = await ranged(alice, "/apps", "name ]alpha..; max=10")
    assert [a["name"] for a in rest] == ["bravo", "charlie"]
    assert set(headers["Accept-Ranges"].split(", ")) >= APP_RANGES
    # Without a Range header a short list comes whole, in the handler's order, with 200.
    plain = await alice.request("GET", "/apps")
    assert plain.status == 200 and len(plain.body) == 3


async def test_a_range_it_cannot_satisfy_is_416_and_a_huge_max_is_capped(stack: Stack) -> None:
    """An unknown field or parameter: 416 requested_range_not_satisfiable; max=5000 acts as 1000."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "one")
    for header in ("colour ..", "name ..; max=0", "name ..; order=sideways", "nonsense"):
        answer = await alice.request("GET", "/apps", headers={"Range": header})
        assert (answer.status, answer.error_id) == (416, "requested_range_not_satisfiable"), (
            header,
            answer.body,
        )
    status, page, _ = await ranged(alice, "/apps", "id ..; max=5000")
    assert status == 200 and len(page) == 1
