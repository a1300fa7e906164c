"""Choosing what a restore needs: times, WAL continuity, segment names."""

from __future__ import annotations

import pytest

from slipway.libs.pgwire import SEGMENT_SIZE
from slipway.services.backup.errors import IntegrityError, InvalidRequest
from slipway.services.backup.restore import _check_continuous, parse_time
from slipway.services.backup.store import ObjectRow
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
