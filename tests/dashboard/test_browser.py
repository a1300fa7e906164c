"""The dashboard in Debian's headless Chromium, against a whole supervised platform.

One platform for the module (tests/e2e/supervised.py, as `scripts/up` runs it), with
examples/python-hello pushed once. Each test then acts in a browser as a customer would:
sign in (token, one-time link), create an app, set a config var, scale, roll back,
watch a live log line arrive, sign out; a viewer finds no control and is refused when
forcing one; a page on another origin cannot forge a change; customer strings that look
like markup stay text. Screenshots of every page go to test-artifacts/dashboard/.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.conftest import new_scope
from tests.dashboard.conftest import Browser, screenshot
from tests.e2e.supervised import Platform, answered, as_admin, own_env, start, stop, wait_for
from tests.e2e.test_walkthrough import push, remove_docker_leftovers, web_dynos_up

# The first test also waits for the module's platform and its first push (a build).
pytestmark = [
    pytest.mark.alone,
    pytest.mark.integration,
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.timeout(900),
]

ACCEPT = "application/vnd.heroku+json; version=3"
APP = "hello"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The supervised platform with `hello` created and python-hello pushed to it."""
    home = tmp_path_factory.mktemp("dashboard")
    scope = new_scope()
    # Probes every 2 s (not 30): the overview's uptime panel has figures within the tests.
    env = own_env(
        home / "var", home, scope, SLIPWAY_METRICS_INTERVAL="2", SLIPWAY_PROBE_INTERVAL="2"
    )
    platform = start(home / "var", env)
    try:
        as_admin(platform, home / "var")
        platform.cli("apps:create", APP)
        push(platform, APP, "python-hello")
        wait_for(lambda: answered(platform, f"{APP}.localhost"), 120, "the app via the router")
        yield platform
    finally:
        stop(platform.process)
        remove_docker_leftovers(scope)


# ---- helpers --------------------------------------------------------------------------------


def call(
    platform: Platform,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = None,
    cookie: str | None = None,
) -> tuple[int, Any]:
    """The API, as a client outside the browser: (status, decoded body)."""
    headers = {"Accept": ACCEPT, "Content-Type": "application/json"}
    if cookie is not None:
        headers["Cookie"] = f"slipway_session={cookie}"
    else:
        headers["Authorization"] = f"Bearer {token or platform.env['SLIPWAY_API_KEY']}"
    data = json.dumps(body).encode() if body is not None else None
    url = platform.api_url + path
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            raw = answer.read()
            return answer.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


def ok(platform: Platform, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    status, answer = call(platform, method, path, body, **kw)
    assert 200 <= status < 300, (method, path, status, answer)
    return answer


# Generous: the page answers in well under a second on a quiet machine, but CI shares two
# cores with a whole platform, and a wait that times out is a failure, not a measurement.
PATIENCE = 60.0


def wait(driver: webdriver.Chrome, timeout: float = PATIENCE) -> WebDriverWait[webdriver.Chrome]:
    return WebDriverWait(driver, timeout, poll_frequency=0.1)


def find(driver: webdriver.Chrome, css: str, timeout: float = PATIENCE) -> Any:
    """The first element matching `css`, once there is one (else a screenshot and the text)."""
    try:
        return wait(driver, timeout).until(lambda d: d.find_elements(By.CSS_SELECTOR, css))[0]
    except TimeoutException:
        where = driver.execute_script("return location.hash") or "page"
        screenshot(driver, "failed-" + where.strip("#/").replace("/", "-"))
        shown = driver.find_element(By.TAG_NAME, "body").text
        console = [e["message"] for e in driver.get_log("browser")]  # type: ignore[no-untyped-call]
        pytest.fail(
            f"{where}: no {css} on the page, which shows: {shown[:500]}; console: {console}"
        )


def go(driver: webdriver.Chrome, platform: Platform, hash_path: str, ready: str) -> None:
    """Open `#<hash_path>` and wait for `ready` (a CSS selector) to be on the page."""
    driver.get(f"{platform.api_url}/#{hash_path}")
    find(driver, ready)


def sign_in(driver: webdriver.Chrome, platform: Platform, token: str | None = None) -> None:
    """Sign in on the token form; done when the apps list is shown."""
    driver.get(f"{platform.api_url}/#/login")
    try:
        wait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#token"))
    except TimeoutException:
        # Seen about once in five runs of this module: the page's scripts never start (it
        # stays on index.html's "Loading…", console empty). Not understood yet; said in the
        # output, then the page is loaded once more, as a person would.
        console = [e["message"] for e in driver.get_log("browser")]  # type: ignore[no-untyped-call]
        print(
            f"\nsign-in page stuck on {driver.find_element(By.TAG_NAME, 'body').text!r}"
            f" (console: {console}); reloading once"
        )
        driver.refresh()
    find(driver, "#token").send_keys(token or platform.env["SLIPWAY_API_KEY"])
    driver.find_element(By.ID, "sign-in").click()
    find(driver, "#sign-out")
    wait(driver).until(lambda d: d.execute_script("return location.hash") == "#/apps")
    find(driver, "#apps, #no-apps")


def no_errors(driver: webdriver.Chrome) -> None:
    """No error on the page, and none in the console (a script error, a CSP refusal)."""
    shown = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".error") if e.is_displayed()]
    assert not shown, shown
    console = driver.get_log("browser")  # type: ignore[no-untyped-call]  # selenium's own hint
    # An API answer of 4xx is logged by Chromium as a failed load: the page handles those.
    problems = [e["message"] for e in console if "Failed to load resource" not in e["message"]]
    assert not problems, problems


