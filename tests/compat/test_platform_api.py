"""Heroku's clients against the real gateway: each request as they send it, each answer
checked against Heroku's schema (`definitions.<resource>` in heroku_schema.py).

Errors are checked for Heroku's shape (`{"id", "message"}`), and refusals of what
Slipway does not offer for a message that says what it does instead.
"""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

from slipway.services.gateway.app import WEB
from tests.compat.conftest import cli, clients
from tests.compat.heroku_schema import check, check_list, schema
from tests.gateway.conftest import Answer, Api, Stack
from tests.gateway.test_releases import deploy

pytestmark = pytest.mark.integration


def fits(answer: Answer, resource: str, status: int = 200) -> Any:
    """The body of an answer that has `status` and fits Heroku's `resource`."""
    assert answer.status == status, (answer.status, answer.body)
    problems = check(answer.body, resource)
    assert problems == [], (resource, problems)
    return answer.body


def fit_list(answer: Answer, resource: str, status: int = 200) -> list[Any]:
    """The items of a list answer that has `status`, each fitting Heroku's `resource`."""
    assert answer.status == status, (answer.status, answer.body)
    problems = check_list(answer.body, resource)
    assert problems == [], (resource, problems)
    return list(answer.body)


def refused(answer: Answer, status: int, heroku_id: str, *words: str) -> str:
    """The message of a Heroku error answer with `status` and `id` that names `words`."""
    assert answer.status == status, (answer.status, answer.body)
    assert isinstance(answer.body, dict) and set(answer.body) == {"id", "message"}, answer.body
    assert answer.body["id"] == heroku_id, answer.body
    message: str = answer.body["message"]
    for word in words:
        assert word in message, (word, message)
    return message


async def two_users(stack: Stack) -> tuple[Api, Api]:
    """alice (owner of the app `hello`, deployed to v2) and bob, in another team."""
    alice = await stack.user("alice@example.com")
    bob = await stack.user("bob@example.com")
    app = await stack.app(alice, "hello")
    await deploy(stack, alice, app, 2)
    return alice, bob


async def test_account_and_rate_limits(stack: Stack) -> None:
    """GET /account and /account/rate-limits fit `account` and `rate-limit` for every client."""
    alice = await stack.user("alice@example.com")
    for client in clients(alice):
        account = fits(await client.get("/account"), "account")
        assert account["email"] == "alice@example.com"
        limits = fits(await client.get("/account/rate-limits"), "rate-limit")
        assert limits["remaining"] > 0


async def test_apps_create_info_update_delete(stack: Stack) -> None:
    """The app's whole life as the CLI drives it, every answer an `app`."""
    alice = await stack.user("alice@example.com")
    client = cli(alice)
    created = fits(await client.request("POST", "/apps", {"name": "hello"}), "app", 201)
    assert created["name"] == "hello"
    for each in clients(alice):
        assert fits(await each.get("/apps/hello"), "app")["id"] == created["id"]
    updated = fits(await client.request("PATCH", "/apps/hello", {"name": "hello2"}), "app")
    assert updated["name"] == "hello2"
    fits(await client.request("PATCH", "/apps/hello2", {"maintenance": True}), "app")
    assert fits(await client.request("DELETE", "/apps/hello2"), "app")["id"] == created["id"]
    refused(await client.get("/apps/hello2"), 404, "not_found")


async def test_apps_lists_by_account(stack: Stack) -> None:
    """/apps, /users/~/apps and /users/{own email or id}/apps list the same `app`s."""
    alice, bob = await two_users(stack)
    await stack.app(bob, "bobs")
    me = await alice.ok("GET", "/account")
    for client in clients(alice):
        listed = [fit_list(await client.get(path), "app") for path in (
            "/apps", "/users/~/apps", f"/users/{me['email']}/apps", f"/users/{me['id']}/apps",
        )]  # fmt: skip
        assert [[a["name"] for a in apps] for apps in listed] == [["hello"]] * 4
    # The CLI's `apps` pages by name.
    paged = await cli(alice).get("/users/~/apps", headers={"Range": "name ..; max=1000"})
    assert [a["name"] for a in fit_list(paged, "app")] == ["hello"]
    bobs = await alice.ok("GET", "/account")
    refused(await cli(bob).get(f"/users/{bobs['id']}/apps"), 404, "not_found", "/users/~/apps")
    refused(await cli(bob).get("/users/nobody@example.com/apps"), 404, "not_found")


