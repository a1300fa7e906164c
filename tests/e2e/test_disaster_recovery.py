"""Disaster recovery of the whole platform, for real (#15): snapshot, lose everything, restore.

One platform, started by the supervisor as `scripts/up` starts it, holds two teams' apps:
`shop` (python-hello with a PostgreSQL add-on holding rows) and `blog` (a custom domain
and a log drain). A platform snapshot is taken with `slipway admin:snapshot`; rows are
written after it. Then the disaster: the supervisor stops, its SLIPWAY_HOME is deleted
and every container, volume, network and app image it made is removed from the engine.
Only the backup storage (a mount every host reaches: the one thing a platform keeps
off the machine) and the operator's offline recovery identity survive.

`scripts/restore SNAPSHOT --identity FILE` into a fresh SLIPWAY_HOME, then the supervisor
again: both apps answer through the router, the database holds every row (those written
after the snapshot too: it comes back from its own continuous backups), both teams'
audit chains verify, a new commit pushes on top of the restored git history, and a
rollback to a release from before the snapshot goes live.

The figures #15 asks for (snapshot size and time, recovery time, recovery point) are
printed, and written as JSON to $SLIPWAY_DR_FIGURES when that is set.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from slipway.contracts.scope import Scope
from slipway.libs.crypto import age
from tests.addons.test_postgresql import psql
from tests.conftest import new_scope, remove_scope_objects
from tests.e2e.supervised import ROOT, Platform, answered, free_port, start, stop, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.slow, pytest.mark.alone]


def wipe_engine(scope: Scope, registry: str) -> None:
    """What a lost machine takes with it: the scope's containers, networks, volumes, images."""
    remove_scope_objects(scope)
    for kind in ("volume", "network"):
        names = subprocess.run(
            ["docker", kind, "ls", "-q", "--filter", f"label={scope.managed_label}"],
            capture_output=True, text=True, check=False,
        ).stdout.split()  # fmt: skip
        if names:
            subprocess.run(["docker", kind, "rm", "-f" if kind == "volume" else "--", *names],
                           capture_output=True, check=False)  # fmt: skip
    images = registry_images(registry)
    if images:
        subprocess.run(["docker", "rmi", "-f", *images], capture_output=True, check=False)
    subprocess.run(["docker", "network", "rm", scope.build_network], capture_output=True,
                   check=False)  # fmt: skip


def registry_images(registry: str) -> list[str]:
    """The engine's images pulled from (or pushed to) the platform's registry."""
    listed = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}@{{.ID}}"],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    return sorted({line.split("@")[1] for line in listed if line.startswith(f"{registry}/")})


def git(tree: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(tree), "-c", "user.email=dr@example.com", "-c", "user.name=dr", *args],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout + done.stderr


def source_tree(tree: Path, env: dict[str, str]) -> Path:
    """examples/python-hello as a git repository with one commit."""
    shutil.copytree(ROOT / "examples" / "python-hello", tree)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "first"]):
        git(tree, env, *args)
    return tree


def push(platform: Platform, tree: Path, app: str) -> str:
    url = platform.api_url.replace("://", f"://git:{platform.env['SLIPWAY_API_KEY']}@")
    return git(tree, platform.env, "push", f"{url}/{app}.git", "main")