def new_user(platform: Platform, email: str) -> str:
    """A user invited by the admin and joined (as `slipway auth:join` does): their token."""
    user = ok(platform, "POST", "/users", {"email": email})
    secret = secrets.token_urlsafe(32)
    verifier = hashlib.sha256(secret.encode()).hexdigest()
    ok(platform, "POST", f"/users/{user['id']}/invitations", {"verifier": verifier})
    joined = ok(
        platform,
        "POST",
        "/invitations/actions/redeem",
        {"email": email, "secret": secret, "description": "dashboard test"},
        token="none",
    )
    return str(joined["access_token"]["token"])


def team_of(platform: Platform, app: str) -> str:
    return str(ok(platform, "GET", f"/apps/{app}")["team"]["name"])


def in_page_fetch(driver: webdriver.Chrome, method: str, path: str, body: Any) -> Any:
    """A request made by the page itself, with its session cookie and CSRF token."""
    return driver.execute_async_script(
        """
        const [method, path, body, done] = arguments;
        (async () => {
          const current = await fetch("/account/web-sessions/current",
            { headers: { Accept: "application/json" } });
          const csrf = (await current.json()).csrf_token;
          const answer = await fetch(path, {
            method, body: method === "GET" ? undefined : JSON.stringify(body),
            headers: { Accept: "application/json", "Content-Type": "application/json",
                       "X-CSRF-Token": csrf } });
          return { status: answer.status, body: await answer.json() };
        })().then(done, (error) => done({ error: String(error) }));
        """,
        method,
        path,
        body,
    )


# ---- the tests, in the order a customer would go ---------------------------------------------


