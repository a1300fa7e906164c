"""Per-app log retention: set through the gateway, applied by every log-shipper, swept by age."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from slipway.libs.storage import Database
from slipway.services.log_shipper import store
from slipway.services.log_shipper.store import BatchRow
from tests.conftest import assert_eventually
from tests.gateway.conftest import Stack
from tests.log_shipper.conftest import RunningShipper, ShipperFactory

pytestmark = [pytest.mark.integration, pytest.mark.alone]

DAY = 86400.0


def old_batch(app_id: str, name: str, seq: int, age_days: float) -> BatchRow:
    """A stored batch whose lines are `age_days` old (the sweep looks at timestamps only)."""
    at = time.time() - age_days * DAY
    return BatchRow(
        id=name,
        app_id=app_id,
        team_id="t",
        host="h1",
        first_seq=seq,
        last_seq=seq,
        first_ts=at,
        last_ts=at,
        lines=1,
        size=100,
        sealed_to=None,
        data=b"\x02sealed",
    )


async def stored_retention(db: Database, app_id: str) -> tuple[float | None, int]:
    row = await db.fetchone(
        "SELECT retention_seconds, retention_revision FROM apps WHERE app_id = ?", (app_id,)
    )
    assert row is not None, f"the log-shipper has no row for {app_id}"
    return row[0], int(row[1])


async def sweep_keeps(running: RunningShipper, batches: list[BatchRow]) -> set[str]:
    """Store `batches`, sweep as the shipper's loop does, and say which of them are left."""
    shipper = running.shipper
    async with shipper.db.transaction() as conn:
        for row in batches:
            await store.save_batch(conn, row)
    await store.sweep(
        shipper.db,
        default_retention=shipper.settings.retention_days * DAY,
        max_bytes=shipper.settings.max_bytes_per_app,
    )
    left = {str(r[0]) for r in await shipper.db.fetchall("SELECT id FROM batches")}
    return left & {row.id for row in batches}


async def test_a_retention_set_through_the_api_is_applied_and_swept(
    stack: Stack, shipper_settings: ShipperFactory, start_shipper: Any
) -> None:
    """PATCH 2 days: the log-shipper stores it and its sweep drops that app's older batches only."""
    running = await start_shipper(shipper_settings())
    alice = await stack.user("alice@example.com")
    short = await stack.app(alice, "keepshort")
    other = await stack.app(alice, "keepdefault")
    assert await alice.ok("GET", "/apps/keepshort/log-settings") == {
        "retention_days": 7.0,
        "default": True,
    }
    answer = await alice.ok("PATCH", "/apps/keepshort/log-settings", {"retention_days": 2})
    assert answer == {"retention_days": 2.0, "default": False}
    assert await alice.ok("GET", "/apps/keepshort/log-settings") == answer

    async def applied() -> None:
        assert await stored_retention(running.shipper.db, short["id"]) == (2 * DAY, 1)

    await assert_eventually(applied, timeout=20, interval=0.1)
    left = await sweep_keeps(
        running,
        [
            old_batch(short["id"], "short-3d", 1, 3),
            old_batch(short["id"], "short-1d", 2, 1),
            old_batch(other["id"], "other-3d", 3, 3),
        ],
    )
    assert left == {"short-1d", "other-3d"}


