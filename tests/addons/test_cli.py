"""The `slipway` executable's add-on commands against the real gateway, keyring and scheduler."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.addons.conftest import BackupStack

pytestmark = [pytest.mark.docker, pytest.mark.integration]

SLIPWAY = str(Path(sys.executable).parent / "slipway")


async def slipway(env: dict[str, str], *args: str, stdin: str = "") -> tuple[int, str, str]:
    """Run `slipway ARGS` as a user would; (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        SLIPWAY,
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_create_info_pg_info_destroy(backup_stack: BackupStack, tmp_path: Path) -> None:
    """addons:create waits with progress; addons, addons:info and pg:info show it; destroy."""
    addon_stack = backup_stack.addons
    stack = addon_stack.stack
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "clidb")
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "SLIPWAY_CONFIG_DIR": str(tmp_path / "config"),
        "SLIPWAY_API_URL": stack.url,
        "SLIPWAY_API_KEY": alice.token or "",
        "SLIPWAY_APP": "clidb",
    }
    code, out, err = await slipway(env, "addons:create", "postgresql:mini")
    assert code == 0, err
    assert "Creating postgresql-" in err and "done" in err
    name = out.split()[0]
    assert out.strip() == f"{name} (postgresql:mini) is provisioned"

    code, out, err = await slipway(env, "addons")
    assert code == 0, err
    assert name in out and "DATABASE_URL" in out and "provisioned" in out

    code, out, err = await slipway(env, "addons:info", name)
    assert code == 0, err
    assert "postgresql:mini" in out and "DATABASE_URL" in out

    code, out, err = await slipway(env, "pg:info")
    assert code == 0, err
    assert f"DATABASE_URL ({name})" in out
    assert "Available" in out and "PG Version:" in out
    assert "/20" in out  # connections out of the plan's 20

    code, out, err = await slipway(env, "addons:destroy", name, "--confirm", "wrong")
    assert code != 0 and "did not match" in err
    code, out, err = await slipway(env, "addons:destroy", name, "--confirm", "clidb")
    assert code == 0, err
    assert f"Destroying {name}" in err
    code, out, err = await slipway(env, "addons")
    assert "No add-ons" in out