async def test_config_vars(stack: Stack) -> None:
    """GET and PATCH /apps/{app}/config-vars answer `config-var` maps; null removes a key."""
    alice, _ = await two_users(stack)
    client = cli(alice)
    patched = fits(
        await client.request("PATCH", "/apps/hello/config-vars", {"A": "1", "B": "two"}),
        "config-var",
    )
    assert patched == {"A": "1", "B": "two"}
    after = await client.request("PATCH", "/apps/hello/config-vars", {"B": None})
    assert fits(after, "config-var") == {"A": "1"}
    for each in clients(alice):
        assert fits(await each.get("/apps/hello/config-vars"), "config-var") == {"A": "1"}


async def test_formation_list_update_and_batch_with_strings(stack: Stack) -> None:
    """Formation answers fit `formation`; quantities sent as strings, as the CLI does, work."""
    alice, _ = await two_users(stack)
    client = cli(alice)
    for each in clients(alice):
        assert [f["type"] for f in fit_list(await each.get("/apps/hello/formation"), "formation")]
    one = await client.request("PATCH", "/apps/hello/formation/web", {"quantity": "2"})
    assert fits(one, "formation")["quantity"] == 2
    batch = await client.request(
        "PATCH",
        "/apps/hello/formation",
        {"updates": [{"type": "web", "quantity": "3", "size": "standard-1X"}]},
    )
    assert [f["quantity"] for f in fit_list(batch, "formation") if f["type"] == "web"] == [3]
    info = fits(await client.get("/apps/hello/formation/web"), "formation")
    assert info["quantity"] == 3
    # heroku-go names the size by the `dyno_size.id` a formation answered with.
    go = next(c for c in clients(alice) if c.name == "heroku-go")
    body = {"quantity": 1, "dyno_size": {"id": info["dyno_size"]["id"]}}
    again = fits(await go.request("PATCH", "/apps/hello/formation/web", body), "formation")
    assert (again["quantity"], again["size"]) == (1, info["size"])


async def test_releases_newest_first_and_by_number(stack: Stack) -> None:
    """The CLI's `Range: version ..; max=10, order=desc` gives the newest release first."""
    alice, _ = await two_users(stack)
    client = cli(alice)
    await client.request("PATCH", "/apps/hello/config-vars", {"A": "1"})  # v3
    wanted = {"Range": "version ..; max=10, order=desc"}
    newest = fit_list(await client.get("/apps/hello/releases", headers=wanted), "release")
    assert [r["version"] for r in newest] == [3, 2, 1]
    assert [r["current"] for r in newest] == [True, False, False]
    # heroku-go writes its parameters without a space, and asks for one.
    go = next(c for c in clients(alice) if c.name == "heroku-go")
    one = await go.get("/apps/hello/releases", headers={"Range": "version ..; max=1,order=desc"})
    assert one.status == 206
    assert [r["version"] for r in fit_list(one, "release", 206)] == [3]
    assert one.headers["Next-Range"].startswith("version ]3..")
    for each in clients(alice):
        by_number = fits(await each.get("/apps/hello/releases/2"), "release")
        assert by_number["version"] == 2
        assert fits(await each.get(f"/apps/hello/releases/{by_number['id']}"), "release") == (
            by_number
        )
    refused(await client.get("/apps/hello/releases/99"), 404, "not_found")


async def test_builds(stack: Stack) -> None:
    """A build from an uploaded source fits `build` when created, listed and shown."""
    alice, _ = await two_users(stack)
    client = cli(alice)
    blob = (await alice.ok("POST", "/sources", status=201))["source_blob"]
    async with stack.session.put(blob["put_url"], data=io.BytesIO(b"not really a tar")) as put:
        assert put.status == 200
    created = await client.request(
        "POST", "/apps/hello/builds", {"source_blob": {"url": blob["get_url"], "version": "abc"}}
    )
    build = fits(created, "build", 201)
    for each in clients(alice):
        assert [b["id"] for b in fit_list(await each.get("/apps/hello/builds"), "build")] == [
            build["id"]
        ]
        assert (
            fits(await each.get(f"/apps/hello/builds/{build['id']}"), "build")["id"]
            == (build["id"])
        )


async def test_domains(stack: Stack) -> None:
    """Custom domains are added, listed, shown and removed as `domain`s."""
    alice, _ = await two_users(stack)
    client = cli(alice)
    body = {"hostname": "www.example.com", "sni_endpoint": None}
    added = fits(await client.request("POST", "/apps/hello/domains", body), "domain", 201)
    for each in clients(alice):
        hostnames = [
            d["hostname"] for d in fit_list(await each.get("/apps/hello/domains"), "domain")
        ]
        assert "www.example.com" in hostnames
        fits(await each.get("/apps/hello/domains/www.example.com"), "domain")
    removed = await client.request("DELETE", f"/apps/hello/domains/{added['id']}")
    assert fits(removed, "domain")["hostname"] == "www.example.com"


