"""Backup recipients, file-key unwrapping and manifest signing through the real keyring."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from slipway.contracts.keyring import (
    AUDIT_SIGN,
    BACKUP_FILEKEYS_UNWRAP,
    BACKUP_KEY_ADD,
    BACKUP_KEY_REMOVE,
    BACKUP_MANIFEST_SIGN,
    BACKUP_OPERATOR_KEY_SET,
    BACKUP_PLATFORM_KEY_SET,
    BACKUP_RECIPIENTS_GET,
    MANIFEST_PREFIX,
    TEAM_SHRED,
    AddBackupKey,
    BackupRecipients,
    GetBackupRecipients,
    RemoveBackupKey,
    SetOperatorBackupKey,
    SetPlatformBackupKey,
    ShredTeam,
    SignAudit,
    SignManifest,
    UnwrapFileKeys,
)
from slipway.libs.auditchain import checkpoint_message
from slipway.libs.bus import Bus
from slipway.libs.crypto import age
from slipway.libs.crypto.errors import DecryptionFailed
from slipway.libs.errors import Forbidden, Gone, InvalidRequest, NotFound, SlipwayError
from slipway.libs.natsserver import NatsServer
from slipway.services.keyring.handlers import VAULT
from tests.conftest import assert_eventually
from tests.keyring.conftest import BusFactory, RunningKeyring, settings_for, start_keyring
from tests.security.bus.conftest import (  # noqa: F401 - fixtures
    Connect,
    connect_as,
    lowered,
)

pytestmark = pytest.mark.integration


def _customer() -> tuple[bytes, str]:
    identity = age.generate_identity()
    return identity, age.format_recipient(age.public_of(identity))


def _publics(found: BackupRecipients) -> list[bytes]:
    return [age.parse_recipient(r.recipient) for r in found.recipients]


async def _recipients(bus: Bus, team: str) -> BackupRecipients:
    return await bus.call(BACKUP_RECIPIENTS_GET, GetBackupRecipients(team_id=team))


async def _unwrap(bus: Bus, team: str, *sealed: bytes) -> list[bytes]:
    headers = [age.header_bytes(s) for s in sealed]
    reply = await bus.call(BACKUP_FILEKEYS_UNWRAP, UnwrapFileKeys(team_id=team, headers=headers))
    return reply.file_keys


def _operator_set(team: str, enabled: bool) -> SetOperatorBackupKey:
    return SetOperatorBackupKey(team_id=team, enabled=enabled)


@pytest.fixture
def operator_identity() -> bytes:
    """The operator's offline recovery identity: held by the test, never by the keyring."""
    return age.generate_identity()


@pytest.fixture
async def operator_keyring(
    nats_server: NatsServer, home: Path, operator_identity: bytes
) -> AsyncIterator[RunningKeyring]:
    """A keyring whose operator configured a recovery recipient (SLIPWAY_RECOVERY_RECIPIENTS)."""
    recipient = age.format_recipient(age.public_of(operator_identity))
    settings = msgspec.structs.replace(
        settings_for(nats_server, home), recovery_recipients=recipient
    )
    running = await start_keyring(settings)
    yield running
    if not running.task.done():
        await running.stop()


# ---- recipients --------------------------------------------------------------------------------


