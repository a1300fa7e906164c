"""`slipway admin:snapshot`, `admin:snapshots`, `admin:snapshot:verify` against the real stack.

The gateway, keyring and backup service are real; the one exporting service is a
`FakeExporter` on the real contracts (tests/backup/snapshot_exporters.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from slipway.libs.crypto import age
from slipway.libs.snapshot import manifest as mf
from tests.cli.test_cli_integration import Shell
from tests.gateway import conftest as gateway_fixtures
from tests.gateway.test_snapshots_api import Snapshots, snapshots

pytestmark = pytest.mark.integration

slipway_home = gateway_fixtures.slipway_home
keyring_service = gateway_fixtures.keyring_service
gateway_service = gateway_fixtures.gateway_service
stack = gateway_fixtures.stack
__all__ = ["snapshots"]


async def _admin(snapshots: Snapshots, isolated: Path) -> Shell:
    shell = Shell(cwd=isolated)
    stack = snapshots.stack
    await shell.ok("login", "--api-url", stack.url, stdin=f"{stack.admin.token}\n")
    return shell


async def test_an_admin_takes_lists_and_verifies_snapshots(
    snapshots: Snapshots, isolated: Path, tmp_path: Path
) -> None:
    """admin:snapshot waits and prints id, size, parts, time; the others find and check it."""
    admin = await _admin(snapshots, isolated)
    taken = await admin.ok("admin:snapshot")
    assert "Taking snapshot s" in taken.err
    fields = dict(line.split(":", 1) for line in taken.out.splitlines())
    snapshot_id = fields["id"].strip()
    assert fields["parts"].strip() == "1"
    assert fields["size"].strip().endswith(("kB", "B")) and fields["time"].strip().endswith(" s")

    listed = await admin.ok("admin:snapshots")
    assert snapshot_id in listed.out and "completed" in listed.out

    checked = await admin.ok("admin:snapshot:verify", snapshot_id)
    assert "2 pieces" in checked.out and "match the manifest" in checked.out

    # A copy elsewhere (a USB disk): checked here, against the keyring's key.
    copy = tmp_path / "usb" / snapshot_id
    shutil.copytree(snapshots.settings.storage_root() / mf.STORAGE_PREFIX / snapshot_id, copy)
    signer = json.loads((await admin.ok("admin:snapshots", "--json")).out)[0]["signer"]
    local = await admin.ok("admin:snapshot:verify", "--path", str(copy), "--signer", signer)
    assert f"{snapshot_id}: signature, 2 pieces" in local.out

    # A trial restore with an identity the snapshot is not sealed to is refused, clearly.
    stranger = tmp_path / "stranger.key"
    stranger.write_text(age.format_identity(age.generate_identity()) + "\n")
    wrong = await admin.run(
        "admin:snapshot:verify", "--path", str(copy), "--identity", str(stranger)
    )
    assert wrong.code == 1
    assert "The trial restore failed" in wrong.err and str(stranger) in wrong.err

    piece = copy / "scheduler" / "001.age"
    piece.write_bytes(piece.read_bytes()[:-1] + bytes([piece.read_bytes()[-1] ^ 1]))
    damaged = await admin.run("admin:snapshot:verify", "--path", str(copy), "--signer", signer)
    assert damaged.code == 1
    assert "scheduler/001.age: its SHA-256 differs" in damaged.out
    assert "is damaged: 1 problem" in damaged.err


async def test_a_copy_signed_by_another_key_is_refused(
    snapshots: Snapshots, isolated: Path, tmp_path: Path
) -> None:
    """--signer names the key to trust: the keyring's key of another platform is not it."""
    admin = await _admin(snapshots, isolated)
    snapshot_id = dict(
        line.split(":", 1) for line in (await admin.ok("admin:snapshot")).out.splitlines()
    )["id"].strip()
    folder = snapshots.settings.storage_root() / mf.STORAGE_PREFIX / snapshot_id
    other = age.public_of(age.generate_identity()).hex()  # 32 bytes of hex, not this keyring's
    refused = await admin.run("admin:snapshot:verify", "--path", str(folder), "--signer", other)
    assert refused.code == 1
    assert "not by a key you trust" in refused.err


async def test_a_user_who_is_not_an_admin_cannot_take_one(
    snapshots: Snapshots, isolated: Path
) -> None:
    """The command says why, and nothing is exported."""
    alice = await snapshots.stack.user("alice@example.com")
    shell = Shell(cwd=isolated)
    await shell.ok("login", "--api-url", snapshots.stack.url, stdin=f"{alice.token}\n")
    refused = await shell.run("admin:snapshot")
    assert refused.code == 1
    assert "Only a platform admin can do this." in refused.err
    assert snapshots.exporter.exports == 0
