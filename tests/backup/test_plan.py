"""Choosing what a restore needs: times, WAL continuity, segment names."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from slipway.libs.pgwire import SEGMENT_SIZE
from slipway.libs.storage import Database
from slipway.services.backup.errors import IntegrityError, InvalidRequest
from slipway.services.backup.restore import _check_continuous, parse_time, plan
from slipway.services.backup.store import MIGRATIONS, Catalog, ObjectRow
from slipway.services.backup.walstream import segment_lsn


def piece(start: int, end: int) -> ObjectRow:
    return ObjectRow(
        key=f"a/wal/{start}", addon_id="a", kind="wal", backup_num=0, part=0, timeline=1,
        segment="", offset=0, length=end - start, start_lsn=start, end_lsn=end, size=1,
        sha256="", created_at=0.0,
    )  # fmt: skip


def test_continuous_pieces_reach_their_end() -> None:
    """Overlapping and touching pieces cover the range without a hole."""
    assert _check_continuous([piece(100, 200), piece(150, 300), piece(300, 400)], 120) == 400


def test_a_hole_in_the_wal_is_named() -> None:
    """A missing piece stops the restore, naming the missing range."""
    with pytest.raises(IntegrityError, match="0/12C to 0/190 is missing"):
        _check_continuous([piece(100, 300), piece(400, 500)], 100)


def test_times_parse_with_and_without_offset() -> None:
    """ISO 8601 with an offset, with Z, or naive (UTC)."""
    assert parse_time("2026-12-03T06:00:00Z") == parse_time("2026-12-03T07:00:00+01:00")
    assert parse_time("2026-12-03T06:00:00") == parse_time("2026-12-03T06:00:00+00:00")
    with pytest.raises(InvalidRequest):
        parse_time("yesterday")


def test_segment_names_map_back_to_their_first_lsn() -> None:
    """000000010000000200000003: timeline 1, log 2, segment 3."""
    assert segment_lsn("000000010000000200000003") == (1, (2 << 32) + 3 * SEGMENT_SIZE)


async def test_the_segment_a_backup_ends_in_is_staged_from_its_first_byte(tmp_path: Path) -> None:
    """Pieces [seg, seg+a) and [seg+a, seg+b) with the backup ending between a and b: both.

    restore_command's copy of a segment wins over the one inside base.tar: staging only
    the piece after the end would hand PostgreSQL a segment starting with zeros.
    """
    db = await Database.open(tmp_path / "catalog.db", MIGRATIONS)
    try:
        catalog = Catalog(db)
        seg = 3 * SEGMENT_SIZE
        num = await catalog.start_backup("a", "manual")
        pieces = [wal_row(seg, seg + 1000), wal_row(seg + 1000, seg + 5000)]
        base = base_row(num)
        for row in (*pieces, base):
            await catalog.add_object(row)
        async with db.transaction() as conn:
            await catalog.commit_manifest(
                conn, addon_id="a", seq=1, digest="d", key="a/manifests/00000001",
                object_keys=[p.key for p in (*pieces, base)],
            )  # fmt: skip
            await catalog.complete_backup(
                conn, addon_id="a", num=num, size_bytes=1, stored_bytes=1,
                start_lsn=seg + 100, end_lsn=seg + 2000, timeline=1, recipients=[],
            )  # fmt: skip
        chosen = await plan(SimpleNamespace(catalog=catalog), "a", 0, "")  # type: ignore[arg-type]
        assert [p.start_lsn for p in chosen.wal] == [seg, seg + 1000]
        assert chosen.end_lsn == seg + 5000
    finally:
        await db.close()


def wal_row(start: int, end: int) -> ObjectRow:
    return ObjectRow(
        key=f"a/wal/00000001/x/{start:08X}", addon_id="a", kind="wal", backup_num=0, part=0,
        timeline=1, segment="000000010000000000000003", offset=start % SEGMENT_SIZE,
        length=end - start, start_lsn=start, end_lsn=end, size=1, sha256="", created_at=1.0,
    )  # fmt: skip


def base_row(num: int) -> ObjectRow:
    return ObjectRow(
        key=f"a/base/{num:06d}/00000", addon_id="a", kind="base", backup_num=num, part=0,
        timeline=1, segment="", offset=0, length=1, start_lsn=0, end_lsn=0, size=1, sha256="",
        created_at=1.0,
    )  # fmt: skip
