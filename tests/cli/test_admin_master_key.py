"""`slipway admin:rotate-master-key` against the real gateway, keyring and nats-server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slipway.services.keyring.masterkey import fingerprint
from tests.cli.test_cli_integration import Shell
from tests.gateway import conftest as gateway_fixtures
from tests.gateway.conftest import Stack

pytestmark = pytest.mark.integration

slipway_home = gateway_fixtures.slipway_home
keyring_service = gateway_fixtures.keyring_service
gateway_service = gateway_fixtures.gateway_service
stack = gateway_fixtures.stack


async def _login(stack: Stack, token: str | None, isolated: Path) -> Shell:
    shell = Shell(cwd=isolated)
    await shell.ok("login", "--api-url", stack.url, stdin=f"{token}\n")
    return shell


async def test_a_platform_admin_rotates_the_master_key(stack: Stack, isolated: Path) -> None:
    """The admin's command re-wraps under version 2, prints its fingerprint, twice in a row."""
    key_file = stack.home / "keyring" / "master.key"
    before = key_file.read_bytes()
    # A team key to re-wrap: the admin's personal team gets one with its first secret.
    app = await stack.admin.ok("POST", "/apps", {"name": "vault-app"}, status=201)
    await stack.admin.ok("PATCH", f"/apps/{app['id']}/config-vars", {"SECRET": "kept"})
    admin = await _login(stack, stack.admin.token, isolated)
    result = await admin.ok("admin:rotate-master-key")
    assert "master key version 1 -> 2" in result.err
    assert "the old key is destroyed" in result.err
    after = key_file.read_bytes()
    assert after != before
    assert result.out.strip() == f"fingerprint: {fingerprint(after)}"
    again = json.loads((await admin.ok("admin:rotate-master-key", "--json")).out)
    assert (again["previous_version"], again["version"]) == (2, 3)
    config = await stack.admin.ok("GET", f"/apps/{app['id']}/config-vars")
    assert config["SECRET"] == "kept"


async def test_anyone_else_is_refused(stack: Stack, isolated: Path) -> None:
    """A user who is not a platform admin cannot rotate the master key; the key stays."""
    key_file = stack.home / "keyring" / "master.key"
    before = key_file.read_bytes()
    alice = await stack.user("alice@example.com")
    shell = await _login(stack, alice.token, isolated)
    refused = await shell.run("admin:rotate-master-key")
    assert refused.code == 1
    assert "Only a platform admin can do this." in refused.err
    assert key_file.read_bytes() == before
