"""Judging what a pass saw: the status screen and the platform conditions, without I/O.

`Judge.judge(seen)` turns one `Seen` (status.py) into the `PlatformStatus` the operator
reads and the set of platform `Condition`s true now, keyed so that a condition that stays
true is one alert. It remembers across passes only what a single look cannot tell: how
many passes a service has been missing (one missed pass is a restart, not an outage) and
when each service last restarted (an instance with a new start time), so that a service
restarting over and over is an alert too.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from slipway.contracts.monitor import (
    BackupStatus,
    CertificateStatus,
    ConsumerStatus,
    DiskStatus,
    Health,
    HostStatus,
    InstanceStatus,
    PlatformStatus,
    Severity,
)
from slipway.services.monitor.settings import MonitorSettings
from slipway.services.monitor.status import Seen, started_at

RESTART_WINDOW = 600.0  # seconds: restarts counted over the last ten minutes
RESTARTS_ALERT = 3  # this many in the window: the service is crash-looping
CERT_CRITICAL_DAYS = 3.0  # a certificate this close to its end (or past it) is critical
DAY = 86400.0

_RANK: dict[Health, int] = {"green": 0, "yellow": 1, "red": 2}


def worst(*healths: Health) -> Health:
    return max(healths, key=_RANK.__getitem__, default="green")


@dataclass(frozen=True, slots=True)
class Condition:
    """Something wrong now; `key` names it across passes."""

    key: str
    kind: str
    severity: Severity
    summary: str
    source: str  # the Seen source it depends on: not resolved while that source is unread
    value: float | None = None
    threshold: float | None = None


@dataclass
class Judge:
    settings: MonitorSettings
    expected: tuple[str, ...]
    missing_passes: dict[str, int] = field(default_factory=dict)
    starts: dict[tuple[str, str], str] = field(default_factory=dict)  # (service, id) -> started
    restarts: dict[str, deque[float]] = field(default_factory=dict)

    def judge(self, seen: Seen) -> tuple[PlatformStatus, list[Condition]]:
        conditions: list[Condition] = []
        problems: list[str] = []
        instances = self._instances(seen, conditions)
        missing = self._missing(seen, conditions)
        hosts = self._hosts(seen, conditions)
        consumers = self._consumers(seen, conditions)
        disks = self._disks(seen, conditions)
        backups = self._backups(seen, conditions)
        certificates = self._certificates(seen, conditions)
        for source, why in sorted(seen.unread.items()):
            problems.append(f"could not read {source}: {why}")
        problems += [c.summary for c in conditions]
        health = worst(
            *(i.health for i in instances),
            *(h.health for h in hosts),
            *(c.health for c in consumers),
            *(d.health for d in disks),
            *(b.health for b in backups),
            *(c.health for c in certificates),
            "red" if missing else "green",
            "yellow" if seen.unread else "green",
        )
        status = PlatformStatus(
            at=seen.at,
            health=health,
            instances=instances,
            missing=missing,
            hosts=hosts,
            consumers=consumers,
            disks=disks,
            backups=backups,
            certificates=certificates,
            problems=problems,
        )
        return status, conditions

    # ---- services ------------------------------------------------------------------------------

    def _instances(self, seen: Seen, conditions: list[Condition]) -> list[InstanceStatus]:
        if "services" in seen.unread:
            return []
        found = []
        cutoff = seen.at - RESTART_WINDOW
        for inst in sorted(seen.instances, key=lambda i: (i.service, i.instance)):
            key = (inst.service, inst.instance)
            before = self.starts.get(key)
            if before is not None and before != inst.started:
                self.restarts.setdefault(inst.service, deque()).append(seen.at)
            self.starts[key] = inst.started
        for service, times in self.restarts.items():
            while times and times[0] < cutoff:
                times.popleft()
            if len(times) >= RESTARTS_ALERT:
                conditions.append(
                    Condition(
                        key=f"service_restarting:{service}",
                        kind="service_restarting",
                        severity="critical",
                        summary=f"{service} restarted {len(times)} times in the last"
                        f" {int(RESTART_WINDOW // 60)} minutes",
                        source="services",
                        value=len(times),
                        threshold=RESTARTS_ALERT,
                    )
                )
        looping = {c.key.split(":", 1)[1] for c in conditions if c.kind == "service_restarting"}
        for inst in sorted(seen.instances, key=lambda i: (i.service, i.instance)):
            started = started_at(inst.started)
            health: Health = "yellow" if inst.service in looping else "green"
            found.append(
                InstanceStatus(
                    service=inst.service,
                    instance=inst.instance,
                    version=inst.version,
                    started_at=inst.started,
                    uptime_s=round(max(seen.at - started, 0.0), 1) if started else 0.0,
                    requests=inst.requests,
                    errors=inst.errors,
                    last_error=inst.last_error,
                    health=health,
                    detail="restarting repeatedly" if health != "green" else "",
                )
            )
        return found

    def _missing(self, seen: Seen, conditions: list[Condition]) -> list[str]:
        if "services" in seen.unread:
            return []
        answering = {i.service for i in seen.instances}
        down = []
        for service in self.expected:
            if service in answering:
                self.missing_passes.pop(service, None)
                continue
            passes = self.missing_passes[service] = self.missing_passes.get(service, 0) + 1
            if passes >= self.settings.monitor_down_passes:
                down.append(service)
                conditions.append(
                    Condition(
                        key=f"service_down:{service}",
                        kind="service_down",
                        severity="critical",
                        summary=f"{service}: no instance is answering",
                        source="services",
                    )
                )
        return down

    # ---- hosts, consumers, disks, backups ------------------------------------------------------

    def _hosts(self, seen: Seen, conditions: list[Condition]) -> list[HostStatus]:
        found = []
        for host in seen.hosts:
            silent = seen.at - host.last_seen if host.last_seen else None
            health: Health = "green"
            if host.state == "down" or (
                silent is not None and silent > self.settings.monitor_host_silence
            ):
                health = "red"
                why = "down" if host.state == "down" else f"silent for {int(silent or 0)} s"
                conditions.append(
                    Condition(
                        key=f"host_down:{host.id}",
                        kind="host_down",
                        severity="critical",
                        summary=f"host {host.id} is not answering ({why})",
                        source="hosts",
                    )
                )
            elif host.state == "draining":
                health = "yellow"
            found.append(
                HostStatus(
                    id=host.id,
                    state=host.state,
                    address=host.address,
                    memory_mb=host.memory_mb,
                    dynos=host.dynos,
                    max_dynos=host.max_dynos,
                    last_seen_s=round(silent, 1) if silent is not None else None,
                    health=health,
                )
            )
        return found

    def _consumers(self, seen: Seen, conditions: list[Condition]) -> list[ConsumerStatus]:
        found = []
        mark = self.settings.monitor_lag_alert
        for c in seen.consumers:
            health: Health = "green"
            if c.pending + c.ack_pending >= mark:
                health = "red"
                conditions.append(
                    Condition(
                        key=f"consumer_lag:{c.stream}:{c.name}",
                        kind="consumer_lag",
                        severity="warning",
                        summary=f"consumer {c.name} on {c.stream} is {c.pending} messages"
                        f" behind ({c.ack_pending} unacknowledged)",
                        source="consumers",
                        value=c.pending + c.ack_pending,
                        threshold=mark,
                    )
                )
            found.append(
                ConsumerStatus(
                    stream=c.stream,
                    consumer=c.name,
                    pending=c.pending,
                    ack_pending=c.ack_pending,
                    redelivered=c.redelivered,
                    health=health,
                )
            )
        return found

    def _disks(self, seen: Seen, conditions: list[Condition]) -> list[DiskStatus]:
        found: dict[str, DiskStatus] = {}
        # Folders on one file system fill up together: one alert for them all.
        systems: dict[str, str] = {}  # found's key -> its file system's
        mark = self.settings.monitor_disk_alert
        for readings, reading in seen.disks:
            health: Health = "green"
            if reading.used_percent >= self.settings.disk_high_water:
                health = "red"
            elif reading.used_percent >= mark:
                health = "yellow"
            status = DiskStatus(
                service=readings.service,
                instance=readings.instance,
                label=reading.label,
                path=reading.path,
                used_percent=round(reading.used_percent, 1),
                free_bytes=reading.free_bytes,
                age_s=round(max(seen.at - readings.at, 0.0), 1),
                health=health,
            )
            # Several services watch the same folder (Docker's data root): one row each path.
            key = f"{readings.instance}:{reading.path}"
            if key not in found or _RANK[health] > _RANK[found[key].health]:
                found[key] = status
                systems[key] = reading.filesystem or key
        full: dict[str, list[DiskStatus]] = {}
        for key, status in found.items():
            if status.used_percent >= mark:
                full.setdefault(systems[key], []).append(status)
        for system, folders in full.items():
            folders.sort(key=lambda d: (d.path, d.service))
            worst = max(folders, key=lambda d: d.used_percent)
            first = folders[0]
            paths = {d.path for d in folders}
            what = f"{first.label} {first.path} ({first.service})"
            if len(paths) > 1:
                more = len(paths) - 1
                what += f" and {more} more folder{'s' if more > 1 else ''} on its file system are"
            else:
                what += " is"
            conditions.append(
                Condition(
                    key=f"disk:{system}",
                    kind="disk",
                    severity="critical" if worst.health == "red" else "warning",
                    summary=f"{what} {worst.used_percent:.0f} % full",
                    source="disks",
                    value=worst.used_percent,
                    threshold=mark,
                )
            )
        return sorted(found.values(), key=lambda d: (d.path, d.service))

    def _backups(self, seen: Seen, conditions: list[Condition]) -> list[BackupStatus]:
        found = []
        grace = self.settings.monitor_backup_grace
        for db in seen.backups:
            latest = db.last_backup_started_at
            overdue = (
                db.schedule_enabled
                and seen.at - db.last_slot_at > grace
                and (latest is None or latest < db.last_slot_at)
            )
            health: Health = "red" if overdue else "green"
            if overdue:
                conditions.append(
                    Condition(
                        key=f"backup_overdue:{db.addon_id}",
                        kind="backup_overdue",
                        severity="critical",
                        summary=f"{db.addon_name}: no backup since its scheduled capture at"
                        f" {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(db.last_slot_at))}",
                        source="backups",
                    )
                )
            if db.last_verification == "failed":
                health = "red"
                conditions.append(
                    Condition(
                        key=f"backup_verification:{db.addon_id}",
                        kind="backup_verification_failed",
                        severity="critical",
                        summary=f"{db.addon_name}: the last backup verification failed",
                        source="backups",
                    )
                )
            found.append(
                BackupStatus(
                    app_id=db.app_id,
                    addon_id=db.addon_id,
                    addon_name=db.addon_name,
                    host_id=db.host_id,
                    last_backup_at=db.last_backup_finished_at,
                    age_s=round(seen.at - db.last_backup_finished_at, 1)
                    if db.last_backup_finished_at
                    else None,
                    schedule="daily" if db.schedule_enabled else "",
                    overdue=overdue,
                    last_verification=db.last_verification,
                    health=health,
                )
            )
        return found

    # ---- certificates ---------------------------------------------------------------------------

    def _certificates(self, seen: Seen, conditions: list[Condition]) -> list[CertificateStatus]:
        """Each router's certificates; one ending within `monitor_cert_warn_days` is a
        warning, within CERT_CRITICAL_DAYS (or past its end) critical."""
        found = []
        warn = self.settings.monitor_cert_warn_days
        alerted: set[str] = set()
        ordered = sorted(seen.certificates, key=lambda rc: (rc[1].not_after, rc[1].hostnames))
        for router_id, cert in ordered:
            days = (cert.not_after - seen.at) / DAY
            health: Health = "green"
            if days < warn:
                health = "red" if days < CERT_CRITICAL_DAYS else "yellow"
                first = cert.hostnames[0] if cert.hostnames else "?"
                # Every router holds its own copy of an app's certificate: one alert per
                # name, about the copy that ends first (the order above).
                if first not in alerted:
                    alerted.add(first)
                    conditions.append(
                        Condition(
                            key=f"certificate:{first}",
                            kind="certificate_expiring",
                            severity="critical" if health == "red" else "warning",
                            summary=_expiry_summary(cert.hostnames, cert.app_name, router_id,
                                                    cert.not_after, days),
                            source="certificates",
                            value=round(days, 2),
                            threshold=warn,
                        )
                    )  # fmt: skip
            found.append(
                CertificateStatus(
                    hostnames=cert.hostnames,
                    app_id=cert.app_id,
                    app_name=cert.app_name,
                    issuer=cert.issuer,
                    router_id=router_id,
                    not_after=cert.not_after,
                    days_left=round(days, 2),
                    health=health,
                )
            )
        return found


def _expiry_summary(
    hostnames: list[str], app_name: str, router_id: str, not_after: float, days: float
) -> str:
    """'certificate for www.example.com (app shop) expires in 5 days (2026-12-08)'."""
    names = ", ".join(hostnames[:3]) + (
        f" and {len(hostnames) - 3} more" if len(hostnames) > 3 else ""
    )
    whose = f"app {app_name}" if app_name else f"router {router_id}'s default"
    date = time.strftime("%Y-%m-%d", time.gmtime(not_after))
    if days < 0:
        return f"certificate for {names} ({whose}) expired on {date}"
    whole = int(days)
    when = "in under a day" if whole == 0 else f"in {whole} day{'s' if whole != 1 else ''}"
    return f"certificate for {names} ({whose}) expires {when} ({date})"