async def test_log_session(stack: Stack) -> None:
    """POST /apps/{app}/log-sessions, as `heroku logs --tail` sends it, fits `log-session`."""
    alice, _ = await two_users(stack)
    body = {"tail": True, "lines": 100, "dyno": None, "source": None}
    for each in clients(alice):
        fits(await each.request("POST", "/apps/hello/log-sessions", body), "log-session", 201)


async def test_collaborators_are_the_team_members(stack: Stack) -> None:
    """An app's collaborators are its team's members, each a `collaborator` with permissions."""
    alice, bob = await two_users(stack)
    await stack.join(alice, "alice", bob, "viewer")
    for each in clients(alice):
        listed = fit_list(await each.get("/apps/hello/collaborators"), "collaborator")
        by_email = {c["user"]["email"]: c for c in listed}
        assert set(by_email) == {"alice@example.com", "bob@example.com"}
        assert by_email["alice@example.com"]["role"] == "owner"
        assert [p["name"] for p in by_email["bob@example.com"]["permissions"]] == ["view"]
        for ident in ("bob@example.com", by_email["bob@example.com"]["user"]["id"]):
            one = fits(await each.get(f"/apps/hello/collaborators/{ident}"), "collaborator")
            assert one["user"]["email"] == "bob@example.com"
    refused(await cli(alice).get("/apps/hello/collaborators/eve@example.com"), 404, "not_found")
    # The CLI's `access` asks a team app's collaborators under /teams/apps.
    for each in clients(alice):
        team_app = fit_list(
            await each.get("/teams/apps/hello/collaborators"), "team-app-collaborator"
        )
        assert team_app == listed
        one = await each.get("/teams/apps/hello/collaborators/bob@example.com")
        assert fits(one, "team-app-collaborator") == by_email["bob@example.com"]


async def test_adding_or_removing_a_collaborator_names_team_membership(stack: Stack) -> None:
    """POST and DELETE collaborators are 422, naming the team and the command to use."""
    alice, bob = await two_users(stack)
    client = cli(alice)
    body = {"user": "bob@example.com", "silent": False}
    added = await client.request("POST", "/apps/hello/collaborators", body)
    refused(added, 422, "invalid_params", "members:add", "--team alice")
    removed = await client.request("DELETE", "/apps/hello/collaborators/alice@example.com")
    refused(removed, 422, "invalid_params", "members:remove", "/teams/alice/members")
    for method, path, command in (
        ("POST", "/teams/apps/hello/collaborators", "members:add"),
        ("PATCH", "/teams/apps/hello/collaborators/bob@example.com", "members:set"),
        ("DELETE", "/teams/apps/hello/collaborators/alice@example.com", "members:remove"),
    ):
        answer = await client.request(method, path, {"user": "bob@example.com"})
        refused(answer, 422, "invalid_params", command)
    # Not a member: the app does not exist for bob, whatever he asks.
    for method in ("GET", "POST"):
        answer = await cli(bob).request(method, "/apps/hello/collaborators", body)
        refused(answer, 404, "not_found")
    assert [m["email"] for m in await alice.ok("GET", "/teams/alice/members")] == [
        "alice@example.com"
    ]


async def test_regions_and_stacks(stack: Stack) -> None:
    """/regions and /stacks list the installation's one of each, which every app names."""
    alice, _ = await two_users(stack)
    app = await alice.ok("GET", "/apps/hello")
    for each in clients(alice):
        [region] = fit_list(await each.get("/regions"), "region")
        assert region["id"] == app["region"]["id"] and region["name"] == app["region"]["name"]
        for ident in (region["id"], region["name"]):
            assert fits(await each.get(f"/regions/{ident}"), "region") == region
        [stack_] = fit_list(await each.get("/stacks"), "stack")
        assert stack_["name"] == app["stack"]["name"] and stack_["default"] is True
        for ident in (stack_["id"], stack_["name"]):
            assert fits(await each.get(f"/stacks/{ident}"), "stack") == stack_
    refused(await cli(alice).get("/regions/eu"), 404, "not_found", "local")
    refused(await cli(alice).get("/stacks/heroku-24"), 404, "not_found", "Dockerfile")


