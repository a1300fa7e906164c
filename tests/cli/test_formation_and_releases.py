"""Pure parts of ps:scale and releases:rollback: the update body and the default target."""

from __future__ import annotations

from slipway.cli.commands.ps import build_updates, describe
from slipway.cli.commands.releases import current_release, previous_release
from slipway.cli.specs import parse_scales


def test_updates_carry_quantity_and_size() -> None:
    """`web=2:standard-2x worker=1` becomes two updates with the Heroku fields."""
    updates = build_updates(parse_scales(["web=2:standard-2x", "worker=1"]), [])
    assert updates == [
        {"type": "web", "quantity": 2, "size": "standard-2x"},
        {"type": "worker", "quantity": 1},
    ]


def test_relative_updates_use_the_current_formation() -> None:
    """`web+2` on three running web dynos asks for five; an unknown type starts at 0."""
    current = [{"type": "web", "quantity": 3, "size": "basic"}]
    assert build_updates(parse_scales(["web+2", "clock+1"]), current) == [
        {"type": "web", "quantity": 5},
        {"type": "clock", "quantity": 1},
    ]


def test_size_only_update_sends_no_quantity() -> None:
    """`web=performance-m` changes only the size."""
    assert build_updates(parse_scales(["web=performance-m"]), []) == [
        {"type": "web", "size": "performance-m"}
    ]


def test_describe_accepts_heroku_dyno_size_object() -> None:
    """A formation's size may come as `size` or as `dyno_size: {name}`."""
    assert describe({"type": "web", "quantity": 2, "size": "basic"}) == "web=2:basic"
    assert describe({"type": "web", "quantity": 1, "dyno_size": {"name": "std"}}) == "web=1:std"


def _release(version: int, **fields: object) -> dict[str, object]:
    return {"id": f"id-{version}", "version": version, "status": "succeeded", **fields}


def test_rollback_default_is_the_release_before_current() -> None:
    """With v1..v3 and v3 current, rollback goes to v2."""
    releases = [_release(1), _release(2), _release(3, current=True)]
    assert previous_release(releases) == _release(2)


def test_rollback_default_skips_failed_and_ineligible_releases() -> None:
    """Failed releases and those not eligible for rollback are passed over."""
    releases = [
        _release(1),
        _release(2, eligible_for_rollback=False),
        _release(3, status="failed"),
        _release(4, current=True),
    ]
    assert previous_release(releases) == _release(1)


def test_current_is_the_marked_release_not_the_newest() -> None:
    """After a failed deploy the current release is the marked one, and rollback is below it."""
    releases = [_release(1), _release(2, current=True), _release(3, status="failed")]
    assert current_release(releases) == _release(2, current=True)
    assert previous_release(releases) == _release(1)


def test_no_earlier_release_means_nothing_to_roll_back_to() -> None:
    """A single release has no predecessor."""
    assert previous_release([_release(1, current=True)]) is None
    assert previous_release([]) is None


def test_ps_usage_columns_come_from_the_latest_metrics_sample() -> None:
    """CPU as a percentage and memory against the dyno's quota; blank before a sample."""
    from slipway.cli.commands.ps import usage

    sample = {"cpu_percent": 3.14, "memory_total_mb": 21.4, "memory_quota_mb": 512.0}
    assert usage(sample) == {"cpu": "3.1%", "memory": "21MB/512MB"}
    assert usage(None) == {"cpu": "", "memory": ""}
