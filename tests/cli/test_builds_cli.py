"""`slipway git:remote` then `git push slipway main`, and the builds commands, for real."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.cli import test_cli_integration as cli_fixtures
from tests.cli.test_cli_integration import Shell
from tests.gateway import fakebuilder
from tests.gateway.conftest import Api, Stack
from tests.gateway.fakebuilder import FakeBuilder
from tests.gateway.gitclient import git, work_tree

pytestmark = pytest.mark.integration

# The fixtures of the CLI and gateway tests, named for this module.
slipway_home = cli_fixtures.slipway_home
keyring_service = cli_fixtures.keyring_service
gateway_service = cli_fixtures.gateway_service
stack = cli_fixtures.stack
alice = cli_fixtures.alice
sh = cli_fixtures.sh
builder = fakebuilder.builder


def basic_header(token: str | None) -> str:
    """git's `http.extraHeader` carrying the token as a Basic password."""
    encoded = base64.b64encode(f"git:{token}".encode()).decode()
    return f"http.extraHeader=Authorization: Basic {encoded}"


async def test_push_through_the_remote_then_list_builds(
    sh: Shell, stack: Stack, alice: Api, builder: FakeBuilder, tmp_path: Path
) -> None:
    """git:remote's URL takes the push; builds, builds:info and builds:output show the build."""
    await sh.ok("apps:create", "hello", "--no-remote")
    tree = await work_tree(tmp_path / "hello", {"app.py": "print(1)\n"})
    await sh.ok("git:remote", "-a", "hello", cwd=tree)
    pushed = await git(tree, "-c", basic_header(alice.token), "push", "slipway", "main")
    assert pushed.code == 0, pushed.out
    assert "Released v2" in pushed.out
    listed = await sh.ok("builds", "-a", "hello")
    assert "succeeded" in listed.out
    assert "v2" in listed.out
    info = await sh.ok("builds:info", "-a", "hello")
    assert "Status:" in info.out
    assert "succeeded" in info.out
    shown = await sh.ok("builds:output", "-a", "hello")
    build_id = builder.requests[0].build_id
    assert shown.out == builder.text(build_id)


async def test_cache_purge_needs_the_app_name(
    sh: Shell, builder: FakeBuilder, stack: Stack
) -> None:
    """builds:cache:purge refuses without --confirm APP, then reaches the builder with it."""
    await sh.ok("apps:create", "hello", "--no-remote")
    refused = await sh.run("builds:cache:purge", "-a", "hello")
    assert refused.code == 1
    assert "--confirm hello" in refused.err
    assert builder.purges == []
    await sh.ok("builds:cache:purge", "-a", "hello", "--confirm", "hello")
    assert len(builder.purges) == 1


async def test_builds_of_an_app_without_any(sh: Shell) -> None:
    """builds says there are none; builds:info says how to make one and exits 1."""
    await sh.ok("apps:create", "hello", "--no-remote")
    assert "hello has no builds." in (await sh.ok("builds", "-a", "hello")).out
    info = await sh.run("builds:info", "-a", "hello")
    assert info.code == 1
    assert "git push slipway main" in info.err
