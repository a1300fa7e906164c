"""The schema part kept here is Heroku's, unchanged, and the checker finds drift in it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.compat.heroku_schema import RESOURCES, check, schema, subset

# Where the lead keeps the whole schema next to the checkout (not in a clone).
FULL = Path(__file__).resolve().parents[3] / "shared/reference/heroku-platform-api-schema.json"


@pytest.mark.skipif(not FULL.exists(), reason="the whole schema is not beside this checkout")
def test_the_kept_part_is_cut_unchanged_from_herokus_schema() -> None:
    """Regenerating the part from the whole schema gives exactly the file kept here."""
    assert subset(json.loads(FULL.read_text())) == schema()


def test_every_resource_answered_is_kept() -> None:
    """Each resource the compat tests check against has its definition here."""
    assert set(RESOURCES) <= set(schema()["definitions"])


def test_drift_is_found() -> None:
    """A missing field, a wrong type and a malformed time or id are each reported."""
    stack = {
        "id": "01234567-89ab-cdef-0123-456789abcdef",
        "name": "slipway-24",
        "state": "public",
        "default": True,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }
    assert check(stack, "stack") == []
    assert check({k: v for k, v in stack.items() if k != "default"}, "stack") == [
        "$: missing 'default'"
    ]
    assert check({**stack, "default": "yes"}, "stack") == ["$.default: 'yes' is not ['boolean']"]
    assert check({**stack, "created_at": "yesterday"}, "stack") == [
        "$.created_at: 'yesterday' is not a date-time"
    ]
    assert check({**stack, "id": "stack-1"}, "stack") == ["$.id: 'stack-1' is not a uuid"]
