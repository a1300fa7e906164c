"""LSN text and WAL segment names (libs/pgwire.py), as PostgreSQL writes them."""

from __future__ import annotations

import pytest

from slipway.libs import pgwire


def test_lsn_and_segment_names() -> None:
    """LSNs print and parse like PostgreSQL's; segment names are timeline + segment number."""
    assert pgwire.format_lsn(0x16B374D848) == "16/B374D848"
    assert pgwire.parse_lsn("16/B374D848") == 0x16B374D848
    assert pgwire.parse_lsn("0/0") == 0
    for bad in ("", "16", "16/", "G/1", "1/2/3", "123456789/0"):
        with pytest.raises(ValueError, match="not an LSN"):
            pgwire.parse_lsn(bad)
    assert pgwire.segment_name(1, 0x16B374D848) == "0000000100000016000000B3"
    assert pgwire.segment_name(2, 0x3000028) == "000000020000000000000003"
    assert pgwire.segment_start(0x3000028) == 0x3000000
