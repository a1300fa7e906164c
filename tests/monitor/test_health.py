"""Judging one pass (services/monitor/health.py): a pure function of what was seen."""

from __future__ import annotations

import time

import msgspec

from slipway.contracts import disk
from slipway.contracts.backup import DatabaseHealth
from slipway.contracts.router import RouterCertificate
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


DAY = 86400.0


def certificate(host: str, days: float, app: str = "shop") -> tuple[str, RouterCertificate]:
    """A certificate of router "local" for `host` (and the app's own host), `days` from NOW."""
    return "local", RouterCertificate(
        hostnames=[host, f"{app}.localhost"],
        app_id="app-1",
        app_name=app,
        not_after=NOW + days * DAY,
    )


def certificate_pass(*certificates: tuple[str, RouterCertificate]) -> Seen:
    return Seen(
        at=NOW,
        instances=[instance("keyring"), instance("builder")],
        certificates=list(certificates),
    )


def test_a_certificate_ending_in_20_days_is_no_alert() -> None:
    """Past the 14-day mark: green, listed, no condition."""
    status, conditions = judge().judge(certificate_pass(certificate("www.example.com", 20)))
    assert conditions == []
    assert status.health == "green"
    [listed] = status.certificates
    assert (listed.hostnames[0], listed.health, listed.days_left) == (
        "www.example.com",
        "green",
        20,
    )


def test_a_certificate_ending_in_5_days_is_a_warning() -> None:
    """Within monitor_cert_warn_days (14): certificate_expiring, warning, the date in its line."""
    status, conditions = judge().judge(certificate_pass(certificate("www.example.com", 5.01)))
    [condition] = conditions
    assert (condition.key, condition.kind, condition.severity, condition.source) == (
        "certificate:www.example.com",
        "certificate_expiring",
        "warning",
        "certificates",
    )
    date = time.strftime("%Y-%m-%d", time.gmtime(NOW + 5.01 * DAY))
    assert condition.summary == (
        f"certificate for www.example.com, shop.localhost (app shop) expires in 5 days ({date})"
    )
    assert status.health == "yellow"
    assert status.certificates[0].health == "yellow"


def test_a_certificate_ending_in_1_day_or_expired_is_critical() -> None:
    """Within 3 days: critical and red; one already past its end says it expired."""
    status, conditions = judge().judge(
        certificate_pass(certificate("a.example.com", 1), certificate("b.example.com", -2, "old"))
    )
    assert [(c.key, c.severity) for c in conditions] == [
        ("certificate:b.example.com", "critical"),
        ("certificate:a.example.com", "critical"),
    ]
    assert "expired on" in conditions[0].summary
    assert "expires in 1 day (" in conditions[1].summary
    assert status.health == "red"


def test_the_warning_mark_is_the_operators_setting() -> None:
    """monitor_cert_warn_days=30: a certificate 20 days from its end is a warning too."""
    _, conditions = judge(monitor_cert_warn_days=30).judge(
        certificate_pass(certificate("www.example.com", 20))
    )
    assert [c.severity for c in conditions] == ["warning"]


def test_two_routers_holding_one_name_make_one_alert_about_the_sooner() -> None:
    """Each router has its own copy: one condition per name, the copy ending first."""
    late = certificate("www.example.com", 10)
    soon = ("edge", msgspec.structs.replace(late[1], not_after=NOW + 2 * DAY))
    status, conditions = judge().judge(certificate_pass(late, soon))
    [condition] = conditions
    assert condition.severity == "critical" and "expires in 2 days" in condition.summary
    assert [c.router_id for c in status.certificates] == ["edge", "local"]


def _reading(
    service: str, path: str, percent: float, filesystem: str
) -> tuple[disk.DiskReadings, disk.DiskReading]:
    reading = disk.DiskReading(
        label="state folder",
        path=path,
        total_bytes=100,
        free_bytes=int(100 - percent),
        used_percent=percent,
        filesystem=filesystem,
    )
    readings = disk.DiskReadings(
        service=service, instance=f"{service}-1", interval=5.0, readings=[reading], at=NOW
    )
    return readings, reading


def test_folders_of_one_file_system_make_one_disk_alert() -> None:
    """Nine state folders on one full file system are one alert, not nine; another file
    system past the mark is its own; each folder keeps its row on the status screen."""
    seen = Seen(
        at=NOW,
        instances=[instance("keyring"), instance("builder")],
        disks=[
            _reading("keyring", "/srv/var/keyring", 87.0, "h1:2049"),
            _reading("builder", "/srv/var/builder", 87.5, "h1:2049"),
            _reading("gateway", "/srv/var/gateway", 87.2, "h1:2049"),
            _reading("builder", "/var/lib/docker", 91.0, "h1:2050"),
            _reading("monitor", "/srv/other", 10.0, "h1:2051"),
        ],
    )
    status, conditions = judge().judge(seen)
    assert len(status.disks) == 5
    by_key = {c.key: c for c in conditions if c.kind == "disk"}
    assert set(by_key) == {"disk:h1:2049", "disk:h1:2050"}
    shared = by_key["disk:h1:2049"]
    assert (shared.severity, shared.value) == ("warning", 87.5)
    assert shared.summary == (
        "state folder /srv/var/builder (builder) and 2 more folders on its file system are"
        " 88 % full"
    )
    assert by_key["disk:h1:2050"].severity == "critical"  # past the 90 % high-water mark
    assert by_key["disk:h1:2050"].summary == "state folder /var/lib/docker (builder) is 91 % full"