def test_sign_in_with_a_token(platform: Platform, chromium: Browser) -> None:
    """An API token on the sign-in page opens the apps list, with the pushed app in it."""
    driver = chromium()
    driver.get(platform.api_url + "/")
    find(driver, "#token")
    screenshot(driver, "01-sign-in")
    sign_in(driver, platform)
    row = find(driver, f'#apps tr[data-app="{APP}"]')
    wait(driver, 30).until(lambda d: "up" in row.text)  # its dynos, filled in as they arrive
    screenshot(driver, "02-apps")
    assert platform.env["ADMIN_EMAIL"] in driver.find_element(By.ID, "who").text
    cookie = driver.get_cookie("slipway_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"


def test_sign_in_with_a_one_time_link(platform: Platform, chromium: Browser) -> None:
    """`slipway login --web`'s link plus the account's email signs in, once only."""
    url = platform.cli("login", "--web").split()[0]
    assert "/#/login/" in url
    driver = chromium()
    driver.get(url)
    find(driver, "#email").send_keys(platform.env["ADMIN_EMAIL"])
    screenshot(driver, "03-sign-in-link")
    driver.find_element(By.ID, "sign-in").click()
    find(driver, "#sign-out")
    assert "/login/" not in driver.current_url  # the used code left the address bar
    again = chromium()
    again.get(url)
    find(again, "#email").send_keys(platform.env["ADMIN_EMAIL"])
    again.find_element(By.ID, "sign-in").click()
    assert find(again, ".error").text  # a link works once
    assert not again.find_elements(By.ID, "sign-out")


def test_create_an_app(platform: Platform, chromium: Browser) -> None:
    """The new-app form creates the app (the CLI lists it) and opens its overview."""
    driver = chromium()
    sign_in(driver, platform)
    find(driver, "#new-app-name").send_keys("from-browser")
    driver.find_element(By.ID, "create-app").click()
    wait(driver).until(lambda d: d.execute_script("return location.hash") == "#/apps/from-browser")
    assert find(driver, "#app-name").text == "from-browser"
    names = [a["name"] for a in json.loads(platform.cli("apps", "--json"))]
    assert "from-browser" in names


def test_a_config_var_stays_hidden_until_revealed(platform: Platform, chromium: Browser) -> None:
    """A var set in the browser is stored (CLI sees it), shown as dots until "Reveal"."""
    driver = chromium()
    sign_in(driver, platform)
    go(driver, platform, f"/apps/{APP}/config", "#config-form")
    value = f"shown-only-on-reveal-{uuid.uuid4().hex[:8]}"
    find(driver, "#config-key").send_keys("DASH_VAR")
    driver.find_element(By.ID, "config-value").send_keys(value)
    driver.find_element(By.ID, "config-add").click()
    row = find(driver, 'tr[data-key="DASH_VAR"]')
    assert value not in driver.find_element(By.TAG_NAME, "body").text
    assert "••••" in row.text
    screenshot(driver, "05-config")
    row.find_element(By.CSS_SELECTOR, "button.reveal").click()
    assert row.find_element(By.CSS_SELECTOR, ".value").text == value
    assert json.loads(platform.cli("config", "-a", APP, "--json"))["DASH_VAR"] == value


def test_scale_web_to_two(platform: Platform, chromium: Browser) -> None:
    """Scaling web to 2 on the overview brings up a second dyno, shown up on the page."""
    driver = chromium()
    sign_in(driver, platform)
    go(driver, platform, f"/apps/{APP}", 'form.scale[data-type="web"]')
    quantity = driver.find_element(By.CSS_SELECTOR, 'form.scale[data-type="web"] input')
    quantity.clear()
    quantity.send_keys("2")
    driver.find_element(By.CSS_SELECTOR, 'form.scale[data-type="web"] button').click()
    wait(driver, 180).until(
        lambda d: (
            len(d.find_elements(By.CSS_SELECTOR, 'tr[data-state="up"][data-dyno^="web."]')) == 2
        )
    )
    assert web_dynos_up(platform, APP, 2)
    # CPU and memory come from the log-shipper's samples (every 2 s here).
    wait(driver, 30).until(lambda d: "MB" in d.find_element(By.ID, "dyno-table").text)
    # The uptime panel: three windows, the day's a percentage once the router probed the app.
    day = '#uptime .uptime-figure[data-period="24h"]'
    wait(driver, 60).until(lambda d: "%" in d.find_element(By.CSS_SELECTOR, day).text)
    figures = driver.find_elements(By.CSS_SELECTOR, "#uptime .uptime-figure")
    assert [f.get_attribute("data-period") for f in figures] == ["24h", "7d", "30d"]
    screenshot(driver, "04-overview")
    driver.set_window_size(390, 844)
    time.sleep(0.3)  # a resize has no event to wait for; the layout settles in a frame
    screenshot(driver, "04-overview-390px")
    width = driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= 390, width  # nothing forces the phone to scroll sideways


def test_roll_back_to_an_earlier_release(platform: Platform, chromium: Browser) -> None:
    """ "Roll back" on an earlier release makes a new current release of it."""
    driver = chromium()
    sign_in(driver, platform)
    go(driver, platform, f"/apps/{APP}/releases", "#release-table")
    screenshot(driver, "06-releases")
    button = find(driver, "button.rollback")
    target = button.get_attribute("data-version")
    newest = max(r["version"] for r in json.loads(platform.cli("releases", "-a", APP, "--json")))
    button.click()
    wait(driver, 60).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, f'tr.current[data-version="{newest + 1}"]')
    )
    releases = json.loads(platform.cli("releases", "-a", APP, "--json"))
    made = next(r for r in releases if r["version"] == newest + 1)
    assert f"v{target}" in made["description"], made["description"]
    assert made["current"]


