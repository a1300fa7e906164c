"""The monitor's store: what it keeps across a full disk, and what a shredded team loses."""

from __future__ import annotations

from pathlib import Path

import msgspec

from slipway.contracts.monitor import Alert
from slipway.services.monitor.store import MonitorStore


def _alert(alert_id: str, team: str, scope: str = "app") -> Alert:
    return Alert(
        id=alert_id,
        key=f"p95_ms:{alert_id}",
        scope=scope,  # type: ignore[arg-type]
        kind="p95_ms",
        severity="warning",
        state="firing",
        summary="slow",
        app_id=f"app-{alert_id}" if scope == "app" else "",
        team_id=team,
        started_at=1.0,
    )


async def test_a_shredded_teams_rules_and_alerts_go_and_no_one_elses(tmp_path: Path) -> None:
    store = await MonitorStore.open(tmp_path / "monitor.db")
    try:
        for team in ("t1", "t2"):
            await store.add_rule(
                app_id=f"app-{team}", app_name=team, team_id=team, metric="p95_ms",
                threshold=500, window_minutes=5,
            )  # fmt: skip
        await store.put(_alert("a1", "t1"))
        await store.put(_alert("a2", "t2"))
        await store.team_shredded("evt-1", "t1")
        assert await store.rules("app-t1") == []
        assert len(await store.rules("app-t2")) == 1
        assert set(await store.firing()) == {"p95_ms:a2"}
    finally:
        await store.close()


async def test_an_escalation_is_told_again_and_a_quiet_change_is_not(tmp_path: Path) -> None:
    """put() keeps what was told; unannounced() lists a firing alert told at a lower
    severity (an escalation), not one whose value merely moved."""
    store = await MonitorStore.open(tmp_path / "monitor.db")
    try:
        fired = _alert("a1", "t1")
        await store.put(fired)
        assert [(a.id, told) for a, told in await store.unannounced()] == [("a1", "")]
        await store.announced(fired)
        assert await store.unannounced() == []
        moved = msgspec.structs.replace(fired, value=700.0, summary="slower")
        await store.put(moved)
        assert await store.unannounced() == []
        worse = msgspec.structs.replace(moved, severity="critical")
        await store.put(worse)
        assert [(a.severity, told) for a, told in await store.unannounced()] == [
            ("critical", "warning")
        ]
        # Told while the disk was full, stored later as told: not told a second time.
        await store.put(worse, told=True)
        assert await store.unannounced() == []
    finally:
        await store.close()
