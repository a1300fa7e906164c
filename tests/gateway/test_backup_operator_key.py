"""PATCH /teams/{team}/backup-keys/operator: a team opts in to the operator's recovery key.

The real gateway and keyring run on a real nats-server; the keyring is started with an
operator recovery recipient (SLIPWAY_RECOVERY_RECIPIENTS) unless a test says otherwise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from slipway.libs.crypto import age
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from slipway.services.keyring.app import create_service as create_keyring
from slipway.services.keyring.settings import KeyringSettings
from tests.gateway.conftest import Stack, run_in_background, stop

pytestmark = pytest.mark.integration

OPERATOR = "/teams/alice/backup-keys/operator"


@pytest.fixture
def operator_identity() -> bytes:
    """The operator's offline recovery identity (the keyring only ever sees its public half)."""
    return age.generate_identity()


@pytest.fixture
def recovery_recipients(operator_identity: bytes) -> str:
    """SLIPWAY_RECOVERY_RECIPIENTS for the keyring; a test parametrizes "" for none."""
    return age.format_recipient(age.public_of(operator_identity))


@pytest.fixture
async def keyring_service(
    nats_server: NatsServer, slipway_home: Path, recovery_recipients: str
) -> AsyncIterator[ServiceApp]:
    """The real keyring, configured with the operator's recovery recipients."""
    service = create_keyring(
        KeyringSettings(
            nats_url=nats_server.url,
            home=str(slipway_home),
            shutdown_grace=5.0,
            recovery_recipients=recovery_recipients,
        )
    )
    task = await run_in_background(service)
    yield service
    await stop(service, task)


async def test_admins_and_owners_switch_the_operator_key_and_members_cannot(
    stack: Stack, recovery_recipients: str
) -> None:
    """Off by default; an owner or admin turns it on and off (audited); a member is refused."""
    alice = await stack.user("alice@example.com")
    admin = await stack.user("ada@example.com")
    member = await stack.user("mo@example.com")
    await stack.join(alice, "alice", admin, "admin")
    await stack.join(alice, "alice", member, "member")
    listed = await member.ok("GET", "/teams/alice/backup-keys")
    assert listed["operator_enabled"] is False
    assert [k["kind"] for k in listed["keys"]] == ["platform"]

    refused = await member.patch(OPERATOR, {"enabled": True})
    assert refused.status == 403
    assert (await member.ok("GET", "/teams/alice/backup-keys"))["operator_enabled"] is False

    on = await alice.ok("PATCH", OPERATOR, {"enabled": True})
    assert on["operator_enabled"] is True and on["platform_enabled"] is True
    [operator] = [k for k in on["keys"] if k["kind"] == "operator"]
    assert operator["recipient"] == recovery_recipients
    assert operator["label"] == "operator recovery key"
    assert await member.ok("GET", "/teams/alice/backup-keys") == on

    assert (await member.patch(OPERATOR, {"enabled": False})).status == 403
    off = await admin.ok("PATCH", OPERATOR, {"enabled": False})
    assert off["operator_enabled"] is False
    assert [k["kind"] for k in off["keys"]] == ["platform"]

    log = await alice.ok("GET", "/teams/alice/audit")
    switched = [e for e in log["entries"] if e["action"] == "backup_key.operator"]
    assert len(switched) == 2


@pytest.mark.parametrize("recovery_recipients", [""])
async def test_opting_in_without_an_operator_key_is_refused(stack: Stack) -> None:
    """With no recovery recipient configured, turning it on is a 422 that says why."""
    alice = await stack.user("alice@example.com")
    refused = await alice.patch(OPERATOR, {"enabled": True})
    assert refused.status == 422
    assert "no recovery key configured" in refused.body["message"]
    listed = await alice.ok("GET", "/teams/alice/backup-keys")
    assert listed["operator_enabled"] is False
    log = await alice.ok("GET", "/teams/alice/audit")
    assert "backup_key.operator" not in [e["action"] for e in log["entries"]]