def test_a_live_log_line_appears(platform: Platform, chromium: Browser) -> None:
    """A request through the router shows up on the open logs page; the delay is printed."""
    driver = chromium()
    sign_in(driver, platform)
    go(driver, platform, f"/apps/{APP}/logs", "#log-state.ok")
    marker = f"live-{uuid.uuid4().hex[:12]}"
    sent = time.monotonic()
    assert platform.get(f"{APP}.localhost", f"/{marker}")[0] == 200
    wait(driver, 30).until(lambda d: marker in d.find_element(By.ID, "log-lines").text)
    delay = time.monotonic() - sent
    print(f"\nlive log line: request sent → line on the page in {delay * 1000:.0f} ms")
    screenshot(driver, "07-logs")


def test_log_filters_narrow_the_stream(platform: Platform, chromium: Browser) -> None:
    """Source `heroku` and dyno `router` show the request's router line and no app line."""
    driver = chromium()
    sign_in(driver, platform)
    go(driver, platform, f"/apps/{APP}/logs", "#log-state.ok")
    Select(driver.find_element(By.ID, "log-source")).select_by_value("heroku")
    driver.find_element(By.ID, "log-dyno").send_keys("router")
    driver.find_element(By.ID, "log-apply").click()
    find(driver, "#log-state.ok")
    marker = f"filtered-{uuid.uuid4().hex[:12]}"
    assert platform.get(f"{APP}.localhost", f"/{marker}")[0] == 200
    wait(driver, 30).until(lambda d: marker in d.find_element(By.ID, "log-lines").text)
    lines = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#log-lines .line")]
    assert lines and all(" heroku[router]: " in line for line in lines), lines[:5]


def test_idle_browser_signs_itself_out(platform: Platform, chromium: Browser) -> None:
    """Past the idle time without a keystroke or click the page signs out and says why."""
    driver = chromium()
    sign_in(driver, platform)
    cookie = driver.get_cookie("slipway_session")
    assert cookie is not None
    # The same module instance the page runs: its idle time cut to 1 s (the server's is 15 min).
    driver.execute_async_script(
        "const done = arguments[0];"
        ' import("/dashboard/api.js").then((m) => { m.session.idleTimeout = 1; done(); });'
    )
    notice = find(driver, "#notice", timeout=30)
    assert notice.text == "Signed out after 1 second idle."
    assert call(platform, "GET", "/account", cookie=cookie["value"])[0] == 401


def test_sign_out_ends_the_session(platform: Platform, chromium: Browser) -> None:
    """After "Sign out" the page asks to sign in and the old cookie is refused by the API."""
    driver = chromium()
    sign_in(driver, platform)
    cookie = driver.get_cookie("slipway_session")
    assert cookie is not None
    assert call(platform, "GET", "/account", cookie=cookie["value"])[0] == 200
    driver.find_element(By.ID, "sign-out").click()
    find(driver, "#token")
    status, body = call(platform, "GET", "/account", cookie=cookie["value"])
    assert status == 401 and body["id"] == "unauthorized"


def test_sign_out_everywhere_ends_every_browser(platform: Platform, chromium: Browser) -> None:
    """ "Sign out everywhere" in one browser sends the other to the sign-in page too."""
    first, second = chromium(), chromium()
    sign_in(first, platform)
    sign_in(second, platform)
    first.find_element(By.ID, "sign-out-everywhere").click()
    find(first, "#token")
    second.get(f"{platform.api_url}/#/apps/{APP}")
    find(second, "#token")
    assert find(second, "#notice").text  # it says why


