"""network-wirer's uptime database in a platform snapshot: a consistent copy, restored whole."""

from __future__ import annotations

import io
import time
from pathlib import Path

from slipway.libs.crypto import age
from slipway.libs.snapshot.export import export
from slipway.libs.snapshot.unpack import Staging
from slipway.services.network_wirer import snapshot
from slipway.services.network_wirer.settings import WirerSettings
from slipway.services.network_wirer.uptimestore import ProbeResult, UptimeStore
from tests.snapshot.test_export import members, open_pieces


async def test_the_uptime_history_comes_back_from_a_live_database(tmp_path: Path) -> None:
    """Exported while open (as the service holds it): one member, no WAL beside it, and the
    restored file answers the same windows and incidents."""
    settings = WirerSettings(home=str(tmp_path / "home"))
    state = settings.state_dir("network-wirer")
    store = await UptimeStore.open(state / snapshot.UPTIME_DB)
    now = time.time()
    await store.record([ProbeResult(app_id="a", at=now - 90, up=False, status=503, code="H10")])
    await store.record([ProbeResult(app_id="a", at=now - 30, up=True, status=200)])
    before = await store.uptime("a", incidents=5, interval=30, now=now)

    identity = age.generate_identity()
    try:
        done = await export(
            snapshot.sources(settings)(), [age.public_of(identity)], tmp_path / "out"
        )
    finally:
        await store.close()
    tar = open_pieces([(tmp_path / "out" / p.name).read_bytes() for p in done.pieces], identity)
    uptime_members = sorted(n for n in members(tar) if "uptime" in n)
    assert uptime_members == ["network-wirer/uptime.db"]

    restored_home = tmp_path / "restored"
    restored_home.mkdir()
    with Staging(restored_home) as staging:
        staging.unpack("network-wirer", io.BytesIO(tar))
    restored_state = WirerSettings(home=str(restored_home)).state_dir("network-wirer")
    restored = await UptimeStore.open(restored_state / snapshot.UPTIME_DB)
    try:
        assert await restored.uptime("a", incidents=5, interval=30, now=now) == before
    finally:
        await restored.close()
