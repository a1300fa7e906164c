"""#17 items 7 and 8 on a whole platform, as a customer sees them with the CLI and git.

The supervisor runs every service as `scripts/up` does (the walkthrough's `platform`
fixture: its own ports, home and scope). examples/python-hello runs gunicorn with its
access log on stdout, so every request that reaches the app is a line of `slipway logs`.

- Idle behind the router for three of its former health intervals, the app's log gets
  no request line but the platform's uptime probe (#20 item 4: `GET /` every 30 s, told
  apart by its User-Agent); one request of ours then appears in it exactly once.
- A config change that makes the web process exit at boot (gunicorn refuses an unknown
  option in `GUNICORN_CMD_ARGS`) leaves web=2 of the previous release answering every
  request through the router; the release is listed `failed`, the previous one stays
  current, and the app's log says why. Unsetting it makes a release that runs again,
  and a git push after that rolls out at web=2 too.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from typing import Any

import pytest

from slipway.services.network_wirer.uptime import USER_AGENT
from tests.e2e.supervised import Platform, answered, wait_for, with_text
from tests.e2e.test_walkthrough import LoadLoop, platform, push, web_dynos_up

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.slow, pytest.mark.alone]

__all__ = ["platform"]  # the fixture this module borrows

APP = "quiet"
HOST = f"{APP}.localhost"
FORMER_HEALTH_INTERVAL = 5.0  # seconds between the router's HTTP checks before #17 (TCP now)


def access_lines(platform: Platform) -> list[str]:
    """The app's own access log lines (gunicorn's `"GET /path HTTP/1.1" 200 ...`), less the
    uptime probe's (gunicorn's default format ends with the User-Agent)."""
    logs = platform.cli("logs", "-a", APP, "-n", "1500", "--source", "app")
    requests = [line for line in logs.splitlines() if '"GET ' in line or '"HEAD ' in line]
    return [line for line in requests if USER_AGENT not in line]


def logged(platform: Platform, path: str) -> list[str] | None:
    """The access lines so far, once the request for `path` is among them."""
    lines = access_lines(platform)
    return lines if any(f"GET {path} " in line for line in lines) else None


def push_again(platform: Platform, text: str) -> str:
    """Change hello.py's greeting in the tree `push` made, commit and push it."""
    tree = platform.home / f"src-{APP}"
    hello = tree / "hello.py"
    hello.write_text(hello.read_text().replace("Hello from python-hello", text))
    git = ["git", "-C", str(tree), "-c", "user.email=e2e@example.com", "-c", "user.name=e2e"]
    subprocess.run([*git, "commit", "-qam", text], check=True, env=platform.env)
    url = platform.api_url.replace("://", f"://git:{platform.env['SLIPWAY_API_KEY']}@")
    done = subprocess.run(
        [*git, "push", f"{url}/{APP}.git", "main"],
        capture_output=True,
        text=True,
        env=platform.env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def releases(platform: Platform) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(platform.cli("releases", "-a", APP, "--json"))
    return sorted(listed, key=lambda r: int(r["version"]))


@pytest.mark.timeout(900)
def test_an_idle_app_logs_no_request_and_a_crashing_release_keeps_web_2_serving(
    platform: Platform,
) -> None:
    """Item 8, then item 7's failed deploy and its fix, on one pushed app."""
    platform.cli("apps:create", APP)
    push(platform, APP, "python-hello")
    wait_for(lambda: answered(platform, HOST), 90, "the app via the router")

    # ---- item 8: nothing but our own requests reaches the app -------------------------------
    before = f"/before-{uuid.uuid4().hex[:8]}"
    assert platform.get(HOST, before)[0] == 200
    lines = wait_for(lambda: logged(platform, before), 30, "our first request in the log")
    time.sleep(3 * FORMER_HEALTH_INTERVAL)  # idle: no user sends anything
    after = f"/after-{uuid.uuid4().hex[:8]}"
    assert platform.get(HOST, after)[0] == 200
    later = wait_for(lambda: logged(platform, after), 30, "our second request in the log")
    assert later[: len(lines)] == lines  # history is in order: the new lines come last
    assert [after in line for line in later[len(lines) :]] == [True], later[len(lines) :]

    # ---- item 7: a release whose dynos crash at boot ----------------------------------------
    platform.cli("ps:scale", "-a", APP, "web=2")
    wait_for(lambda: web_dynos_up(platform, APP, 2), 90, "two web dynos up")
    good = releases(platform)[-1]["version"]
    with LoadLoop(platform, HOST) as load:
        platform.cli("config:set", "-a", APP, "GUNICORN_CMD_ARGS=--no-such-option")

        def failed() -> dict[str, Any] | None:
            newest = releases(platform)[-1]
            return newest if newest["status"] == "failed" else None

        bad = wait_for(failed, 120, "the crashing release marked failed")
    statuses = [status for status in load.statuses if status != 200]
    assert load.statuses and not statuses, (len(load.statuses), statuses, load.errors)
    assert bad["version"] == good + 1 and not bad["current"]
    assert [r["version"] for r in releases(platform) if r["current"]] == [good]
    assert web_dynos_up(platform, APP, 2, release=good)
    table = platform.cli("releases", "-a", APP)
    assert f"Current: v{good}" in table and "(failed)" in table, table
    said = wait_for(
        lambda: with_text(platform.cli("logs", "-a", APP, "-n", "300"), "heroku[api]"),
        30,
        "the platform's line about the release",
    )
    assert (
        f"heroku[api]: Release v{good + 1} failed: web.1: Process exited with status 2;"
        f" v{good} keeps serving" in said
    ), said

    # The fix is one more config change: built on the newest release, it runs and is current.
    platform.cli("config:unset", "-a", APP, "GUNICORN_CMD_ARGS")
    wait_for(lambda: web_dynos_up(platform, APP, 2, release=good + 2), 120, "the fixed release up")
    assert [r["version"] for r in releases(platform) if r["current"]] == [good + 2]

    # A git push with web=2 rolls out two dynos of the new build: the formation stays.
    pushed = push_again(platform, "Hello again")
    assert f"Released v{good + 3}" in pushed, pushed
    wait_for(lambda: web_dynos_up(platform, APP, 2, release=good + 3), 120, "v+3 at web=2")
    assert "Hello again" in platform.get(HOST)[1]
    formation = json.loads(platform.cli("ps:scale", "-a", APP, "--json"))
    assert {f["type"]: f["quantity"] for f in formation} == {"web": 2}
