"""Config vars: set, remove, validate, and the releases and events each change makes."""

from __future__ import annotations

import json

import pytest

from slipway.contracts import keyring as keyring_rpc
from slipway.services.keyring.handlers import VAULT
from tests.conftest import assert_eventually
from tests.gateway.conftest import Stack
from tests.gateway.test_security import move_ciphertext

pytestmark = pytest.mark.integration


async def test_set_and_read(stack: Stack) -> None:
    """PATCH sets keys and answers the whole config; GET answers the same."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    assert await alice.ok("PATCH", "/apps/hello/config-vars", {"FOO": "bar"}) == {"FOO": "bar"}
    both = await alice.ok("PATCH", "/apps/hello/config-vars", {"BAZ": "qux"})
    assert both == {"FOO": "bar", "BAZ": "qux"}
    assert await alice.ok("GET", "/apps/hello/config-vars") == both


async def test_null_removes_a_key(stack: Stack) -> None:
    """A null value removes the key."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    await alice.ok("PATCH", "/apps/hello/config-vars", {"FOO": "bar", "KEEP": "1"})
    assert await alice.ok("PATCH", "/apps/hello/config-vars", {"FOO": None}) == {"KEEP": "1"}


async def test_each_change_is_a_release(stack: Stack) -> None:
    """Setting and removing make releases described as Heroku does."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    await alice.ok("PATCH", "/apps/hello/config-vars", {"FOO": "1", "BAR": "2"})
    await alice.ok("PATCH", "/apps/hello/config-vars", {"FOO": None})
    releases = await alice.ok("GET", "/apps/hello/releases")
    assert [r["description"] for r in releases] == [
        "Initial release",
        "Set BAR, FOO config vars",
        "Remove FOO config vars",
    ]
    assert [r["current"] for r in releases] == [False, False, True]


async def test_a_change_is_one_keyring_call(stack: Stack) -> None:
    """Changing a set config opens it and gets the next version's key in one audited call."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    await alice.ok("PATCH", "/apps/hello/config-vars", {"FOO": "1"})
    keyring = stack.keyring[VAULT].store
    before = len(await keyring.audit())
    assert await alice.ok("PATCH", "/apps/hello/config-vars", {"BAR": "2"}) == {
        "FOO": "1",
        "BAR": "2",
    }
    added = (await keyring.audit())[before:]
    assert [
        (r.caller, r.operation, r.purpose, r.outcome)
        for r in added
        if r.operation.startswith("datakey.")
    ] == [("gateway", "datakey.renew", "config", "ok")]


async def test_a_change_to_a_moved_config_is_refused(stack: Stack) -> None:
    """A ciphertext copied from another app does not open for a change either: 500, no release."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "victim")
    await stack.app(alice, "thief")
    await alice.ok("PATCH", "/apps/victim/config-vars", {"SECRET": "victims-secret"})
    await alice.ok("PATCH", "/apps/thief/config-vars", {"MINE": "1"})
    await move_ciphertext(stack.home / "gateway" / "gateway.db", "victim", "thief")
    answer = await alice.patch("/apps/thief/config-vars", {"MORE": "2"})
    assert answer.status == 500 and answer.error_id == "data_integrity"
    assert "victims-secret" not in str(answer.body)
    assert len(await alice.ok("GET", "/apps/thief/releases")) == 2


async def test_a_change_after_the_keyring_shredded_the_team_is_gone(stack: Stack) -> None:
    """With the team's key destroyed, a change answers 410 gone and stores nothing."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    await alice.ok("PATCH", "/apps/hello/config-vars", {"FOO": "bar"})
    team = await alice.ok("GET", "/teams/alice")
    await stack.bus.call(keyring_rpc.TEAM_SHRED, keyring_rpc.ShredTeam(team_id=team["id"]))
    answer = await alice.patch("/apps/hello/config-vars", {"MORE": "2"})
    assert answer.status == 410 and answer.error_id == "gone"
    assert len(await alice.ok("GET", "/apps/hello/releases")) == 2


async def test_no_change_makes_no_release(stack: Stack) -> None:
    """Removing a key that is not set changes nothing and makes no release."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    assert await alice.ok("PATCH", "/apps/hello/config-vars", {"NOPE": None}) == {}
    assert len(await alice.ok("GET", "/apps/hello/releases")) == 1


async def test_release_config_vars(stack: Stack) -> None:
    """GET /apps/{app}/releases/{v}/config-vars answers the config as of that release."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    await alice.ok("PATCH", "/apps/hello/config-vars", {"FOO": "old"})
    await alice.ok("PATCH", "/apps/hello/config-vars", {"FOO": "new"})
    assert await alice.ok("GET", "/apps/hello/releases/2/config-vars") == {"FOO": "old"}
    assert await alice.ok("GET", "/apps/hello/releases/1/config-vars") == {}


