"""The backup API of the gateway: listing, capture, download, restores, final backups, promote.

The real gateway and keyring run on a real nats-server; the backup service is a small
stand-in (`BackupDouble`) serving its RPCs on the bus, and the scheduler's answer to a
create is the `ADDON_CHANGED` event it would publish. The lead's end-to-end tests run the
real backup service.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from slipway.contracts import addons as ac
from slipway.contracts import backup as bc
from slipway.libs.bus import Bus
from slipway.libs.crypto import age
from slipway.libs.errors import Conflict, NotFound, SlipwayError, Unavailable
from tests.conftest import assert_eventually
from tests.gateway.conftest import Api, Stack

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class BackupDouble:
    """Answers the backup service's RPCs from memory, recording what it was asked."""

    def __init__(self) -> None:
        self.backups: dict[str, list[bc.BackupInfo]] = {}
        self.objects: dict[str, bytes] = {}
        self.captures: list[bc.CaptureBackup] = []
        self.capture_error: SlipwayError | None = None
        self.asked_objects: list[bc.ListObjects] = []
        self.read_error_after: int | None = None  # fail reads from this offset on

    def add(
        self, addon_id: str, *, ended: datetime, state: str = "completed", kind: str = "manual"
    ) -> bc.BackupInfo:
        mine = self.backups.setdefault(addon_id, [])
        num = len(mine) + 1
        info = bc.BackupInfo(
            id=f"b{num:03d}",
            num=num,
            addon_id=addon_id,
            addon_name="",
            app_id="",
            kind=kind,  # type: ignore[arg-type]
            state=state,  # type: ignore[arg-type]
            started_at=iso(ended - timedelta(seconds=5)),
            finished_at=iso(ended),
            size_bytes=1000 * num,
            stored_bytes=300 * num,
            start_lsn="0/2000028",
            end_lsn="0/2000100",
            timeline=1,
            recipients=["ab" * 32],
            tables={"public.items": 3},
        )
        mine.append(info)
        return info

    async def serve(self, bus: Bus) -> None:
        await bus.serve(bc.BACKUPS_LIST, self.list)
        await bus.serve(bc.BACKUP_CAPTURE, self.capture)
        await bus.serve(bc.BACKUP_GET, self.get)
        await bus.serve(bc.BACKUP_OBJECTS, self.list_objects)
        await bus.serve(bc.BACKUP_OBJECT_READ, self.read)

    async def list(self, request: bc.ListBackups) -> bc.Backups:
        mine = self.backups.get(request.addon_id, [])
        return bc.Backups(
            backups=mine,
            wal=bc.WalStatus(
                streaming=True, last_stored_at=iso(datetime.now(UTC)), last_lsn="0/3000000"
            ),
        )

    async def capture(self, request: bc.CaptureBackup) -> bc.Backup:
        self.captures.append(request)
        if self.capture_error is not None:
            raise self.capture_error
        return bc.Backup(
            backup=self.add(request.addon_id, ended=datetime.now(UTC), kind=request.kind)
        )

    async def get(self, request: bc.GetBackup) -> bc.Backup:
        for info in self.backups.get(request.addon_id, []):
            if info.num == request.num:
                return bc.Backup(backup=info)
        raise NotFound(f"no backup {request.num}")

    async def list_objects(self, request: bc.ListObjects) -> bc.Objects:
        self.asked_objects.append(request)
        return bc.Objects(
            objects=[
                bc.ObjectInfo(
                    key=key,
                    kind="base",
                    size=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                    backup_num=request.num,
                )
                for key, data in self.objects.items()
                if key.startswith(f"{request.addon_id}/")
            ]
        )

    async def read(self, request: bc.ReadObject) -> bc.ObjectChunk:
        # Like a store that trusts its caller: the gateway must check the add-on itself.
        data = self.objects.get(request.key)
        if data is None:
            raise NotFound(f"no object {request.key}")
        if self.read_error_after is not None and request.offset >= self.read_error_after:
            raise Unavailable("the storage went away")
        end = request.offset + min(request.length, bc.MAX_OBJECT_READ)
        return bc.ObjectChunk(data=data[request.offset : end], eof=end >= len(data))


