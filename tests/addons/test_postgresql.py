"""PostgreSQL add-ons end to end: gateway, keyring and scheduler on the real Docker engine.

Each test provisions a real database (a PostgreSQL start takes 2-5 s here).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiodocker
import pytest

from slipway.contracts.addons import LABEL_ADDON
from slipway.libs import appnet
from slipway.services.scheduler.addons import image, run_psql
from tests.addons.conftest import AddonStack, BackupStack
from tests.conftest import assert_eventually
from tests.gateway.conftest import Api

pytestmark = [pytest.mark.docker, pytest.mark.integration]

PROVISION_TIMEOUT = 90.0  # two CPUs shared with other suites: initdb can be slow


async def provisioned(owner: Api, app: str, plan: str = "postgresql:mini") -> dict[str, Any]:
    """Create an add-on on `app` and wait until the gateway says it is provisioned."""
    created = await owner.ok("POST", f"/apps/{app}/addons", {"plan": plan}, status=202)
    assert created["state"] == "provisioning"

    async def ready() -> dict[str, Any]:
        found: dict[str, Any] = await owner.ok("GET", f"/apps/{app}/addons/{created['name']}")
        if found["provision_message"].startswith("Provisioning failed"):
            raise RuntimeError(found["provision_message"])  # no use waiting longer
        assert found["state"] == "provisioned", found
        return found

    return await assert_eventually(ready, timeout=PROVISION_TIMEOUT, interval=0.25)


async def psql(network: str, url: str, sql: str) -> subprocess.CompletedProcess[str]:
    """Run `sql` with psql from a throwaway container on `network`; the URL goes on stdin."""
    return await asyncio.to_thread(
        subprocess.run,
        [
            "docker", "run", "--rm", "-i", "--network", network, "--log-driver", "none",
            "--entrypoint", "sh", image(), "-c", 'read -r url; exec psql "$url" -XAtc "$0"', sql,
        ],
        input=url + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip


async def database_container(app_id: str) -> dict[str, Any]:
    """`docker inspect` of the app's one database container."""
    async with aiodocker.Docker() as docker:
        listed = await docker.containers.list(
            all=True, filters={"label": [f"org.slipway.app={app_id}", LABEL_ADDON]}
        )
        assert len(listed) == 1, listed
        return await listed[0].show()


async def volumes_of(app_id: str) -> list[str]:
    async with aiodocker.Docker() as docker:
        listed = await docker.volumes.list(  # type: ignore[no-untyped-call]
            filters={"label": [f"org.slipway.app={app_id}", LABEL_ADDON]}
        )
    return [v["Name"] for v in listed.get("Volumes") or []]


async def test_create_attach_connect_destroy(backup_stack: BackupStack) -> None:
    """Provisioned → DATABASE_URL and a release → psql on the app network → destroy cleans up."""
    addon_stack = backup_stack.addons
    stack = addon_stack.stack
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "pgapp")
    addon = await provisioned(alice, "pgapp")
    assert addon["plan"]["name"] == "postgresql:mini"
    assert addon["config_vars"] == ["DATABASE_URL"]

    config = await alice.ok("GET", "/apps/pgapp/config-vars")
    url = config["DATABASE_URL"]
    parts = urlsplit(url)
    assert parts.scheme == "postgres"
    assert parts.hostname == addon["name"]
    assert parts.port == 5432
    releases = await alice.ok("GET", "/apps/pgapp/releases")
    assert releases[-1]["description"] == f"Attach DATABASE (@ref:{addon['name']})"

    attachments = await alice.ok("GET", "/apps/pgapp/addon-attachments")
    assert [(a["name"], a["addon"]["name"]) for a in attachments] == [("DATABASE", addon["name"])]
    assert (await alice.ok("GET", f"/addons/{addon['id']}"))["name"] == addon["name"]
    listed = await alice.ok("GET", "/apps/pgapp/addons")
    assert [a["id"] for a in listed] == [addon["id"]]

    network = addon_stack.scope.network(app["id"])
    answer = await psql(
        network, url, "CREATE TABLE t (n int); INSERT INTO t VALUES (41); SELECT n + 1 FROM t"
    )
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip().splitlines()[-1] == "42"

    info = await alice.ok("GET", f"/apps/pgapp/addons/{addon['name']}/database")
    assert info["running"] is True
    assert info["max_connections"] == 20
    assert info["tables"] == 1
    assert info["version"].startswith("15")
    assert info["size_bytes"] > 0

    gone = await alice.ok("DELETE", f"/apps/pgapp/addons/{addon['name']}")
    assert gone["state"] == "deprovisioned"
    assert "DATABASE_URL" not in await alice.ok("GET", "/apps/pgapp/config-vars")
    releases = await alice.ok("GET", "/apps/pgapp/releases")
    assert releases[-1]["description"] == f"Detach DATABASE (@ref:{addon['name']})"

    async def removed() -> None:
        async with aiodocker.Docker() as docker:
            left = await docker.containers.list(
                all=True, filters={"label": [f"org.slipway.app={app['id']}", LABEL_ADDON]}
            )
            networks = [n["Name"] for n in await docker.networks.list()]
        assert left == []
        assert network not in networks  # the database was the app's last container here
        assert await volumes_of(app["id"]) == []
        assert (await alice.get(f"/addons/{addon['id']}")).status == 404

    await assert_eventually(removed, timeout=30)
    assert (await alice.get("/apps/pgapp/addons")).body == []