async def test_features_list_hsts_and_switch_it(stack: Stack) -> None:
    """One app feature, `hsts`, off at first; switched on by name, read by name or id;
    any other name is 404 naming the ones there are; a non-boolean is 422."""
    alice, bob = await two_users(stack)
    client = cli(alice)
    for each in clients(alice):
        [feature] = fit_list(await each.get("/apps/hello/features"), "app-feature")
        assert (feature["name"], feature["enabled"]) == ("hsts", False)
    switched = fits(
        await client.request("PATCH", "/apps/hello/features/hsts", {"enabled": True}),
        "app-feature",
    )
    assert switched["enabled"] is True
    by_id = fits(await client.get(f"/apps/hello/features/{switched['id']}"), "app-feature")
    assert by_id["name"] == "hsts" and by_id["enabled"] is True
    refused(await client.get("/apps/hello/features/preboot"), 404, "not_found", "hsts")
    patched = await client.request("PATCH", "/apps/hello/features/preboot", {"enabled": True})
    refused(patched, 404, "not_found", "hsts")
    bad = await client.request("PATCH", "/apps/hello/features/hsts", {"enabled": "yes"})
    assert bad.status == 422, bad.body
    refused(await cli(bob).get("/apps/hello/features"), 404, "not_found", "app")
    off = await client.request("PATCH", "/apps/hello/features/hsts", {"enabled": False})
    assert fits(off, "app-feature")["enabled"] is False


async def test_sni_endpoints_are_issued_by_the_router(stack: Stack) -> None:
    """No uploaded certificates: an empty list; uploading one is 422 saying HTTPS is automatic."""
    alice, bob = await two_users(stack)
    client = cli(alice)
    for each in clients(alice):
        assert fit_list(await each.get("/apps/hello/sni-endpoints"), "sni-endpoint") == []
    body = {"certificate_chain": "-----BEGIN CERTIFICATE-----", "private_key": "x"}
    created = await client.request("POST", "/apps/hello/sni-endpoints", body)
    refused(created, 422, "invalid_params", "domains:add", "never uploaded")
    refused(await client.get("/apps/hello/sni-endpoints/x"), 404, "not_found", "domains:add")
    changed = await client.request("PATCH", "/apps/hello/sni-endpoints/x", body)
    refused(changed, 422, "invalid_params")
    refused(await cli(bob).get("/apps/hello/sni-endpoints"), 404, "not_found")


async def test_addons_and_attachments(stack: Stack) -> None:
    """A Postgres add-on and its attachment, through every path Heroku's clients list them."""
    alice, bob = await two_users(stack)
    client = cli(alice)
    empty = [
        fit_list(await client.get(path), kind)
        for path, kind in (
            ("/apps/hello/addons", "add-on"),
            ("/addons", "add-on"),
            ("/apps/hello/addon-attachments", "add-on-attachment"),
            ("/addon-attachments", "add-on-attachment"),
        )
    ]
    assert empty == [[], [], [], []]
    addon = fits(
        await client.request("POST", "/apps/hello/addons", {"plan": "postgresql:mini"}),
        "add-on",
        202,
    )
    for each in clients(alice):
        for path in ("/apps/hello/addons", "/addons"):
            assert [a["id"] for a in fit_list(await each.get(path), "add-on")] == [addon["id"]]
        for path in (f"/addons/{addon['id']}", f"/apps/hello/addons/{addon['name']}"):
            assert fits(await each.get(path), "add-on")["id"] == addon["id"]
        attachments = [
            fit_list(await each.get(path), "add-on-attachment")
            for path in (
                "/apps/hello/addon-attachments",
                "/addon-attachments",
                f"/addons/{addon['id']}/addon-attachments",
            )
        ]
        [[attachment]] = {tuple(a["id"] for a in found) for found in attachments}
        for path in (
            f"/addon-attachments/{attachment}",
            f"/apps/hello/addon-attachments/{attachment}",
            "/apps/hello/addon-attachments/DATABASE",
        ):
            one = fits(await each.get(path), "add-on-attachment")
            assert (one["id"], one["addon"]["id"], one["name"]) == (
                attachment,
                addon["id"],
                "DATABASE",
            )
    # bob sees none of it, and learns nothing from asking by id.
    assert await bob.ok("GET", "/addons") == []
    assert await bob.ok("GET", "/addon-attachments") == []
    for path in (f"/addons/{addon['id']}", f"/addon-attachments/{attachment}"):
        refused(await cli(bob).get(path), 404, "not_found")
    bobs = await stack.app(bob, "bobs")
    moved = await cli(bob).request(
        "POST", "/addon-attachments", {"addon": addon["id"], "app": bobs["id"]}
    )
    refused(moved, 404, "not_found")
    shared = await client.request(
        "POST", "/addon-attachments", {"addon": addon["id"], "app": "hello2"}
    )
    refused(shared, 404, "not_found")
    await stack.app(alice, "other")
    shared = await client.request(
        "POST", "/addon-attachments", {"addon": addon["id"], "app": "other"}
    )
    refused(shared, 422, "invalid_params", "addons:create")
    # Renaming the attachment to its own app is `attach`: refused while still provisioning.
    renamed = await client.request(
        "POST", "/addon-attachments", {"addon": addon["id"], "app": "hello", "name": "OTHER"}
    )
    refused(renamed, 409, "conflict", "provisioned")
    detached = await client.request("DELETE", f"/addon-attachments/{attachment}")
    refused(detached, 422, "invalid_params", "addons:destroy")


