"""Time to first render of the dashboard's app overview, beside the same calls made bare.

    .venv/bin/python bench/dashboard.py [--apps 50] [--releases 1000] [--loads 20]

A whole platform under its supervisor (as `scripts/up` runs it, with its own home, ports and
scope), seeded through the API with `--apps` apps and `--releases` releases in all, most of
them on the app measured, which also runs a real pushed release (examples/python-hello) with
web=2, so the overview shows real dynos, metrics and a formation. Debian's Chromium, headless,
signed in through the dashboard's own sign-in, then loads `/#/apps/<app>` `--loads` times,
each a full page load. Measured per load, from the navigation's start (performance.timeOrigin):

- overview: the page's `overview-rendered` mark, set once the formation, dynos, latest
  release and domains are on screen (issue 19's target: <= 300 ms);
- shell: first contentful paint of the same load (HTML, CSS, the first script);
- bare calls: the overview's API requests made side by side from one aiohttp client with
  the same session cookie, no browser (the floor the page cannot beat).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `tests.*` below, as pytest finds it

from tests.conftest import new_scope, remove_scope_objects  # noqa: E402
from tests.e2e.supervised import own_env, start, stop  # noqa: E402

ACCEPT = "application/vnd.heroku+json; version=3"
TARGET_MS = 300.0
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


async def seed(api: str, token: str, apps: int, releases: int, measured: str) -> None:
    """`apps` apps; `releases` releases in all (one each from creation, the rest on `measured`)."""
    headers = {"Accept": ACCEPT, "Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:

        async def call(method: str, path: str, body: Any = None) -> Any:
            async with http.request(method, api + path, json=body) as answer:
                assert answer.status < 300, (method, path, answer.status, await answer.text())
                return await answer.json() if answer.status != 204 else None

        existing = {a["name"] for a in await call("GET", "/apps")}
        names = [measured] + [f"bench-{i:02d}" for i in range(1, apps)]
        for name in names:
            if name not in existing:
                await call("POST", "/apps", {"name": name})
        have = 0
        for name in names:
            async with http.get(api + f"/apps/{name}/releases") as answer:
                have += len(await answer.json())
        for index in range(max(0, releases - have)):
            await call("PATCH", f"/apps/{measured}/config-vars", {"SEQ": str(index)})


def push(env: dict[str, str], api: str, token: str, app: str, work: Path) -> None:
    """git push examples/python-hello to `app` (a real build and release)."""
    tree = work / "src"
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(ROOT / "examples" / "python-hello", tree)
    git = ["git", "-C", str(tree), "-c", "user.email=b@example.com", "-c", "user.name=bench"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "bench"]):
        subprocess.run([*git, *args], check=True, capture_output=True, env=env)
    url = api.replace("://", f"://git:{token}@")
    subprocess.run([*git, "push", "-q", f"{url}/{app}.git", "main"], check=True, env=env)


async def bare_calls(api: str, cookie: str, app: str, rounds: int) -> list[float]:
    """The overview's requests in parallel, as the page makes them, timed from aiohttp."""
    headers = {"Accept": ACCEPT, "Cookie": f"slipway_session={cookie}"}
    paths = [
        f"/apps/{app}",
        f"/apps/{app}/formation",
        f"/apps/{app}/dynos",
        f"/apps/{app}/metrics",
        f"/apps/{app}/domains",
        "/teams",
    ]
    times: list[float] = []
    async with aiohttp.ClientSession(headers=headers) as http:

        async def one(path: str, extra: dict[str, str]) -> None:
            async with http.get(api + path, headers=extra) as answer:
                assert answer.status in (200, 206), (path, answer.status)
                await answer.read()

        for _ in range(rounds):
            started = time.perf_counter()
            await asyncio.gather(
                *(one(p, {}) for p in paths),
                one(f"/apps/{app}/releases", {"Range": "version ..; order=desc, max=1"}),
            )
            times.append((time.perf_counter() - started) * 1000)
    return times