async def test_database_container_is_hardened_and_holds_no_password(
    addon_stack: AddonStack,
) -> None:
    """No password nor verifier in inspect or config.v2.json; no caps, no port, no log."""
    stack = addon_stack.stack
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "pgsecret")
    await provisioned(alice, "pgsecret")
    url = (await alice.ok("GET", "/apps/pgsecret/config-vars"))["DATABASE_URL"]
    password = urlsplit(url).password
    assert password and len(password) >= 40

    info = await database_container(app["id"])
    async with aiodocker.Docker() as docker:
        code, verifier = await run_psql(
            docker.containers.container(info["Id"]),
            ["psql", "-XAt", "-h", "/run/postgresql", "-d", "postgres", "-c",
             "SELECT rolpassword FROM pg_authid WHERE rolname LIKE 'u%'"],
        )  # fmt: skip
    assert code == 0, verifier
    stored_key = verifier.split("$")[2].split(":")[0]
    assert verifier.startswith("SCRAM-SHA-256$") and stored_key

    inspected = json.dumps(info)
    on_disk = ""
    folder = Path("/var/lib/docker/containers") / info["Id"]
    for name in ("config.v2.json", "hostconfig.json"):
        on_disk += (folder / name).read_text()
    for text in (inspected, on_disk):
        assert password not in text
        # Any verifier: the gateway salts each one afresh.
        assert stored_key not in text and "SCRAM-SHA-256" not in text

    # The setup ran through `docker exec` with the SQL on stdin: the engine's events name every
    # exec's command line (exec_create), and none of them holds a secret.
    events = await asyncio.to_thread(
        subprocess.run,
        ["docker", "events", "--since", info["Created"], "--until", "0s",
         "--filter", f"container={info['Id']}", "--format", "{{json .}}"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "exec_create" in events.stdout
    assert "SCRAM-SHA-256" not in events.stdout and password not in events.stdout

    host = info["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["ReadonlyRootfs"] is True
    assert host["LogConfig"]["Type"] == "none"
    assert host["Memory"] == 256 * 1024 * 1024
    assert host["PidsLimit"] == 64
    assert info["Config"]["User"] == "999:999"
    assert not host["PortBindings"]
    assert not any(info["NetworkSettings"]["Ports"].values())
    assert list(info["NetworkSettings"]["Networks"]) == [addon_stack.scope.network(app["id"])]
    assert info["Config"]["Labels"]["org.slipway.managed"] == addon_stack.scope.managed


async def test_database_is_not_reachable_from_another_apps_network(
    addon_stack: AddonStack,
) -> None:
    """From another app's network neither the name nor the address of the database answers."""
    stack = addon_stack.stack
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "pgmine")
    async with aiodocker.Docker() as docker:
        other = await appnet.ensure_app_network(docker, "other-app-0000", scope=addon_stack.scope)
    addon = await provisioned(alice, "pgmine")
    url = (await alice.ok("GET", "/apps/pgmine/config-vars"))["DATABASE_URL"]
    info = await database_container(app["id"])
    address = info["NetworkSettings"]["Networks"][addon_stack.scope.network(app["id"])]["IPAddress"]
    assert address

    by_name = await psql(other, url + "&connect_timeout=3", "SELECT 1")
    assert by_name.returncode != 0
    by_address = await psql(
        other, url.replace(f"@{addon['name']}:", f"@{address}:") + "&connect_timeout=3", "SELECT 1"
    )
    assert by_address.returncode != 0
    # The same address answers from the app's own network: the refusals above are isolation.
    own = await psql(
        addon_stack.scope.network(app["id"]),
        url.replace(f"@{addon['name']}:", f"@{address}:"),
        "SELECT 1",
    )
    assert own.returncode == 0, own.stderr


async def test_wrong_password_is_refused_over_tcp(addon_stack: AddonStack) -> None:
    """TCP logins need the password (scram-sha-256): trust and peer are for the socket only."""
    stack = addon_stack.stack
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "pgauth")
    await provisioned(alice, "pgauth")
    url = (await alice.ok("GET", "/apps/pgauth/config-vars"))["DATABASE_URL"]
    parts = urlsplit(url)
    network = addon_stack.scope.network(app["id"])
    wrong = url.replace(f":{parts.password}@", ":not-the-password@")
    refused = await psql(network, wrong, "SELECT 1")
    assert refused.returncode != 0
    assert "password authentication failed" in refused.stderr
    as_superuser = url.replace(f"{parts.username}:{parts.password}@", "postgres:x@")
    assert (await psql(network, as_superuser, "SELECT 1")).returncode != 0
    not_super = await psql(network, url, "SELECT rolsuper FROM pg_roles WHERE rolname = user")
    assert not_super.stdout.strip() == "f", not_super.stderr


async def test_destroying_the_app_removes_its_databases(addon_stack: AddonStack) -> None:
    """An app's destruction takes its database containers and volumes with it."""
    stack = addon_stack.stack
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "pggone")
    await provisioned(alice, "pggone")
    assert await volumes_of(app["id"])
    await alice.ok("DELETE", "/apps/pggone")

    async def removed() -> None:
        async with aiodocker.Docker() as docker:
            left = await docker.containers.list(
                all=True, filters={"label": [f"org.slipway.app={app['id']}", LABEL_ADDON]}
            )
        assert left == []
        assert await volumes_of(app["id"]) == []

    await assert_eventually(removed, timeout=30)
