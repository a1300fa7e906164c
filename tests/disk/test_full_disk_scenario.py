"""Issue #20's disk scenario, end to end: the whole platform with its SLIPWAY_HOME on a
small loop file system, run by its supervisor as `scripts/up` runs it.

At >= 90 % a push is refused with a clear `remote:` line; at 100 % (0 bytes left)
`config:get`, `releases`, `logs` and `ps` still answer, while changes get 507; once the
space is freed everything works again and nothing was lost: the config, the releases,
the audit chain (which verifies), and the audit rows the keyring and the gateway kept
in memory while the disk was full.

The same disk raises the monitor's `disk` platform alert (issue #20 item 2): past 85 % an
operator webhook receives it, signed, and a `resolve` once space is freed; the status
screen (`admin:status`, exit 1 when red) answers at 90 % and at 100 % alike, also when
the monitor, whose state shares the full disk, cannot record an alert any more.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import new_scope
from tests.disk.loopfs import LoopFs, available
from tests.e2e.supervised import Platform, as_admin, own_env, start, stop, wait_for
from tests.e2e.test_walkthrough import remove_docker_leftovers
from tests.e2e.webhookreceiver import Receiver, receiving

pytestmark = [
    pytest.mark.alone,
    pytest.mark.integration,
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(available() is not None, reason=available() or ""),
]

ACCEPT = "application/vnd.heroku+json; version=3"
SECRET = "disk-alert-secret-" + "x" * 20


@contextmanager
def platform_on_loop_fs(tmp_path: Path, **extra: str) -> Iterator[tuple[Platform, LoopFs]]:
    """A supervised platform whose whole SLIPWAY_HOME (JetStream's store too) is the loop fs."""
    scope = new_scope()
    with LoopFs(tmp_path / "disk", megabytes=256) as fs:
        home = fs.mount / "var"
        env = own_env(
            home, tmp_path, scope, SLIPWAY_DISK_INTERVAL="0.5", GIT_TERMINAL_PROMPT="0", **extra
        )
        platform = start(home, env)
        platform.home = tmp_path  # where the CLI and git run, off the loop fs
        try:
            as_admin(platform, home)
            yield platform, fs
        finally:
            fs.free()  # room for a clean stop
            stop(platform.process)
            remove_docker_leftovers(scope)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[Platform, LoopFs]]:
    with platform_on_loop_fs(tmp_path) as found:
        yield found


@pytest.fixture
def alerting(tmp_path: Path) -> Iterator[tuple[Platform, LoopFs]]:
    """The same, its monitor passing every second and posting to a receiver on loopback.

    Not the scenario's platform: a monitor that often would publish its alerts (on the bus's
    store, JetStream) while the disk is at 0 bytes, and a JetStream stream that meets
    ENOSPC keeps failing after space is freed, until nats-server restarts
    (test_jetstream_full.py): the scenario's build would never finish.
    """
    with platform_on_loop_fs(
        tmp_path,
        SLIPWAY_MONITOR_INTERVAL="1",
        SLIPWAY_MONITOR_DISCOVERY_WAIT="0.5",
        SLIPWAY_EGRESS_ALLOW="127.0.0.1/32",
        SLIPWAY_WEBHOOK_ALLOW_HTTP="1",
        SLIPWAY_WEBHOOK_BACKOFF="1",
    ) as found:
        yield found


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving(SECRET) as server:
        yield server