async def test_platform_key_is_made_on_first_use_and_kept(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """The first recipients call makes the team's platform key; later calls return the same."""
    gateway, backup = await bus_factory("gateway"), await bus_factory("backup")
    first = await _recipients(backup, team)
    assert first.platform_enabled
    [platform] = first.recipients
    assert platform.kind == "platform" and platform.recipient.startswith("age1")
    assert platform.fingerprint == age.fingerprint(age.parse_recipient(platform.recipient))
    await keyring.restart()
    assert await _recipients(gateway, team) == first


async def test_backup_unwraps_what_is_sealed_to_the_platform_key(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Sealed to the recipients, an object opens with the file key the keyring unwraps."""
    backup = await bus_factory("backup")
    sealed = age.seal(b"base backup", _publics(await _recipients(backup, team)))
    [file_key] = await _unwrap(backup, team, sealed)
    assert age.open_with_file_key(sealed, file_key) == b"base backup"


async def test_other_teams_and_customer_only_objects_give_no_file_key(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Headers the team's platform identity is not in get b"", in order, next to a real key."""
    backup = await bus_factory("backup")
    ours = age.seal(b"ours", _publics(await _recipients(backup, team)))
    theirs = age.seal(b"theirs", _publics(await _recipients(backup, team + "-other")))
    customer_only = age.seal(b"customer", [age.public_of(age.generate_identity())])
    keys = await _unwrap(backup, team, theirs, ours, customer_only)
    assert keys[0] == b"" and keys[2] == b""
    assert age.open_with_file_key(ours, keys[1]) == b"ours"
    assert await _unwrap(backup, team + "-never-seen", ours) == [b""]


async def test_customer_keys_are_added_listed_and_removed(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Customer keys join the platform key; the customer opens objects with their identity."""
    gateway, backup = await bus_factory("gateway"), await bus_factory("backup")
    identity, recipient = _customer()
    _, second = _customer()
    add = AddBackupKey(team_id=team, recipient=recipient, label="laptop")
    added = await gateway.call(BACKUP_KEY_ADD, add)
    assert await gateway.call(BACKUP_KEY_ADD, add) == added  # a retry changes nothing
    await gateway.call(BACKUP_KEY_ADD, AddBackupKey(team_id=team, recipient=second))
    listed = await _recipients(backup, team)
    assert [(r.kind, r.label) for r in listed.recipients] == [
        ("platform", "platform"),
        ("customer", "laptop"),
        ("customer", ""),
    ]
    assert listed.recipients[1].recipient == recipient
    sealed = age.seal(b"dump", _publics(listed))
    assert age.open_sealed(sealed, [identity]) == b"dump"
    remove = RemoveBackupKey(team_id=team, fingerprint=listed.recipients[2].fingerprint)
    after = await gateway.call(BACKUP_KEY_REMOVE, remove)
    assert [r.recipient for r in after.recipients][1:] == [recipient]
    with pytest.raises(NotFound):
        await gateway.call(BACKUP_KEY_REMOVE, remove)


@pytest.mark.parametrize(
    "recipient",
    ["", "age1qqqq", "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"],
    ids=["empty", "short", "identity"],
)
async def test_invalid_customer_key_is_refused(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str, recipient: str
) -> None:
    """Anything but an age1... X25519 recipient is an invalid request (a secret key above all)."""
    gateway = await bus_factory("gateway")
    with pytest.raises(InvalidRequest):
        await gateway.call(BACKUP_KEY_ADD, AddBackupKey(team_id=team, recipient=recipient))


async def test_the_platform_key_cannot_pose_as_a_customer_key(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Adding the team's own platform recipient as a customer key is refused."""
    gateway = await bus_factory("gateway")
    [platform] = (await _recipients(gateway, team)).recipients
    with pytest.raises(InvalidRequest, match="platform's own"):
        await gateway.call(BACKUP_KEY_ADD, AddBackupKey(team_id=team, recipient=platform.recipient))


async def test_platform_key_off_needs_a_customer_key_and_hides_it(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Off is refused without a customer key; once off, the platform key is not listed."""
    gateway, backup = await bus_factory("gateway"), await bus_factory("backup")
    off = SetPlatformBackupKey(team_id=team, enabled=False)
    with pytest.raises(InvalidRequest, match="before turning the platform key off"):
        await gateway.call(BACKUP_PLATFORM_KEY_SET, off)
    before = await _recipients(backup, team)
    sealed_before = age.seal(b"old", _publics(before))
    _, recipient = _customer()
    await gateway.call(BACKUP_KEY_ADD, AddBackupKey(team_id=team, recipient=recipient))
    turned_off = await gateway.call(BACKUP_PLATFORM_KEY_SET, off)
    assert not turned_off.platform_enabled
    assert [r.recipient for r in turned_off.recipients] == [recipient]
    assert await _recipients(backup, team) == turned_off
    # Objects sealed while it was on still restore.
    [file_key] = await _unwrap(backup, team, sealed_before)
    assert age.open_with_file_key(sealed_before, file_key) == b"old"
    on = SetPlatformBackupKey(team_id=team, enabled=True)
    assert (await gateway.call(BACKUP_PLATFORM_KEY_SET, on)).recipients[0] == before.recipients[0]


async def test_last_customer_key_stays_while_the_platform_key_is_off(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Removing the only recipient left is refused: backups would be sealed to no one."""
    gateway = await bus_factory("gateway")
    _, recipient = _customer()
    added = await gateway.call(BACKUP_KEY_ADD, AddBackupKey(team_id=team, recipient=recipient))
    await gateway.call(BACKUP_PLATFORM_KEY_SET, SetPlatformBackupKey(team_id=team, enabled=False))
    remove = RemoveBackupKey(team_id=team, fingerprint=added.recipients[1].fingerprint)
    with pytest.raises(InvalidRequest, match="only backup key"):
        await gateway.call(BACKUP_KEY_REMOVE, remove)


# ---- the operator's recovery key ---------------------------------------------------------------


async def test_operator_key_is_off_by_default(
    operator_keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A configured operator recovery key is not a recipient until the team opts in."""
    found = await _recipients(await bus_factory("backup"), team)
    assert not found.operator_enabled
    assert [r.kind for r in found.recipients] == ["platform"]


async def test_operator_key_is_listed_once_the_team_opts_in(
    operator_keyring: RunningKeyring,
    bus_factory: BusFactory,
    team: str,
    operator_identity: bytes,
) -> None:
    """Opted in, the operator's key is listed (and audited); what is sealed opens with it."""
    gateway, backup = await bus_factory("gateway"), await bus_factory("backup")
    turned_on = await gateway.call(BACKUP_OPERATOR_KEY_SET, _operator_set(team, True))
    assert turned_on.operator_enabled and turned_on.platform_enabled
    public = age.public_of(operator_identity)
    assert [(r.kind, r.label, r.fingerprint, r.recipient) for r in turned_on.recipients][1:] == [
        ("operator", "operator recovery key", age.fingerprint(public), age.format_recipient(public))
    ]
    assert await _recipients(backup, team) == turned_on
    sealed = age.seal(b"dump", _publics(turned_on))
    assert age.open_sealed(sealed, [operator_identity]) == b"dump"
    [row] = [r for r in await operator_keyring.audit(team) if r.operation == "backup.operator.set"]
    assert (row.caller, row.outcome, row.detail) == ("gateway", "ok", "enabled=true")


async def test_operator_key_is_gone_once_the_team_opts_out(
    operator_keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Opted out again, the operator's key is no longer a recipient of new objects."""
    gateway, backup = await bus_factory("gateway"), await bus_factory("backup")
    before = await _recipients(backup, team)
    await gateway.call(BACKUP_OPERATOR_KEY_SET, _operator_set(team, True))
    turned_off = await gateway.call(BACKUP_OPERATOR_KEY_SET, _operator_set(team, False))
    assert not turned_off.operator_enabled
    assert "operator" not in [r.kind for r in turned_off.recipients]
    assert turned_off == before
    await operator_keyring.restart()
    assert await _recipients(backup, team) == before


async def test_opting_in_is_refused_when_the_operator_has_no_key(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Without SLIPWAY_RECOVERY_RECIPIENTS there is nothing to seal to: InvalidRequest says so."""
    gateway = await bus_factory("gateway")
    with pytest.raises(InvalidRequest, match="no recovery key configured"):
        await gateway.call(BACKUP_OPERATOR_KEY_SET, _operator_set(team, True))
    found = await _recipients(gateway, team)
    assert not found.operator_enabled and [r.kind for r in found.recipients] == ["platform"]
    records = await keyring.audit(team)
    assert (records[0].operation, records[0].outcome) == ("backup.operator.set", "invalid_request")


async def test_the_operator_key_does_not_count_as_the_teams_own(
    operator_keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Opted in, a team still needs a key of its own to turn the platform key off or keep it."""
    gateway = await bus_factory("gateway")
    await gateway.call(BACKUP_OPERATOR_KEY_SET, _operator_set(team, True))
    off = SetPlatformBackupKey(team_id=team, enabled=False)
    with pytest.raises(InvalidRequest, match="before turning the platform key off"):
        await gateway.call(BACKUP_PLATFORM_KEY_SET, off)
    _, recipient = _customer()
    added = await gateway.call(BACKUP_KEY_ADD, AddBackupKey(team_id=team, recipient=recipient))
    await gateway.call(BACKUP_PLATFORM_KEY_SET, off)
    remove = RemoveBackupKey(team_id=team, fingerprint=added.recipients[1].fingerprint)
    with pytest.raises(InvalidRequest, match="only backup key"):
        await gateway.call(BACKUP_KEY_REMOVE, remove)


async def test_unwrap_never_uses_the_operator_key(
    operator_keyring: RunningKeyring,
    bus_factory: BusFactory,
    team: str,
    operator_identity: bytes,
) -> None:
    """The keyring never holds the operator's identity: objects only it opens get no file key."""
    gateway, backup = await bus_factory("gateway"), await bus_factory("backup")
    _, recipient = _customer()
    await gateway.call(BACKUP_KEY_ADD, AddBackupKey(team_id=team, recipient=recipient))
    await gateway.call(BACKUP_PLATFORM_KEY_SET, SetPlatformBackupKey(team_id=team, enabled=False))
    found = await gateway.call(BACKUP_OPERATOR_KEY_SET, _operator_set(team, True))
    assert [r.kind for r in found.recipients] == ["customer", "operator"]
    sealed = age.seal(b"customer and operator", _publics(found))
    operator_only = age.seal(b"operator", [age.public_of(operator_identity)])
    assert await _unwrap(backup, team, sealed, operator_only) == [b"", b""]
    home = Path(operator_keyring.settings.home)
    held = b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
    assert operator_identity not in held
    assert age.format_identity(operator_identity).encode() not in held


async def test_only_the_gateway_sets_the_operator_key(
    operator_keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """The backup service (or any other) cannot opt a team in; the refusal is audited."""
    backup = await bus_factory("backup")
    with pytest.raises(Forbidden, match=r"backup may not backup\.operator\.set"):
        await backup.call(BACKUP_OPERATOR_KEY_SET, _operator_set(team, True))
    assert not (await _recipients(backup, team)).operator_enabled


# ---- unwrapping --------------------------------------------------------------------------------


async def test_a_tampered_header_is_refused(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A header whose MAC does not match fails the whole call, naming which header."""
    backup = await bus_factory("backup")
    sealed = age.seal(b"x", _publics(await _recipients(backup, team)))
    header = bytearray(age.header_bytes(sealed))
    header[-5] ^= 0x01
    good = age.header_bytes(sealed)
    with pytest.raises(DecryptionFailed, match="header 1"):
        await backup.call(
            BACKUP_FILEKEYS_UNWRAP, UnwrapFileKeys(team_id=team, headers=[good, bytes(header)])
        )


async def test_too_many_or_too_large_headers_are_refused(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A call is bounded: at most 1024 headers of at most 16 KiB."""
    backup = await bus_factory("backup")
    for headers in ([b"x"] * 1025, [b"x" * (16 * 1024 + 1)]):
        with pytest.raises(InvalidRequest):
            await backup.call(BACKUP_FILEKEYS_UNWRAP, UnwrapFileKeys(team_id=team, headers=headers))


async def test_a_backup_identity_moved_to_another_team_does_not_open(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """The wrapped identity is bound to its team: copied to another team's row, it fails."""
    backup = await bus_factory("backup")
    victim, thief = team, team + "-thief"
    sealed = age.seal(b"victim data", _publics(await _recipients(backup, victim)))
    await _recipients(backup, thief)
    db = sqlite3.connect(keyring.settings.db_path())
    try:
        with db:
            db.execute(
                "UPDATE backup_identities SET (public_key, wrapped) ="
                " (SELECT public_key, wrapped FROM backup_identities WHERE team_id = ?)"
                " WHERE team_id = ?",
                (victim, thief),
            )
    finally:
        db.close()
    with pytest.raises(SlipwayError) as caught:
        await _unwrap(backup, thief, sealed)
    assert caught.value.code == "internal" and "does not open" in caught.value.message


async def test_the_identity_is_stored_wrapped(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """The platform identity's raw bytes appear nowhere in the keyring's database files."""
    backup = await bus_factory("backup")
    await _recipients(backup, team)
    stored = await keyring.store.backup_identity(team)
    assert stored is not None
    identity = keyring.app[VAULT].backup.open_identity(stored)
    assert age.public_of(identity) == stored.public_key
    path = keyring.settings.db_path()
    on_disk = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    assert stored.wrapped in on_disk and identity not in on_disk


# ---- manifest signatures ----------------------------------------------------------------------


async def test_manifest_signature_verifies_with_the_audit_key(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A manifest is signed with the Ed25519 audit key, and the signature verifies."""
    backup = await bus_factory("backup")
    message = MANIFEST_PREFIX + team.encode() + b'\n{"kind":"base","prev":""}'
    signed = await backup.call(BACKUP_MANIFEST_SIGN, SignManifest(team_id=team, message=message))
    assert signed.key_id == keyring.app[VAULT].audit_key().key_id
    Ed25519PublicKey.from_public_bytes(signed.public_key).verify(signed.signature, message)


@pytest.mark.parametrize("which", ["no-prefix", "other-team", "checkpoint", "old-prefix"])
async def test_manifest_sign_refuses_anything_but_a_manifest_of_the_team(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str, which: str
) -> None:
    """Only `slipway-backup-manifest/1\\n<team>\\n...` is signed: never an audit checkpoint."""
    backup = await bus_factory("backup")
    message = {
        "no-prefix": b'{"kind":"base"}',
        "other-team": MANIFEST_PREFIX + b"team-other\n{}",
        "checkpoint": checkpoint_message(team, 3, "ab" * 32),
        "old-prefix": b"slipway-backup-manifest/0\n" + team.encode() + b"\n{}",
    }[which]
    with pytest.raises(InvalidRequest, match="backup manifests only"):
        await backup.call(BACKUP_MANIFEST_SIGN, SignManifest(team_id=team, message=message))


async def test_a_manifest_signature_never_passes_for_a_checkpoint(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """audit.sign refuses a manifest, and a manifest signature fails as a checkpoint's."""
    gateway, backup = await bus_factory("gateway"), await bus_factory("backup")
    manifest = MANIFEST_PREFIX + team.encode() + b"\n1\n" + b"ab" * 32
    with pytest.raises(InvalidRequest, match="audit checkpoints only"):
        await gateway.call(AUDIT_SIGN, SignAudit(team_id=team, message=manifest))
    signed = await backup.call(BACKUP_MANIFEST_SIGN, SignManifest(team_id=team, message=manifest))
    public = Ed25519PublicKey.from_public_bytes(signed.public_key)
    with pytest.raises(InvalidSignature):
        public.verify(signed.signature, checkpoint_message(team, 1, "ab" * 32))


# ---- policy, audit, shredding ------------------------------------------------------------------


@pytest.mark.parametrize("caller", ["scheduler", "builder", "gateway", "log-shipper"])
async def test_only_the_backup_service_unwraps_file_keys(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str, caller: str
) -> None:
    """Any other service asking for file keys is refused by the keyring (and audited)."""
    backup, other = await bus_factory("backup"), await bus_factory(caller)
    sealed = age.seal(b"x", _publics(await _recipients(backup, team)))
    with pytest.raises(Forbidden, match=rf"{caller} may not backup\.filekeys\.unwrap"):
        await _unwrap(other, team, sealed)
    records = await keyring.audit(team)
    assert (records[-1].caller, records[-1].operation, records[-1].outcome) == (
        caller,
        "backup.filekeys.unwrap",
        "forbidden",
    )


@pytest.mark.parametrize("service", ["scheduler", "builder"])
async def test_nats_server_refuses_file_key_requests_from_undeclared_services(
    connect_as: Connect,  # noqa: F811 - the fixture
    service: str,
) -> None:
    """Under the generated permissions, nats-server itself drops the request; backup passes."""
    subject = BACKUP_FILEKEYS_UNWRAP.subject
    client = await connect_as(service)
    await client.nc.publish(subject, b"{}")

    def refused() -> None:
        assert client.refusals.published() == lowered({subject})

    await assert_eventually(refused)
    backup = await connect_as("backup")
    await backup.nc.publish(subject, b"{}")
    await backup.nc.flush()
    await backup.nc.flush()  # a refusal would arrive before the second PONG
    assert backup.refusals.seen == set() and backup.refusals.other == []


async def test_only_the_gateway_manages_keys_and_only_backup_signs_manifests(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """The backup service cannot add keys or turn the platform key off; the gateway cannot sign."""
    gateway, backup = await bus_factory("gateway"), await bus_factory("backup")
    _, recipient = _customer()
    with pytest.raises(Forbidden):
        await backup.call(BACKUP_KEY_ADD, AddBackupKey(team_id=team, recipient=recipient))
    with pytest.raises(Forbidden):
        await backup.call(
            BACKUP_PLATFORM_KEY_SET, SetPlatformBackupKey(team_id=team, enabled=False)
        )
    with pytest.raises(Forbidden):
        await backup.call(BACKUP_KEY_REMOVE, RemoveBackupKey(team_id=team, fingerprint="ab"))
    message = MANIFEST_PREFIX + team.encode() + b"\n{}"
    with pytest.raises(Forbidden):
        await gateway.call(BACKUP_MANIFEST_SIGN, SignManifest(team_id=team, message=message))


async def test_every_backup_operation_is_audited(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Each call leaves one audit row with its outcome and a detail, never key material."""
    gateway, backup = await bus_factory("gateway"), await bus_factory("backup")
    identity, recipient = _customer()
    fingerprint = age.fingerprint(age.public_of(identity))
    await gateway.call(BACKUP_KEY_ADD, AddBackupKey(team_id=team, recipient=recipient))
    listed = await _recipients(backup, team)
    await gateway.call(BACKUP_PLATFORM_KEY_SET, SetPlatformBackupKey(team_id=team, enabled=False))
    sealed = age.seal(b"x", _publics(listed))
    [file_key] = await _unwrap(backup, team, sealed)
    await backup.call(
        BACKUP_MANIFEST_SIGN,
        SignManifest(team_id=team, message=MANIFEST_PREFIX + team.encode() + b"\n{}"),
    )
    await gateway.call(BACKUP_PLATFORM_KEY_SET, SetPlatformBackupKey(team_id=team, enabled=True))
    await gateway.call(BACKUP_KEY_REMOVE, RemoveBackupKey(team_id=team, fingerprint=fingerprint))
    rows = [(r.caller, r.operation, r.outcome, r.detail) for r in await keyring.audit(team)]
    assert [row[:3] for row in rows] == [
        ("gateway", "backup.key.add", "ok"),
        ("backup", "backup.recipients.get", "ok"),
        ("gateway", "backup.platform.set", "ok"),
        ("backup", "backup.filekeys.unwrap", "ok"),
        ("backup", "backup.manifest.sign", "ok"),
        ("gateway", "backup.platform.set", "ok"),
        ("gateway", "backup.key.remove", "ok"),
    ]
    assert rows[0][3] == f"fingerprint={fingerprint}"
    assert rows[2][3] == "enabled=false"
    assert rows[3][3] == "headers=1 unwrapped=1"
    assert all(file_key.hex() not in row[3] for row in rows)


async def test_a_shredded_team_refuses_every_backup_operation(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """After a shred every backup RPC is Gone, and the platform identity is destroyed."""
    gateway, backup = await bus_factory("gateway"), await bus_factory("backup")
    _, recipient = _customer()
    added = await gateway.call(BACKUP_KEY_ADD, AddBackupKey(team_id=team, recipient=recipient))
    sealed = age.seal(b"x", _publics(added))
    wrapped = await keyring.store.backup_identity(team)
    assert wrapped is not None
    await gateway.call(TEAM_SHRED, ShredTeam(team_id=team, reason="customer left"))
    calls = [
        (backup, BACKUP_RECIPIENTS_GET, GetBackupRecipients(team_id=team)),
        (gateway, BACKUP_KEY_ADD, AddBackupKey(team_id=team, recipient=recipient)),
        (gateway, BACKUP_KEY_REMOVE, RemoveBackupKey(team_id=team, fingerprint="ab")),
        (gateway, BACKUP_PLATFORM_KEY_SET, SetPlatformBackupKey(team_id=team, enabled=True)),
        (gateway, BACKUP_OPERATOR_KEY_SET, _operator_set(team, False)),
        (
            backup,
            BACKUP_FILEKEYS_UNWRAP,
            UnwrapFileKeys(team_id=team, headers=[age.header_bytes(sealed)]),
        ),
        (
            backup,
            BACKUP_MANIFEST_SIGN,
            SignManifest(team_id=team, message=MANIFEST_PREFIX + team.encode() + b"\n{}"),
        ),
    ]
    for bus, rpc, request in calls:
        with pytest.raises(Gone):
            await bus.call(rpc, request)  # type: ignore[arg-type]
    assert await keyring.store.backup_identity(team) is None
    assert await keyring.store.backup_keys(team) == []
    db = sqlite3.connect(keyring.settings.db_path())
    try:  # a refused call wrote nothing for the shredded team
        settings = db.execute("SELECT * FROM backup_settings WHERE team_id = ?", (team,))
        assert settings.fetchall() == []
    finally:
        db.close()
    path = keyring.settings.db_path()
    on_disk = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    assert wrapped.wrapped not in on_disk
