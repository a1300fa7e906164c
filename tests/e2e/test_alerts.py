"""Alerts on a whole platform, from real causes, to a real webhook receiver.

Issue #20 item 2: an app rule fires when the app's dynos crash (a release whose web
process cannot start) and a platform alert fires when a service stops answering (its
process paused with SIGSTOP: alive to the supervisor, silent on the bus, the way a hung
service looks); each reaches a webhook receiver with a valid HMAC signature, the app's
in the app's log as `heroku[alert]`, and each resolves once its cause is gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import new_scope
from tests.e2e.supervised import (
    Platform,
    answered,
    as_admin,
    own_env,
    start,
    stop,
    wait_for,
    with_text,
)
from tests.e2e.test_walkthrough import push, remove_docker_leftovers
from tests.e2e.webhookreceiver import Receiver, receiving

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.alone]

APP = "alerty"
SECRET = "alert-secret-" + "x" * 20


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with receiving(SECRET) as server:
        yield server


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    home = tmp_path_factory.mktemp("alerts")
    scope = new_scope()
    env = own_env(
        home / "var",
        home,
        scope,
        SLIPWAY_MONITOR_INTERVAL="1",
        SLIPWAY_MONITOR_DISCOVERY_WAIT="0.5",
        # The receiver is on loopback: this operator allows it, over plain HTTP.
        SLIPWAY_EGRESS_ALLOW="127.0.0.1/32",
        SLIPWAY_WEBHOOK_ALLOW_HTTP="1",
        SLIPWAY_WEBHOOK_BACKOFF="1",
    )
    platform = start(home / "var", env)
    try:
        as_admin(platform, home / "var")
        yield platform
    finally:
        stop(platform.process)
        remove_docker_leftovers(scope)


def _child_pid(platform: Platform, name: str) -> int:
    pidfile = platform.home / "var" / "run" / f"{name}.pid"
    return int(pidfile.read_text().split()[0])


@pytest.mark.timeout(900)
def test_a_crashing_app_and_a_silent_service_reach_their_webhooks_and_resolve(
    platform: Platform, receiver: Receiver
) -> None:
    """crashed_dynos fires and resolves for the app; service_down for the paused builder."""
    platform.cli("apps:create", APP)
    push(platform, APP, "python-hello")
    wait_for(lambda: answered(platform, f"{APP}.localhost"), 90, "the app via the router")
    platform.cli("webhooks:add", "-a", APP, "-u", receiver.url, "-i", "alert", "-s", SECRET)
    platform.cli("admin:webhooks:add", "-u", receiver.url, "-i", "alert", "-s", SECRET)
    added = platform.cli("alerts:add", "crashed_dynos", "0", "--window", "1", "-a", APP)
    assert "crashed_dynos above 0" in added, added

    # ---- the app: a release whose web process cannot start ----------------------------------
    platform.cli("config:set", "-a", APP, "GUNICORN_CMD_ARGS=--no-such-option", timeout=300)
    fired = wait_for(
        lambda: receiver.alerts("crashed_dynos", "fire"), 120, "the app alert at the webhook"
    )[0]
    assert fired["data"]["app_name"] == APP and fired["data"]["scope"] == "app"
    assert "dyno crash" in fired["data"]["summary"]
    logged = wait_for(
        lambda: with_text(platform.cli("logs", "-a", APP, "-n", "300"), "heroku[alert]"),
        30,
        "the alert line in the app's log",
    )
    assert "heroku[alert]: WARNING" in logged and "dyno crash" in logged, logged
    # The failed release's dynos are removed and the old release does not crash: a minute
    # later the window holds no crash, and the alert resolves.
    wait_for(lambda: receiver.alerts("crashed_dynos", "resolve"), 180, "the app alert resolved")
    listed = json.loads(platform.cli("alerts", "-a", APP, "--json"))
    assert [a["state"] for a in listed["alerts"]] == ["resolved"], listed

    # ---- the platform: the builder stops answering ----------------------------------------
    pid = _child_pid(platform, "builder")
    os.kill(pid, signal.SIGSTOP)
    try:
        down = wait_for(
            lambda: receiver.alerts("service_down", "fire"), 60, "service_down at the webhook"
        )[0]
        assert down["data"]["key"] == "service_down:builder", down
        assert down["data"]["severity"] == "critical" and down["data"]["scope"] == "platform"
        status = platform_status(platform)
        assert status["health"] == "red" and "builder" in status["missing"], status
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: receiver.alerts("service_down", "resolve"), 60, "service_down resolved")
    assert receiver.bad_signatures == 0
    # Every delivery above went to both webhooks only when it should: the app's alert to the
    # app's webhook alone, the platform's to the operator's alone (one post each).
    assert len(receiver.alerts("crashed_dynos", "fire")) == 1
    assert len(receiver.alerts("service_down", "fire")) == 1


def platform_status(platform: Platform) -> dict[str, Any]:
    """`slipway admin:status --json` (exit 1 when red: read its output either way)."""
    done = subprocess.run(
        [sys.executable, "-m", "slipway.cli.main", "admin:status", "--json"],
        capture_output=True,
        text=True,
        env=platform.env,
        cwd=platform.home,
        timeout=60,
        check=False,
    )
    status: dict[str, Any] = json.loads(done.stdout)
    assert done.returncode == (1 if status["health"] == "red" else 0), done.stderr
    return status


@pytest.mark.timeout(600)
def test_a_slow_app_fires_its_p95_rule_and_resolves_once_fast_again(
    platform: Platform, receiver: Receiver
) -> None:
    """Answers made 400 ms slow: p95_ms > 200 fires to the app's webhook; made fast, it resolves."""
    app, host = "slowpoke", "slowpoke.localhost"
    platform.cli("apps:create", app)
    push(platform, app, "python-hello")
    wait_for(lambda: answered(platform, host), 90, "the app via the router")
    platform.cli("webhooks:add", "-a", app, "-u", receiver.url, "-i", "alert", "-s", SECRET)
    platform.cli("config:set", "-a", app, "HELLO_DELAY_MS=400", timeout=300)
    platform.cli("alerts:add", "p95_ms", "200", "--window", "1", "-a", app)

    def fired_under_load(action: str) -> list[dict[str, Any]]:
        for _ in range(3):  # the traffic the rule measures: a few requests per check
            platform.get(host)
        return [a for a in receiver.alerts("p95_ms", action) if a["data"]["app_name"] == app]

    fired = wait_for(lambda: fired_under_load("fire"), 180, "the p95 alert at the webhook")[0]
    assert fired["data"]["value"] > 200 and fired["data"]["threshold"] == 200, fired
    assert "p95 response time" in fired["data"]["summary"], fired
    # Fast again: once the window holds only fast answers, the alert resolves.
    platform.cli("config:unset", "-a", app, "HELLO_DELAY_MS", timeout=300)
    wait_for(lambda: fired_under_load("resolve"), 240, "the p95 alert resolved")
    assert receiver.bad_signatures == 0
