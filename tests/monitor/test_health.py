"""Judging one pass (services/monitor/health.py): a pure function of what was seen."""

from __future__ import annotations

import time

import msgspec

from slipway.contracts.backup import DatabaseHealth
from slipway.contracts.scheduler import HostInfo
from slipway.services.monitor.health import Judge
from slipway.services.monitor.settings import MonitorSettings
from slipway.services.monitor.status import ConsumerSeen, InstanceSeen, Seen

NOW = 1_800_000_000.0


def judge(**settings: object) -> Judge:
    values: dict[str, object] = {"monitor_down_passes": 2, **settings}
    return Judge(msgspec.convert(values, MonitorSettings), ("keyring", "builder"))


def instance(service: str, started: str = "2026-12-03T10:00:00+00:00") -> InstanceSeen:
    return InstanceSeen(service, f"{service}-1", "0.1.0", started, 10, 0, "")


def test_a_service_missing_once_is_a_restart_and_twice_is_down() -> None:
    """One pass without the builder is yellow at most; the second names it missing, red."""
    j = judge()
    status, conditions = j.judge(Seen(at=NOW, instances=[instance("keyring")]))
    assert status.missing == [] and conditions == []
    status, conditions = j.judge(Seen(at=NOW + 15, instances=[instance("keyring")]))
    assert status.missing == ["builder"] and status.health == "red"
    assert [c.key for c in conditions] == ["service_down:builder"]


def test_three_restarts_in_ten_minutes_are_a_crash_loop() -> None:
    """A new start time per pass, three times: service_restarting, and the instance yellow."""
    j = judge()
    for n in range(4):
        seen = Seen(
            at=NOW + n, instances=[instance("keyring", f"2026-12-03T10:0{n}:00+00:00"),
                                   instance("builder")],
        )  # fmt: skip
        status, conditions = j.judge(seen)
    assert [c.key for c in conditions] == ["service_restarting:keyring"]
    assert {i.service: i.health for i in status.instances} == {
        "builder": "green",
        "keyring": "yellow",
    }


def test_a_host_the_scheduler_has_not_heard_from_is_down() -> None:
    """last_seen older than monitor_host_silence: host_down; a draining host is yellow."""
    hosts = [
        HostInfo(id="h1", endpoint="unix:///x", address="10.0.0.1", memory_mb=1,
                 last_seen=NOW - 500),
        HostInfo(id="h2", endpoint="unix:///y", address="10.0.0.2", memory_mb=1,
                 last_seen=NOW - 5, state="draining"),
    ]  # fmt: skip
    status, conditions = judge(monitor_host_silence=120).judge(
        Seen(at=NOW, instances=[instance("keyring"), instance("builder")], hosts=hosts)
    )
    assert [c.key for c in conditions] == ["host_down:h1"]
    assert [h.health for h in status.hosts] == ["red", "yellow"]


def test_lag_at_the_mark_is_an_alert_below_it_is_not() -> None:
    """pending + unacknowledged ≥ monitor_lag_alert fires, one under does not."""
    seen = Seen(
        at=NOW,
        instances=[instance("keyring"), instance("builder")],
        consumers=[ConsumerSeen("EVT", "a", 6, 4, 0), ConsumerSeen("EVT", "b", 9, 0, 0)],
    )
    _, conditions = judge(monitor_lag_alert=10).judge(seen)
    assert [c.key for c in conditions] == ["consumer_lag:EVT:a"]


def test_a_backup_missing_after_its_slot_and_grace_is_overdue() -> None:
    """Slot + grace passed with no capture since: overdue; a capture after the slot is fine;
    a failed verification is its own alert."""
    slot = NOW - 7200

    def db(addon: str, **facts: object) -> DatabaseHealth:
        values = {"addon_id": addon, "addon_name": addon, "app_id": "a", "host_id": "local",
                  "schedule_enabled": True, "last_slot_at": slot, **facts}  # fmt: skip
        return msgspec.convert(values, DatabaseHealth)

    backups = [
        db("late", last_backup_started_at=slot - 86400, last_backup_finished_at=slot - 86000),
        db("taken", last_backup_started_at=slot + 60, last_backup_finished_at=slot + 120),
        db("off", schedule_enabled=False),
        db("broken", last_backup_started_at=slot + 60, last_verification="failed"),
    ]
    status, conditions = judge(monitor_backup_grace=3600).judge(
        Seen(at=NOW, instances=[instance("keyring"), instance("builder")], backups=backups)
    )
    assert sorted(c.key for c in conditions) == [
        "backup_overdue:late",
        "backup_verification:broken",
    ]
    assert {b.addon_name: b.overdue for b in status.backups} == {
        "late": True,
        "taken": False,
        "off": False,
        "broken": False,
    }


def test_an_unread_source_makes_the_status_yellow_and_says_why() -> None:
    """A source that did not answer is a problem line; it is never taken for good news."""
    status, _ = judge().judge(
        Seen(at=time.time(), instances=[instance("keyring"), instance("builder")],
             unread={"hosts": "no scheduler instance is serving hosts.list"})
    )  # fmt: skip
    assert status.health == "yellow"
    assert status.problems == ["could not read hosts: no scheduler instance is serving hosts.list"]
