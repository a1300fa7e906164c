"""The real `slipway` executable against a real gateway + keyring + nats-server.

The stack runs in the test's event loop (tests/gateway/conftest.py), so the CLI
runs as a subprocess: exactly what a user types, with its own config dir and cwd.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from slipway.cli import config
from tests.cli.conftest import Result, run_git
from tests.conftest import assert_eventually
from tests.gateway import conftest as gateway_fixtures
from tests.gateway.conftest import Api, Stack

pytestmark = pytest.mark.integration

# The gateway engineer's fixtures start the real stack; pytest offers a conftest's
# fixtures only below its folder, so this module names them for itself.
slipway_home = gateway_fixtures.slipway_home
keyring_service = gateway_fixtures.keyring_service
gateway_service = gateway_fixtures.gateway_service
stack = gateway_fixtures.stack

SLIPWAY = str(Path(sys.executable).parent / "slipway")
EMAIL = "alice@example.com"


@dataclass
class Shell:
    """Runs `slipway` as a user would, with this test's environment and working directory."""

    cwd: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    async def run(
        self,
        *args: str,
        stdin: str = "",
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        """Run `slipway ARGS` to completion and return its exit status and output."""
        process = await asyncio.create_subprocess_exec(
            SLIPWAY,
            *args,
            cwd=cwd or self.cwd,
            env={**self.env, **(env or {})},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=60)
        assert process.returncode is not None
        return Result(code=process.returncode, out=out.decode(), err=err.decode())

    async def ok(self, *args: str, **kw: Any) -> Result:
        """Run a command that must succeed."""
        result = await self.run(*args, **kw)
        assert result.code == 0, (args, result)
        return result


@pytest.fixture
async def alice(stack: Stack) -> Api:
    """A registered user with an API token."""
    return await stack.user(EMAIL)


@pytest.fixture
async def sh(stack: Stack, alice: Api, isolated: Path) -> Shell:
    """A shell whose `slipway` is logged in as alice."""
    shell = Shell(cwd=isolated)
    await shell.ok("login", "--api-url", stack.url, stdin=f"{alice.token}\n")
    return shell


async def _team_of(api: Api, app: str) -> str:
    info = await api.ok("GET", f"/apps/{app}")
    return str(info["team"]["name"])


async def test_login_verifies_and_stores_the_token(
    stack: Stack, alice: Api, isolated: Path
) -> None:
    """login checks the token with GET /account, then writes it 0600 with the API URL."""
    shell = Shell(cwd=isolated)
    result = await shell.ok("login", "--api-url", stack.url, stdin=f"{alice.token}\n")
    assert f"Logged in as {EMAIL}" in result.err
    path = config.credentials_path(shell.env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {
        "api_url": stack.url,
        "token": alice.token,
        "email": EMAIL,
    }
    assert (await shell.ok("auth:whoami")).out == f"{EMAIL}\n"


async def test_login_with_a_bad_token_stores_nothing(stack: Stack, isolated: Path) -> None:
    """A token the API refuses is reported in one line and not saved."""
    shell = Shell(cwd=isolated)
    result = await shell.run("login", "--api-url", stack.url, stdin="not-a-token\n")
    assert result.code == 1
    assert result.err.count("\n") == 1 and result.err.startswith(" ▸    ")
    assert "slipway login" in result.err
    assert not config.credentials_path(shell.env).exists()


async def test_create_list_and_info(sh: Shell, stack: Stack) -> None:
    """apps:create prints the git URL; the app then shows in `apps` and `apps:info`."""
    created = await sh.ok("apps:create", "hello")
    assert "Creating ⬢ hello... done" in created.err
    assert created.out.strip().endswith(f"{stack.url}/hello.git")
    assert "hello" in (await sh.ok("apps")).out
    listed = json.loads((await sh.ok("apps", "--json")).out)
    assert [app["name"] for app in listed] == ["hello"]
    info = await sh.ok("apps:info", "-a", "hello")
    assert info.out.startswith("=== hello\n")
    assert "Maintenance: off" in info.out


async def test_destroy_needs_the_app_name(sh: Shell) -> None:
    """apps:destroy refuses a wrong confirmation, then destroys with the right one."""
    await sh.ok("apps:create", "doomed")
    refused = await sh.run("apps:destroy", "-a", "doomed", "--confirm", "other")
    assert refused.code == 1
    await sh.ok("apps:info", "-a", "doomed")
    await sh.ok("apps:destroy", "-a", "doomed", "--confirm", "doomed")
    gone = await sh.run("apps:info", "-a", "doomed")
    assert (gone.code, gone.err) == (1, " ▸    Couldn't find that app.\n")


async def test_destroy_accepts_the_name_typed_on_stdin(sh: Shell) -> None:
    """Typing the app's name at the prompt confirms, like Heroku."""
    await sh.ok("apps:create", "typed")
    await sh.ok("apps:destroy", "typed", stdin="typed\n")
    assert (await sh.run("apps:info", "-a", "typed")).code == 1


async def test_config_round_trip(sh: Shell) -> None:
    """config:set, config:get and config:unset, with a value containing '='."""
    await sh.ok("apps:create", "cfg")
    set_result = await sh.ok("config:set", "-a", "cfg", "URL=postgres://h/db?a=1&b=2", "DEBUG=1")
    assert "Setting URL and DEBUG and restarting ⬢ cfg... done, v2" in set_result.err
    assert (await sh.ok("config:get", "-a", "cfg", "URL")).out == "postgres://h/db?a=1&b=2\n"
    await sh.ok("config:unset", "-a", "cfg", "DEBUG")
    assert (await sh.ok("config:get", "-a", "cfg", "DEBUG")).out == "\n"
    assert json.loads((await sh.ok("config", "-a", "cfg", "--json")).out) == {
        "URL": "postgres://h/db?a=1&b=2"
    }


async def test_app_is_inferred_from_the_git_remote(sh: Shell, isolated: Path) -> None:
    """Inside a repository, apps:create adds the `slipway` remote and later commands use it."""
    run_git(isolated, "init", "-q")
    await sh.ok("apps:create", "inferred")
    assert run_git(isolated, "remote", "get-url", "slipway").strip().endswith("/inferred.git")
    await sh.ok("config:set", "COLOR=blue")
    assert (await sh.ok("config:get", "-a", "inferred", "COLOR")).out == "blue\n"


async def test_git_remote_points_the_repository_at_an_app(
    sh: Shell, stack: Stack, isolated: Path
) -> None:
    """git:remote really runs `git remote add`, then `set-url` for another app."""
    await sh.ok("apps:create", "first", "--no-remote")
    await sh.ok("apps:create", "second", "--no-remote")
    run_git(isolated, "init", "-q")
    await sh.ok("git:remote", "-a", "first")
    await sh.ok("git:remote", "-a", "second")
    assert run_git(isolated, "remote", "get-url", "slipway").strip() == f"{stack.url}/second.git"


async def test_rollback_defaults_to_the_previous_release(sh: Shell) -> None:
    """releases lists v3..v1; rollback goes to v2 and brings v2's config back as v4."""
    await sh.ok("apps:create", "rollme")
    await sh.ok("config:set", "-a", "rollme", "FOO=one")
    await sh.ok("config:set", "-a", "rollme", "FOO=two")
    listed = await sh.ok("releases", "-a", "rollme")
    assert listed.out.startswith("=== rollme Releases - Current: v3\n")
    rolled = await sh.ok("releases:rollback", "-a", "rollme")
    assert "Rolling back ⬢ rollme to v2... done, v4" in rolled.err
    assert (await sh.ok("config:get", "-a", "rollme", "FOO")).out == "one\n"
    info = json.loads((await sh.ok("releases:info", "-a", "rollme", "v4", "--json")).out)
    assert (info["version"], info["current"]) == (4, True)


async def test_rollback_to_a_named_version(sh: Shell) -> None:
    """releases:rollback v1 restores the initial release's (empty) config."""
    await sh.ok("apps:create", "rollv")
    await sh.ok("config:set", "-a", "rollv", "FOO=one")
    rolled = await sh.ok("releases:rollback", "v1", "-a", "rollv")
    assert "to v1... done, v3" in rolled.err
    assert (await sh.ok("config:get", "-a", "rollv", "FOO")).out == "\n"


async def test_scale_spec_error_is_a_usage_error(sh: Shell) -> None:
    """A malformed ps:scale spec exits 2 with the accepted syntax, in one line."""
    await sh.ok("apps:create", "scaler")
    result = await sh.run("ps:scale", "-a", "scaler", "web=2x:basic")
    assert result.code == 2
    assert result.err == (
        " ▸    Invalid scale argument 'web=2x:basic': use TYPE=QUANTITY[:SIZE], TYPE+N, TYPE-N "
        "or TYPE=SIZE (e.g. web=2:standard-2x worker+1).\n"
    )


async def test_api_error_is_one_line_with_status_1(sh: Shell) -> None:
    """The API's refusal (no such process type yet) is printed as its message alone."""
    await sh.ok("apps:create", "noweb")
    result = await sh.run("ps:scale", "-a", "noweb", "web=2:standard-2x")
    assert result.code == 1
    assert result.err == " ▸    Couldn't find that process type (web).\n"


async def test_maintenance_mode_shows_in_info(sh: Shell) -> None:
    """maintenance:on is visible in apps:info and maintenance."""
    await sh.ok("apps:create", "maint")
    await sh.ok("maintenance:on", "-a", "maint")
    assert (await sh.ok("maintenance", "-a", "maint")).out == "on\n"
    await sh.ok("maintenance:off", "-a", "maint")
    assert "Maintenance: off" in (await sh.ok("apps:info", "-a", "maint")).out


async def test_features_enable_and_disable_hsts(sh: Shell) -> None:
    """features lists hsts off; features:enable turns it on; a name that is none fails."""
    await sh.ok("apps:create", "strict")
    assert "[ ] hsts" in (await sh.ok("features", "-a", "strict")).out
    await sh.ok("features:enable", "hsts", "-a", "strict")
    assert "[+] hsts" in (await sh.ok("features", "-a", "strict")).out
    assert "Enabled:     yes" in (await sh.ok("features:info", "hsts", "-a", "strict")).out
    await sh.ok("features:disable", "hsts", "-a", "strict")
    assert (
        json.loads((await sh.ok("features", "-a", "strict", "--json")).out)[0]["enabled"] is False
    )
    wrong = await sh.run("features:enable", "preboot", "-a", "strict")
    assert wrong.code == 1 and "hsts" in wrong.err and wrong.err.count("\n") == 1


async def test_rename_updates_the_git_remote(sh: Shell, isolated: Path) -> None:
    """apps:rename repoints the `slipway` remote at the new name."""
    run_git(isolated, "init", "-q")
    await sh.ok("apps:create", "before")
    await sh.ok("apps:rename", "after")
    assert run_git(isolated, "remote", "get-url", "slipway").strip().endswith("/after.git")
    assert json.loads((await sh.ok("apps:info", "--json")).out)["name"] == "after"


async def test_tokens_create_list_and_revoke(sh: Shell, stack: Stack) -> None:
    """A created token works until tokens:revoke, then the API refuses it in one line."""
    token = (await sh.ok("tokens:create", "--description", "ci", "--short")).out.strip()
    as_ci = {"SLIPWAY_API_KEY": token}
    assert (await sh.ok("auth:whoami", env=as_ci)).out == f"{EMAIL}\n"
    listed = json.loads((await sh.ok("tokens", "--json")).out)
    [ci] = [t for t in listed if t["description"] == "ci"]
    await sh.ok("tokens:revoke", ci["id"])
    refused = await sh.run("auth:whoami", env=as_ci)
    assert refused.code == 1
    assert refused.err.count("\n") == 1 and "slipway login" in refused.err


async def test_team_members_add_and_remove(sh: Shell, stack: Stack) -> None:
    """teams:create, members:add with a role, members, members:remove."""
    await stack.user("bob@example.com")
    await sh.ok("teams:create", "acme")
    await sh.ok("members:add", "bob@example.com", "--role", "viewer", "--team", "acme")
    members = json.loads((await sh.ok("members", "--team", "acme", "--json")).out)
    assert {(m["email"], m["role"]) for m in members} == {
        (EMAIL, "owner"),
        ("bob@example.com", "viewer"),
    }
    await sh.ok("members:remove", "bob@example.com", "--team", "acme")
    assert "bob@example.com" not in (await sh.ok("members", "--team", "acme")).out


async def _wait_for_checkpoint(api: Api, team: str) -> int:
    """Wait until a signed checkpoint covers the team chain's head; return the head's seq."""

    async def covered() -> int:
        log = await api.ok("GET", f"/teams/{team}/audit")
        head = max(entry["seq"] for entry in log["entries"])
        assert any(cp["seq"] == head for cp in log["checkpoints"]), "not signed yet"
        return int(head)

    return await assert_eventually(covered)


async def test_audit_verify_ok(sh: Shell, alice: Api) -> None:
    """--verify recomputes an intact chain and says OK with counts."""
    await sh.ok("apps:create", "audited")
    await sh.ok("config:set", "-a", "audited", "A=1")
    team = await _team_of(alice, "audited")
    head = await _wait_for_checkpoint(alice, team)
    result = await sh.ok("audit", "--team", team, "--verify")
    assert result.out.startswith(f"OK: audit chain of team {team} verified: {head} entries")
    app_result = await sh.ok("audit", "-a", "audited", "--verify")
    assert "it holds app audited's" in app_result.out


async def test_audit_verify_names_the_tampered_entry(sh: Shell, alice: Api, stack: Stack) -> None:
    """An entry edited in the gateway's database is named by seq, action and time; exit 1."""
    await sh.ok("apps:create", "tampered")
    await sh.ok("config:set", "-a", "tampered", "A=1")
    team = await _team_of(alice, "tampered")
    await _wait_for_checkpoint(alice, team)
    log = await alice.ok("GET", "/apps/tampered/audit")
    victim = log["entries"][0]
    _rewrite_entry(stack.home / "gateway" / "gateway.db", log["team"]["id"], victim["seq"])
    result = await sh.run("audit", "-a", "tampered", "--verify")
    assert result.code == 1
    assert result.err.count("\n") == 1
    assert (
        f"is BROKEN at entry {victim['seq']} ({victim['action']} at {victim['at']}): "
        "hash does not match its content." in result.err
    )


def _rewrite_entry(db: Path, team_id: str, seq: int) -> None:
    """Change who did entry `seq`, directly in the gateway's SQLite file, as an intruder would."""
    with sqlite3.connect(db) as conn:
        (raw,) = conn.execute(
            "SELECT entry FROM audit_entries WHERE team_id = ? AND seq = ?", (team_id, seq)
        ).fetchone()
        entry = json.loads(raw)
        entry["actor"] = "mallory@example.com"
        conn.execute(
            "UPDATE audit_entries SET entry = ? WHERE team_id = ? AND seq = ?",
            (json.dumps(entry, separators=(",", ":")), team_id, seq),
        )
    conn.close()