def test_a_viewer_sees_no_change_control_and_is_refused(
    platform: Platform, chromium: Browser
) -> None:
    """A viewer's pages have no scale, rollback or config control; forcing them answers 403."""
    email = f"viewer-{uuid.uuid4().hex[:6]}@example.com"
    token = new_user(platform, email)
    platform.cli("config:set", "-a", APP, "VIEWER_SEES=kept-from-view")
    ok(
        platform,
        "PUT",
        f"/teams/{team_of(platform, APP)}/members",
        {"email": email, "role": "viewer"},
    )
    driver = chromium()
    sign_in(driver, platform, token)
    go(driver, platform, f"/apps/{APP}", "#dyno-table")
    assert find(driver, "#role").text == "you are viewer"
    assert not driver.find_elements(By.CSS_SELECTOR, "form.scale, input.qty")
    screenshot(driver, "10-viewer-overview")
    go(driver, platform, f"/apps/{APP}/releases", "#release-table")
    assert not driver.find_elements(By.CSS_SELECTOR, "button.rollback")
    go(driver, platform, f"/apps/{APP}/config", "#config-refused")
    assert "kept-from-view" not in driver.find_element(By.TAG_NAME, "body").text
    assert not driver.find_elements(By.CSS_SELECTOR, "#config button, #config-form, textarea")
    revealed = in_page_fetch(driver, "GET", f"/apps/{APP}/config-vars", None)
    assert revealed["status"] == 403 and "kept-from-view" not in json.dumps(revealed), revealed
    forced = in_page_fetch(driver, "PATCH", f"/apps/{APP}/config-vars", {"FORCED": "1"})
    assert forced["status"] == 403 and forced["body"]["id"] == "forbidden", forced
    assert "FORCED" not in json.loads(platform.cli("config", "-a", APP, "--json"))


def posts_to(driver: webdriver.Chrome, url: str) -> list[int]:
    """The statuses of the browser's POSTs to `url` (from DevTools' network log)."""
    methods: dict[str, str] = {}
    found: list[int] = []
    log = driver.get_log("performance")  # type: ignore[no-untyped-call]  # selenium's own hint
    for entry in log:
        event = json.loads(entry["message"])["message"]
        params = event.get("params", {})
        if event["method"] == "Network.requestWillBeSent":
            methods[params["requestId"]] = params["request"]["method"]
        elif (
            event["method"] == "Network.responseReceived"
            and params["response"]["url"] == url
            and methods.get(params["requestId"]) == "POST"
        ):
            found.append(int(params["response"]["status"]))
    return found


class _Attacker(BaseHTTPRequestHandler):
    """A page on another origin that tries to create apps on the victim's behalf."""

    target = ""

    def do_GET(self) -> None:
        api = self.target
        body = f"""<!doctype html><html><body>
<form id="forge" method="POST" action="{api}/apps" enctype="text/plain">
<input type="hidden" name='{{"name":"csrf-form-app","x":"' value='"}}'>
</form>
<script>
fetch("{api}/apps", {{method: "POST", mode: "no-cors", credentials: "include",
  headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify({{name: "csrf-fetch-app"}})}})
  .finally(() => document.getElementById("forge").submit());
</script></body></html>"""
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


def test_a_forgery_from_another_origin_is_refused(platform: Platform, chromium: Browser) -> None:
    """A page on another loopback port posts a form and a fetch to /apps: nothing is created."""
    handler = type("Attacker", (_Attacker,), {"target": platform.api_url})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        driver = chromium(network_log=True)
        sign_in(driver, platform)  # the victim is signed in, with a live cookie
        driver.get(f"http://127.0.0.1:{server.server_address[1]}/")
        # The form navigates the tab to the API's answer: the refusal, in Heroku's shape.
        wait(driver).until(lambda d: d.current_url.startswith(platform.api_url + "/apps"))
        refusal = json.loads(driver.find_element(By.TAG_NAME, "body").text)
        screenshot(driver, "11-csrf-refused")
    finally:
        server.shutdown()
        server.server_close()
    assert refusal["id"] == "forbidden", refusal
    # Both forgeries reached the API with the cookie, and both were refused there.
    assert posts_to(driver, f"{platform.api_url}/apps") == [403, 403]
    names = [a["name"] for a in ok(platform, "GET", "/apps")]
    assert "csrf-form-app" not in names and "csrf-fetch-app" not in names