def browser_loads(
    api: str, token: str, app: str, loads: int
) -> tuple[list[float], list[float], str]:
    """(overview ms, first contentful paint ms, the session cookie) over `loads` page loads."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="slipway-bench-chromium-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"{api}/#/login")
        # Sign in as the page does, so the cookie is the browser's own.
        driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch('/account/web-sessions', {method: 'POST', headers: {'Content-Type':"
            " 'application/json', 'Accept': 'application/vnd.heroku+json; version=3'},"
            " body: JSON.stringify({token: arguments[0]})}).then(r => done(r.status));",
            token,
        )
        signed = driver.get_cookie("slipway_session")
        if signed is None:
            raise RuntimeError("signing in gave the browser no session cookie")
        cookie = str(signed["value"])
        overview, paint = [], []
        for index in range(loads + 2):  # two warm-up loads: the first fills caches
            driver.get(f"{api}/?load={index}#/apps/{app}")
            WebDriverWait(driver, 30).until(
                lambda d: d.execute_script(
                    "return performance.getEntriesByName('overview-rendered').length > 0"
                )
            )
            mark, fcp = driver.execute_script(
                "return [performance.getEntriesByName('overview-rendered')[0].startTime,"
                " (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime]"
            )
            if index >= 2:
                overview.append(float(mark))
                paint.append(float(fcp or 0.0))
        driver.save_screenshot(str(Path(profile) / "overview.png"))
        print(f"screenshot: {Path(profile) / 'overview.png'}")
        return overview, paint, cookie
    finally:
        driver.quit()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--apps", type=int, default=50)
    parser.add_argument("--releases", type=int, default=1000)
    parser.add_argument("--loads", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="slipway-bench-dashboard-"))
    scope = new_scope()
    env = own_env(
        work / "var",
        work,
        scope,
        SLIPWAY_METRICS_INTERVAL="2",
        SLIPWAY_API_RATE_LIMIT=str(10**9),  # the limiter runs but never refuses the bench
    )
    print(f"starting a platform in {work} ...", flush=True)
    platform = start(work / "var", env)
    app = "bench-00"
    try:
        credentials = json.loads((work / "var" / "gateway" / "bootstrap.json").read_text())
        api, token = credentials["api_url"], credentials["token"]
        asyncio.run(seed(api, token, 1, 1, app))
        print("pushing examples/python-hello ...", flush=True)
        push(env, api, token, app, work)
        asyncio.run(_scale(api, token, app))
        asyncio.run(seed(api, token, args.apps, args.releases, app))
        print(f"seeded {args.apps} apps, {args.releases} releases; loading the overview ...")
        overview, paint, cookie = browser_loads(api, token, app, args.loads)
        bare = asyncio.run(bare_calls(api, cookie, app, args.loads))
    finally:
        stop(platform.process)
        remove_scope_objects(scope)
        subprocess.run(["docker", "network", "rm", scope.build_network], capture_output=True)
    p50 = statistics.median(overview)
    print(f"\napp overview, {args.apps} apps, {args.releases} releases, {args.loads} loads:")
    p95 = pct(overview, 0.95)
    print(f"  first render (overview-rendered) p50 {p50:7.1f} ms  p95 {p95:7.1f} ms")
    print(f"  first contentful paint           p50 {statistics.median(paint):7.1f} ms")
    print(f"  bare API calls, no browser       p50 {statistics.median(bare):7.1f} ms")
    print(f"  overview / bare calls: {p50 / statistics.median(bare):.1f}x")
    verdict = "met" if p50 <= TARGET_MS else "NOT met"
    print(f"  target first render <= {TARGET_MS:.0f} ms: {verdict}")


async def _scale(api: str, token: str, app: str) -> None:
    headers = {"Accept": ACCEPT, "Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        body = {"quantity": 2}
        async with http.patch(f"{api}/apps/{app}/formation/web", json=body) as answer:
            assert answer.status == 200, await answer.text()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            async with http.get(f"{api}/apps/{app}/dynos") as answer:
                dynos = await answer.json()
            if sum(1 for d in dynos if d.get("state") == "up") >= 2:
                return
            await asyncio.sleep(1)
        raise RuntimeError("web=2 did not come up within 120 s")


if __name__ == "__main__":
    main()