async def test_null_goes_back_to_the_default_and_new_shippers_learn_it(
    stack: Stack, shipper_settings: ShipperFactory, start_shipper: Any
) -> None:
    """null resets to the platform default everywhere, also on a log-shipper started later."""
    first = await start_shipper(shipper_settings())
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "resetme")
    await alice.ok("PATCH", "/apps/resetme/log-settings", {"retention_days": 1.5})
    reset = await alice.ok("PATCH", "/apps/resetme/log-settings", {"retention_days": None})
    assert reset == {"retention_days": 7.0, "default": True}
    # The same value again changes nothing: no new revision, event or audit entry.
    await alice.ok("PATCH", "/apps/resetme/log-settings", {"retention_days": None})
    later = await start_shipper(shipper_settings(host_id="h2"))

    async def reset_everywhere() -> None:
        for running in (first, later):
            assert await stored_retention(running.shipper.db, app["id"]) == (None, 2)

    await assert_eventually(reset_everywhere, timeout=20, interval=0.1)
    assert await sweep_keeps(first, [old_batch(app["id"], "reset-3d", 1, 3)]) == {"reset-3d"}

    events = [e for e in await stack.events("app") if e["type"] == "log_retention.changed.v1"]
    assert [(e["retention_days"], e["revision"], e["actor"]) for e in events] == [
        (1.5, 1, "alice@example.com"),
        (None, 2, "alice@example.com"),
    ]
    audit = await alice.ok("GET", "/apps/resetme/audit")
    changes = [e["details"] for e in audit["entries"] if e["action"] == "logs.retention"]
    assert changes == [
        {"retention_days": "1.5", "revision": "1"},
        {"retention_days": "default", "revision": "2"},
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"retention_days": 0},
        {"retention_days": 0.5},
        {"retention_days": -3},
        {"retention_days": 1000},
        {"retention_days": "abc"},
        {"retention_days": True},
        {},
        {"retention_days": 7, "days": 7},
    ],
)
async def test_a_bad_retention_is_refused_with_herokus_error_body(
    stack: Stack, body: dict[str, Any]
) -> None:
    """Outside 1..365, not a number, missing or unknown fields: 422 invalid_params, no change."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "strict")
    answer = await alice.patch("/apps/strict/log-settings", body)
    assert answer.status == 422, answer
    assert answer.error_id == "invalid_params"
    assert set(answer.body) == {"id", "message"} and answer.body["message"]
    assert await alice.ok("GET", "/apps/strict/log-settings") == {
        "retention_days": 7.0,
        "default": True,
    }
    assert not [e for e in await stack.events("app") if e["type"] == "log_retention.changed.v1"]


async def test_only_the_apps_team_reads_it_and_viewers_cannot_change_it(stack: Stack) -> None:
    """Outsiders get 404 as for any app; a viewer reads (200) but may not change it (403)."""
    alice = await stack.user("alice@example.com")
    bob, carol = await stack.user("bob@example.com"), await stack.user("carol@example.com")
    mallory = await stack.user("mallory@example.com")
    await alice.ok("POST", "/teams", {"name": "acme"}, 201)
    await stack.join(alice, "acme", bob, "viewer")
    await stack.join(alice, "acme", carol, "member")
    await stack.app(alice, "guarded", team="acme")
    path = "/apps/guarded/log-settings"
    for method, body in (("GET", None), ("PATCH", {"retention_days": 3})):
        answer = await mallory.request(method, path, body)
        assert (answer.status, answer.error_id) == (404, "not_found"), (method, answer)
    assert (await bob.ok("GET", path))["default"] is True
    refused = await bob.patch(path, {"retention_days": 3})
    assert (refused.status, refused.error_id) == (403, "forbidden")
    assert await carol.ok("PATCH", path, {"retention_days": 3}) == {
        "retention_days": 3.0,
        "default": False,
    }
    assert (await stack.anonymous().get(path)).status == 401


async def test_an_older_revision_never_overwrites_a_newer_one(tmp_path: Path) -> None:
    """A redelivered or reordered event keeps the value of the highest revision seen."""
    db = await Database.open(tmp_path / "ls.db", store.MIGRATIONS)
    try:
        assert await store.apply_retention(db, "a", "t", 3 * DAY, 2)
        assert not await store.apply_retention(db, "a", "t", 30 * DAY, 1)
        assert not await store.apply_retention(db, "a", "t", 3 * DAY, 2)
        assert await stored_retention(db, "a") == (3 * DAY, 2)
        assert await store.apply_retention(db, "a", "t", None, 3)
        assert await stored_retention(db, "a") == (None, 3)
    finally:
        await db.close()