def test_markup_in_customer_strings_stays_text(platform: Platform, chromium: Browser) -> None:
    """An `<img onerror>` in a config value and in a log line is shown as text, never run."""
    payload = "<img src=x onerror=window.__xss=1>"
    marker = uuid.uuid4().hex[:12]
    platform.cli("config:set", "-a", APP, f"XSS_PROBE={payload}")
    driver = chromium()
    sign_in(driver, platform)
    go(driver, platform, f"/apps/{APP}/config", 'tr[data-key="XSS_PROBE"]')
    row = driver.find_element(By.CSS_SELECTOR, 'tr[data-key="XSS_PROBE"]')
    row.find_element(By.CSS_SELECTOR, "button.reveal").click()
    assert row.find_element(By.CSS_SELECTOR, ".value").text == payload
    assert not driver.find_elements(By.CSS_SELECTOR, "#config-table img")
    go(driver, platform, f"/apps/{APP}/logs", "#log-state.ok")
    # The dyno's access log prints the User-Agent as it came: the markup reaches the page.
    request = urllib.request.Request(
        f"http://127.0.0.1:{platform.router_port}/{marker}",
        headers={"Host": f"{APP}.localhost", "User-Agent": f"{payload} {marker}"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        assert answer.status == 200
    wait(driver, 30).until(
        lambda d: any(
            payload in line.text and marker in line.text
            for line in d.find_elements(By.CSS_SELECTOR, "#log-lines .line")
        )
    )
    assert not driver.find_elements(By.CSS_SELECTOR, "#log-lines img")
    assert driver.execute_script("return window.__xss") is None
    screenshot(driver, "12-markup-as-text")


def test_every_page_renders(platform: Platform, chromium: Browser) -> None:
    """Activity, metrics, team and audit pages render without error; the audit chain verifies."""
    driver = chromium()
    sign_in(driver, platform)
    go(driver, platform, f"/apps/{APP}/activity", "#build-table")
    driver.find_element(By.CSS_SELECTOR, "#build-table button").click()
    wait(driver, 30).until(lambda d: "Python" in d.find_element(By.ID, "build-output").text)
    no_errors(driver)
    screenshot(driver, "08-activity")
    go(driver, platform, f"/apps/{APP}/metrics", "#charts > *")
    no_errors(driver)
    screenshot(driver, "09-metrics")
    team = team_of(platform, APP)
    go(driver, platform, f"/teams/{team}", "#member-table")
    no_errors(driver)
    assert platform.env["ADMIN_EMAIL"] in driver.find_element(By.ID, "member-table").text
    screenshot(driver, "13-team")

    # Checkpoints are signed soon after each entry: reload until the head is covered.
    def verified(d: webdriver.Chrome) -> str | None:
        d.get(f"{platform.api_url}/#/teams/{team}/audit")
        d.refresh()
        status = WebDriverWait(d, 20).until(
            lambda d: d.find_element(By.CSS_SELECTOR, "#audit-status[data-ok]")
        )
        return status.text if status.get_attribute("data-ok") == "true" else None

    text = wait(driver, 60).until(verified)
    assert text is not None and text.startswith("Verified through entry "), text
    no_errors(driver)
    screenshot(driver, "14-audit")


def test_the_overview_with_fifty_apps(platform: Platform, chromium: Browser) -> None:
    """With 50 apps the apps list and an overview render; the times are printed."""
    existing = {a["name"] for a in ok(platform, "GET", "/apps")}
    for i in range(50 - len(existing)):
        ok(platform, "POST", "/apps", {"name": f"fleet-{i:02d}"})
    driver = chromium()
    sign_in(driver, platform)
    started = time.monotonic()
    go(driver, platform, "/apps", '#apps tr[data-app="fleet-00"]')
    wait(driver, 60).until(
        lambda d: not [c for c in d.find_elements(By.CSS_SELECTOR, "#apps td") if c.text == "…"]
    )
    listed = time.monotonic() - started
    started = time.monotonic()
    go(driver, platform, f"/apps/{APP}", "#dyno-table")
    overview = time.monotonic() - started
    print(
        f"\n50 apps: list complete in {listed * 1000:.0f} ms, overview in {overview * 1000:.0f} ms"
    )
    assert len(driver.find_elements(By.CSS_SELECTOR, "#dyno-table tbody tr")) >= 1