@pytest.fixture
async def backups(stack: Stack, bus_factory: Callable[[str], Awaitable[Bus]]) -> BackupDouble:
    double = BackupDouble()
    await double.serve(await bus_factory("backup"))
    return double


async def provisioned(stack: Stack, api: Api, app: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create an add-on and answer for the scheduler that its database runs."""
    created: dict[str, Any] = await api.ok("POST", f"/apps/{app}/addons", body, status=202)
    await stack.bus.publish(
        ac.ADDON_CHANGED,
        ac.AddonChanged(
            addon_id=created["id"],
            app_id=created["app"]["id"],
            state="provisioned",
            host_id="host-1",
        ),
    )

    async def ready() -> dict[str, Any]:
        found: dict[str, Any] = await api.ok("GET", f"/apps/{app}/addons/{created['id']}")
        assert found["state"] == "provisioned"
        return found

    return await assert_eventually(ready)


async def config_of(api: Api, app: str) -> dict[str, str]:
    found: dict[str, str] = await api.ok("GET", f"/apps/{app}/config-vars")
    return found


async def test_list_capture_and_info_by_role(stack: Stack, backups: BackupDouble) -> None:
    """Viewers list and read backups but cannot capture; a member's capture is audited."""
    alice = await stack.user("alice@example.com")
    viewer = await stack.user("vera@example.com")
    await stack.app(alice, "hello")
    await stack.join(alice, "alice", viewer, "viewer")
    db = await provisioned(stack, alice, "hello", {"plan": "postgresql"})
    path = f"/apps/hello/addons/{db['name']}/backups"

    refused = await viewer.post(path)
    assert (refused.status, refused.error_id) == (403, "forbidden")
    assert backups.captures == []
    first = await alice.ok("POST", path, status=201)
    second = await alice.ok("POST", path, status=201)
    assert (first["id"], first["state"], first["kind"]) == ("b001", "completed", "manual")
    assert first["addon"] == {"id": db["id"], "name": db["name"]}
    assert [c.kind for c in backups.captures] == ["manual", "manual"]

    listed = await viewer.ok("GET", path)
    assert [b["id"] for b in listed] == [second["id"], "b001"]  # newest first
    assert listed[1]["size"] == 1000 and listed[1]["stored_size"] == 300
    assert (await viewer.ok("GET", f"{path}/b001"))["num"] == 1
    assert (await viewer.ok("GET", f"/apps/hello/addons/{db['id']}/backups/2"))["id"] == "b002"
    assert (await viewer.get(f"{path}/bogus")).status == 422
    wal = await viewer.ok("GET", f"/apps/hello/addons/{db['name']}/wal")
    assert wal["streaming"] is True and wal["last_lsn"] == "0/3000000"

    log = await alice.ok("GET", "/apps/hello/audit")
    captures = [e["details"] for e in log["entries"] if e["action"] == "backup.capture"]
    assert [c["backup"] for c in captures] == ["b001", "b002"]


async def test_objects_download_streams_and_stays_within_the_addon(
    stack: Stack, backups: BackupDouble
) -> None:
    """Objects list with URLs; a download streams all chunks; viewers and foreign keys refused."""
    alice = await stack.user("alice@example.com")
    viewer = await stack.user("vera@example.com")
    await stack.app(alice, "hello")
    await stack.join(alice, "alice", viewer, "viewer")
    db = await provisioned(stack, alice, "hello", {"plan": "postgresql"})
    other = await provisioned(stack, alice, "hello", {"plan": "postgresql"})
    backups.add(db["id"], ended=datetime.now(UTC))
    data = bytes(range(256)) * (10 * 1024) + b"tail"  # 2.5 MiB: three reads
    backups.objects[f"{db['id']}/base/000001/00000"] = data
    backups.objects[f"{other['id']}/base/000001/00000"] = b"the other database"

    listed = await viewer.ok(
        "GET", f"/apps/hello/addons/{db['name']}/backups/b001/objects?to_time=2026-01-01T00:00"
    )
    assert backups.asked_objects[-1].to_time == "2026-01-01T00:00:00+00:00"
    assert [o["key"] for o in listed] == [f"{db['id']}/base/000001/00000"]
    url = urlsplit(listed[0]["url"])
    path = url.path if not url.query else f"{url.path}?{url.query}"
    assert listed[0]["url"].startswith(stack.url)

    refused = await viewer.get(path)
    assert (refused.status, refused.error_id) == (403, "forbidden")
    async with stack.session.get(
        stack.url + path, headers={"Authorization": f"Bearer {alice.token}"}
    ) as response:
        assert response.status == 200
        got = await response.read()
    assert hashlib.sha256(got).hexdigest() == listed[0]["sha256"]
    assert len(got) == len(data) > 2 * MIB

    # A failure mid-stream cuts the connection: never a short body that looks complete.
    backups.read_error_after = MIB
    async with stack.session.get(
        stack.url + path, headers={"Authorization": f"Bearer {alice.token}"}
    ) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    backups.read_error_after = None

    foreign = f"{other['id']}%2Fbase%2F000001%2F00000"
    stolen = await alice.get(f"/apps/hello/addons/{db['name']}/backup-objects/{foreign}")
    assert (stolen.status, stolen.error_id) == (404, "not_found")
    missing = await alice.get(f"/apps/hello/addons/{db['name']}/backup-objects/{db['id']}%2Fx")
    assert missing.status == 404


async def test_restore_is_checked_and_carried_to_the_scheduler(
    stack: Stack, backups: BackupDouble
) -> None:
    """A restore needs a source of the app and a backup reaching the time; the event says it."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    await stack.app(alice, "elsewhere")
    db = await provisioned(stack, alice, "hello", {"plan": "postgresql"})
    foreign = await provisioned(stack, alice, "elsewhere", {"plan": "postgresql"})
    now = datetime.now(UTC).replace(microsecond=0)

    async def refused(config: dict[str, str], words: str) -> None:
        answer = await alice.post("/apps/hello/addons", {"plan": "postgresql", "config": config})
        assert (answer.status, answer.error_id) == (422, "invalid_params"), answer.body
        assert words in answer.body["message"], answer.body["message"]

    await refused({"restore_from": db["name"]}, "no completed backup")
    backups.add(db["id"], ended=now - timedelta(hours=2))
    backups.add(db["id"], ended=now - timedelta(hours=1), state="failed")
    await refused({"restore_from": foreign["name"]}, "Couldn't find the add-on")
    await refused({"restore_from": "nothing-here"}, "Couldn't find the add-on")
    await refused({"restore_from": db["name"], "to_time": iso(now + timedelta(hours=1))}, "future")
    await refused(
        {"restore_from": db["name"], "to_time": iso(now - timedelta(hours=3))}, "earliest"
    )
    await refused({"restore_from": db["name"], "to_time": "yesterday"}, "ISO 8601")
    await refused({"restore_from": db["name"], "backup": "b002"}, "no completed backup b002")
    await refused({"to_time": iso(now)}, "go with")

    naive = (now - timedelta(minutes=30)).replace(tzinfo=None).isoformat()
    made = await alice.ok(
        "POST",
        "/apps/hello/addons",
        {"plan": "postgresql:standard", "config": {"restore_from": db["id"], "to_time": naive}},
        status=202,
    )
    word = made["name"].split("-")[1].upper()
    assert made["config_vars"] == [f"SLIPWAY_POSTGRESQL_{word}_URL"]  # never DATABASE
    events = [e for e in await stack.events("addon") if "addon" in e]
    created = next(e["addon"] for e in events if e["addon"]["addon_id"] == made["id"])
    source = next(e["addon"] for e in events if e["addon"]["addon_id"] == db["id"])
    assert created["restore"] == {
        "source_addon_id": db["id"],
        "num": 0,
        "to_time": (now - timedelta(minutes=30)).isoformat(),
    }
    assert (created["database"], created["user"]) == (source["database"], source["user"])
    by_backup = await alice.ok(
        "POST",
        "/apps/hello/addons",
        {"plan": "postgresql", "config": {"restore_from": db["name"], "backup": "b001"}},
        status=202,
    )
    log = await alice.ok("GET", "/apps/hello/audit")
    restores = [
        e["details"] for e in log["entries"] if e["details"].get("addon") == by_backup["name"]
    ]
    assert restores[0]["restore_from"] == db["id"] and restores[0]["backup"] == "b001"


async def test_destroy_takes_a_final_backup_that_stays_restorable(
    stack: Stack, backups: BackupDouble
) -> None:
    """Destroying a running database backs it up first; its backups outlive it."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    db = await provisioned(stack, alice, "hello", {"plan": "postgresql"})
    gone = await alice.ok("DELETE", f"/addons/{db['id']}")
    assert gone["state"] == "deprovisioned"
    assert [(c.addon_id, c.kind) for c in backups.captures] == [(db["id"], "final")]
    await stack.bus.publish(
        ac.ADDON_CHANGED,
        ac.AddonChanged(addon_id=db["id"], app_id=db["app"]["id"], state="deprovisioned"),
    )

    async def forgotten() -> None:
        assert (await alice.get(f"/addons/{db['id']}")).status == 404
        assert await alice.ok("GET", "/apps/hello/addons") == []

    await assert_eventually(forgotten)
    listed = await alice.ok("GET", f"/apps/hello/addons/{db['name']}/backups")
    assert [(b["id"], b["kind"]) for b in listed] == [("b001", "final")]
    restored = await alice.ok(
        "POST",
        "/apps/hello/addons",
        {"plan": "postgresql", "config": {"restore_from": db["id"]}},
        status=202,
    )
    assert restored["state"] == "provisioning"
    log = await alice.ok("GET", "/apps/hello/audit")
    destroy = [e["details"] for e in log["entries"] if e["action"] == "addon.destroy"]
    assert destroy == [{"addon": db["name"], "plan": db["plan"]["name"], "final_backup": "b001"}]


async def test_destroy_is_refused_when_the_final_backup_fails(
    stack: Stack, backups: BackupDouble
) -> None:
    """A failed final backup is a 409 and an absent one a 503; the database stays."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    db = await provisioned(stack, alice, "hello", {"plan": "postgresql"})
    backups.capture_error = Conflict("the database did not answer")
    refused = await alice.delete(f"/apps/hello/addons/{db['name']}")
    assert (refused.status, refused.error_id) == (409, "conflict")
    assert "final backup" in refused.body["message"]
    assert "did not answer" in refused.body["message"]
    backups.capture_error = Unavailable("storage is full")
    down = await alice.delete(f"/apps/hello/addons/{db['name']}")
    assert (down.status, down.error_id) == (503, "unavailable")
    assert "not destroyed" in down.body["message"]
    kept = await alice.ok("GET", f"/apps/hello/addons/{db['name']}")
    assert kept["state"] == "provisioned"
    assert "DATABASE_URL" in await config_of(alice, "hello")


async def test_an_addon_that_never_ran_is_destroyed_without_a_backup(
    stack: Stack, backups: BackupDouble
) -> None:
    """Provisioning (or failed) add-ons have no data: destroy asks for no backup."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    created = await alice.ok("POST", "/apps/hello/addons", {"plan": "postgresql"}, status=202)
    backups.capture_error = Unavailable("would refuse")
    gone = await alice.ok("DELETE", f"/apps/hello/addons/{created['name']}")
    assert gone["state"] == "deprovisioned"
    assert backups.captures == []


async def test_promote_moves_database_url_in_one_release(
    stack: Stack, backups: BackupDouble
) -> None:
    """Attaching a database as DATABASE swaps it in; the old one keeps a name of its own."""
    alice = await stack.user("alice@example.com")
    viewer = await stack.user("vera@example.com")
    await stack.app(alice, "hello")
    await stack.join(alice, "alice", viewer, "viewer")
    first = await provisioned(stack, alice, "hello", {"plan": "postgresql"})
    second = await provisioned(stack, alice, "hello", {"plan": "postgresql"})
    before = await config_of(alice, "hello")
    second_var = second["config_vars"][0]
    releases = len(await alice.ok("GET", "/apps/hello/releases"))

    body = {"addon": second["name"], "name": "DATABASE"}
    refused = await viewer.post("/apps/hello/addon-attachments", body)
    assert refused.status == 403
    attached = await alice.ok("POST", "/apps/hello/addon-attachments", body, status=201)
    assert attached["name"] == "DATABASE" and attached["addon"]["id"] == second["id"]

    after = await config_of(alice, "hello")
    assert after["DATABASE_URL"] == before[second_var]
    word = first["name"].split("-")[1].upper()
    assert after[f"SLIPWAY_POSTGRESQL_{word}_URL"] == before["DATABASE_URL"]
    assert second_var not in after or second_var == f"SLIPWAY_POSTGRESQL_{word}_URL"
    assert len(await alice.ok("GET", "/apps/hello/releases")) == releases + 1
    names = {
        a["addon"]["name"]: a["name"]
        for a in await alice.ok("GET", "/apps/hello/addon-attachments")
    }
    assert names == {second["name"]: "DATABASE", first["name"]: f"SLIPWAY_POSTGRESQL_{word}"}
    taken = await alice.post(
        "/apps/hello/addon-attachments", {"addon": first["name"], "name": "DATABASE"}
    )
    assert taken.status == 201  # and back again
    assert (await config_of(alice, "hello"))["DATABASE_URL"] == before["DATABASE_URL"]


async def test_team_backup_keys(stack: Stack) -> None:
    """Admins add and remove customer keys and turn the platform key off; members read."""
    alice = await stack.user("alice@example.com")
    member = await stack.user("mo@example.com")
    await stack.join(alice, "alice", member, "member")
    listed = await member.ok("GET", "/teams/alice/backup-keys")
    assert listed["platform_enabled"] is True
    assert [k["kind"] for k in listed["keys"]] == ["platform"]

    recipient = age.format_recipient(age.public_of(age.generate_identity()))
    body = {"recipient": recipient, "label": "laptop"}
    assert (await member.post("/teams/alice/backup-keys", body)).status == 403
    added = await alice.ok("POST", "/teams/alice/backup-keys", body, status=201)
    mine = [k for k in added["keys"] if k["kind"] == "customer"]
    assert [(k["recipient"], k["label"]) for k in mine] == [(recipient, "laptop")]
    bad = await alice.post("/teams/alice/backup-keys", {"recipient": "ssh-ed25519 AAAA"})
    assert bad.status == 422

    off = await alice.ok("PATCH", "/teams/alice/backup-keys/platform", {"enabled": False})
    assert off["platform_enabled"] is False
    assert [k["kind"] for k in off["keys"]] == ["customer"]
    assert (
        await member.patch("/teams/alice/backup-keys/platform", {"enabled": True})
    ).status == 403
    on = await alice.ok("PATCH", "/teams/alice/backup-keys/platform", {"enabled": True})
    removed = await alice.ok("DELETE", f"/teams/alice/backup-keys/{mine[0]['fingerprint']}")
    assert [k["kind"] for k in removed["keys"]] == ["platform"] and on["platform_enabled"]

    log = await alice.ok("GET", "/teams/alice/audit")
    actions = [e["action"] for e in log["entries"]]
    for action in ("backup_key.add", "backup_key.platform", "backup_key.remove"):
        assert action in actions