def rows(platform: Platform, scope: Scope, app_id: str, sql: str) -> str:
    url = platform.cli("config:get", "-a", "shop", "DATABASE_URL").strip()
    done = asyncio.run(psql(scope.network(app_id), url, sql))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def cli_json(platform: Platform, *args: str, timeout: float = 120) -> Any:
    """`slipway ARGS --json`: its standard output decoded (notes go to standard error)."""
    done = subprocess.run(
        [sys.executable, "-m", "slipway.cli.main", *args, "--json"],
        input="", capture_output=True, text=True, env=platform.env, cwd=platform.home,
        timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"slipway {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def lsn(text: str) -> int:
    """A PostgreSQL LSN ("0/3000060") as a number, to compare two."""
    high, low = text.strip().splitlines()[-1].split("/")
    return (int(high, 16) << 32) | int(low, 16)


def stored_past(platform: Platform, wanted: int) -> bool:
    """Whether the backup service has stored shop's WAL up to `wanted`."""
    wal = cli_json(platform, "pg:backups", "-a", "shop")["wal"]
    return bool(wal.get("last_lsn")) and lsn(wal["last_lsn"]) >= wanted


def app_id(platform: Platform, app: str) -> str:
    found: str = cli_json(platform, "apps:info", "-a", app)["id"]
    return found


def database_up(platform: Platform) -> bool:
    addons = cli_json(platform, "addons", "-a", "shop")
    return bool(addons) and all(a.get("state") == "provisioned" for a in addons)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    scope = new_scope()
    ports = {
        "SLIPWAY_NATS_PORT": free_port(),
        "SLIPWAY_API_PORT": free_port(),
        "SLIPWAY_REGISTRY_PORT": free_port(),
        "SLIPWAY_ROUTER_HTTPS_PORT": free_port(),
    }
    router = free_port()
    identity = age.generate_identity()
    key = tmp_path / "recovery.key"
    key.write_text(age.format_identity(identity) + "\n")
    key.chmod(0o600)
    env = {
        **os.environ,
        **{name: str(port) for name, port in ports.items()},
        "SLIPWAY_ROUTER_HTTP_PORT": str(router),
        "SLIPWAY_ROUTER_PORT": str(router),
        "SLIPWAY_API_URL": f"http://127.0.0.1:{ports['SLIPWAY_API_PORT']}",
        "SLIPWAY_SCOPE": scope.name,
        "SLIPWAY_LOG_FORMAT": "json",
        "SLIPWAY_BUILD_NETWORK": scope.build_network,
        "SLIPWAY_CONFIG_DIR": str(tmp_path / "cli"),
        "SLIPWAY_RECOVERY_RECIPIENTS": age.format_recipient(age.public_of(identity)),
        # The backup storage is the one thing kept off the lost machine.
        "SLIPWAY_BACKUP_STORAGE_DIR": str(tmp_path / "offsite"),
        "SLIPWAY_SNAPSHOT_INTERVAL": "0",
        "HOME": str(tmp_path),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    running: list[subprocess.Popen[bytes]] = []
    try:
        yield {"tmp": tmp_path, "scope": scope, "env": env, "key": key, "running": running}
    finally:
        for process in running:
            if process.poll() is None:
                stop(process)
        wipe_engine(scope, f"127.0.0.1:{ports['SLIPWAY_REGISTRY_PORT']}")
        for argv in (["-D", "INPUT", "-j", scope.chain], ["-F", scope.chain],
                     ["-X", scope.chain]):  # fmt: skip
            subprocess.run(["iptables", *argv], capture_output=True, check=False)


@pytest.mark.timeout(1500)
def test_a_fresh_home_comes_back_from_a_snapshot(world: dict[str, Any]) -> None:
    """Snapshot, lose the machine's state, restore, up: apps, data, audit, git, rollback."""
    tmp: Path = world["tmp"]
    scope: Scope = world["scope"]
    env: dict[str, str] = world["env"]
    first = start(tmp / "first", env)
    world["running"].append(first.process)
    bootstrap = json.loads((tmp / "first" / "gateway" / "bootstrap.json").read_text())
    first.env["SLIPWAY_API_KEY"] = bootstrap["token"]
    env["SLIPWAY_API_KEY"] = bootstrap["token"]

    # Team one: `shop`, with a database holding rows.
    first.cli("apps:create", "shop", "--no-remote")
    tree = source_tree(tmp / "src-shop", env)
    push(first, tree, "shop")
    first.cli("addons:create", "postgresql", "-a", "shop")
    wait_for(lambda: database_up(first), 180, "shop's database provisioned")
    shop = app_id(first, "shop")
    rows(first, scope, shop, "CREATE TABLE orders (n int, at timestamptz DEFAULT now());"
         " INSERT INTO orders (n) SELECT generate_series(1, 100)")  # fmt: skip
    first.cli("pg:backups:capture", "-a", "shop", timeout=600)
    rows(first, scope, shop, "INSERT INTO orders (n) SELECT generate_series(101, 150)")
    wait_for(lambda: answered(first, "shop.localhost"), 120, "shop through the router")
    first.cli("config:set", "-a", "shop", "GREETING=before")
    before = max(r["version"] for r in cli_json(first, "releases", "-a", "shop"))

    # Team two: `blog`, with a custom domain and a drain.
    first.cli("teams:create", "press")
    first.cli("apps:create", "blog", "--team", "press", "--no-remote")
    blog_tree = source_tree(tmp / "src-blog", env)
    push(first, blog_tree, "blog")
    first.cli("domains:add", "www.blog.test", "-a", "blog")
    first.cli("drains:add", "https://logs.example.test/blog-drain", "-a", "blog")
    wait_for(lambda: answered(first, "www.blog.test"), 120, "blog on its custom domain")

    for team_app in ("shop", "blog"):  # pins each team's audit key in the CLI's config
        assert cli_json(first, "audit", "-a", team_app, "--verify")["ok"]

    # The snapshot, then more rows: the database's own backups carry those.
    taken_at = time.monotonic()
    taken = cli_json(first, "admin:snapshot", timeout=900)
    snapshot_seconds = time.monotonic() - taken_at
    snapshot_done = datetime.now(UTC)
    rows(first, scope, shop, "INSERT INTO orders (n) SELECT generate_series(151, 160)")
    last_write = datetime.now(UTC)
    # Asked in a session of its own, after the commit: inside the INSERT's own transaction
    # (one psql -c is one transaction) the WAL write position is still before its records
    # and its commit, and the wait below passed before anything of them was streamed.
    written = rows(first, scope, shop, "SELECT pg_current_wal_lsn()")
    # The disaster strikes once the streamed WAL holds that commit: what is measured is
    # what a restore loses of what the backup service had, not the streamer's cadence.
    wait_for(lambda: stored_past(first, lsn(written)), 60, "the last commit's WAL stored")

    # The disaster: the machine's state and the engine's objects are gone.
    stop(first.process)
    registry = f"127.0.0.1:{env['SLIPWAY_REGISTRY_PORT']}"
    wipe_engine(scope, registry)
    shutil.rmtree(tmp / "first")
    assert registry_images(registry) == []  # the dynos' images must come from the registry
    lost_at = datetime.now(UTC)

    folder = Path(taken["location"])
    assert folder.is_dir(), taken
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    recovery_started = time.monotonic()
    restored = subprocess.run(
        [str(ROOT / "scripts" / "restore"), str(folder), "--identity", str(world["key"])],
        env={**env, "SLIPWAY_HOME": str(tmp / "second")},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "does not come back" in restored.stdout or "left out" in restored.stdout.lower()

    second = start(tmp / "second", env)
    world["running"].append(second.process)
    body = wait_for(lambda: answered(second, "shop.localhost"), 600, "shop after the restore")
    recovery_seconds = time.monotonic() - recovery_started
    assert "Hello from python-hello" in body
    wait_for(lambda: answered(second, "www.blog.test"), 300, "blog's domain after the restore")
    assert "logs.example.test/blog-drain" in second.cli("drains", "-a", "blog")

    wait_for(lambda: database_up(second), 600, "shop's database back")
    counted = wait_for(
        lambda: rows(second, scope, shop, "SELECT count(*), max(at) FROM orders"), 120, "the rows"
    )
    count, newest = counted.split("|")
    assert int(count) == 160, counted  # the 10 rows written after the snapshot too
    newest_row = datetime.fromisoformat(newest)

    # The CLI pinned each team's audit key before the disaster: the same keys must sign now.
    for team_app in ("shop", "blog"):
        verified = cli_json(second, "audit", "-a", team_app, "--verify")
        assert verified["ok"] and verified["entries"] > 3, verified

    (tree / "NEWS").write_text("after the restore\n")
    git(tree, env, "add", "-A")
    git(tree, env, "commit", "-qm", "after the restore")
    pushed = push(second, tree, "shop")  # no force: the restored history is its base
    assert "Released v" in pushed, pushed
    # The release of the first push, before GREETING was set: its image and config return.
    second.cli("releases:rollback", f"v{before - 1}", "-a", "shop")
    wait_for(
        lambda: (
            "GREETING" not in second.cli("config", "-a", "shop")
            and answered(second, "shop.localhost")
        ),
        180,
        "the pre-snapshot release live again",
    )

    figures = {
        "snapshot_seconds": round(snapshot_seconds, 1),
        "snapshot_bytes": size,
        "snapshot_parts": len(taken.get("parts", [])),
        "recovery_seconds_until_first_app_answers": round(recovery_seconds, 1),
        # Platform state (apps, config, releases) is as old as the snapshot when disaster
        # struck; the database's rows are as new as its continuous backups.
        "platform_state_age_at_loss_seconds": round((lost_at - snapshot_done).total_seconds(), 1),
        "database_rows_lost": 160 - int(count),
        "newest_row_restored_vs_last_write_seconds": round(
            (last_write - newest_row).total_seconds(), 1
        ),
    }
    print(f"\ndisaster recovery figures: {json.dumps(figures)}")
    if target := os.environ.get("SLIPWAY_DR_FIGURES"):
        Path(target).write_text(json.dumps(figures, indent=2) + "\n")
