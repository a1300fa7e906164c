"""This host's dynos from the scheduler's word: newest word wins, other hosts ignored, stored."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from slipway.contracts.scheduler import Dyno
from slipway.libs.storage import Database
from slipway.services.log_shipper import dynos, store
from slipway.services.log_shipper.dynos import DynoRegistry

CID = "a" * 64


def announced(state: Any = "up", *, at: float, host: str = "h1", restarts: int = 0) -> Dyno:
    return Dyno(
        app_id="app",
        app_name="hello",
        team_id="team",
        name="web.1",
        process_type="web",
        release_version=3,
        state=state,
        host_id=host,
        container_id=CID,
        restart_count=restarts,
        updated_at=at,
    )


async def test_an_older_word_never_replaces_a_newer_one(tmp_path: Path) -> None:
    """Events and listings cross: the latest `updated_at` stays, in memory and on disk."""
    db = await Database.open(tmp_path / "ls.db", store.MIGRATIONS)
    try:
        registry = DynoRegistry("h1", db)
        await registry.apply(announced("crashed", at=20.0, restarts=2))
        await registry.apply(announced("up", at=10.0))
        held = registry.get(CID)
        assert held is not None and (held.state, held.restarts, held.release) == ("crashed", 2, 3)
        again = DynoRegistry("h1", db)
        await again.load()
        assert again.get(CID) == held
    finally:
        await db.close()


async def test_dynos_of_other_hosts_are_not_kept(tmp_path: Path) -> None:
    """The scheduler's events name every host's dynos; h1 keeps only its own."""
    db = await Database.open(tmp_path / "ls.db", store.MIGRATIONS)
    try:
        registry = DynoRegistry("h1", db)
        await registry.apply(announced(at=1.0, host="h2"))
        assert registry.get(CID) is None and registry.running == []
    finally:
        await db.close()


async def test_a_dyno_down_for_a_while_is_forgotten(tmp_path: Path) -> None:
    """Down: still known while its init flushes; after `DOWN_KEPT` gone, from disk too."""
    db = await Database.open(tmp_path / "ls.db", store.MIGRATIONS)
    try:
        registry = DynoRegistry("h1", db)
        await registry.apply(announced("down", at=time.time()))
        assert registry.get(CID) is not None and registry.running == []
        long_ago = time.time() - dynos.DOWN_KEPT - 1
        gone = DynoRegistry("h1", await Database.open(tmp_path / "other.db", store.MIGRATIONS))
        try:
            await gone.apply(announced("down", at=long_ago))
            assert gone.get(CID) is None and await store.dynos(gone.db) == []
        finally:
            await gone.db.close()
    finally:
        await db.close()