def api(platform: Platform, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One API request with the admin token: status and decoded body."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 (the test's own http URL)
        platform.api_url + path,
        data=data,
        method=method,
        headers={
            "Accept": ACCEPT,
            "Authorization": f"Bearer {platform.env['SLIPWAY_API_KEY']}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            raw = answer.read()
            return answer.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


def slipway(platform: Platform, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI, whatever its exit status."""
    return subprocess.run(
        [sys.executable, "-m", "slipway.cli.main", *args],
        capture_output=True,
        text=True,
        env=platform.env,
        cwd=platform.home,
        timeout=120,
        check=False,
    )


def dashboard_cookie(platform: Platform) -> str:
    """A dashboard session's cookie, signed in with the admin token."""
    body = json.dumps({"token": platform.env["SLIPWAY_API_KEY"]}).encode()
    request = urllib.request.Request(  # noqa: S310 - the test's own platform
        platform.api_url + "/account/web-sessions",
        data=body,
        method="POST",
        headers={"Accept": ACCEPT, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
        cookie = answer.headers["Set-Cookie"].split(";", 1)[0]
    return str(cookie)


def read_with_cookie(platform: Platform, cookie: str, path: str) -> int:
    request = urllib.request.Request(  # noqa: S310 - the test's own platform
        platform.api_url + path, headers={"Accept": ACCEPT, "Cookie": cookie}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def keyring_rows_between(home: Path, start: float, end: float) -> int:
    """Data-key decryptions the keyring's audit holds for [start, end]."""
    db = sqlite3.connect(home / "keyring" / "keyring.db", timeout=10)
    try:
        (count,) = db.execute(
            "SELECT count(*) FROM audit WHERE operation = 'datakey.decrypt' AND at BETWEEN ? AND ?",
            (start, end),
        ).fetchone()
    finally:
        db.close()
    return int(count)


def tarball() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        data = b"web: python -m http.server $PORT\n"
        info = tarfile.TarInfo("Procfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


@pytest.mark.timeout(300)  # the build at the end may wait for the builder on a busy machine
def test_full_disk_scenario(platform: tuple[Platform, LoopFs], tmp_path: Path) -> None:
    """90 %: push refused clearly; 100 %: reads answer, changes 507; freed: all works, no loss."""
    plat, fs = platform
    home = fs.mount / "var"
    plat.cli("apps:create", "hello")
    plat.cli("config:set", "-a", "hello", "K=one", "L=two")
    releases_before = api(plat, "GET", "/apps/hello/releases")[1]
    assert len(releases_before) == 2
    # A dashboard session due for its idle-clock write on its next read.
    cookie = dashboard_cookie(plat)
    db = sqlite3.connect(home / "gateway" / "gateway.db", timeout=10)
    with db:
        db.execute("UPDATE web_sessions SET last_seen = last_seen - 60")
    db.close()

    # --- above the high-water mark: new work is refused, with what is full -------------
    assert fs.fill_to(93) >= 90
    wait_for(
        lambda: api(plat, "POST", "/apps/hello/sources")[0] == 507, 30, "the gateway to see 93 %"
    )
    tree = tmp_path / "tree"
    tree.mkdir()
    git_env = {**plat.env, "GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.com",
               "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip
    for argv in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "first"]):
        (tree / "Procfile").write_text("web: python -m http.server $PORT\n")
        subprocess.run(["git", *argv], cwd=tree, env=git_env, check=True)
    url = plat.api_url.replace("://", f"://x:{plat.env['SLIPWAY_API_KEY']}@") + "/hello.git"
    pushed = subprocess.run(
        ["git", "push", url, "main"], cwd=tree, env=git_env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert pushed.returncode != 0, pushed.stderr
    remote = [line for line in pushed.stderr.splitlines() if line.startswith("remote:")]
    assert len(remote) == 1, pushed.stderr
    assert "Cannot push" in remote[0] and "% full (mark 90 %)" in remote[0], remote
    assert "SLIPWAY_DISK_HIGH_WATER" in remote[0] and "nothing is pruned" in remote[0]

    # --- 0 bytes left: every read answers; changes are refused with 507, not 500 --------
    fs.fill_up()
    full_from = time.time()
    reads = 0
    for _ in range(3):
        got = slipway(plat, "config:get", "-a", "hello", "K")
        assert got.returncode == 0 and got.stdout.strip() == "one", got.stderr
        status, config = api(plat, "GET", "/apps/hello/config-vars")
        assert (status, config) == (200, {"K": "one", "L": "two"})
        reads += 2
    status, listed = api(plat, "GET", "/apps/hello/releases")
    assert status == 200 and [r["version"] for r in listed] == [1, 2]
    assert slipway(plat, "releases", "-a", "hello").returncode == 0
    status, dynos = api(plat, "GET", "/apps/hello/dynos")
    assert (status, dynos) == (200, [])
    assert read_with_cookie(plat, cookie, "/apps/hello") == 200  # the dashboard reads too
    assert slipway(plat, "ps", "-a", "hello").returncode == 0
    logs = slipway(plat, "logs", "-a", "hello")
    assert logs.returncode == 0 and "Release v2 created" in logs.stdout, logs.stderr
    status, session = api(plat, "POST", "/apps/hello/log-sessions", {"lines": 10})
    assert status == 201, session
    status, body = api(plat, "PATCH", "/apps/hello/config-vars", {"M": "three"})
    assert status == 507 and body["id"] == "insufficient_storage", (status, body)
    assert "nothing is pruned" in body["message"]
    status, body = api(plat, "POST", "/apps", {"name": "other"})
    assert status == 507 and body["id"] == "insufficient_storage", (status, body)
    full_until = time.time()

    # --- space freed: everything works, nothing was lost ------------------------------
    fs.free()
    wait_for(
        lambda: slipway(plat, "config:set", "-a", "hello", "M=three").returncode == 0,
        30,
        "config:set to work again",
    )
    assert api(plat, "GET", "/apps/hello/config-vars")[1] == {"K": "one", "L": "two", "M": "three"}
    assert len(api(plat, "GET", "/apps/hello/releases")[1]) == len(releases_before) + 1

    def source_accepted() -> dict[str, str] | None:
        status, created = api(plat, "POST", "/apps/hello/sources")
        return created["source_blob"] if status == 201 else None

    blob = wait_for(source_accepted, 30, "the gateway to see the space freed")
    put = urllib.request.Request(blob["put_url"], data=tarball(), method="PUT")  # noqa: S310
    with urllib.request.urlopen(put, timeout=30) as answer:  # noqa: S310
        assert answer.status == 200
    status, build = api(
        plat, "POST", "/apps/hello/builds", {"source_blob": {"url": blob["get_url"]}}
    )
    assert status == 201, build

    # The bus's store (JetStream, on the same disk) works again: the build command reaches
    # the builder and its `build.finished` event comes back (this source has no buildpack
    # that detects it, so it fails quickly; what matters is that it finishes).
    def finished() -> str | None:
        status, seen = api(plat, "GET", f"/apps/hello/builds/{build['id']}")
        return seen["status"] if status == 200 and seen["status"] != "pending" else None

    wait_for(finished, 120, "the build to go through the bus and finish")

    # The keyring wrote the audit rows of the reads it answered at 100 %, and the gateway
    # the log sessions' entries (marked with when they were asked for).
    wait_for(
        lambda: keyring_rows_between(home, full_from, full_until) >= reads,
        30,
        "the keyring's deferred audit rows",
    )

    def late_sessions() -> list[dict[str, Any]] | None:
        audit = json.loads(plat.cli("audit", "-a", "hello", "--json"))
        late = [
            e for e in audit if e["action"] == "logs.session" and "requested_at" in e["details"]
        ]
        return late if len(late) == 2 else None  # `slipway logs` and the API's log session

    for entry in wait_for(late_sessions, 30, "the gateway's deferred log-session entries"):
        requested = entry["details"]["requested_at"]
        assert requested <= entry["at"], entry
    verified = plat.cli("audit", "-a", "hello", "--verify")
    assert verified.startswith("OK") or "OK: audit chain" in verified, verified


def admin_status(platform: Platform) -> tuple[int, dict[str, Any]]:
    """`slipway admin:status --json`: its exit status and the screen it printed."""
    done = slipway(platform, "admin:status", "--json")
    assert done.stdout.startswith("{"), (done.returncode, done.stderr)
    return done.returncode, json.loads(done.stdout)


def status_when(
    platform: Platform, wanted: Callable[[dict[str, Any]], bool], what: str
) -> tuple[int, dict[str, Any]]:
    """`admin:status --json` once its screen is `wanted` (bounded wait): exit status, screen."""

    def seen() -> tuple[int, dict[str, Any]] | None:
        code, status = admin_status(platform)
        return (code, status) if wanted(status) else None

    return wait_for(seen, 30, what)


def loop_disks(fs: LoopFs, status: dict[str, Any]) -> list[dict[str, Any]]:
    """The status screen's disks that are folders of the loop file system."""
    return [d for d in status["disks"] if d["path"].startswith(str(fs.mount))]


def on_loop_fs(fs: LoopFs, alert: dict[str, Any]) -> bool:
    """A disk alert about a folder of the loop file system (not Docker's data root)."""
    return str(fs.mount) in alert["data"]["summary"]


def deliveries_by_key(posts: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Alert key -> the delivery ids seen (a retried attempt repeats its delivery's id)."""
    found: dict[str, set[str]] = {}
    for post in posts:
        delivery = post["webhook_metadata"]["delivery"]["id"]
        found.setdefault(post["data"]["key"], set()).add(delivery)
    return found


@pytest.mark.timeout(300)
def test_the_disk_alert_reaches_the_operator_webhook_and_resolves(
    alerting: tuple[Platform, LoopFs], receiver: Receiver
) -> None:
    """85 %: a signed `disk` warning; 90 % and 100 %: status red, exit 1; freed: resolved."""
    plat, fs = alerting
    home = fs.mount / "var"
    plat.cli("admin:webhooks:add", "-u", receiver.url, "-i", "alert", "-s", SECRET)
    status_when(plat, lambda s: s["health"] == "green", "a green platform at first")

    # --- past the alert mark, below the high-water mark: a warning, one for the file system
    # that every state folder shares (not one per folder)
    assert 85 <= fs.fill_to(87) < 90

    def every_firing_alert_delivered() -> list[dict[str, Any]] | None:
        firing = {a["key"] for a in admin_status(plat)[1]["alerts"] if a["kind"] == "disk"}
        fired = [a for a in receiver.alerts("disk", "fire") if on_loop_fs(fs, a)]
        return fired if fired and firing <= {a["data"]["key"] for a in fired} else None

    fired = wait_for(every_firing_alert_delivered, 60, "the disk alerts at the webhook")
    assert len({a["data"]["key"] for a in fired}) == 1, fired
    assert f"{home}/" in fired[0]["data"]["summary"], fired
    assert "more folders on its file system are" in fired[0]["data"]["summary"], fired
    for alert in fired:
        data = alert["data"]
        assert (data["scope"], data["severity"], data["state"]) == (
            "platform",
            "warning",
            "firing",
        ), data
        assert data["summary"].endswith(" % full") and data["threshold"] == 85, data
        assert 85 <= data["value"] < 90, data
    code, status = admin_status(plat)
    assert (code, status["health"]) == (0, "yellow"), status["problems"]

    # --- past the high-water mark: red, and `admin:status` exits 1 for cron -------------------
    assert fs.fill_to(93) >= 90
    code, status = status_when(plat, lambda s: s["health"] == "red", "red at 93 %")
    assert code == 1
    disks = loop_disks(fs, status)
    assert disks and all(d["health"] == "red" for d in disks), disks
    # One alert per condition: the one firing since 85 % goes on, escalated to critical
    # and told once more (action "escalate", the same alert id).
    assert {a["key"] for a in status["alerts"]} >= {a["data"]["key"] for a in fired}

    def escalated() -> list[dict[str, Any]] | None:
        found = [a for a in receiver.alerts("disk", "escalate") if on_loop_fs(fs, a)]
        return found or None

    worse = wait_for(escalated, 60, "the disk alert's escalation at the webhook")
    assert [a["data"]["id"] for a in worse] == [fired[0]["data"]["id"]], worse
    assert worse[0]["data"]["severity"] == "critical" and worse[0]["data"]["value"] >= 90

    # --- 0 bytes left: the monitor still reads, judges and answers ---------------------------
    fs.fill_up()

    def full(status: dict[str, Any]) -> bool:
        disks = loop_disks(fs, status)
        return bool(disks) and all(d["used_percent"] >= 99.9 for d in disks)

    code, status = status_when(plat, full, "admin:status to see the disk full")
    assert code == 1 and status["health"] == "red", status
    assert {a["key"] for a in status["alerts"]} >= {a["data"]["key"] for a in fired}

    # --- space freed: every alert told resolves, once ----------------------------------------
    fs.free()

    def all_resolved() -> dict[str, set[str]] | None:
        told = deliveries_by_key(receiver.alerts("disk", "fire"))
        resolved = deliveries_by_key(receiver.alerts("disk", "resolve"))
        return resolved if told and set(resolved) == set(told) else None

    resolved = wait_for(all_resolved, 60, "every disk alert to resolve at the webhook")
    code, status = status_when(plat, lambda s: s["health"] == "green", "green again")
    assert code == 0 and status["alerts"] == [], status
    assert receiver.bad_signatures == 0
    told = deliveries_by_key(receiver.alerts("disk", "fire"))
    assert all(len(ids) == 1 for ids in told.values()), told  # no re-firing
    escalations = deliveries_by_key(receiver.alerts("disk", "escalate"))
    assert all(len(ids) == 1 for ids in escalations.values()), escalations
    assert all(len(ids) == 1 for ids in resolved.values()), resolved


@pytest.mark.timeout(300)
def test_status_answers_when_the_monitor_cannot_record_an_alert(
    alerting: tuple[Platform, LoopFs], receiver: Receiver
) -> None:
    """A disk gone from fine to full between two passes: the alert, unrecordable, is sent
    from memory; status red and says why, no 500; freed: stored, resolved once."""
    plat, fs = alerting
    home = fs.mount / "var"
    plat.cli("admin:webhooks:add", "-u", receiver.url, "-i", "alert", "-s", SECRET)
    # The monitor paused while the disk fills: its next pass finds the disk already full,
    # with no room to record the new alert (the state folders share the disk).
    monitor = int((home / "run" / "monitor.pid").read_text().split()[0])
    os.kill(monitor, signal.SIGSTOP)
    try:
        fs.fill_up()
    finally:
        os.kill(monitor, signal.SIGCONT)

    def says_why(status: dict[str, Any]) -> bool:
        return any("told from memory" in p for p in status["problems"])

    code, status = status_when(plat, says_why, "admin:status to say alerts are held in memory")
    assert code == 1 and status["health"] == "red", status
    disks = loop_disks(fs, status)
    assert disks and all(d["health"] == "red" and d["used_percent"] >= 99.9 for d in disks)

    # The alert nobody could record still reaches the operator: sent from memory, signed.
    def delivered() -> list[dict[str, Any]] | None:
        return [a for a in receiver.alerts("disk", "fire") if on_loop_fs(fs, a)] or None

    fired = wait_for(delivered, 60, "the unrecorded disk alert at the webhook")
    assert fired[0]["data"]["severity"] == "critical" and fired[0]["data"]["value"] >= 99.9

    # Freed: stored as told (not sent again), and its resolve is delivered once.
    fs.free()
    code, status = status_when(plat, lambda s: s["health"] == "green", "green again")
    assert code == 0, status

    def resolved() -> dict[str, set[str]] | None:
        found = deliveries_by_key(
            [a for a in receiver.alerts("disk", "resolve") if on_loop_fs(fs, a)]
        )
        return found or None

    closing = wait_for(resolved, 60, "the resolve at the webhook")
    told = deliveries_by_key([a for a in receiver.alerts("disk", "fire") if on_loop_fs(fs, a)])
    assert set(closing) == set(told), (closing, told)
    assert all(len(ids) == 1 for ids in told.values()), told
    assert all(len(ids) == 1 for ids in closing.values()), closing
    assert receiver.bad_signatures == 0