async def test_unknown_paths_answer_in_herokus_shape(stack: Stack) -> None:
    """A path Slipway does not serve is a 404 in Heroku's error shape, for every client."""
    alice, _ = await two_users(stack)
    for each in clients(alice):
        refused(await each.get("/apps/hello/no-such-resource"), 404, "not_found")


async def test_every_app_route_hides_another_teams_app(stack: Stack) -> None:
    """Every served route under /apps/{app} answers bob exactly as GET /apps/hello does: 404."""
    _, bob = await two_users(stack)
    client = cli(bob)
    expected = await client.get("/apps/hello")
    refused(expected, 404, "not_found")
    checked = []
    for route in stack.gateway[WEB].router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if "{app}" not in path or route.method == "HEAD":
            continue
        url = re.sub(r"{[^}]+}", "x", path.replace("{app}", "hello"))
        answer = await client.request(route.method, url, None if route.method == "GET" else {})
        assert (answer.status, answer.body) == (404, expected.body), (route.method, path)
        checked.append(path)
    assert "/apps/{app}/collaborators" in checked and "/apps/{app}/sni-endpoints" in checked


def schema_ranges(href_end: str) -> list[str]:
    """The `ranges` Heroku's schema gives the list link whose href ends with `href_end`."""
    for definition in schema()["definitions"].values():
        for link in definition.get("links", []):
            if link["href"].endswith(href_end) and link.get("ranges"):
                return list(link["ranges"])
    return ["id"]  # what Heroku ranges every other list by


async def test_new_lists_page_as_heroku_specifies(stack: Stack) -> None:
    """/users/~/apps and /apps/{app}/collaborators answer 206 + Next-Range, by their ranges."""
    alice, bob = await two_users(stack)
    await stack.app(alice, "zeta")
    await stack.join(alice, "alice", bob, "member")
    client = cli(alice)
    for path, field, expected in (
        ("/users/~/apps", "name", ["hello", "zeta"]),
        ("/apps/hello/collaborators", "id", None),
    ):
        whole = await client.get(path)
        offered = [f.strip() for f in whole.headers["Accept-Ranges"].split(",")]
        assert set(schema_ranges(path.rsplit("/", 1)[-1])) <= set(offered), offered
        first = await client.get(path, headers={"Range": f"{field} ..; max=1"})
        assert first.status == 206 and len(first.body) == 1, first.body
        rest = await client.get(path, headers={"Range": first.headers["Next-Range"]})
        assert rest.status == 200 and len(rest.body) == 1, rest.body
        got = [first.body[0], rest.body[0]]
        assert sorted(got, key=lambda item: item[field]) == got
        if expected is not None:
            assert [item["name"] for item in got] == expected
    refused(
        await client.get("/users/~/apps", headers={"Range": "size ..;"}),
        416,
        "requested_range_not_satisfiable",
    )


async def test_resources_not_offered_say_what_to_do_instead(stack: Stack) -> None:
    """Pipelines, spaces, slugs, app setups...: 404 naming Slipway's way."""
    alice, bob = await two_users(stack)
    client = cli(alice)
    for method, path, words in (
        ("PUT", "/apps/hello/buildpack-installations", ("/builds",)),
        ("POST", "/apps/hello/slugs", ("OCI images",)),
        ("POST", "/apps/hello/acm", ("domains:add",)),
        ("GET", "/pipelines", ("git push",)),
        ("POST", "/spaces", ("Docker network",)),
        ("POST", "/app-setups", ("apps:create", "git push")),
        ("PUT", "/teams/alice/invitations", ("members:add",)),
    ):
        answer = await client.request(method, path, {} if method != "GET" else None)
        refused(answer, 404, "not_found", *words)
    # Under another team's app it is the app that does not exist, as everywhere.
    assert (await cli(bob).get("/apps/hello/buildpack-installations")).body == (
        await cli(bob).get("/apps/hello")
    ).body
