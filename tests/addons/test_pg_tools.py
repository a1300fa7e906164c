"""pg:credentials:rotate and pg:psql against the real gateway, keyring, scheduler and Docker."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import subprocess
import time
from pathlib import Path

import aiodocker
import pytest

from slipway.services.scheduler.addons import run_psql
from tests.addons.conftest import AddonStack
from tests.addons.test_cli import SLIPWAY, slipway
from tests.addons.test_postgresql import database_container, provisioned, psql
from tests.conftest import assert_eventually

pytestmark = [pytest.mark.docker, pytest.mark.integration]


def cli_env(url: str, token: str, app: str, home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HOME": str(home),
        "SLIPWAY_CONFIG_DIR": str(home / "config"),
        "SLIPWAY_API_URL": url,
        "SLIPWAY_API_KEY": token,
        "SLIPWAY_APP": app,
    }


async def test_rotate_refuses_the_old_password_and_releases_the_new_url(
    addon_stack: AddonStack, tmp_path: Path
) -> None:
    """After a rotation the old password is refused, a session opened with it is ended, the
    new one works, the app's DATABASE_URL holds it through a new release, and it is audited."""
    stack = addon_stack.stack
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "pgrot")
    await provisioned(alice, "pgrot")
    network = addon_stack.scope.network(app["id"])
    old = (await alice.ok("GET", "/apps/pgrot/config-vars"))["DATABASE_URL"]
    assert (
        await psql(network, old, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
    ).returncode == 0
    before = await alice.ok("GET", "/apps/pgrot/releases")
    # A session opened with the old password, still open when the password changes.
    held = asyncio.create_task(psql(network, old, "SELECT 'held'; SELECT pg_sleep(120)"))
    info = await database_container(app["id"])

    async def session_open() -> None:
        async with aiodocker.Docker() as docker:
            code, output = await run_psql(
                docker.containers.container(info["Id"]),
                ["psql", "-XAt", "-h", "/run/postgresql", "-d", "postgres", "-c",
                 "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(120)%'"
                 " AND pid <> pg_backend_pid()"],
            )  # fmt: skip
        assert code == 0 and output.strip() == "1", output

    await assert_eventually(session_open, timeout=30)

    env = cli_env(stack.url, alice.token or "", "pgrot", tmp_path)
    code, _, err = await slipway(env, "pg:credentials:rotate", "--confirm", "wrong")
    assert code != 0 and "--confirm pgrot" in err
    code, out, err = await slipway(env, "pg:credentials:rotate", "--confirm", "pgrot")
    assert code == 0, err
    assert "new credentials set in DATABASE_URL" in out
    ended = await asyncio.wait_for(held, timeout=60)
    assert ended.returncode != 0
    assert "terminating connection due to administrator command" in ended.stderr

    new = (await alice.ok("GET", "/apps/pgrot/config-vars"))["DATABASE_URL"]
    assert new != old and new.endswith("?sslmode=require")
    refused = await psql(network, old, "SELECT 1")
    assert refused.returncode != 0
    assert "password authentication failed" in refused.stderr
    works = await psql(network, new, "SELECT n FROM kept")
    assert works.returncode == 0, works.stderr
    assert works.stdout.strip() == "7"

    releases = await alice.ok("GET", "/apps/pgrot/releases")
    assert len(releases) == len(before) + 1
    assert releases[-1]["description"].startswith("Rotate DATABASE credentials")
    log = await alice.ok("GET", "/apps/pgrot/audit")
    assert "addon.credentials.rotate" in [e["action"] for e in log["entries"]]


async def test_pg_psql_runs_piped_sql_and_a_command_in_a_one_off(
    addon_stack: AddonStack, tmp_path: Path
) -> None:
    """pg:psql runs psql from the add-on image in a one-off: SQL on stdin and with -c."""
    stack = addon_stack.stack
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "pgcli")
    await provisioned(alice, "pgcli")
    env = cli_env(stack.url, alice.token or "", "pgcli", tmp_path)

    code, out, err = await slipway(
        env,
        "pg:psql",
        stdin="CREATE TABLE t (n int);\nINSERT INTO t VALUES (41);\nSELECT n + 1 FROM t;\n",
    )
    assert code == 0, (out, err)
    assert "42" in out

    code, out, err = await slipway(env, "pg:psql", "-c", "SELECT count(*) + 99 FROM t")
    assert code == 0, (out, err)
    assert "100" in out

    code, out, err = await slipway(env, "pg:psql", "-c", "SELECT * FROM missing")
    assert code != 0, (out, err)
    assert 'relation "missing" does not exist' in out


def converse_on_a_terminal(env: dict[str, str], typed: list[bytes], timeout: float = 90) -> bytes:
    """Run `slipway pg:psql` on a pseudo-terminal, type `typed` once psql prompts; its output."""
    main, child = pty.openpty()
    process = subprocess.Popen(
        [SLIPWAY, "pg:psql"], stdin=child, stdout=child, stderr=child, env=env, close_fds=True
    )
    os.close(child)
    output, deadline, pending = b"", time.monotonic() + timeout, list(typed)
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the terminal's other end closed: the CLI is done
                    break
                if not chunk:
                    break
                output += chunk
            if pending and output.rstrip().endswith(b"=>"):
                os.write(main, pending.pop(0))
                output += b"\n"  # the prompt is answered: wait for the next one
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(main)
    return output


async def test_pg_psql_on_a_terminal_is_interactive(
    addon_stack: AddonStack, tmp_path: Path
) -> None:
    """On a terminal pg:psql prompts, runs what is typed and leaves with \\q."""
    stack = addon_stack.stack
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "pgtty")
    await provisioned(alice, "pgtty")
    env = cli_env(stack.url, alice.token or "", "pgtty", tmp_path)
    output = await asyncio.to_thread(
        converse_on_a_terminal, env, [b"SELECT 6 * 7 AS n;\r", b"\\q\r"]
    )
    assert b"=>" in output, output
    assert b" 42" in output, output