@pytest.mark.parametrize("key", ["A=B", "NUL\x00KEY", "1ABC", "WITH SPACE", "", "ÜMLAUT", "A-B"])
async def test_bad_keys_are_refused(stack: Stack, key: str) -> None:
    """Keys that are not shell identifiers answer 422 and change nothing."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    answer = await alice.patch("/apps/hello/config-vars", {key: "value", "GOOD": "1"})
    assert answer.status == 422
    assert answer.error_id == "invalid_params"
    assert "config var name" in answer.body["message"]
    assert await alice.ok("GET", "/apps/hello/config-vars") == {}


async def test_megabyte_value_is_refused(stack: Stack) -> None:
    """A 1 MB value answers 422 naming the key and the limit."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    answer = await alice.patch("/apps/hello/config-vars", {"BIG": "x" * 1_000_000})
    assert answer.status == 422
    assert "BIG" in answer.body["message"] and "32768" in answer.body["message"]
    assert await alice.ok("GET", "/apps/hello/config-vars") == {}


async def test_nul_in_a_value_is_refused(stack: Stack) -> None:
    """A value holding a NUL byte answers 422 (a process environment cannot hold it)."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    answer = await alice.patch("/apps/hello/config-vars", {"K": "a\x00b"})
    assert answer.status == 422


async def test_total_size_is_limited(stack: Stack) -> None:
    """Many values that together pass the total limit answer 422."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    changes = {f"K{i}": "x" * 30_000 for i in range(10)}
    answer = await alice.patch("/apps/hello/config-vars", changes)
    assert answer.status == 422
    assert "together" in answer.body["message"]


async def test_non_string_value_is_refused(stack: Stack) -> None:
    """A number as a value answers 422."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    assert (await alice.patch("/apps/hello/config-vars", {"PORT": 5000})).status == 422


async def test_viewer_can_neither_read_nor_change_config(stack: Stack) -> None:
    """Config vars are secrets: a viewer gets 403 forbidden reading or changing them."""
    alice, bob = await stack.user("alice@example.com"), await stack.user("bob@example.com")
    await alice.ok("POST", "/teams", {"name": "acme"}, 201)
    await stack.join(alice, "acme", bob, "viewer")
    await stack.app(alice, "hello", team="acme")
    await alice.ok("PATCH", "/apps/hello/config-vars", {"FOO": "bar"})
    for path in ("/apps/hello/config-vars", "/apps/hello/releases/2/config-vars"):
        read = await bob.get(path)
        assert read.status == 403 and "cannot read config vars" in read.body["message"], path
        assert "bar" not in json.dumps(read.body)
    assert (await bob.get("/apps/hello")).status == 200  # the app itself stays in view
    answer = await bob.patch("/apps/hello/config-vars", {"FOO": "evil"})
    assert answer.status == 403
    assert answer.error_id == "forbidden"
    assert await alice.ok("GET", "/apps/hello/config-vars") == {"FOO": "bar"}


async def test_member_can_change_config(stack: Stack) -> None:
    """A member may change config."""
    alice, bob = await stack.user("alice@example.com"), await stack.user("bob@example.com")
    await alice.ok("POST", "/teams", {"name": "acme"}, 201)
    await stack.join(alice, "acme", bob, "member")
    await stack.app(alice, "hello", team="acme")
    assert await bob.ok("PATCH", "/apps/hello/config-vars", {"FOO": "bar"}) == {"FOO": "bar"}


async def test_event_names_keys_never_values(stack: Stack) -> None:
    """config.changed carries the changed keys and the version, not the value."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    await alice.ok("PATCH", "/apps/hello/config-vars", {"SECRET_KEY": "hunter2-value"})

    async def published() -> None:
        (event,) = await stack.events("config")
        assert event["app_id"] == app["id"]
        assert event["keys_set"] == ["SECRET_KEY"]
        assert event["release_version"] == 2
        assert "hunter2-value" not in str(event)

    await assert_eventually(published)


async def test_audit_entry_names_keys_never_values(stack: Stack) -> None:
    """The config.update audit entry lists the keys, not the value."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    await alice.ok("PATCH", "/apps/hello/config-vars", {"SECRET_KEY": "hunter2-value"})
    log = await alice.ok("GET", "/apps/hello/audit")
    (entry,) = [e for e in log["entries"] if e["action"] == "config.update"]
    assert entry["details"]["set"] == "SECRET_KEY"
    assert "hunter2-value" not in str(log)


async def test_concurrent_changes_all_land(stack: Stack) -> None:
    """Twenty concurrent PATCHes of different keys all end up in the config."""
    import asyncio

    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    await asyncio.gather(
        *(alice.ok("PATCH", "/apps/hello/config-vars", {f"K{i}": str(i)}) for i in range(20))
    )
    config = await alice.ok("GET", "/apps/hello/config-vars")
    assert config == {f"K{i}": str(i) for i in range(20)}
