"""`slipway keys:operator` and what `slipway keys` says about the operator's recovery key.

Runs against the real gateway and keyring (tests/gateway/conftest.py), the keyring
configured with an operator recovery recipient.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
from pathlib import Path

import pytest

from slipway.cli.errors import CliError
from slipway.cli.main import run
from slipway.cli.registry import Context
from tests.cli.conftest import Result
from tests.gateway.conftest import (  # noqa: F401 - fixtures
    Stack,
    gateway_service,
    slipway_home,
    stack,
)
from tests.gateway.test_backup_operator_key import (  # noqa: F401 - fixtures
    keyring_service,
    operator_identity,
    recovery_recipients,
)

pytestmark = pytest.mark.integration


def _slipway(env: dict[str, str], cwd: Path, *argv: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    try:
        code = run(list(argv), Context(env=env, cwd=cwd, stdout=out, stderr=err))
    except CliError as exc:
        err.write(exc.message + "\n")
        code = exc.exit_code
    return Result(code, out.getvalue(), err.getvalue())


async def test_keys_operator_turns_the_recovery_key_on_and_off(
    stack: Stack,  # noqa: F811 - the fixture imported above
    recovery_recipients: str,  # noqa: F811
    isolated: Path,
) -> None:
    """`keys` says off; `keys:operator --on` lists the key and says on; `--off` undoes it."""
    alice = await stack.user("alice@example.com")
    env = {**os.environ, "SLIPWAY_API_URL": stack.url, "SLIPWAY_API_KEY": alice.token or ""}

    async def slipway(*argv: str) -> Result:
        return await asyncio.to_thread(_slipway, env, isolated, *argv)

    listed = await slipway("keys", "-t", "alice")
    assert listed.code == 0, listed.err
    assert "operator's recovery key is off" in listed.out
    unsaid = await slipway("keys:operator", "-t", "alice")
    assert unsaid.code != 0 and "--on or --off" in unsaid.err

    on = await slipway("keys:operator", "--on", "-t", "alice")
    assert on.code == 0, on.err
    assert "operator's recovery key is on" in on.out and recovery_recipients in on.out
    shown = json.loads((await slipway("keys", "-t", "alice", "--json")).out)
    assert shown["operator_enabled"] is True
    assert [k["kind"] for k in shown["keys"]] == ["platform", "operator"]

    off = await slipway("keys:operator", "--off", "-t", "alice")
    assert off.code == 0, off.err
    assert "operator's recovery key is off" in off.out and recovery_recipients not in off.out
